"""``plan``: stage order, auto-inserted exports, where the baseline is taken."""

from __future__ import annotations

from typing import Any

import pytest

from compressctl.errors import UserError
from compressctl.plan import baseline_position, export_config, plan_stages
from compressctl.recipe.loader import validate_data
from tests.conftest import tiny_recipe


def planned(stages: list[dict[str, Any]], **model: Any) -> list[Any]:
    data = tiny_recipe(stages=stages)
    data["model"].update(model)
    return plan_stages(validate_data(data, "recipe.yaml"))


def describe(plan: list[Any]) -> list[tuple[str, str, str, bool]]:
    return [(s.name, s.input_kind, s.output_kind, s.auto) for s in plan]


def test_an_export_is_inserted_where_torch_turns_into_onnx() -> None:
    plan = planned([{"type": "train", "epochs": 1}, {"type": "prune", "amount": 0.5}, {"type": "quantize"}])
    assert describe(plan) == [
        ("01-train", "torch", "torch", False),
        ("02-prune", "torch", "torch", False),
        ("03-export", "torch", "onnx", True),
        ("04-quantize", "onnx", "onnx", False),
    ]
    assert [s.recipe_index for s in plan] == [0, 1, None, 2]


def test_a_torch_pipeline_ends_with_an_export() -> None:
    assert describe(planned([{"type": "train", "epochs": 1}]))[-1] == ("02-export", "torch", "onnx", True)
    assert describe(planned([])) == [("01-export", "torch", "onnx", True)]


def test_a_named_export_is_not_doubled() -> None:
    plan = planned([{"type": "export", "opset": 17}, {"type": "quantize"}])
    assert [(s.type, s.auto) for s in plan] == [("export", False), ("quantize", False)]
    assert export_config(validate_data(tiny_recipe(stages=[{"type": "export", "opset": 17}]), "r")).opset == 17
    assert export_config(validate_data(tiny_recipe(stages=[]), "r")).opset == 18


def test_a_torch_stage_after_an_onnx_stage_is_refused() -> None:
    with pytest.raises(UserError, match=r"stages\[2\] \(prune\).*cannot follow.*stages\[1\] \(quantize\)"):
        planned([{"type": "export"}, {"type": "quantize"}, {"type": "prune", "amount": 0.5}])


def test_a_torch_stage_on_an_onnx_model_is_refused() -> None:
    with pytest.raises(UserError, match=r"needs a torch model.*use model.factory"):
        planned([{"type": "prune", "amount": 0.5}], factory=None, onnx="model.onnx")


def test_the_baseline_is_the_model_entering_the_first_compressing_stage() -> None:
    plan = planned([{"type": "train", "epochs": 1}, {"type": "prune", "amount": 0.5}, {"type": "quantize"}])
    assert baseline_position(plan) == 1
    assert [s.measured for s in plan] == [False, True, False, True]  # train does not compress; export changes nothing
    assert baseline_position(planned([{"type": "train", "epochs": 1}])) == 2  # nothing compresses: after the end
