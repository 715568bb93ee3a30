"""Executors that run a zoo's recipes: a local pool of processes, or Ray tasks on a cluster.

The local executor runs ``jobs`` recipes at a time; the Ray executor (``pip install
'compressctl[ray]'``) spreads the same subprocesses over a Ray cluster, at most ``jobs`` in
flight when given. Stage outputs and measurements are cached in each recipe's folder, so a
second run over an unchanged zoo only checks keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from compressctl.batch.discover import ZooEntry, discover
from compressctl.batch.process import BatchResult, RecipeResult, kill_running, run_recipe, write_summary
from compressctl.errors import UserError

log = logging.getLogger("compressctl")

OnResult = Callable[[RecipeResult], None]
# Each Ray task holds one CPU for its recipe's process, and that process gets one training thread.
RAY_CPUS_PER_TASK = 1


OnResult = Callable[[RecipeResult], None]


def _schedule(
    entries: list[ZooEntry],
    out: Path,
    *,
    limit: int,
    keep_going: bool,
    submit: Callable[[ZooEntry], Any],
    wait_one: Callable[[list[Any]], list[Any]],
    collect: Callable[[Any, ZooEntry], RecipeResult],
    on_result: OnResult,
) -> list[RecipeResult]:
    """Keep ``limit`` recipes running; the first failure stops new starts unless ``keep_going``."""
    results: dict[str, RecipeResult] = {}
    pending = list(entries)
    running: dict[Any, ZooEntry] = {}
    stop = False
    while pending or running:
        while pending and len(running) < limit and not stop:
            entry = pending.pop(0)
            running[submit(entry)] = entry
        if stop and not running:
            break
        for handle in wait_one(list(running)):
            result = collect(handle, running.pop(handle))
            results[result.name] = result
            on_result(result)
            if _is_error(result) and not keep_going:
                stop = True
    for entry in pending:
        results[entry.name] = _skipped(entry, out)
    return [results[e.name] for e in entries]


def run_local(
    entries: list[ZooEntry],
    out: Path,
    *,
    jobs: int,
    keep_going: bool,
    timeout: float | None,
    extra_args: list[str],
    on_result: OnResult,
) -> list[RecipeResult]:
    """``jobs`` recipes at a time, each in its own process; threads split so they do not oversubscribe."""
    threads = max(1, _cpus() // jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool, _killing_children_on_interrupt():

        def submit(entry: ZooEntry) -> Future:
            log.info("%s: started (%s)", entry.name, entry.recipe)
            return pool.submit(
                run_recipe, entry, out / entry.name, timeout=timeout, threads=threads, extra_args=extra_args
            )

        return _schedule(
            entries,
            out,
            limit=jobs,
            keep_going=keep_going,
            submit=submit,
            wait_one=lambda running: list(wait(running, return_when=FIRST_COMPLETED)[0]),
            collect=lambda future, entry: future.result(),
            on_result=on_result,
        )


def run_ray(
    entries: list[ZooEntry],
    out: Path,
    *,
    jobs: int | None,
    keep_going: bool,
    timeout: float | None,
    extra_args: list[str],
    address: str | None,
    on_result: OnResult,
) -> list[RecipeResult]:
    """Each recipe is one Ray task running the same isolated subprocess on whichever node has a free CPU.

    Every node must see ``out`` and the recipes at the same paths (a shared file system) and have
    compressctl installed; results come back as task return values and are summarised here.
    """
    ray = connect_ray(address)
    remote = ray.remote(num_cpus=RAY_CPUS_PER_TASK, max_retries=0)(run_recipe)

    def submit(entry: ZooEntry) -> Any:
        log.info("%s: submitted to Ray", entry.name)
        return remote.remote(entry, out / entry.name, timeout=timeout, threads=RAY_CPUS_PER_TASK, extra_args=extra_args)

    def collect(ref: Any, entry: ZooEntry) -> RecipeResult:
        try:
            return ray.get(ref)
        except Exception as exc:  # the task itself died (node lost, worker killed)
            reason = f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            return RecipeResult(entry.name, str(entry.recipe), "crashed", None, 0.0, str(out / entry.name), reason)

    return _schedule(
        entries,
        out,
        limit=ray_tasks_in_flight(jobs, len(entries)),
        keep_going=keep_going,
        submit=submit,
        wait_one=lambda running: ray.wait(running, num_returns=1)[0],
        collect=collect,
        on_result=on_result,
    )


def connect_ray(address: str | None) -> Any:
    """The ``ray`` module, connected to ``address`` (a new local instance without one, or the one already up)."""
    try:
        import ray
    except ImportError:
        raise UserError("the Ray executor needs Ray: pip install 'compressctl[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(
                f"cannot connect to the Ray cluster at {address or 'a new local instance'}: {exc}"
            ) from None
    return ray


def ray_tasks_in_flight(jobs: int | None, recipes: int) -> int:
    """How many recipes the Ray executor keeps submitted at once: ``jobs`` when given, else all of them.

    Without ``jobs`` every recipe is submitted and Ray starts each when a CPU is free (one per free CPU).
    """
    if jobs is None:
        return max(1, recipes)
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {jobs})")
    return max(1, min(jobs, recipes))


@contextlib.contextmanager
def _killing_children_on_interrupt() -> Iterator[None]:
    try:
        yield
    except BaseException:
        kill_running()
        raise


def _is_error(result: RecipeResult) -> bool:
    # A failed gate is a result, not an error: the batch goes on measuring the rest of the zoo.
    return result.status not in ("passed", "gate_failed")


def _skipped(entry: ZooEntry, out: Path) -> RecipeResult:
    return RecipeResult(
        entry.name,
        str(entry.recipe),
        "skipped",
        None,
        0.0,
        str(out / entry.name),
        "not run: an earlier recipe failed (use --keep-going to run every recipe)",
    )


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_batch(
    paths: Iterable[Path],
    output_dir: Path,
    *,
    jobs: int | None = None,
    keep_going: bool = False,
    timeout: float | None = None,
    executor: str = "local",
    address: str | None = None,
    extra_args: list[str] | None = None,
    wait_lock: float = 0.0,
    on_result: OnResult | None = None,
) -> BatchResult:
    """Run every recipe of the zoo into ``output_dir/<name>`` and write the zoo summary there.

    ``jobs`` is the most recipes running at once, for either executor; without it the local executor
    runs one at a time and Ray one per free CPU of the cluster.
    """
    from compressctl.lock import OutputLock

    entries = discover(paths)
    out = Path(output_dir).resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {out} exists and is a file")
    callback = on_result or (lambda result: None)
    started = time.perf_counter()
    with OutputLock(out, wait=wait_lock):
        log.info("batch of %d recipes into %s (%s executor)", len(entries), out, executor)
        if executor == "local":
            results = run_local(
                entries,
                out,
                jobs=jobs or 1,
                keep_going=keep_going,
                timeout=timeout,
                extra_args=extra_args or [],
                on_result=callback,
            )
        elif executor == "ray":
            results = run_ray(
                entries,
                out,
                jobs=jobs,
                keep_going=keep_going,
                timeout=timeout,
                extra_args=extra_args or [],
                address=address,
                on_result=callback,
            )
        else:
            raise UserError(f"unknown executor '{executor}' (choose local or ray)")
        batch = BatchResult(results, time.perf_counter() - started, out)
        write_summary(batch)
    return batch
