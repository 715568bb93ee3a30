"""Shared CLI plumbing: error handling, exit codes, consoles, logging, signals."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from enum import StrEnum

import typer

from compressctl.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_STAGE_FAILED, CompressctlError, RecipeError

# Options several commands share, defined once so they read and behave the same everywhere.
PROVIDER = typer.Option([], "--provider", help="Execution provider to measure on (repeatable).")
FORCE = typer.Option(False, "--force", help="Ignore cached stage outputs and measurements.")
WAIT = typer.Option(0.0, "--wait", help="Seconds to wait for a locked output folder.")
QUIET = typer.Option(False, "-q", "--quiet", help="Only warnings and errors on stderr.")
VERBOSE = typer.Option(False, "-v", "--verbose", help="Debug logging.")
DEBUG = typer.Option(False, "--debug", help="Show tracebacks.")
ADDRESS = typer.Option(
    None, "--address", help="Ray cluster address (auto, or ray://host:10001); default: a new local Ray."
)


class Executor(StrEnum):
    local = "local"
    ray = "ray"


def jobs_option(text: str) -> typer.models.OptionInfo:
    """``-j/--jobs N``, bounded the same way wherever work runs in parallel; ``text`` is its help."""
    return typer.Option(None, "-j", "--jobs", min=1, max=256, help=text)


def is_interactive(stream: object = None) -> bool:
    stream = stream or sys.stderr
    return (
        bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR") and not os.environ.get("CI")
    )


def stderr_console():  # -> rich.console.Console
    from rich.console import Console

    return Console(
        stderr=True,
        no_color=bool(os.environ.get("NO_COLOR")),
        highlight=False,
        force_terminal=None if is_interactive() else False,
    )


def error(message: str) -> None:
    prefix = "error: "
    typer.echo(prefix + message.replace("\n", "\n" + " " * 0), err=True)


def setup_logging(verbose: bool, quiet: bool) -> None:
    logger = logging.getLogger("compressctl")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for old in [h for h in logger.handlers if getattr(h, "_compressctl_cli", False)]:
        logger.removeHandler(old)  # bound to a stderr that may be gone (tests, embedding)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.setLevel(logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO))
    handler._compressctl_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (test runners swap it between commands)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@contextlib.contextmanager
def handle_errors(debug: bool = False) -> Iterator[None]:
    """Turn library errors into one clear line and the DESIGN.md exit code."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
    try:
        from compressctl.memory import bound_memory

        bound_memory()
        yield
    except typer.Exit:
        raise
    except RecipeError as exc:
        if debug:
            raise
        for problem in exc.problems:
            error(problem)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except CompressctlError as exc:
        if debug:
            raise
        error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        error("interrupted; finished stages are kept and the next run resumes from them")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except MemoryError:
        from compressctl.memory import out_of_memory_message

        error(out_of_memory_message())
        raise typer.Exit(EXIT_STAGE_FAILED) from None
    except OSError as exc:
        if debug:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        error(f"{exc.strerror or exc}{where}")
        raise typer.Exit(EXIT_STAGE_FAILED) from None
    except Exception as exc:
        if debug:
            raise
        error(
            f"internal error: {type(exc).__name__}: {exc} — this is a bug in compressctl; rerun with --debug and report it"
        )
        raise typer.Exit(EXIT_STAGE_FAILED) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
