"""The zoo index of a batch: index.md and index.html, from the index dict ``compressctl batch`` writes as index.json.

Rendering only: the rows come from ``compressctl.batch.process.summary_rows``; nothing here imports the batch.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from compressctl.report.html import Figures, html_page, html_table, plotly_figure
from compressctl.report.tables import markdown_table


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


def render_index_html(index: dict[str, Any]) -> str:
    """index.html of a batch: every model with size, speedup, accuracy drop, gates and a link to its report."""

    def link(row: dict[str, Any]) -> str:
        target, label = (row["report"], "report") if row["report"] else (row["log"], "log")
        return f'<a href="{html.escape(target)}">{label}</a>'

    header, rows = index_table(index, link)
    result = "PASSED" if index["passed"] else "FAILED"
    counts = ", ".join(f"{n} {status}" for status, n in sorted(index["counts"].items()))
    body = [
        "<h1>Model zoo</h1>",
        f'<p><span class="{"passed" if index["passed"] else "failed"}">{result}</span> · '
        f"{len(index['models'])} recipes ({html.escape(counts)}) · {index['seconds']:.1f} s</p>",
        html_table(header, rows, raw_columns=(len(header) - 1,)),
    ]
    measured = [row for row in index["models"] if row["size_ratio"] is not None]
    if measured:
        names = [row["name"] for row in measured]
        figures = Figures()
        speed = [{"type": "bar", "name": "speedup", "x": names, "y": [row["speedup"] for row in measured]}]
        size = [{"type": "bar", "name": "size ratio", "x": names, "y": [row["size_ratio"] for row in measured]}]
        drop = [
            {"type": "bar", "name": "drop", "x": names, "y": [(row["accuracy_drop"] or 0) * 100 for row in measured]}
        ]
        body += [
            figures.div(plotly_figure(speed, "Speedup over baseline", "×"), "zoo-speedup"),
            figures.div(plotly_figure(size, "Final size / baseline size", "ratio"), "zoo-size"),
            figures.div(plotly_figure(drop, "Accuracy drop", "points"), "zoo-drop"),
        ]
    return html_page("compressctl model zoo", body)
