"""House rules that keep the code easy to change, checked on the source itself."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "compressctl"


def test_only_the_measurement_module_opens_onnx_runtime_sessions() -> None:
    """Timing and evaluation settings live in one place (compressctl.measure.latency.make_session)."""
    opening = re.compile(r"InferenceSession\s*\(")
    found = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if opening.search(path.read_text(encoding="utf-8"))
    ]
    assert found == ["measure/latency.py"]
