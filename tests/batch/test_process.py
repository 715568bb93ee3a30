"""The batch's exit code and summary rows from its recipes' results (no subprocesses here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compressctl.batch import BatchResult, RecipeResult, summary_rows
from compressctl.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_STAGE_FAILED


def _batch(*statuses: str, out: Path = Path("/out")) -> BatchResult:
    results = [RecipeResult(f"r{i}", f"r{i}.yaml", s, None, 1.0, str(out / f"r{i}")) for i, s in enumerate(statuses)]
    return BatchResult(results, 1.0, out)


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        (("passed", "passed"), EXIT_OK),
        (("passed", "gate_failed"), EXIT_GATE_FAILED),
        (("passed", "bad_input"), EXIT_BAD_INPUT),  # DESIGN.md: bad input is 2, not a failed stage
        (("bad_input", "skipped"), EXIT_BAD_INPUT),
        (("gate_failed", "bad_input"), EXIT_BAD_INPUT),
        (("bad_input", "crashed"), EXIT_STAGE_FAILED),
        (("passed", "timeout"), EXIT_STAGE_FAILED),
        (("failed", "skipped"), EXIT_STAGE_FAILED),
        (("bad_input", "interrupted", "failed"), EXIT_INTERRUPTED),
    ],
)
def test_the_worst_outcome_decides_the_exit_code(statuses: tuple[str, ...], code: int) -> None:
    assert _batch(*statuses).exit_code == code


def test_a_row_without_a_report_links_the_log_relative_to_the_batch(tmp_path: Path) -> None:
    (row,) = summary_rows(_batch("crashed", out=tmp_path))
    assert row["log"] == "r0/console.log" and row["report"] is None and row["speedup"] is None
