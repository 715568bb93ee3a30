"""advise.html's plain-words findings for each family the search covers."""

from __future__ import annotations

from compressctl.advise.page import explain, write_page

AMOUNTS = {"stem.*": 0.5, "layer1.*": 0.5}
BASELINE = {"metric": 0.99, "p50_ms": 10.0, "size_bytes": 1_000_000, "macs": 40_000_000}


def trial(number: int, candidate: dict, p50: float, metric: float, size: int, **extra) -> dict:
    """A trial record; its float twin is twice as slow and four times as large, 0.1 pt more accurate."""
    flt = {"metric": metric + 0.001, "p50_ms": p50 * 2, "size_bytes": size * 4, "macs": 10_000_000}
    flt.update(extra.pop("float", {}))
    flt.update(speedup=BASELINE["p50_ms"] / flt["p50_ms"], accuracy_drop=BASELINE["metric"] - flt["metric"])
    figures = {
        "metric": metric,
        "p50_ms": p50,
        "size_bytes": size,
        "speedup": BASELINE["p50_ms"] / p50,
        "accuracy_drop": BASELINE["metric"] - metric,
        "float": flt,
        **extra.pop("figures", {}),
    }
    return {"trial": number, "candidate": candidate, "figures": figures, "feasible": True, "violations": {}, **extra}


def result_with(trials: list[dict]) -> dict:
    return {
        "recipe": "r",
        "provider": "CPUExecutionProvider",
        "batch_size": 32,
        "budget": {"min_speedup": 2.0},
        "proxy_budget": {"min_speedup": 2.0},
        "baseline": BASELINE,
        "sensitivity": {"prune": {}, "quantize": {}, "latency_share": {}},
        "trials": trials,
        "pareto_front": [t["trial"] for t in trials],
        "finalists": [],
        "recommended": None,
        "seconds": 1.0,
    }


def test_findings_name_what_each_family_gave():
    l1 = {"layer_amounts": AMOUNTS, "importance": "l1", "quantize": "int8", "float_fallback": 0.003}
    slimmed = dict(l1, importance="bn_scale")
    lowrank = dict(l1, lowrank={"ratio": 0.5}, lowrank_order="after")
    scales = {
        "bn_scales_before": {"median": 0.9, "small_share": 0.0},
        "bn_scales_after": {"median": 0.6, "small_share": 0.2},
    }
    fallback = {"max_accuracy_drop": 0.003, "int8_drop": 0.0, "float_nodes": 0, "met": True}
    narrow = {
        "decomposed": [],
        "macs_before": 0,
        "macs_after": 0,
        "skipped": {"stem.0": "MACs would be 1.20× the original"},
    }
    trials = [
        trial(0, l1, 2.0, 0.985, 100_000, figures={"fallback": fallback}),
        trial(1, slimmed, 2.0, 0.988, 100_000, figures={"fallback": fallback, "stages": {"slimming": scales}}),
        trial(
            2,
            lowrank,
            2.5,
            0.980,
            90_000,
            float={"macs": 5_000_000},
            figures={
                "fallback": dict(fallback, float_nodes=2, int8_drop=0.01),
                "stages": {
                    "lowrank": {"decomposed": ["layer1.conv1"], "macs_before": 8, "macs_after": 4, "skipped": {}}
                },
            },
        ),
        trial(3, l1 | {"quantize": "float"}, 4.0, 0.986, 400_000, float={"p50_ms": 4.0, "size_bytes": 400_000}),
        trial(
            4,
            {"layer_amounts": AMOUNTS, "importance": "l2", "quantize": "kmeans", "bits": 4},
            4.1,
            0.984,
            60_000,
            float={"p50_ms": 4.0, "size_bytes": 400_000},
            figures={"stages": {"lowrank": narrow}, "kmeans": {"clustered": 5}},
            suggested={"layer_amounts": AMOUNTS, "importance": "l2", "lowrank": {"ratio": 0.7}, "quantize": "kmeans"},
        ),
    ]
    text = "\n".join(explain(result_with(trials)))
    assert "Network slimming" in text and "median scale from 0.90 to 0.60" in text
    assert "slimmed candidates ended +0.30 pt" in text  # trial 1 against its l1 twin, trial 0
    assert "replaced no conv in 1 of 2" in text and "MACs would be 1.20× the original" in text
    assert "Same candidate with and without tucker ratio 0.5" in text
    assert "k-means 4-bit shrank the file to 0.15x" in text and "not latency" in text
    assert "float fallback returned nodes to float in 1 of 3" in text
    assert "Distillation was not part of this search space" in text


def test_page_lists_what_each_trial_did(tmp_path):
    lowrank = {"decomposed": ["a", "b"], "macs_before": 10, "macs_after": 4, "skipped": {}}
    record = trial(
        0,
        {"layer_amounts": AMOUNTS, "importance": "l1", "lowrank": {"ratio": 0.5}, "quantize": "int8"},
        2.0,
        0.98,
        100_000,
        figures={"stages": {"lowrank": lowrank}, "fallback": {"float_nodes": 3, "int8_drop": 0.01}},
    )
    result = result_with([record])
    result["explanation"] = explain(result)
    write_page(result, tmp_path / "advise.html")
    page = (tmp_path / "advise.html").read_text()
    assert "low-rank replaced 2 convs (MACs 0.40x); 3 nodes back to float" in page


def test_timing_spread_between_sessions_is_stated():
    result = result_with([])
    figures = {"speedup": 5.0, "p50_ms": 1.0, "session_p50s": [1.3, 1.0, 1.05, 1.32]}
    result["finalists"] = [{"finalist": 2, "figures": figures, "proxy": {"p50_ms": 1.25}}]
    text = "\n".join(explain(result))
    assert "timed side by side, 4 fresh sessions each" in text and "sessions differed by up to 32%" in text
    assert "(its proxy) by up to 25%" in text
