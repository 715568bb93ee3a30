"""Candidate → recipe: every choice of the search reaches recommended.yaml as ordinary, valid stages."""

from __future__ import annotations

import pytest

from compressctl.advise.budget import Budget
from compressctl.advise.recipes import SLIMMING_PENALTY, candidate_recipe, quantize_stage
from tests.advise.test_advisor import ADVISE_STAGES, REPORT, advise_recipe_path

HALF = {"0": 0.5, "3": 0.5, "7": 0.0}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from compressctl.recipe import load_recipe

    return load_recipe(advise_recipe_path(tmp_path_factory.mktemp("recipes")))


def stages_of(recipe, candidate: dict) -> list[dict]:
    """The candidate's recipe, validated and planned like `compressctl validate` does, as stage dicts."""
    from compressctl.pipeline import plan_stages
    from compressctl.recipe.loader import validate_data

    data = candidate_recipe(recipe, candidate, Budget(max_accuracy_drop=0.01), 1_000_000, round_to=8)
    plan_stages(validate_data(data, "candidate.yaml"))
    assert data["gates"] == {"max_accuracy_drop": 0.01}
    return data["stages"]


def test_network_slimming_fine_tunes_with_l1_on_bn_scales_before_pruning_by_them(recipe):
    stages = stages_of(recipe, {"layer_amounts": HALF, "importance": "bn_scale", "quantize": "int8"})
    assert [s["type"] for s in stages] == ["train", "finetune", "prune", "finetune", "export", "quantize"]
    assert stages[1]["sparsity_regularization"] == SLIMMING_PENALTY
    assert stages[2]["importance"] == "bn_scale" and stages[2]["layer_amounts"] == {"0": 0.5, "3": 0.5}
    assert "sparsity_regularization" not in stages[3]  # the recovery fine-tuning is the recipe's own


def test_a_recipe_may_give_slimming_and_recovery_fine_tunings_of_their_own(tmp_path):
    # digits-resnet-advise: slimming 10 epochs (20 left uniform 70 % at 79 % after the proxies' 2), recovery 20
    from compressctl.advise.finalists import shared_finetune_seconds
    from compressctl.advise.recipes import recovery_stage, slimming_stage
    from compressctl.recipe import load_recipe
    from tests.conftest import tiny_recipe, write_recipe

    slimming = {"type": "finetune", "epochs": 3, "lr": 0.01, "sparsity_regularization": 0.002}
    recovery = {"type": "finetune", "epochs": 7, "lr": 0.005}
    stages = [ADVISE_STAGES[0], slimming, recovery, *ADVISE_STAGES[2:]]
    both = load_recipe(write_recipe(tmp_path, tiny_recipe(stages=stages, report=REPORT), "both.yaml"))
    assert slimming_stage(both) == slimming and recovery_stage(both) == recovery
    data = candidate_recipe(both, {"layer_amounts": HALF, "importance": "bn_scale"}, Budget(), 1, round_to=8)
    assert [(s["type"], s.get("epochs")) for s in data["stages"][:4]] == [
        ("train", 2),
        ("finetune", 3),
        ("prune", None),
        ("finetune", 7),
    ]
    assert data["stages"][1]["sparsity_regularization"] == 0.002 and "sparsity_regularization" not in data["stages"][3]
    trained = {"stages": [{"type": "train", "seconds": 10.0}]}
    assert shared_finetune_seconds(trained, both) == 10.0 * 3 / 2  # the slimming's epochs, not the recovery's
    # only the slimming one listed: the recovery is it without its penalty
    alone = load_recipe(
        write_recipe(tmp_path, tiny_recipe(stages=[ADVISE_STAGES[0], slimming], report=REPORT), "a.yaml")
    )
    assert recovery_stage(alone) == {"type": "finetune", "epochs": 3, "lr": 0.01}
    # only a plain one: both come from it, the slimming with the default penalty
    plain = load_recipe(write_recipe(tmp_path, tiny_recipe(stages=ADVISE_STAGES, report=REPORT), "p.yaml"))
    assert slimming_stage(plain) == dict(ADVISE_STAGES[1], sparsity_regularization=SLIMMING_PENALTY)
    assert recovery_stage(plain) == ADVISE_STAGES[1]


def test_a_least_squares_candidate_re_solves_when_pruning_and_may_skip_the_recovery(recipe):
    solved = {"layer_amounts": HALF, "reconstruct": "least_squares", "quantize": "int8"}
    stages = stages_of(recipe, dict(solved, recovery="none"))
    assert [s["type"] for s in stages] == ["train", "prune", "export", "quantize"]
    assert stages[1]["reconstruct"] == "least_squares"
    trained = stages_of(recipe, dict(solved, recovery="train"))
    assert [s["type"] for s in trained] == ["train", "prune", "finetune", "export", "quantize"]


