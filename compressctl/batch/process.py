"""One recipe run in its own process, what it printed parsed, and the zoo summary of them all.

Each recipe runs as ``python -m compressctl apply RECIPE -o DIR/<name> --json`` in a fresh
interpreter, so a crash, an out-of-memory kill or a hang in one recipe costs that recipe only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressctl.batch.discover import ZooEntry
from compressctl.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_STAGE_FAILED
from compressctl.fsutil import atomic_write_text
from compressctl.report.index import render_index_html, render_index_markdown

# apply's exit code → the status a recipe gets in the summary
STATUS_BY_EXIT = {
    EXIT_OK: "passed",
    EXIT_GATE_FAILED: "gate_failed",
    EXIT_BAD_INPUT: "bad_input",
    EXIT_STAGE_FAILED: "failed",
    EXIT_INTERRUPTED: "interrupted",
}


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


# -- the batch's outcome ------------------------------------------------------------------------
@dataclass
class BatchResult:
    results: list[RecipeResult]
    seconds: float
    output_dir: Path

    @property
    def exit_code(self) -> int:
        """The worst outcome decides, in DESIGN.md's terms: interrupted, a run failed, bad input, a gate failed."""
        statuses = {r.status for r in self.results}
        if "interrupted" in statuses:
            return EXIT_INTERRUPTED
        # skipped recipes only follow an earlier error, which decides the code
        if statuses - {"passed", "gate_failed", "bad_input", "skipped"}:
            return EXIT_STAGE_FAILED
        if "bad_input" in statuses:
            return EXIT_BAD_INPUT
        if "skipped" in statuses:
            return EXIT_STAGE_FAILED
        if "gate_failed" in statuses:
            return EXIT_GATE_FAILED
        return EXIT_OK


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
    atomic_write_text(out / "index.html", render_index_html(index))
