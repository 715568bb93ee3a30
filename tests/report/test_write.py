"""report.md: the golden page from a fixed report (regenerate with UPDATE_GOLDEN=1, see golden.py)."""

from __future__ import annotations

from compressctl.report.write import render_markdown
from tests.report.fixed_report import fixed_report
from tests.report.golden import assert_matches_golden


def test_report_md_matches_the_golden_page() -> None:
    assert_matches_golden(render_markdown(fixed_report()), "report.md")
