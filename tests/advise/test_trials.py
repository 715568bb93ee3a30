"""Proxies timed with the baseline in sittings; trials built elsewhere (local processes, Ray) but timed here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compressctl.advise.budget import Budget
from tests.advise.test_advisor import REPORT, tiny_candidate
from tests.conftest import tiny_recipe, write_recipe

ROOMY = Budget(max_size_mb=100.0)  # every candidate meets it: no proxy calibration, one finalist


def test_a_proxy_is_timed_together_with_the_baseline(workspace):
    folder, _recipe, bench = workspace
    figures = bench.evaluate(tiny_candidate(quantize="int8"), folder / "proxy")
    for timed in (figures, figures["float"]):  # the float model and the INT8 one, in the same sitting
        low, high = timed["speedup_ci"]
        assert 0 < low <= timed["speedup"] <= high and timed["latency_ms"] > 0
    assert figures["float"]["speedup_ci"] != [1.0, 1.0]  # the pruned float model was timed, not copied
    sitting = figures["sitting"]
    assert sitting["rounds"] >= 10 and sitting["stopped_by"] in ("interval", "time budget", "max rounds")
    assert figures["timed_by"]["pid"] == figures["trained_by"]["pid"] == os.getpid()


def test_a_proxy_whose_int8_model_is_slower_than_its_float_one_counts_as_float(workspace):
    """The quantize stage keeps float where its INT8 model is slower: the proxy says what the recipe will do."""
    import shutil

    from compressctl.advise.timing import time_proxy

    folder, _recipe, bench = workspace
    pruned = bench.build(tiny_candidate(layer_amounts={"0": 0.75, "3": 0.75, "7": 0.75}), folder / "proxy-fast")
    unpruned = folder / "unpruned.onnx"
    shutil.copyfile(bench.baseline_path, unpruned)
    fast, slow = pruned["params_path"], str(unpruned)
    own = {"metric": 0.5, "accuracy_drop": 0.4, "size_bytes": 7}
    flt = {"metric": 0.8, "accuracy_drop": 0.1, "size_bytes": 9}
    # its "INT8" model (the unpruned copy) is slower than its float one (the pruned model): float is kept
    slower = time_proxy(bench, {"quantization": "int8", "float": flt, "float_path": fast, "params_path": slow, **own})
    assert slower["slower_than_float"]["speedup"] < slower["float"]["speedup"] == slower["speedup"]
    assert (slower["metric"], slower["size_bytes"], slower["slower_than_float"]["metric"]) == (0.8, 9, 0.5)
    # the other way round its own figures stand
    faster = time_proxy(bench, {"quantization": "int8", "float": flt, "float_path": slow, "params_path": fast, **own})
    assert "slower_than_float" not in faster and faster["speedup"] > faster["float"]["speedup"]
    assert faster["metric"] == 0.5
    # k-means is for size: its stage keeps what it made
    kmeans = time_proxy(bench, {"quantization": "kmeans", "float": flt, "float_path": fast, "params_path": slow, **own})
    assert "slower_than_float" not in kmeans and kmeans["metric"] == 0.5


def test_candidates_are_timed_again_together_before_the_finalists_are_chosen(workspace):
    """Proxies timed in separate short sittings are re-judged in one sitting: their order is the sitting's."""
    import shutil

    from compressctl.advise.finalists import retime

    folder, _recipe, bench = workspace
    pruned = bench.build(tiny_candidate(layer_amounts={"0": 0.75, "3": 0.75, "7": 0.75}), folder / "proxy-retimed")
    unpruned = folder / "unpruned-retimed.onnx"
    shutil.copyfile(bench.baseline_path, unpruned)
    budget = Budget(min_speedup=1.2, max_accuracy_drop=0.5)

    def record(trial: int, path, speedup: float, drop: float) -> dict:
        figures = {"speedup": speedup, "speedup_ci": [speedup, speedup], "latency_ms": 1.0, "metric": 0.9 - trial}
        figures.update(accuracy_drop=drop, size_bytes=trial, float={"macs": trial})
        return {"trial": trial, "figures": figures, "model_path": str(path), "violations": budget.violations(figures)}

    # their proxies' sittings had them the wrong way round; the third lost too much accuracy to matter
    fast, slow = record(0, pruned["params_path"], 1.0, 0.0), record(1, unpruned, 3.0, 0.0)
    inaccurate = record(2, pruned["params_path"], 1.0, 0.9)
    summary = retime(bench, [fast, slow, inaccurate], budget)
    assert summary["rounds"] >= 10 and summary["timed_by"]["pid"] == os.getpid()
    assert fast["figures"]["speedup"] > 1.2 > slow["figures"]["speedup"]  # the unpruned copy is about 1x
    assert fast["feasible"] and not slow["feasible"] and fast["proxy_sitting"]["speedup"] == 1.0
    assert "proxy_sitting" not in inaccurate and inaccurate["figures"]["speedup"] == 1.0


