"""The zoo index (index.md, index.html) from a fixed index dict, against golden files (UPDATE_GOLDEN=1 rewrites)."""

from __future__ import annotations

from typing import Any

from compressctl.report.index import index_table, render_index_html, render_index_markdown
from tests.report.golden import assert_matches_golden, without_plotly_bundle


def _row(name: str, status: str, **values: Any) -> dict[str, Any]:
    row = {
        "name": name,
        "recipe": f"zoo/{name}.yaml",
        "status": status,
        "exit_code": None,
        "seconds": 12.5,
        "error": "",
        "size_bytes": None,
        "size_ratio": None,
        "metric": None,
        "final_metric": None,
        "accuracy_drop": None,
        "speedup_at": None,
        "speedup": None,
        "gates": [],
        "gates_passed": None,
        "report": None,
        "report_json": None,
        "log": f"{name}/console.log",
        "worker": "host:1",
    }
    return {**row, **values}


def fixed_index() -> dict[str, Any]:
    passed = _row(
        "resnet-int8",
        "passed",
        exit_code=0,
        size_bytes=24_000,
        size_ratio=0.3,
        metric="accuracy",
        final_metric=0.9583,
        accuracy_drop=0.0028,
        speedup_at="CPUExecutionProvider@1",
        speedup=1.8,
        gates_passed=True,
        report="resnet-int8/report.html",
        report_json="resnet-int8/report.json",
    )
    gate = _row(
        "mlp-prune",
        "gate_failed",
        exit_code=1,
        size_bytes=4_096,
        size_ratio=0.75,
        accuracy_drop=-0.001,
        speedup=0.9,
        gates_passed=False,
        report="mlp-prune/report.html",
    )
    crashed = _row("big | model", "crashed", error="killed by SIGKILL (out of memory?)", seconds=3.0)
    return {
        "schema_version": 1,
        "passed": False,
        "exit_code": 3,
        "seconds": 28.0,
        "counts": {"passed": 1, "gate_failed": 1, "crashed": 1},
        "models": [passed, gate, crashed],
    }


def test_index_md_matches_the_golden_page() -> None:
    assert_matches_golden(render_index_markdown(fixed_index()), "index.md")


def test_index_html_matches_the_golden_page() -> None:
    assert_matches_golden(without_plotly_bundle(render_index_html(fixed_index())), "index.html")


def test_index_table_links_the_report_or_else_the_log() -> None:
    _, rows = index_table(fixed_index())
    assert [row[-1] for row in rows] == ["resnet-int8/report.html", "mlp-prune/report.html", "–"]
