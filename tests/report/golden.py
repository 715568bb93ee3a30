"""Golden files beside the report tests: compare, or rewrite them with ``UPDATE_GOLDEN=1``.

Regenerate after an intended change to a rendered page, then review the diff like code:

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/report
"""

from __future__ import annotations

import os
import re
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
# The plotly.js bundle (megabytes, and its version) is embedded in the first chart; the golden keeps a marker.
PLOTLY_BUNDLE = re.compile(r"<script>/\*\*\n\* plotly\.js v[^\n]*\n.*?</script>", re.DOTALL)
BUNDLE_MARKER = "<script>/* plotly.js bundle, elided from the golden file */</script>"


def without_plotly_bundle(page: str) -> str:
    """The page with its one inline plotly.js bundle replaced by a marker; fails if there is not exactly one."""
    normalised, count = PLOTLY_BUNDLE.subn(BUNDLE_MARKER, page)
    assert count == 1, f"expected one inline plotly.js bundle, found {count}"
    return normalised


def assert_matches_golden(actual: str, name: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.is_file(), f"no golden file {path}; create it with UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{name} differs from {path}; if the change is intended, rerun with UPDATE_GOLDEN=1"
