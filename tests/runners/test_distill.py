"""``distill``: losses, adapters, teachers (baseline, factory, ONNX), unlabeled data, student replacement, cache."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from compressctl.runners.distill import (
    DistillConfig,
    DistillLoss,
    TorchTeacher,
    make_adapter,
    rkd_angle_loss,
    rkd_distance_loss,
    soft_target_loss,
)
from tests.conftest import tiny_recipe, write_recipe

STUDENT = {"factory": "compressctl.zoo:digits_cnn", "kwargs": {"width": 4}}


def test_soft_target_loss_is_zero_for_equal_outputs_and_scaled_by_t_squared() -> None:
    logits = torch.randn(8, 10)
    assert soft_target_loss(logits, logits, 4.0).abs() < 1e-6
    other = torch.randn(8, 10)
    plain = torch.nn.functional.kl_div(
        torch.log_softmax(logits / 2, -1), torch.softmax(other / 2, -1), reduction="batchmean"
    )
    torch.testing.assert_close(soft_target_loss(logits, other, 2.0), 4 * plain)


def test_relational_losses_ignore_scale_and_rotation_but_see_structure() -> None:
    x = torch.randn(6, 5)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5))
    same = 3.0 * x @ rotation  # distances scale, angles do not change: RKD normalises both away
    assert rkd_distance_loss(same, x) < 1e-6 and rkd_angle_loss(same, x) < 1e-6
    assert rkd_distance_loss(torch.randn(6, 5), x) > 1e-3 and rkd_angle_loss(torch.randn(6, 5), x) > 1e-3


def test_adapters_are_made_only_when_shapes_differ() -> None:
    assert make_adapter((2, 8, 4, 4), (2, 8, 4, 4))[0] is None
    conv, note = make_adapter((2, 8, 8, 8), (2, 16, 4, 4))
    assert isinstance(conv, nn.Conv2d) and conv.in_channels == 8 and conv.out_channels == 16 and "1x1" in note
    linear, _ = make_adapter((2, 12), (2, 20))
    assert isinstance(linear, nn.Linear) and linear.weight.shape == (20, 12)


def test_feature_loss_trains_its_adapter_and_reaches_the_teacher_layers() -> None:
    from compressctl.zoo import digits_cnn

    torch.manual_seed(0)
    teacher, student = digits_cnn(width=8), digits_cnn(width=4)
    config = DistillConfig(
        features={"pairs": [{"student": "5", "teacher": "5"}]},
        relational={"student": "11", "teacher": "11"},
    )
    x = [torch.randn(4, 1, 8, 8)]
    loss = DistillLoss(student, TorchTeacher(teacher), config, x)
    assert loss.adapter_notes == {"5->5": "conv1x1 8→16, resize to [8, 8]"}
    (adapter,) = loss.adapters
    value = loss(student.train(), x, torch.tensor([0, 1, 2, 3]))
    value.backward()
    assert set(loss.last_parts) == {"soft", "features", "relational"}
    assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.teacher.module.parameters())
    loss.close()


def test_teacher_never_changes_the_baseline_module() -> None:
    from compressctl.zoo import digits_cnn

    baseline = digits_cnn(width=4)
    TorchTeacher(baseline)
    assert all(p.requires_grad for p in baseline.parameters())


@pytest.mark.parametrize(
    "bad",
    [
        {"soft": None},
        {"student": {"onnx": "x.onnx"}},
        {"soft": {"alpha": 1.5}},
        {"teacher": {"factory": "not a factory"}},
        {"temperature": 3},
    ],
)
def test_config_is_strict(bad: dict) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        DistillConfig(**bad)


def run_recipe(tmp_path: Path, cli, stages: list, **changes) -> dict:
    recipe = tiny_recipe(stages=stages, **changes)
    out = tmp_path / "out"
    result = cli("apply", write_recipe(tmp_path, recipe), "-o", out, "-q")
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def test_distill_into_a_smaller_student_from_a_factory_then_reload_from_cache(tmp_path: Path, cli) -> None:
    stages = [
        {"type": "train", "epochs": 2, "lr": 0.01},
        {"type": "distill", "epochs": 3, "lr": 0.01, "student": STUDENT, "relational": {"weight": 0.5}},
        {"type": "export", "dynamo": False},
    ]
    report = run_recipe(tmp_path, cli, stages)
    baseline, final = report["models"][0], report["models"][-1]
    assert final["params"] < 0.1 * baseline["params"]
    assert final["metrics"]["accuracy"] > 0.5  # a 4-channel student learns from the teacher in 3 epochs
    details = report["stages"][1]["details"]
    assert details["teacher"] == "baseline" and details["student"] == "factory compressctl.zoo:digits_cnn"
    assert details["losses"] == ["soft", "relational"] and details["labels_used"] is True
    structure = json.loads((tmp_path / "out" / "stages" / "02-distill" / "structure.json").read_text())
    assert structure["edits"] == [{"op": "replace_model", **STUDENT}]
    again = run_recipe(tmp_path, cli, stages)
    assert [s["cached"] for s in again["stages"]] == [True, True, True]
    assert again["models"][-1]["metrics"] == final["metrics"]


def test_pure_distillation_on_unlabeled_data_from_an_onnx_teacher(tmp_path: Path, cli) -> None:
    # Train a teacher and export it; then distill a fresh student on images without labels.
    (tmp_path / "teacher").mkdir()
    first = run_recipe(
        tmp_path / "teacher", cli, [{"type": "train", "epochs": 3, "lr": 0.01}, {"type": "export", "dynamo": False}]
    )
    teacher_onnx = tmp_path / "teacher" / "out" / "model.onnx"
    assert first["models"][0]["metrics"]["accuracy"] > 0.8
    from sklearn.datasets import load_digits

    images = ((load_digits().images / 16.0 - 0.5) / 0.5).astype(np.float32)[:, None]
    np.savez(tmp_path / "unlabeled.npz", x=images)
    stages = [{"type": "distill", "epochs": 4, "lr": 0.01, "teacher": {"onnx": str(teacher_onnx)}}]
    recipe = tiny_recipe(
        stages=stages,
        data={"source": {"npz": "unlabeled.npz"}, "batch_size": 64},
        evaluate={"metric": "fidelity"},
    )
    out = tmp_path / "out"
    result = cli("apply", write_recipe(tmp_path, recipe), "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    details = report["stages"][0]["details"]
    assert details["labels_used"] is False and details["teacher"].startswith("onnx ")
    assert details["history"][-1]["loss"] < details["history"][0]["loss"]
    # the student (an untrained digits_cnn) comes to agree with the ONNX teacher on most samples
    import onnxruntime as ort

    def predict(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: images})[0].argmax(-1)

    agreement = float((predict(teacher_onnx) == predict(out / "model.onnx")).mean())
    assert agreement > 0.8


def test_distill_without_student_keeps_the_current_architecture(tmp_path: Path) -> None:
    from compressctl.artifact import Artifact
    from compressctl.data import load_data
    from compressctl.recipe import load_recipe
    from compressctl.runners.distill import distill

    recipe = load_recipe(write_recipe(tmp_path, tiny_recipe()))
    data = load_data(recipe.data, list(recipe.model.inputs), dims={}, seed=0, base_dir=tmp_path)
    from compressctl.zoo import digits_cnn

    torch.manual_seed(0)
    teacher = digits_cnn(width=8)
    student = copy.deepcopy(teacher)
    before = [p.clone() for p in student.parameters()]
    details = distill(student, TorchTeacher(teacher), data, DistillConfig(epochs=1), 64, seed=0)
    assert details["adapters"] == {} and len(details["history"]) == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    assert Artifact.from_module(student).edits == []


def test_a_named_teacher_is_built_from_its_factory_and_checkpoint(tmp_path: Path) -> None:
    from compressctl.artifact import Artifact
    from compressctl.data import load_data
    from compressctl.recipe.models import DataSpec, InputSpec
    from compressctl.runners.distill import build_teacher
    from compressctl.zoo import digits_cnn
    from tests.runners.contexts import stage_context

    torch.manual_seed(3)
    saved = digits_cnn(width=8)
    torch.save(saved.state_dict(), tmp_path / "teacher.pt")
    image = [InputSpec(name="x", shape=["batch", 1, 8, 8])]
    # the helper's build_model resolves relative paths (teacher.pt) against the stage folder
    context = stage_context(image, load_data(DataSpec(source="digits"), image, seed=0), tmp_path, index=1)
    teacher_ref = {"factory": "compressctl.zoo:digits_cnn", "kwargs": {"width": 8}, "checkpoint": "teacher.pt"}
    config = DistillConfig(teacher=teacher_ref)
    teacher, name = build_teacher(config, Artifact.from_module(digits_cnn(width=4)), context)
    assert name == "factory compressctl.zoo:digits_cnn"
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(teacher.module.state_dict()[key], value)


def test_replace_model_edit_round_trips_through_the_cache(tmp_path: Path) -> None:
    from compressctl.artifact import Artifact, load_torch, save_torch
    from compressctl.registry import registry
    from compressctl.zoo import digits_cnn

    torch.manual_seed(0)
    source, student = digits_cnn(width=8), digits_cnn(width=4).eval()
    edit = {"op": "replace_model", **STUDENT}
    save_torch(Artifact.from_module(source).with_module(student, edit), tmp_path)
    loaded = load_torch(tmp_path, lambda: copy.deepcopy(source), registry.replay_edit)
    assert loaded.edits == [edit] and loaded.module[0].out_channels == 4
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), student(x))
