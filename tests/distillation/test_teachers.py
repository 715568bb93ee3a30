"""Teachers: a frozen copy of the baseline, or a model built from its factory and checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from compressctl.distillation.teachers import TorchTeacher, build_teacher
from compressctl.runners.distill import DistillConfig


def test_teacher_never_changes_the_baseline_module() -> None:
    from compressctl.zoo import digits_cnn

    baseline = digits_cnn(width=4)
    TorchTeacher(baseline)
    assert all(p.requires_grad for p in baseline.parameters())


def test_a_named_teacher_is_built_from_its_factory_and_checkpoint(tmp_path: Path) -> None:
    from compressctl.artifact import Artifact
    from compressctl.data import load_data
    from compressctl.recipe.models import DataSpec, InputSpec
    from compressctl.zoo import digits_cnn
    from tests.runners.contexts import stage_context

    torch.manual_seed(3)
    saved = digits_cnn(width=8)
    torch.save(saved.state_dict(), tmp_path / "teacher.pt")
    image = [InputSpec(name="x", shape=["batch", 1, 8, 8])]
    # the context's build_model resolves relative paths (teacher.pt) against the stage folder
    context = stage_context(image, load_data(DataSpec(source="digits"), image, seed=0), tmp_path, index=1)
    teacher_ref = {"factory": "compressctl.zoo:digits_cnn", "kwargs": {"width": 8}, "checkpoint": "teacher.pt"}
    config = DistillConfig(teacher=teacher_ref)
    teacher, name = build_teacher(config, Artifact.from_module(digits_cnn(width=4)), context)
    assert name == "factory compressctl.zoo:digits_cnn"
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(teacher.module.state_dict()[key], value)
