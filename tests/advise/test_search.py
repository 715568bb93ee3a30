"""The search space: each choice becomes a candidate key, and each candidate a distinct description."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from compressctl.advise.search import describe_candidate, effective_candidate, suggest

GROUPS = {"stem": "stem.*", "layer1": "layer1.*"}
TORCH_BENCH = SimpleNamespace(module=object())


def candidate_for(**params) -> dict:
    import optuna

    fixed = {"prune:stem": 0.5, "prune:layer1": 0.25, "importance": "l1", "lowrank": "none", **params}
    return suggest(optuna.trial.FixedTrial(fixed), TORCH_BENCH, GROUPS)


def test_suggest_covers_slimming_lowrank_order_and_quantization_families():
    slimmed = candidate_for(importance="bn_scale", quantize="int8", float_fallback=0.001)
    assert slimmed == {
        "layer_amounts": {"stem.*": 0.5, "layer1.*": 0.25},
        "importance": "bn_scale",
        "quantize": "int8",
        "float_fallback": 0.001,
    }
    lowrank = candidate_for(
        lowrank="tucker", lowrank_rank="energy 0.9", lowrank_order="before", quantize="kmeans", kmeans_bits=8
    )
    assert lowrank["lowrank"] == {"energy": 0.9} and lowrank["lowrank_order"] == "before"
    assert lowrank["quantize"] == "kmeans" and lowrank["bits"] == 8
    assert candidate_for(quantize="float") == {
        "layer_amounts": {"stem.*": 0.5, "layer1.*": 0.25},
        "importance": "l1",
        "quantize": "float",
    }


def test_onnx_only_models_search_quantization_only():
    import optuna

    bench = SimpleNamespace(module=None)
    trial = optuna.trial.FixedTrial({"quantize": "kmeans", "kmeans_bits": 4})
    assert suggest(trial, bench, {}) == {"quantize": "kmeans", "bits": 4}


@pytest.mark.parametrize(
    ("candidate", "text"),
    [
        (
            {"layer_amounts": {"stem.*": 0.5}, "importance": "bn_scale", "quantize": "int8", "float_fallback": 0.003},
            "prune stem=0.50 (bn_scale, after network slimming) + int8 (float fallback at 0.003 drop)",
        ),
        (
            {"layer_amounts": {"stem.*": 0.5}, "lowrank": {"ratio": 0.5}, "lowrank_order": "before"},
            "tucker ratio 0.5 + prune stem=0.50 (l1)",
        ),
        (
            {
                "layer_amounts": {"stem.*": 0.5},
                "lowrank": {"ratio": 0.5},
                "lowrank_order": "after",
                "quantize": "kmeans",
            },
            "prune stem=0.50 (l1) + tucker ratio 0.5 + k-means 4-bit",
        ),
        ({"layer_amounts": {"stem.*": 0.0}, "importance": "bn_scale", "quantize": "float"}, "float baseline"),
    ],
)
def test_descriptions_name_every_stage_in_order(candidate, text):
    assert describe_candidate(candidate) == text


def test_a_lowrank_stage_that_replaced_nothing_is_dropped():
    candidate = candidate_for(lowrank="tucker", lowrank_rank="ratio 0.7", lowrank_order="after", quantize="float")
    nothing = {"stages": {"lowrank": {"decomposed": [], "skipped": {"stem.0": "MACs would be 1.20× the original"}}}}
    something = {"stages": {"lowrank": {"decomposed": ["layer1.conv1"], "skipped": {}}}}
    assert "lowrank" not in effective_candidate(candidate, nothing)
    assert effective_candidate(candidate, something) == candidate


def test_finalists_skip_candidates_that_build_the_same_model():
    from compressctl.advise.budget import Budget
    from compressctl.advise.search import choose_finalists

    def record(trial: int, stem: float, metric: float, size: int) -> dict:
        figures = {"metric": metric, "p50_ms": 1.0, "speedup": 5.0, "size_bytes": size, "float": {"macs": size}}
        candidate = {"layer_amounts": {"stem.*": stem}, "importance": "l1", "quantize": "int8"}
        return {"trial": trial, "candidate": candidate, "figures": figures, "violations": {}, "feasible": True}

    # stem 0.35 and 0.45 keep the same channel count after rounding: one full run is enough
    records = [record(0, 0.35, 0.98, 500), record(1, 0.45, 0.98, 500), record(2, 0.5, 0.97, 400)]
    assert [r["trial"] for r in choose_finalists(records, 3, Budget(min_speedup=2.0))] == [0, 2]
