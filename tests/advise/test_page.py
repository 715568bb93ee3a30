"""advise.html's plain-words findings for each family the search covers, ranked and cut to eight; the page."""

from __future__ import annotations

import re

from compressctl.advise.findings import MAX_WHY, explain, findings
from compressctl.advise.page import write_page
from tests.report.test_html import chart_divs, needs_browser, rendered_dom

AMOUNTS = {"stem.*": 0.5, "layer1.*": 0.5}
BASELINE = {"metric": 0.99, "latency_ms": 10.0, "size_bytes": 1_000_000, "macs": 40_000_000}


def timed(latency_ms: float) -> dict:
    """What a sitting with the baseline gives a model this fast (an interval of ±2 %)."""
    speedup = BASELINE["latency_ms"] / latency_ms
    return {"latency_ms": latency_ms, "speedup": speedup, "speedup_ci": [speedup * 0.98, speedup * 1.02]}


def trial(number: int, candidate: dict, latency: float, metric: float, size: int, **extra) -> dict:
    """A trial record; its float twin is twice as slow and four times as large, 0.1 pt more accurate."""
    flt = {"metric": metric + 0.001, "latency_ms": latency * 2, "size_bytes": size * 4, "macs": 10_000_000}
    flt.update(extra.pop("float", {}))
    flt.update(timed(flt["latency_ms"]), accuracy_drop=BASELINE["metric"] - flt["metric"])
    figures = {
        "metric": metric,
        "size_bytes": size,
        **timed(latency),
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


def family_trials() -> list[dict]:
    """One trial per family the search covers, with what its stages did."""
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
    return [
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
        trial(3, l1 | {"quantize": "float"}, 4.0, 0.986, 400_000, float={"latency_ms": 4.0, "size_bytes": 400_000}),
        trial(
            4,
            {"layer_amounts": AMOUNTS, "importance": "l2", "quantize": "kmeans", "bits": 4},
            4.1,
            0.984,
            60_000,
            float={"latency_ms": 4.0, "size_bytes": 400_000},
            figures={"stages": {"lowrank": narrow}, "kmeans": {"changed": 5}},
            suggested={"layer_amounts": AMOUNTS, "importance": "l2", "lowrank": {"ratio": 0.7}, "quantize": "kmeans"},
        ),
    ]


def test_findings_name_what_each_family_gave():
    trials = family_trials()
    text = "\n".join(findings(result_with(trials)))
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


SENSITIVITY = {
    "prune": {"stem.0": {"0.25": 0.0, "0.5": 0.004, "0.75": 0.03}, "layer1.conv1": {"0.25": 0.01, "0.5": 0.08}},
    "quantize": {"stem.0": 0.002, "layer1.conv1": 0.0},
    "latency_share": {"stem.0": 0.6, "layer1.conv1": 0.4},
}


def full_result(folder) -> dict:
    """Every family tried, two finalists timed in one sitting, the first recommended; recipes in ``folder``."""
    result = result_with(family_trials())
    for record in result["trials"]:
        record["recipe_path"] = str(folder / "candidates" / f"trial-{record['trial']:03d}.yaml")
    finalists = []
    for number, record in enumerate(result["trials"][:2], start=1):
        figures = dict(record["figures"], speedup=4.0 + number, speedup_ci=[3.9 + number, 4.2 + number])
        finalists.append(
            {
                "finalist": number,
                "description": f"candidate {number}",
                "figures": figures,
                "proxy": dict(record["figures"], speedup=(4.0 + number) * 1.25),
                "feasible": True,
                "recipe_path": str(folder / "finalists" / f"{number:02d}" / "recipe.yaml"),
            }
        )
    result.update(
        finalists=finalists,
        recommended=finalists[0],
        recommended_path=str(folder / "recommended.yaml"),
        sensitivity=SENSITIVITY,
        finalist_sitting={"rounds": 40, "sessions": 4, "statistic": "min", "stopped_by": "interval"},
    )
    result["explanation"] = explain(result)
    return result


def test_why_is_ranked_and_cut_to_eight(tmp_path):
    result = full_result(tmp_path)
    every, why = findings(result), explain(result)
    assert len(every) > MAX_WHY == len(why) == 8 and why == every[:8]
    # the first sentence of each topic, in rank order: the winner, the timing, ..., what was not measured
    assert why[0].startswith("candidate 1 won among the 2 finalists") and why[1].startswith("Timing:")
    assert why[-1].startswith("Distillation was not part")
    assert not any(line.startswith("Same candidate with and without") for line in why)  # a second sentence


def test_timing_sentence_states_the_sitting(tmp_path):
    text = "\n".join(findings(full_result(tmp_path)))
    assert "timed together in one sitting (40 rounds in 4 session sets" in text and "the min of each" in text
    assert "interval of a finalist's speedup is ±3%" in text  # finalist 1: 5.0x in [4.9, 5.2]
    assert "differ from their proxies' by up to 25%" in text  # each proxy measured 1.25 times its finalist


def test_page_reads_top_down_with_one_speedup_each_and_recipe_links(tmp_path):
    path = tmp_path / "advise.html"
    write_page(full_result(tmp_path), path)
    page = path.read_text()
    order = [page.index(mark) for mark in ('data-chart="pareto"', "<h2>Recommendation", "<h2>Why", "<h2>Finalists")]
    assert order == sorted(order)
    why = page[page.index("<h2>Why") : page.index("<h2>Finalists")]
    assert why.count("<li>") == 8
    assert '<a href="candidates/trial-003.yaml">' in page and '<a href="finalists/02/recipe.yaml">' in page
    assert '<a href="recommended.yaml">recommended.yaml</a>' in page
    assert "5.00x [4.90-5.20]" in page and "in its report" not in page  # one speedup, with its interval
    # one plotly.js beside the page, shared by its three charts
    assert page.count("<script src=") == 1 and page.count('class="chart"') == 3
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000 and len(page) < 100_000
    assert not re.search(r'src="(https?:)?//', page)


@needs_browser
def test_page_charts_render_in_a_browser(tmp_path):
    path = tmp_path / "advise.html"
    write_page(full_result(tmp_path), path)
    charts = chart_divs(rendered_dom(path))
    assert set(charts) == {"pareto", "prune", "latency-share"}
    for name, markup in charts.items():
        assert 'class="main-svg"' in markup, f"chart {name} did not render"
    assert "trace scatter" in charts["pareto"] and "speedup (timed with the baseline" in charts["pareto"]
