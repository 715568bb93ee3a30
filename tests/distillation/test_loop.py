"""The distillation loop trains the student in place against its teacher."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from compressctl.distillation.loop import distill
from compressctl.distillation.teachers import TorchTeacher
from compressctl.runners.distill import DistillConfig
from compressctl.runners.train import settings_from
from tests.conftest import tiny_recipe, write_recipe


def test_distill_trains_the_student_in_place_for_the_configured_epochs(tmp_path: Path) -> None:
    from compressctl.data import load_data
    from compressctl.recipe import load_recipe
    from compressctl.zoo import digits_cnn

    recipe = load_recipe(write_recipe(tmp_path, tiny_recipe()))
    data = load_data(recipe.data, list(recipe.model.inputs), dims={}, seed=0, base_dir=tmp_path)
    torch.manual_seed(0)
    teacher = digits_cnn(width=8)
    student = copy.deepcopy(teacher)
    before = [p.clone() for p in student.parameters()]
    config = DistillConfig(epochs=1)
    details = distill(student, TorchTeacher(teacher), data, config, settings_from(config, 64), seed=0)
    assert details["adapters"] == {} and details["adapter_params"] == 0 and len(details["history"]) == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
