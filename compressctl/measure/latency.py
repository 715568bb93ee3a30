"""Latency on ONNX Runtime execution providers: warm-up, repeats, percentiles.

Thread counts are fixed and recorded. The provider that really ran is read
back from the session, because ONNX Runtime falls back to CPU silently when a
provider cannot be initialised.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compressctl.errors import UserError


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def check_providers(requested: list[str]) -> None:
    """Exit-2 error for a provider this ONNX Runtime build does not have."""
    available = available_providers()
    missing = [p for p in requested if p not in available]
    if missing:
        raise UserError(
            f"execution provider {', '.join(missing)} is not available in this onnxruntime build "
            f"(available: {', '.join(available)})"
        )


def make_session(
    path: Path,
    provider: str = "CPUExecutionProvider",
    threads: int | None = None,
    *,
    spinning: bool = True,
    profile_prefix: str | None = None,
    optimized_path: Path | None = None,
    level: str = "all",
) -> Any:
    """An ONNX Runtime session; the only place compressctl opens one.

    Threads are fixed (default: the CPUs this process may use); ``spinning=False``
    for sittings (see ``measure.sitting``); ``profile_prefix`` turns ONNX
    Runtime's profiler on; ``optimized_path`` saves the graph ONNX Runtime runs,
    after graph optimisation at ``level`` (basic | extended | all).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)


@dataclass
class LatencyResult:
    provider: str
    requested_provider: str
    fallback: bool
    batch_size: int
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    throughput_per_s: float
    runs: int
    warmup: int
    samples_ms: list[float]

    def to_dict(self, with_samples: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not with_samples:
            data.pop("samples_ms")
        return data


def time_session(
    session: Any, feeds: dict[str, np.ndarray], *, warmup: int, repeat: int, max_seconds: float
) -> list[float]:
    """Run ``warmup`` untimed then up to ``repeat`` timed runs (stopping at ``max_seconds``)."""
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    deadline = time.perf_counter() + max_seconds
    for _ in range(repeat):
        start = time.perf_counter()
        session.run(None, feeds)
        end = time.perf_counter()
        times.append((end - start) * 1000.0)
        if end > deadline and len(times) >= 5:
            break
    return times


def summarize(times_ms: list[float], batch_size: int) -> dict[str, float]:
    arr = np.asarray(times_ms)
    p50 = float(np.percentile(arr, 50))
    return {
        "p50_ms": p50,
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
        "std_ms": float(arr.std()),
        "min_ms": float(arr.min()),
        "throughput_per_s": batch_size * 1000.0 / p50 if p50 > 0 else 0.0,
    }


def measure_latency(
    path: Path,
    feeds: dict[str, np.ndarray],
    *,
    provider: str,
    batch_size: int,
    threads: int,
    warmup: int = 10,
    repeat: int = 100,
    max_seconds: float = 60.0,
) -> LatencyResult:
    session = make_session(path, provider, threads)
    ran = session.get_providers()[0]
    times = time_session(session, feeds, warmup=warmup, repeat=repeat, max_seconds=max_seconds)
    return LatencyResult(
        provider=ran,
        requested_provider=provider,
        fallback=ran != provider,
        batch_size=batch_size,
        threads=threads,
        runs=len(times),
        warmup=warmup,
        samples_ms=[round(t, 4) for t in times],
        **summarize(times, batch_size),
    )


def batch_feeds(session_inputs: list[Any], pool: Any, batch_size: int) -> dict[str, np.ndarray]:
    """A batch of ``batch_size`` made by tiling real samples from ``pool``.

    ``pool`` is a ``data.Split`` (each input batched on its own axis, constants
    fed whole) or a list of arrays batched on their first axis.
    """
    from compressctl.data import Split

    split = pool if isinstance(pool, Split) else Split(list(pool), None)
    return {meta.name: array for meta, array in zip(session_inputs, split.tiled(batch_size), strict=False)}
