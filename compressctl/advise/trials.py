"""Where a trial's proxy is built: in this process, in local processes (``--jobs N``), or on Ray workers
(``--executor ray``). Wherever it is built, its latency is timed here, in a sitting with the baseline.

Building (the short fine-tune, export, calibration, quantization, the metric)
needs no quiet machine and scales out; timing does: a latency taken on another
machine, or beside a training process, is not comparable with the baseline's.
So a builder returns the proxy's files and untimed figures, and the measuring
process (the one advise runs in) times them one sitting at a time
(``advise.timing``). Local builders are paused while a sitting runs; Ray
workers on other nodes cannot disturb it (keep the driver's node free of Ray
tasks, ``ray start --num-cpus 0``, for the same on a cluster).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from compressctl.errors import UserError

log = logging.getLogger("compressctl")

Evaluate = Callable[[dict[str, Any], Path], dict[str, Any]]
EXECUTORS = ("local", "ray")

_BENCH: Any = None  # the workbench of a local builder process (set once, by ``_start_builder``)


def _share_of_cpus(bench: Any, threads: int) -> Any:
    """The workbench as a builder uses it: ``threads`` for training and for its metric sessions."""
    import torch

    torch.set_num_threads(threads)
    bench.threads = threads
    return bench


def _start_builder(bench: Any, threads: int, pids: Any) -> None:
    import os

    global _BENCH
    _BENCH = _share_of_cpus(bench, threads)
    pids.put(os.getpid())


def _build_here(candidate: dict[str, Any], folder: str) -> dict[str, Any]:
    return _BENCH.build(candidate, Path(folder))


def _build_on_ray(bench: Any, candidate: dict[str, Any], folder: str) -> dict[str, Any]:
    from compressctl.batch.executors import RAY_CPUS_PER_TASK

    return _share_of_cpus(bench, RAY_CPUS_PER_TASK).build(candidate, Path(folder))


def timed_after(bench: Any, build: Callable[[dict[str, Any], str], dict[str, Any]]) -> Evaluate:
    """``evaluate(candidate, folder)``: built by ``build`` (elsewhere), then timed in this process."""
    from compressctl.advise.timing import time_proxy

    def evaluate(candidate: dict[str, Any], folder: Path) -> dict[str, Any]:
        return time_proxy(bench, build(candidate, str(Path(folder).resolve())))

    return evaluate


@contextlib.contextmanager
def local_builders(bench: Any, jobs: int) -> Iterator[Evaluate]:
    """``jobs`` builder processes, each with its share of the CPUs; paused while this process times."""
    from concurrent.futures import ProcessPoolExecutor

    from compressctl.advise import timing
    from compressctl.measure.latency import default_threads

    context = multiprocessing.get_context("spawn")  # no forked copy of this process's thread pools
    pids, draining = context.SimpleQueue(), threading.Lock()
    threads = max(1, default_threads() // jobs)
    log.info("advise: %d builder processes (%d threads each); latency timed in this process", jobs, threads)
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_start_builder, initargs=(bench, threads, pids)
    ) as pool:

        def build(candidate: dict[str, Any], folder: str) -> dict[str, Any]:
            built = pool.submit(_build_here, candidate, folder).result()
            with draining:  # every builder that has started work has put its pid by now
                while not pids.empty():
                    timing.BUILDERS.add(pids.get())
            return built

        try:
            yield timed_after(bench, build)
        finally:
            timing.BUILDERS.clear()


@contextlib.contextmanager
def ray_builders(bench: Any, jobs: int | None, address: str | None) -> Iterator[tuple[Evaluate, int]]:
    """Each proxy built by one Ray task (one CPU) on any node of the cluster, ``bench`` sent once; ``jobs``
    tasks in flight (default: one per CPU of the cluster)."""
    from compressctl.batch.executors import RAY_CPUS_PER_TASK, connect_ray

    ray = connect_ray(address)
    shared = ray.put(bench)
    remote = ray.remote(num_cpus=RAY_CPUS_PER_TASK, max_retries=0)(_build_on_ray)
    slots = jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
    log.info("advise: proxies built by %d Ray tasks at a time; latency timed in this process", slots)
    yield timed_after(bench, lambda candidate, folder: ray.get(remote.remote(shared, candidate, folder))), slots


def check_executor(executor: str, jobs: int | None) -> None:
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor '{executor}' (choose {' or '.join(EXECUTORS)})")
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {jobs})")


@contextlib.contextmanager
def trial_evaluator(
    bench: Any, *, executor: str = "local", jobs: int | None = None, address: str | None = None
) -> Iterator[tuple[Evaluate, int]]:
    """``(evaluate, slots)``: how the search builds and times a candidate, and how many trials run at once.

    ``-j 1`` (the default) builds in this process; ``--executor ray`` with ``-j N`` keeps N Ray tasks in flight.
    """
    check_executor(executor, jobs)
    if executor == "ray":
        with ray_builders(bench, jobs, address) as found:
            yield found
    elif (jobs or 1) > 1:
        with local_builders(bench, jobs or 1) as evaluate:
            yield evaluate, jobs or 1
    else:
        yield bench.evaluate, 1
