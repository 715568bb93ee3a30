"""Every latency advise compares comes from a sitting with the baseline, timed in the measuring process.

A proxy's models (its float model and its final one) are timed in a short
sitting together with the baseline (``measure.sitting``: balanced order, fresh
sessions, a bootstrap interval): its speedup is a ratio measured under the
same conditions, not two absolute times taken minutes apart. The finalists
and the baseline are timed together in one longer sitting at the end.

Sittings run only in the process advise runs in (``measuring_process``), one
at a time: trials may be built on Ray workers or in local processes, but no
latency is taken on another machine or beside another sitting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compressctl.measure.sitting import SittingResult, SittingSettings

BASELINE = "baseline"
KEEPS_FLOAT = ("int8", "dynamic")  # quantize modes whose stage keeps float where its INT8 model is slower
# a proxy's sitting: a few rounds in two session sets, at most a few seconds
PROXY_SITTING = SittingSettings(
    warmup=3, min_rounds=20, max_rounds=400, max_seconds=5.0, target=0.03, sessions=2, bootstrap=200
)
_ONE_AT_A_TIME = threading.Lock()  # search threads (--jobs, Ray) wait here: sittings never overlap
BUILDERS: set[int] = set()  # pids of local builder processes (--jobs), paused while a sitting runs


def process_id() -> dict[str, Any]:
    """Who is running this: recorded as a trial's ``trained_by`` (builder) and ``timed_by`` (measurer)."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


@contextlib.contextmanager
def builders_paused() -> Iterator[None]:
    """Stop the local builder processes for the length of a sitting: training beside it would slow
    the models it times by whatever the training took from the cores."""
    stop, cont = getattr(signal, "SIGSTOP", None), getattr(signal, "SIGCONT", None)
    paused = []
    if stop is not None:
        for pid in list(BUILDERS):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, stop)
                paused.append(pid)
    try:
        yield
    finally:
        for pid in paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, cont)


def proxy_settings(bench: Any) -> SittingSettings:
    """A proxy's short sitting, with the recipe's statistic (the finalists' sitting uses it too)."""
    return dataclasses.replace(PROXY_SITTING, statistic=bench.recipe.report.statistic)


def sit_with_baseline(bench: Any, models: dict[str, Path], settings: SittingSettings | None = None) -> SittingResult:
    """Time ``models`` together with the baseline (the reference of every speedup) at the gate batch;
    a proxy's short sitting unless ``settings`` say otherwise."""
    from compressctl.measure.sitting import time_together

    paths = {BASELINE: Path(bench.baseline_path), **{name: Path(p) for name, p in models.items()}}
    with _ONE_AT_A_TIME, builders_paused():
        return time_together(
            paths,
            lambda name, session, batch: bench.feeds,
            provider=bench.provider,
            batch_sizes=[bench.batch_size],
            threads=bench.threads,
            settings=settings or proxy_settings(bench),
        )[0]


def timed(result: SittingResult, name: str) -> dict[str, Any]:
    """One model's figures from a sitting: its latency estimate, its speedup over the baseline and the interval."""
    stats = result.stats(name)
    point, low, high = result.speedups.get(name, (1.0, 1.0, 1.0))
    return {
        "latency_ms": stats["estimate_ms"],
        "speedup": point,
        "speedup_ci": [low, high],
    }


def sitting_summary(result: SittingResult) -> dict[str, Any]:
    """What a reader needs to trust a sitting's ratios: rounds, sessions, why it stopped, the statistic."""
    data = result.to_dict()
    keys = ("rounds", "sessions", "seconds", "stopped_by", "statistic", "noise_cv")
    return {**{k: data[k] for k in keys}, "timed_by": process_id()}


def time_proxy(bench: Any, built: dict[str, Any]) -> dict[str, Any]:
    """A built proxy's figures (``Workbench.build``) with the latencies of its float and final models,
    timed in one sitting with the baseline. Where its INT8 model is slower than its float one, the
    figures are the float model's (the quantize stage keeps float there) and ``slower_than_float``
    holds the INT8 model's."""
    figures = dict(built)
    float_path, final_path = figures.pop("float_path"), figures["params_path"]
    models = {}
    if float_path != str(bench.baseline_path):
        models["float"] = float_path
    if final_path != float_path:
        models["final"] = final_path
    result = sit_with_baseline(bench, models)
    figures["float"] = dict(figures["float"], **timed(result, "float" if "float" in models else BASELINE))
    figures.update(timed(result, "final" if "final" in models else next(iter(models), BASELINE)))
    if (
        figures.get("quantization") in KEEPS_FLOAT
        and "final" in models
        and figures["speedup"] < figures["float"]["speedup"]
    ):
        # The INT8 stage times its model against float and keeps float when INT8 is slower: so will the recipe.
        kept = ("metric", "accuracy_drop", "size_bytes", "latency_ms", "speedup", "speedup_ci")
        figures["slower_than_float"] = {k: figures[k] for k in kept}
        figures.update({k: figures["float"][k] for k in kept if k in figures["float"]}, params_path=float_path)
    figures["sitting"] = sitting_summary(result)
    figures["timed_by"] = figures["sitting"]["timed_by"]
    return figures


def time_finalists(bench: Any, models: dict[str, Path], settings: SittingSettings) -> tuple[dict, dict]:
    """The finalists' models and the baseline in one sitting: each one's figures, and the sitting's summary."""
    result = sit_with_baseline(bench, models, settings)
    return {name: timed(result, name) for name in models}, sitting_summary(result)
