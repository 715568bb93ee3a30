"""Error types and their exit codes.

The library raises; only ``compressctl.cli`` turns these into messages and
exit codes. Anything that is not a ``CompressctlError`` is a bug.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_STAGE_FAILED = 3
EXIT_INTERRUPTED = 130


class CompressctlError(Exception):
    """Base of every error a user is meant to read."""

    exit_code = EXIT_STAGE_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UserError(CompressctlError):
    """Bad input: recipe, file, option or unavailable provider (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class RecipeError(UserError):
    """One or more problems in a recipe, each with its file:line:col location."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class StageError(CompressctlError):
    """A stage failed while running (exit 3)."""

    exit_code = EXIT_STAGE_FAILED

    def __init__(self, stage: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"stage {stage} failed: {message}", hint=hint)
        self.stage = stage


class LockedError(UserError):
    """The output folder is being written by another run."""