def test_search_ranks_by_the_sittings_speedup_not_by_latencies_from_different_sittings():
    from compressctl.advise.search import dominates

    faster = {"metric": 0.9, "speedup": 5.0, "latency_ms": 9.0, "size_bytes": 10}
    slower = {"metric": 0.9, "speedup": 4.0, "latency_ms": 1.0, "size_bytes": 10}  # timed in a fast minute
    assert dominates(faster, slower) and not dominates(slower, faster)
    assert Budget(max_latency_ms=2.0).violations({"latency_ms": 2.5}) == {"max_latency_ms": 0.5}


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_for_state(pid: int, wanted: bool) -> bool:
    """Whether the process is (``wanted``) or is not stopped within two seconds."""
    deadline = time.monotonic() + 2.0
    while (state(pid) == "T") != wanted and time.monotonic() < deadline:
        time.sleep(0.01)
    return (state(pid) == "T") == wanted


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_local_builders_are_paused_while_a_sitting_runs():
    from compressctl.advise import timing

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        timing.BUILDERS.add(child.pid)
        with timing.builders_paused():
            assert wait_for_state(child.pid, True)
        assert wait_for_state(child.pid, False)
    finally:
        timing.BUILDERS.discard(child.pid)
        child.kill()
        child.wait()


def test_jobs_build_in_local_processes_and_time_in_this_one(workspace):
    from concurrent.futures import ThreadPoolExecutor

    from compressctl.advise.trials import trial_evaluator

    folder, _recipe, bench = workspace
    candidates = [tiny_candidate(quantize="float"), tiny_candidate(quantize="int8")]
    with trial_evaluator(bench, jobs=2) as (evaluate, slots), ThreadPoolExecutor(2) as search_threads:
        found = list(search_threads.map(evaluate, candidates, [folder / "jobs-0", folder / "jobs-1"]))
    assert slots == 2
    for figures in found:
        assert figures["timed_by"]["pid"] == os.getpid() != figures["trained_by"]["pid"]
        assert figures["speedup_ci"][0] <= figures["speedup"] <= figures["speedup_ci"][1]


@pytest.fixture
def local_ray():
    import ray  # make test installs the ray extra: a missing ray fails loudly, it is not skipped

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_advise_on_ray_times_every_trial_in_the_measuring_process(workspace, local_ray):
    """An ONNX-only model keeps it short: calibration and quantization run on the Ray workers."""
    from compressctl.advise.advisor import advise
    from compressctl.recipe import load_recipe

    folder, _recipe, bench = workspace
    onnx_recipe = tiny_recipe(stages=[], report=REPORT)
    onnx_recipe["model"] = {"onnx": str(bench.baseline_path), "inputs": onnx_recipe["model"]["inputs"]}
    recipe = load_recipe(write_recipe(folder, onnx_recipe, "ray.yaml"))
    out = folder / "ray"
    result = advise(recipe, out, ROOMY, trials=2, finalists=1, analyse_layers=False, executor="ray", jobs=2)
    recorded = json.loads((out / "advise.json").read_text())
    assert len(recorded["trials"]) == 2 and recorded["executor"]["kind"] == "ray"
    measuring = recorded["executor"]["timed_by"]["pid"]
    assert measuring == os.getpid()
    for trial in recorded["trials"]:
        assert trial["timed_by"]["pid"] == measuring  # the latency came from the measuring process ...
        assert trial["trained_by"]["pid"] != measuring  # ... the proxy from a Ray worker
    assert result["recommended"] is not None
