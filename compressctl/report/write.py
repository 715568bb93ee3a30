"""Writes report.json, report.md (and report.html when available), atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compressctl.fsutil import atomic_write_text
from compressctl.report.tables import gate_rows, markdown_table, model_rows

# markdown_table lives in tables; it stays importable from here, where its callers found it
__all__ = ["markdown_table", "render_markdown", "report_json", "write_reports"]


def render_markdown(report: dict[str, Any]) -> str:
    recipe = report["recipe"]
    env = report["environment"]
    meas = report["measurement"]
    parts = [f"# {recipe['name']}", ""]
    status = "PASSED" if report["passed"] else ("FAILED" if report.get("status") == "failed" else "GATES FAILED")
    summary = report["summary"]
    parts.append(f"**{status}** · metric `{summary.get('metric')}` · {report.get('seconds', 0):.1f} s")
    parts.append("")
    if "size_ratio" in summary:
        speed = ", ".join(f"{k}: {v:.2f}×" for k, v in summary.get("speedup", {}).items())
        drop = summary.get("accuracy_drop")
        parts.append(
            f"Final vs baseline: size {summary['size_ratio']:.3f}×, MACs "
            f"{(summary.get('macs_ratio') or 0):.3f}×, {summary.get('metric')} drop "
            f"{'–' if drop is None else f'{drop * 100:+.2f} pt'}, speedup {speed or '–'}."
        )
        parts.append("")
    parts += ["## Models", "", markdown_table(*model_rows(report)), ""]
    if report.get("gates"):
        parts += ["## Gates", "", markdown_table(["gate", "limit", "value", "result"], gate_rows(report)), ""]
    stage_rows = [
        [str(s["index"]), s["type"] + (" (auto)" if s.get("auto") else ""), s["status"], f"{s['seconds']:.1f}"]
        for s in report["stages"]
    ]
    parts += ["## Stages", "", markdown_table(["#", "stage", "status", "seconds"], stage_rows), ""]
    parts += [
        "## Environment",
        "",
        f"{env['cpu']} · Python {env['python']} · torch {env['torch']} · onnxruntime {env['onnxruntime']} · "
        f"onnx {env['onnx']} · {meas['threads']} intra-op threads · {meas['warmup']} warm-up + "
        f"{meas['repeat']} timed runs per measurement · providers available: {', '.join(env['providers_available'])}",
        "",
    ]
    return "\n".join(parts)


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)


def write_reports(report: dict[str, Any], out: Path) -> None:
    out = Path(out)
    atomic_write_text(out / "report.json", report_json(report))
    atomic_write_text(out / "report.md", render_markdown(report))
    try:
        from compressctl.report.html import render_html
    except ImportError:
        return
    atomic_write_text(out / "report.html", render_html(report))
