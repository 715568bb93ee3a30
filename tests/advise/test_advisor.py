"""``advise`` end to end on the tiny digits CNN: each constraint kind is respected, ONNX-only models work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from compressctl.advise.budget import MB, Budget
from tests.conftest import tiny_recipe, write_recipe

ADVISE_STAGES = [
    {"type": "train", "epochs": 2, "lr": 0.01},
    {"type": "finetune", "epochs": 1, "lr": 0.01},
    {"type": "export", "dynamo": False},
    {"type": "quantize", "mode": "static", "calibration": {"method": "minmax", "samples": 128}},
]
# batch 256 keeps the tiny model compute-bound, so its speedups rise above timing noise
REPORT = {"providers": ["CPUExecutionProvider"], "batch_sizes": [256], "warmup": 2, "repeat": 10}


def advise_recipe_path(folder: Path) -> Path:
    return write_recipe(folder, tiny_recipe(stages=ADVISE_STAGES, report=REPORT))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One folder for every run of this module: the baseline's train stage is trained once and reused."""
    from compressctl.advise.advisor import prepare
    from compressctl.recipe import load_recipe

    folder = tmp_path_factory.mktemp("advise")
    recipe = load_recipe(advise_recipe_path(folder))
    bench, _report = prepare(recipe, folder / "out", ["CPUExecutionProvider"])
    return folder, recipe, bench


def budget_for(kind: str, bench) -> tuple[Budget, float]:
    """A satisfiable limit of one kind, from the baseline's own figures."""
    limits = {
        "min_speedup": 1.05,
        "max_latency_ms": bench.baseline["p50_ms"] * 0.95,
        "max_size_mb": bench.baseline["size_bytes"] * 0.6 / MB,
        "max_accuracy_drop": 0.2,
    }
    return Budget(**{kind: limits[kind]}), limits[kind]


def meets(kind: str, limit: float, figures: dict) -> bool:
    """Checked directly on the figures, not through Budget, so a Budget bug cannot hide here."""
    if kind == "min_speedup":
        return figures["speedup"] >= limit
    if kind == "max_latency_ms":
        return figures["p50_ms"] <= limit
    if kind == "max_size_mb":
        return figures["size_bytes"] <= limit * 1_000_000
    return figures["accuracy_drop"] <= limit


@pytest.mark.parametrize("kind", ["min_speedup", "max_latency_ms", "max_size_mb", "max_accuracy_drop"])
def test_search_respects_each_constraint_kind(workspace, kind):
    from compressctl.advise.advisor import advise

    folder, recipe, bench = workspace
    budget, limit = budget_for(kind, bench)
    result = advise(recipe, folder / "out", budget, trials=2, finalists=1, analyse_layers=False)

    feasible = [t for t in result["trials"] if t["feasible"]]
    assert feasible, f"no proxy met {kind} <= {limit}: {[t['figures'] for t in result['trials']]}"
    # proxies (short fine-tuning) are judged against a limit widened by the measured proxy gap
    proxy_limit = result["proxy_budget"][kind]
    assert proxy_limit == limit if kind != "max_accuracy_drop" else proxy_limit >= limit
    for trial in result["trials"]:
        assert trial["feasible"] == meets(kind, proxy_limit, trial["figures"])
    best = result["recommended"]
    assert meets(kind, limit, best["figures"])
    # the recommendation's figures come from a real apply run whose gates encode the budget
    report = yaml.safe_load(Path(best["report_path"]).read_text())
    assert report["passed"] and {g["name"] for g in report["gates"]} >= {
        kind if kind != "max_size_mb" else "max_size_ratio"
    }
    assert (folder / "out" / "recommended.yaml").is_file()


def test_recommended_recipe_reproduces(workspace):
    """recommended.yaml is an ordinary recipe; applying it meets the budget with the same accuracy."""
    from compressctl.advise.advisor import advise
    from compressctl.pipeline import apply

    folder, recipe, _bench = workspace
    budget = Budget(max_accuracy_drop=0.2)
    result = advise(recipe, folder / "out", budget, trials=1, finalists=1)
    stages = yaml.safe_load((folder / "out" / "recommended.yaml").read_text())["stages"]
    assert stages[-1]["type"] == "quantize" and stages[-1]["format"] in ("qdq", "qoperator")  # pinned, not re-measured
    report = apply(folder / "out" / "recommended.yaml", folder / "again")
    assert report["passed"]
    final = next(m for m in report["models"] if m["name"] == "final")
    assert final["metrics"]["accuracy"] == pytest.approx(result["recommended"]["figures"]["metric"], abs=1e-9)
    sensitivity = result["sensitivity"]
    assert set(sensitivity["prune"]) == {"0", "3", "7"}  # the CNN's convs and hidden Linear; the head is kept
    assert sensitivity["quantize"] and abs(sum(sensitivity["latency_share"].values()) - 1) < 0.01
    # fused kernels (Conv+BN+ReLU) are traced back to the layers they came from
    assert sum(v for k, v in sensitivity["latency_share"].items() if not k.startswith("other ")) > 0.5
    page = (folder / "out" / "advise.html").read_text()
    assert "Pareto" in page and "Layer sensitivity" in page and "plotly" in page.lower()
    assert "<script src=" not in page and len(page) > 1_000_000  # plotly.js is inline: the page works offline


def test_onnx_only_model_searches_quantization(workspace):
    from compressctl.advise.advisor import advise
    from compressctl.recipe import load_recipe

    folder, _recipe, bench = workspace
    onnx_recipe = tiny_recipe(stages=[], report=REPORT)
    onnx_recipe["model"] = {"onnx": str(bench.baseline_path), "inputs": onnx_recipe["model"]["inputs"]}
    path = write_recipe(folder, onnx_recipe, "onnx.yaml")
    result = advise(
        load_recipe(path),
        folder / "onnx-out",
        Budget(max_accuracy_drop=0.05),
        trials=2,
        finalists=1,
        analyse_layers=False,
    )
    assert all("layer_amounts" not in t["candidate"] for t in result["trials"])
    stages = yaml.safe_load((folder / "onnx-out" / "recommended.yaml").read_text())["stages"]
    assert [s["type"] for s in stages] == ["quantize"]
