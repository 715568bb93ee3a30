"""Teachers: a frozen copy of the baseline, or a model built from its factory and checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from compressctl.distillation.teachers import TorchTeacher, build_teacher
from compressctl.runners.distill import DistillConfig
from tests.conftest import tiny_recipe, write_recipe


def test_teacher_never_changes_the_baseline_module() -> None:
    from compressctl.zoo import digits_cnn

    baseline = digits_cnn(width=4)
    TorchTeacher(baseline)
    assert all(p.requires_grad for p in baseline.parameters())


def test_a_named_teacher_is_built_from_its_factory_and_checkpoint(tmp_path: Path) -> None:
    from compressctl.artifact import Artifact
    from compressctl.pipeline import Run, StageContext
    from compressctl.recipe import load_recipe
    from compressctl.zoo import digits_cnn

    torch.manual_seed(3)
    saved = digits_cnn(width=8)
    torch.save(saved.state_dict(), tmp_path / "teacher.pt")
    run = Run(load_recipe(write_recipe(tmp_path, tiny_recipe())), tmp_path / "out")
    context = StageContext(1, "01-distill", tmp_path, 0, run)
    teacher_ref = {"factory": "compressctl.zoo:digits_cnn", "kwargs": {"width": 8}, "checkpoint": "teacher.pt"}
    config = DistillConfig(teacher=teacher_ref)
    teacher, name = build_teacher(config, Artifact.from_module(digits_cnn(width=4)), context)
    assert name == "factory compressctl.zoo:digits_cnn"
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(teacher.module.state_dict()[key], value)
