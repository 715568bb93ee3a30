"""Runs a model zoo: many recipes, each isolated in its own process, summarised in one index.

Each recipe runs as ``python -m compressctl apply RECIPE -o DIR/<name> --json``
in a fresh interpreter, so a crash, an out-of-memory kill or a hang in one
recipe costs that recipe only. The local executor runs ``jobs`` of them at a
time; the Ray executor (``pip install 'compressctl[ray]'``) spreads the same
subprocesses over a Ray cluster. Stage outputs and measurements are cached in
each recipe's folder, so a second run over an unchanged zoo only checks keys.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compressctl.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_STAGE_FAILED, UserError
from compressctl.fsutil import atomic_write_text

log = logging.getLogger("compressctl")

RECIPE_SUFFIXES = (".yaml", ".yml")
# apply's exit code → the status a recipe gets in the summary
STATUS_BY_EXIT = {
    EXIT_OK: "passed",
    EXIT_GATE_FAILED: "gate_failed",
    EXIT_BAD_INPUT: "bad_input",
    EXIT_STAGE_FAILED: "failed",
    EXIT_INTERRUPTED: "interrupted",
}


@dataclass
class ZooEntry:
    """One recipe of the zoo: its file and the folder name its run gets under the batch output."""

    name: str
    recipe: Path


@dataclass
class RecipeResult:
    name: str
    recipe: str
    status: str  # passed | gate_failed | failed | bad_input | timeout | crashed | interrupted | skipped
    exit_code: int | None
    seconds: float
    output_dir: str
    error: str = ""
    report: dict[str, Any] | None = field(default=None, repr=False)
    # host:pid of the process that ran it (the batch itself locally, a Ray worker on a cluster)
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    @property
    def ok(self) -> bool:
        return self.status == "passed"


# -- the zoo ------------------------------------------------------------------------------------
def discover(paths: Iterable[Path]) -> list[ZooEntry]:
    """Recipes from folders (every *.yaml/*.yml, sorted) and zoo files (a YAML list or ``recipes:`` list)."""
    entries: list[ZooEntry] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in RECIPE_SUFFIXES and p.is_file())
            if not files:
                raise UserError(f"{path}: no recipes (*.yaml, *.yml) in this folder")
            entries += [ZooEntry(recipe_name(f), f) for f in files]
        elif path.is_file():
            entries += _zoo_or_recipe(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    seen: dict[str, Path] = {}
    for entry in entries:
        if entry.name in seen:
            raise UserError(
                f"two recipes are named '{entry.name}' ({seen[entry.name]} and {entry.recipe}); "
                "each recipe of a zoo needs its own name, because it names the output folder"
            )
        seen[entry.name] = entry.recipe
    if not entries:
        raise UserError("no recipes given")
    return entries


def _zoo_or_recipe(path: Path) -> list[ZooEntry]:
    """A zoo file lists recipes (paths relative to it); any other YAML file is a recipe itself."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from None
    listed = data.get("recipes") if isinstance(data, dict) and "stages" not in data else data
    if isinstance(listed, list):
        entries = []
        for i, item in enumerate(listed):
            if not isinstance(item, str):
                raise UserError(f"{path}: recipes[{i}] must be a path to a recipe file (got {item!r})")
            recipe = (path.parent / item).resolve() if not Path(item).is_absolute() else Path(item)
            if not recipe.is_file():
                raise UserError(f"{path}: recipes[{i}]: no such file {recipe}")
            entries.append(ZooEntry(recipe_name(recipe), recipe))
        return entries
    if isinstance(data, dict) and "stages" in data:
        return [ZooEntry(recipe_name(path), path)]
    raise UserError(f"{path}: neither a recipe nor a zoo file (a list of recipe paths, or `recipes: [...]`)")


def recipe_name(path: Path) -> str:
    """The recipe's ``name`` (the folder its run gets), else the file stem; apply validates the rest."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        data = None
    name = data.get("name") if isinstance(data, dict) else None
    name = str(name) if name else path.stem
    if "/" in name or name in (".", ".."):
        raise UserError(f"{path}: recipe name '{name}' cannot name a folder")
    return name


# -- one recipe, isolated ------------------------------------------------------------------------
# Child processes run in their own session (a Ctrl-C on the terminal reaches the batch only), so the
# batch kills the ones still running when it is interrupted.
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def kill_running() -> None:
    with _LIVE_LOCK:
        processes = list(_LIVE)
    for process in processes:
        _kill_group(process)


def child_env(threads: int | None) -> dict[str, str]:
    """The environment of one recipe's process: no colour, and no more threads than its share of the CPUs."""
    env = dict(os.environ)
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        # Training and data loading threads; report.threads (the latency contract) is left to the recipe.
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(name, str(threads))
    return env


def apply_command(recipe: Path, output_dir: Path, extra_args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "compressctl",
        "apply",
        str(recipe),
        "-o",
        str(output_dir),
        "--json",
        "-q",
        *extra_args,
    ]


def run_recipe(
    entry: ZooEntry,
    output_dir: Path,
    *,
    timeout: float | None = None,
    threads: int | None = None,
    extra_args: list[str] | None = None,
) -> RecipeResult:
    """Run one recipe in its own process; its stderr goes to ``output_dir/console.log``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    command = apply_command(entry.recipe, output_dir, extra_args or [])
    started = time.perf_counter()
    with open(output_dir / "console.log", "w", encoding="utf-8") as console:
        console.write(f"$ {' '.join(command)}\n")
        console.flush()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=console, env=child_env(threads), start_new_session=True, text=True
        )
        with _LIVE_LOCK:
            _LIVE.add(process)
        try:
            stdout, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            seconds = time.perf_counter() - started
            return RecipeResult(
                entry.name,
                str(entry.recipe),
                "timeout",
                None,
                seconds,
                str(output_dir),
                f"did not finish within {timeout:g} s; killed",
            )
        except BaseException:  # interrupted batch: take the child down with us
            _kill_group(process)
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(process)
    seconds = time.perf_counter() - started
    code = process.returncode
    report = _parse_report(stdout)
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        why = " (out of memory?)" if -code == signal.SIGKILL else ""
        status, error = "crashed", f"killed by {name}{why}"
    else:
        status = STATUS_BY_EXIT.get(code, "failed")
        error = "" if code in (EXIT_OK, EXIT_GATE_FAILED) else _last_error(output_dir / "console.log")
    if status == "passed" and report is None:
        status, error = "failed", "apply exited 0 but printed no report"
    return RecipeResult(entry.name, str(entry.recipe), status, code, seconds, str(output_dir), error, report)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _parse_report(stdout: str) -> dict[str, Any] | None:
    try:
        report = json.loads(stdout)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def _last_error(console_log: Path) -> str:
    try:
        lines = [line.strip() for line in console_log.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    return (errors[-1] if errors else (lines[-1] if len(lines) > 1 else ""))[:500]


# -- executors -----------------------------------------------------------------------------------
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
    cpus_per_task = 1
    remote = ray.remote(num_cpus=cpus_per_task, max_retries=0)(run_recipe)

    def submit(entry: ZooEntry) -> Any:
        log.info("%s: submitted to Ray", entry.name)
        return remote.remote(entry, out / entry.name, timeout=timeout, threads=cpus_per_task, extra_args=extra_args)

    def collect(ref: Any, entry: ZooEntry) -> RecipeResult:
        try:
            return ray.get(ref)
        except Exception as exc:  # the task itself died (node lost, worker killed)
            reason = f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            return RecipeResult(entry.name, str(entry.recipe), "crashed", None, 0.0, str(out / entry.name), reason)

    return _schedule(
        entries,
        out,
        limit=jobs or len(entries),
        keep_going=keep_going,
        submit=submit,
        wait_one=lambda running: ray.wait(running, num_returns=1)[0],
        collect=collect,
        on_result=on_result,
    )


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


# -- the batch -----------------------------------------------------------------------------------
@dataclass
class BatchResult:
    results: list[RecipeResult]
    seconds: float
    output_dir: Path

    @property
    def exit_code(self) -> int:
        statuses = {r.status for r in self.results}
        if statuses <= {"passed"}:
            return EXIT_OK
        if statuses <= {"passed", "gate_failed"}:
            return EXIT_GATE_FAILED
        if "interrupted" in statuses:
            return EXIT_INTERRUPTED
        return EXIT_STAGE_FAILED


def run_batch(
    paths: Iterable[Path],
    output_dir: Path,
    *,
    jobs: int = 1,
    keep_going: bool = False,
    timeout: float | None = None,
    executor: str = "local",
    address: str | None = None,
    extra_args: list[str] | None = None,
    wait_lock: float = 0.0,
    on_result: OnResult | None = None,
) -> BatchResult:
    """Run every recipe of the zoo into ``output_dir/<name>`` and write the zoo summary there."""
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
                jobs=jobs,
                keep_going=keep_going,
                timeout=timeout,
                extra_args=extra_args or [],
                on_result=callback,
            )
        elif executor == "ray":
            results = run_ray(
                entries,
                out,
                jobs=jobs if jobs > 1 else None,
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


# -- the zoo summary -----------------------------------------------------------------------------
def summary_rows(batch: BatchResult) -> list[dict[str, Any]]:
    """One row per recipe: what index.json/md/html list."""
    rows = []
    for result in batch.results:
        report = result.report  # only a report this run printed: a file on disk may be from an older run
        summary = (report or {}).get("summary", {})
        final = next((m for m in (report or {}).get("models", []) if m["name"] == "final"), None)
        speedup = summary.get("speedup", {})
        # the speedup the latency gates read, else the best one measured
        at = (
            summary.get("gate_at") if summary.get("gate_at") in speedup else max(speedup, key=speedup.get, default=None)
        )
        rel = (
            Path(result.output_dir).relative_to(batch.output_dir)
            if _inside(result.output_dir, batch.output_dir)
            else Path(result.output_dir)
        )
        rows.append(
            {
                "name": result.name,
                "recipe": result.recipe,
                "status": result.status,
                "exit_code": result.exit_code,
                "seconds": round(result.seconds, 2),
                "error": result.error,
                "size_bytes": final["size_bytes"] if final else None,
                "size_ratio": summary.get("size_ratio"),
                "metric": summary.get("metric"),
                "final_metric": summary.get("final_metric"),
                "accuracy_drop": summary.get("accuracy_drop"),
                "speedup_at": at,
                "speedup": speedup.get(at) if at else None,
                "gates": (report or {}).get("gates", []),
                "gates_passed": (report or {}).get("passed") if report else None,
                "report": str(rel / "report.html") if report else None,
                "report_json": str(rel / "report.json") if report else None,
                "log": str(rel / "console.log"),
                "worker": result.worker,
            }
        )
    return rows


def _inside(path: str, folder: Path) -> bool:
    try:
        Path(path).relative_to(folder)
    except ValueError:
        return False
    return True


def write_summary(batch: BatchResult) -> None:
    rows = summary_rows(batch)
    out = batch.output_dir
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    index = {
        "schema_version": 1,
        "passed": batch.exit_code == EXIT_OK,
        "exit_code": batch.exit_code,
        "seconds": round(batch.seconds, 2),
        "counts": counts,
        "models": rows,
    }
    atomic_write_text(out / "index.json", json.dumps(index, indent=2, default=str))
    atomic_write_text(out / "index.md", render_index_markdown(index))
    from compressctl.report.html import render_index_html

    atomic_write_text(out / "index.html", render_index_html(index))


def _fmt(value: Any, pattern: str, missing: str = "–") -> str:
    return missing if value is None else pattern.format(value)


def index_table(index: dict[str, Any], link: Callable[[dict], str] | None = None) -> tuple[list[str], list[list[str]]]:
    header = ["model", "status", "size", "size ratio", "speedup", "accuracy drop", "gates", "seconds", "report"]
    rows = []
    for row in index["models"]:
        gates = "–" if row["gates_passed"] is None else ("pass" if row["gates_passed"] else "FAIL")
        rows.append(
            [
                row["name"],
                row["status"] + (f": {row['error']}" if row["error"] else ""),
                _fmt(row["size_bytes"] and row["size_bytes"] / 1024, "{:.1f} KB"),
                _fmt(row["size_ratio"], "{:.3f}×"),
                _fmt(row["speedup"], "{:.2f}×")
                + (f" ({row['speedup_at']})" if row["speedup"] is not None and row["speedup_at"] else ""),
                _fmt(row["accuracy_drop"] and row["accuracy_drop"] * 100, "{:+.2f} pt"),
                gates,
                f"{row['seconds']:.1f}",
                link(row) if link else (row["report"] or "–"),
            ]
        )
    return header, rows


def render_index_markdown(index: dict[str, Any]) -> str:
    from compressctl.report.write import markdown_table

    counts = ", ".join(f"{n} {status}" for status, n in sorted(index["counts"].items()))
    result = "PASSED" if index["passed"] else "FAILED"
    header, rows = index_table(
        index, lambda row: f"[report]({row['report']})" if row["report"] else f"[log]({row['log']})"
    )
    return "\n".join(
        [
            "# Model zoo",
            "",
            f"**{result}** · {len(index['models'])} recipes ({counts}) · {index['seconds']:.1f} s",
            "",
            markdown_table(header, [[cell.replace("|", "\\|") for cell in r] for r in rows]),
            "",
        ]
    )
