"""The search space: read from the runners' search tags, expanded over layer groups and nodes, bounded by sensitivity."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Literal

import pytest
from pydantic import Field

from compressctl.advise.layers import Layer
from compressctl.advise.space import searched_runners, space_from
from compressctl.pruning.importance import SEARCHED_IMPORTANCES
from compressctl.runners.base import Runner, StageConfig, searched

GROUPS = [
    Layer("stem.0", "conv", ["stem.0", "layer1.conv2"], [16, 1, 3, 3], macs_share=0.2, latency_share=0.3),
    Layer("layer1.conv1", "conv", ["layer1.conv1"], [16, 16, 3, 3], 0.5, latency_share=0.1, sensitivity=0.2, upper=0.5),
]
NODES = [Layer("layer1.conv1", "node", ["/layer1/conv1/Conv"], sensitivity=0.01)]
CONVS = [Layer("layer1.conv1", "conv", ["layer1.conv1"], [16, 16, 3, 3])]


def torch_space(
    recipe_types: frozenset[str] = frozenset(),
    op_types=frozenset({"Conv", "Gemm", "BatchNormalization"}),
    mode="static",
):
    layers = {"layer_group": GROUPS, "node": NODES, "layer": CONVS}
    return space_from(searched_runners(set(recipe_types), False), layers, False, set(op_types), mode)


def dims(space) -> dict:
    return {d.name: d for d in space.dimensions}


def test_builtin_tags_give_the_space_with_per_layer_dimensions():
    found = dims(torch_space())
    stem = found["prune.layer_amounts:stem.0"]
    assert stem.kind == "float" and stem.choices[0] == 0.0 and stem.choices[-1] == 0.8 and len(stem.choices) == 17
    assert found["prune.layer_amounts:layer1.conv1"].choices[-1] == 0.5  # bounded by its sensitivity
    assert found["prune.importance"].choices == SEARCHED_IMPORTANCES
    # None: no quantize stage; dynamic INT8 and int4 only for models with MatMul weights (this one has none)
    assert found["quantize.mode"].choices == (None, "static", "kmeans")
    assert found["quantize.bits"].when[-1] == ("quantize.mode", ("kmeans",))
    node = found["quantize.exclude_nodes:layer1.conv1"]
    assert node.choices == (False, True) and node.when[-1] == ("quantize.max_accuracy_drop", (None,))
    assert found["lowrank.rank"].choices == ("ratio 0.3", "ratio 0.5", "ratio 0.7", "energy 0.9")
    assert found["advise.lowrank_order"].choices == ("after", "before")
    assert found["lowrank.layer_ratios:layer1.conv1"].choices == (None, 0.3, 0.5, 0.7)  # None: the stage's rule
    assert "quantize.per_channel" not in found  # an ONNX-only option


def test_values_become_the_candidate_keys_recipes_read():
    space = torch_space()
    values = space.fill(
        {
            "prune.layer_amounts:stem.0": 0.25,
            "prune.layer_amounts:layer1.conv1": 0.5,
            "prune.importance": "bn_scale",
            "lowrank.method": "tucker",
            "lowrank.rank": "energy 0.9",
            "advise.lowrank_order": "before",
            "lowrank.layer_ratios:layer1.conv1": 0.3,
            "quantize.mode": "static",
            "quantize.max_accuracy_drop": None,  # no fallback: the search picks the float nodes
            "quantize.exclude_nodes:layer1.conv1": True,
        }
    )
    assert "quantize.bits" not in values  # inactive: the mode is not kmeans
    assert space.candidate(values) == {
        "layer_amounts": {"stem.0": 0.25, "layer1.conv2": 0.25, "layer1.conv1": 0.5},  # a group shares one ratio
        "importance": "bn_scale",
        "lowrank": {"energy": 0.9, "layer_ratios": {"layer1.conv1": 0.3}},
        "lowrank_order": "before",
        "quantize": "int8",
        "float_fallback": None,
        "float_nodes": ["/layer1/conv1/Conv"],
    }
    with_fallback = space.fill({"quantize.mode": "static", "quantize.max_accuracy_drop": 0.003})
    assert "quantize.exclude_nodes:layer1.conv1" not in with_fallback  # the fallback picks them
    kmeans = space.fill({"quantize.mode": "kmeans", "quantize.bits": 8})
    assert {k: v for k, v in space.candidate(kmeans).items() if k != "layer_amounts"} == {
        "importance": "l1",
        "quantize": "kmeans",
        "bits": 8,
    }
    assert space.candidate(space.fill({}))["quantize"] == "float"


def test_encoders_search_dynamic_int8_and_int4_and_start_from_the_recipes_mode():
    from compressctl.advise.search import starting_points

    space = torch_space(op_types={"MatMul", "Gather"}, mode="dynamic")
    found = dims(space)
    assert found["quantize.mode"].choices == (None, "static", "kmeans", "dynamic", "int4")
    assert found["quantize.max_accuracy_drop"].when[-1] == ("quantize.mode", ("static", "dynamic"))
    dynamic = space.fill({"quantize.mode": "dynamic", "quantize.max_accuracy_drop": None})
    assert "quantize.exclude_nodes:layer1.conv1" in dynamic  # per-MatMul float or INT8
    assert "quantize.per_channel" not in dynamic and "quantize.calibration" not in dynamic
    dynamic["quantize.exclude_nodes:layer1.conv1"] = True
    assert {k: v for k, v in space.candidate(dynamic).items() if k not in ("layer_amounts", "importance")} == {
        "quantize": "dynamic",
        "float_fallback": None,
        "float_nodes": ["/layer1/conv1/Conv"],
    }
    assert space.candidate(space.fill({"quantize.mode": "int4"}))["quantize"] == "int4"
    points = [space.candidate(point) for point in starting_points(space)]
    assert points[0]["quantize"] == "dynamic" and not any(points[0]["layer_amounts"].values())  # the hand recipe
    assert points[1]["quantize"] == "int8" and not any(points[1]["layer_amounts"].values())  # static, unpruned
    assert all(p["quantize"] == "dynamic" for p in points[2:])
    # no batch norms: no network slimming, and no starting point asks for it
    assert "bn_scale" not in found["prune.importance"].choices
    assert all(p.get("importance") == "l1" for p in points)
    # the cheap groups alone (here the stem: not sensitive), the sensitive one kept whole
    cheap = [p["layer_amounts"] for p in points if not p["layer_amounts"]["layer1.conv1"]]
    assert [a["stem.0"] for a in cheap if a["stem.0"]] == [0.25, 0.5]
    assert len(points) == len({repr(p) for p in points})  # no point twice
    assert torch_space(op_types={"MatMul"}, mode="auto").quantize_mode == "static"  # not a searched mode
    assert starting_points(torch_space())[0]["quantize.mode"] == "static"


def test_onnx_only_models_search_formats_and_fallback():
    space = space_from(searched_runners(set(), True), {"node": NODES}, True, {"Conv"})
    found = dims(space)
    assert found["quantize.mode"].choices == ("static", "kmeans")  # the only stage: never left out
    assert {"quantize.per_channel", "quantize.calibration", "quantize.exclude_nodes:layer1.conv1"} <= set(found)
    assert not any(name.startswith(("prune.", "lowrank.")) for name in found)
    values = space.fill({"quantize.mode": "static", "quantize.calibration": "entropy"})
    assert space.candidate(values) == {
        "quantize": "int8",
        "float_fallback": None,
        "per_channel": True,
        "calibration": "entropy",
    }


class ScaleConfig(StageConfig):
    type: Literal["acme-scale"] = "acme-scale"
    factor: float = Field(1.0, gt=0, description="Weights times this.", json_schema_extra=searched(choices=[0.5, 1.0]))
    note: str = Field("", description="Not searched.")


class ScaleRunner(Runner):
    type = "acme-scale"
    config_model = ScaleConfig
    summary = "Scale weights (a test plugin)."

    def run(self, artifact, config, context):
        return artifact


@pytest.fixture
def plugin():
    from compressctl.registry import registry

    registry.register(ScaleRunner)
    yield ScaleRunner
    registry.unregister("acme-scale")


def test_a_plugin_runners_tagged_field_is_searched_when_the_recipe_lists_its_stage(plugin):
    from compressctl.advise.recipes import torch_stages

    assert "acme-scale.factor" not in dims(torch_space())  # installed, not in the recipe: not searched
    space = torch_space(frozenset({"acme-scale"}))
    assert dims(space)["acme-scale.factor"].choices == (0.5, 1.0) and "acme-scale.note" not in dims(space)
    candidate = space.candidate(space.fill({"acme-scale.factor": 0.5}))
    assert candidate["acme-scale.factor"] == 0.5
    recipe = SimpleNamespace(stages=[])
    stages = torch_stages(recipe, candidate, round_to=None, finetune_epochs=1)
    assert [s["type"] for s in stages] == ["acme-scale", "finetune"]
    assert stages[0] == {"type": "acme-scale", "factor": 0.5}


def test_layer_groups_follow_torch_pruning_dependencies_and_sensitivity_bounds():
    import torch

    from compressctl.advise.layers import SENSITIVE_BOUND, group_layers
    from compressctl.zoo import digits_resnet

    bench = SimpleNamespace(module=digits_resnet(width=8).eval(), example=lambda: (torch.randn(2, 1, 32, 32),))
    drops = {"stem.0": 0.02, "layer1.conv1": 0.03, "layer2.conv1": 0.4, "layer3.conv1": 0.02}
    analysis = {"prune": {k: {"0.5": v} for k, v in drops.items()}, "latency_share": {"layer3.conv1": 0.4}}
    groups = {layer.name: layer for layer in group_layers(bench, analysis)}
    members = sorted(sorted(layer.members) for layer in groups.values())
    assert ["layer1.conv2", "stem.0"] in members  # the residual add couples the stem and layer1's second conv
    assert ["layer2.conv2", "layer2.shortcut.0"] in members
    assert not any("fc" in m for group in members for m in group)  # the classifier head keeps its outputs
    assert len(members) == 6
    bounded = [layer for layer in groups.values() if layer.upper < 1.0]
    assert [layer.members for layer in bounded] == [["layer2.conv1"]] and bounded[0].upper == SENSITIVE_BOUND
    assert abs(sum(layer.macs_share for layer in groups.values()) - 1) < 0.05  # the fc's MACs are the rest
    assert groups["layer3.conv1"].latency_share == 0.4


def test_guided_starting_point_prunes_cheap_slow_groups_hardest():
    from compressctl.advise.search import starting_points

    points = starting_points(torch_space())
    assert points[0]["prune.importance"] == "l1" and points[0]["quantize.mode"] == "static"
    assert {points[0]["prune.layer_amounts:stem.0"], points[0]["prune.layer_amounts:layer1.conv1"]} == {0.5}
    guided = points[3]  # l1 after the uniform, slimmed and slimmed-guided points
    # stem: more latency share, no sensitivity; layer1.conv1: sensitive and bounded at 0.5
    assert guided["prune.layer_amounts:stem.0"] == 0.7 and guided["prune.layer_amounts:layer1.conv1"] == 0.3
    assert points[-1]["lowrank.method"] == "tucker" and points[-1]["advise.lowrank_order"] == "after"


def test_least_squares_reconstruction_is_searched_where_groups_hold_linear_layers():
    from compressctl.advise.search import starting_points

    assert "prune.reconstruct" not in dims(torch_space(op_types={"MatMul", "Gather"}, mode="dynamic"))
    space = torch_space(op_types={"MatMul", "Gather", "Linear"}, mode="dynamic")
    found = dims(space)
    assert found["prune.reconstruct"].choices == ("none", "least_squares")
    assert found["advise.recovery"].choices == ("train", "none")
    assert found["advise.recovery"].when == (("prune.reconstruct", ("least_squares",)),)
    values = space.fill({"prune.layer_amounts:stem.0": 0.25, "prune.reconstruct": "least_squares"})
    values["advise.recovery"] = "none"
    candidate = space.candidate(values)
    assert candidate["reconstruct"] == "least_squares" and candidate["recovery"] == "none"
    unpruned = space.fill({"prune.reconstruct": "least_squares", "advise.recovery": "none"})
    assert "reconstruct" not in space.candidate(unpruned)  # nothing pruned: nothing to re-solve
    solved = [space.candidate(p) for p in starting_points(space) if space.candidate(p).get("reconstruct")]
    # the cheap group (the stem) at 25 and 50 %, re-solved, with no training after
    assert [(p["layer_amounts"]["stem.0"], p["layer_amounts"]["layer1.conv1"], p["recovery"]) for p in solved] == [
        (0.25, 0.0, "none"),
        (0.5, 0.0, "none"),
    ]
