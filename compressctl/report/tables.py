"""Rows of the model table and Markdown tables, shared by the Markdown reports and the terminal table."""

from __future__ import annotations

from typing import Any


def human_bytes(count: float | None) -> str:
    if count is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"


def human_count(count: float | None) -> str:
    if count is None:
        return "–"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.2f}{unit}"
    return f"{count:.0f}"


def latency_keys(report: dict[str, Any]) -> list[str]:
    keys: list[str] = []
    for model in report["models"]:
        for item in model.get("latency", []):
            key = f"{item['requested_provider']}@{item['batch_size']}"
            if key not in keys:
                keys.append(key)
    return keys


def short_provider(key: str) -> str:
    provider, _, batch = key.partition("@")
    return f"{provider.replace('ExecutionProvider', '')} b{batch}"


def sitting_speedup(report: dict[str, Any], name: str, key: str) -> tuple[float, list[float]] | None:
    """A model's speedup over the baseline at ``key`` and its interval, from the run's sitting."""
    name = next((m.get("source", name) for m in report["models"] if m["name"] == name), name)
    for sitting in report.get("measurement", {}).get("sittings", []):
        if sitting["at"] != key:
            continue
        if name == sitting["reference"]:
            return 1.0, [1.0, 1.0]
        if name in sitting["speedup"]:
            return sitting["speedup"][name], sitting["speedup_ci"][name]
    return None


def format_speedup(value: float, interval: list[float] | None = None) -> str:
    if interval is None or interval[0] == interval[1]:
        return f"{value:.2f}×"
    return f"{value:.2f}× [{interval[0]:.2f}–{interval[1]:.2f}]"


def model_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    metric = report["summary"].get("metric", "accuracy")
    keys = latency_keys(report)
    header = ["model", "size", "zipped", "params", "nonzero", "MACs", metric]
    header += [f"p50 ms {short_provider(k)}" for k in keys]
    header += [f"speedup {short_provider(k)}" for k in keys]
    rows = []
    for model in report["models"]:
        value = model.get("metrics", {}).get(metric)
        row = [
            model["name"],
            human_bytes(model["size_bytes"]),
            human_bytes(model["compressed_size_bytes"]),
            human_count(model["params"]),
            human_count(model["nonzero_params"]),
            human_count(model["macs"]),
            "–" if value is None else f"{value:.4f}",
        ]
        p50s, speedups = [], []
        for key in keys:
            item = _latency(model, key)
            p50s.append("–" if not item else f"{item['p50_ms']:.3f}" + (" (fallback)" if item.get("fallback") else ""))
            found = sitting_speedup(report, model["name"], key)
            speedups.append("–" if found is None else format_speedup(*found))
        rows.append(row + p50s + speedups)
    return header, rows


def _latency(model: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    if not model:
        return None
    for item in model.get("latency", []):
        if f"{item['requested_provider']}@{item['batch_size']}" == key:
            return item
    return None


def gate_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for gate in report.get("gates", []):
        value = gate["value"]
        shown = "–" if value is None else f"{value:.4g}"
        if gate.get("interval"):
            low, high = gate["interval"]
            shown += f" [{low:.4g}–{high:.4g}]"
        result = "pass" if gate["passed"] else "FAIL"
        if gate.get("uncertain"):
            result += " (uncertain: the interval straddles the limit)"
        rows.append([gate["name"], f"{gate['limit']:g}", shown, result])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
