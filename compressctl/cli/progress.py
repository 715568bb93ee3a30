"""Progress display: rich bars on a terminal, plain log lines elsewhere (CI, cron)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("compressctl")


class PlainProgress:
    """Writes nothing beyond the log lines the pipeline already emits."""

    def __call__(self, kind: str, **fields: Any) -> None:
        if kind == "stage" and fields.get("status") == "done":
            log.info("stage %s finished in %.1f s", fields["name"], fields.get("seconds", 0.0))

    def close(self) -> None:
        return None


def progress_bar(console: Any, spinner: bool = False) -> Any:
    """A started rich bar (description, bar, done/total, elapsed) that clears itself when stopped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [SpinnerColumn()] if spinner else []
    bar = Progress(
        *columns,
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    bar.start()
    return bar


class RichProgress:
    """One bar per training task, one spinner line for the current step."""

    def __init__(self, console: Any) -> None:
        self.progress = progress_bar(console, spinner=True)
        self.tasks: dict[str, Any] = {}
        self.status = self.progress.add_task("starting", total=None)

    def __call__(self, kind: str, **fields: Any) -> None:
        if kind == "stage":
            self.progress.update(self.status, description=f"stage {fields['name']}: {fields['status']}")
        elif kind == "measure":
            self.progress.update(self.status, description=f"measuring {fields['name']}")
        elif kind == "latency":
            self.progress.update(self.status, description=f"latency {fields['provider']} batch {fields['batch_size']}")
        elif kind == "task":
            self.tasks[fields["name"]] = self.progress.add_task(fields["name"], total=fields.get("total"))
        elif kind == "advance" and fields["name"] in self.tasks:
            self.progress.advance(self.tasks[fields["name"]])
        elif kind == "task_done" and fields["name"] in self.tasks:
            self.progress.remove_task(self.tasks.pop(fields["name"]))

    def close(self) -> None:
        self.progress.stop()


def make_progress(interactive: bool, console: Any) -> Any:
    return RichProgress(console) if interactive else PlainProgress()
