"""``distill``: the stage's options, teachers (baseline, ONNX), unlabeled data, the student it returns, cache replay.

The losses, adapters, teachers and loop are tested in tests/distillation.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from compressctl.runners.distill import DistillConfig
from tests.conftest import tiny_recipe, write_recipe
from tests.runners.cache_replay import rerun_replays_the_stage

STUDENT = {"factory": "compressctl.zoo:digits_cnn", "kwargs": {"width": 4}}


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
    rerun_replays_the_stage(cli, tmp_path / "recipe.yaml", tmp_path / "out", "02-distill", "03-export")


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


def stage_context(tmp_path: Path, index: int = 2) -> object:
    from compressctl.data import load_data
    from compressctl.recipe.models import DataSpec, InputSpec
    from tests.runners.contexts import stage_context as real_context

    image = [InputSpec(name="x", shape=["batch", 1, 8, 8])]
    return real_context(image, load_data(DataSpec(source="digits"), image, seed=0), tmp_path, index=index)


def test_distill_without_student_keeps_the_current_architecture(tmp_path: Path) -> None:
    from compressctl.artifact import Artifact
    from compressctl.runners.distill import DistillRunner
    from compressctl.zoo import digits_cnn

    torch.manual_seed(0)
    current = digits_cnn(width=8).eval()
    before = copy.deepcopy(current.state_dict())
    earlier = {"op": "sparse", "method": "unstructured", "tensors": ["3.weight"]}
    artifact = Artifact.from_module(current, [earlier])
    context = stage_context(tmp_path)
    result = DistillRunner().run(artifact, DistillConfig(epochs=1), context)
    # no replace_model edit: a cached rerun rebuilds the architecture the stage was given
    assert result.edits == [earlier]
    assert context.details["student"] == "current model" and context.details["adapters"] == {}
    trained = result.module.state_dict()
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in before.items()}
    assert any(not torch.equal(trained[k], v) for k, v in before.items())  # the copy was trained ...
    assert all(torch.equal(current.state_dict()[k], v) for k, v in before.items())  # ... the input was not


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