@pytest.mark.parametrize(("order", "expected"), [("before", ["lowrank", "prune"]), ("after", ["prune", "lowrank"])])
def test_lowrank_goes_where_the_stage_order_says(recipe, order, expected):
    candidate = {
        "layer_amounts": HALF,
        "importance": "l2",
        "lowrank": {"ratio": 0.3},
        "lowrank_order": order,
        "quantize": "float",
    }
    stages = stages_of(recipe, candidate)
    assert [s["type"] for s in stages] == ["train", *expected, "finetune", "export"]
    lowrank = next(s for s in stages if s["type"] == "lowrank")
    assert lowrank == {"type": "lowrank", "method": "tucker", "ratio": 0.3}  # the runner skips convs it cannot shrink


def test_lowrank_without_pruning_and_energy_ranks(recipe):
    stages = stages_of(recipe, {"layer_amounts": {"0": 0.0}, "lowrank": {"energy": 0.9}, "lowrank_order": "after"})
    assert [s["type"] for s in stages] == ["train", "lowrank", "finetune", "export"]
    assert stages[1]["energy"] == 0.9


@pytest.mark.parametrize("bits", [4, 8])
def test_kmeans_bit_widths(recipe, bits):
    stages = stages_of(recipe, {"layer_amounts": HALF, "quantize": "kmeans", "bits": bits})
    assert stages[-1] == {"type": "quantize", "mode": "kmeans", "bits": bits}


@pytest.mark.parametrize("fallback", [None, 0.001])
def test_int8_float_fallback_is_the_quantize_max_accuracy_drop(recipe, fallback):
    stages = stages_of(recipe, {"layer_amounts": HALF, "quantize": "int8", "float_fallback": fallback})
    assert stages[-1]["mode"] == "static" and stages[-1].get("max_accuracy_drop") == fallback


def test_float_candidates_have_no_quantize_stage_and_old_candidates_still_read(recipe):
    assert stages_of(recipe, {"layer_amounts": HALF, "quantize": "float"})[-1]["type"] == "export"
    assert stages_of(recipe, {"layer_amounts": {"0": 0.0}})[-1]["type"] == "export"
    # advise.json files of earlier versions said quantize: true
    assert quantize_stage(recipe, {"quantize": True})["mode"] == "static"


def test_nodes_kept_float_become_the_quantize_stages_exclude_nodes(recipe):
    stages = stages_of(recipe, {"layer_amounts": HALF, "quantize": "int8", "float_nodes": ["/b/Conv", "/a/Conv"]})
    assert stages[-1]["exclude_nodes"] == ["/a/Conv", "/b/Conv"]


@pytest.mark.parametrize("fallback", [None, 0.01])
def test_dynamic_int8_and_int4_candidates_become_their_quantize_stages(recipe, fallback):
    dynamic = {"layer_amounts": HALF, "quantize": "dynamic", "float_fallback": fallback, "float_nodes": ["/m/MatMul"]}
    stage = stages_of(recipe, dynamic)[-1]
    assert stage["mode"] == "dynamic" and stage.get("max_accuracy_drop") == fallback
    assert stage["exclude_nodes"] == ["/m/MatMul"] and stage["exclude_op_types"] == ["Gather"]
    assert "calibration" not in stage  # this recipe's quantize stage is static: the dynamic default is taken
    assert stages_of(recipe, {"layer_amounts": HALF, "quantize": "int4"})[-1] == {"type": "quantize", "mode": "int4"}


def test_a_recipe_with_a_distill_stage_recovers_by_distilling_from_the_baseline(tmp_path):
    from compressctl.advise.recipes import torch_stages
    from compressctl.recipe import load_recipe
    from tests.advise.test_encoder import ENCODER
    from tests.conftest import write_recipe

    distilling = dict(
        ENCODER, stages=[*ENCODER["stages"][:1], {"type": "distill", "epochs": 4, "soft": {"alpha": 1.0}}]
    )
    recipe = load_recipe(write_recipe(tmp_path, distilling))
    stages = torch_stages(recipe, {"layer_amounts": {"encoder.layers.0.linear1": 0.5}}, None)
    assert [s["type"] for s in stages] == ["prune", "distill"] and stages[-1]["soft"] == {"alpha": 1.0}
    assert torch_stages(recipe, {"layer_amounts": {"encoder.layers.0.linear1": 0.5}}, None, 2)[-1]["epochs"] == 2
    finetuning = load_recipe(write_recipe(tmp_path, ENCODER, "finetune.yaml"))
    assert (
        torch_stages(finetuning, {"layer_amounts": {"encoder.layers.0.linear1": 0.5}}, None)[-1]["type"] == "finetune"
    )
