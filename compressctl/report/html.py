"""report.html: one self-contained file, charts by plotly; its page, table and chart helpers serve index.html too.

plotly.js is embedded once per file (no network, no CDN), so a report opens
the same from a CI artifact, an e-mail or a laptop on a plane.
"""

from __future__ import annotations

import html
import json
from typing import Any

from compressctl.report.tables import gate_rows, model_rows

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.passed{color:#1a7f37;font-weight:bold}.failed{color:#cf222e;font-weight:bold}
pre{background:#f6f8fa;padding:1rem;overflow:auto}.chart{margin-bottom:1.5rem}
"""


class Figures:
    """Turns plotly figures into <div>s; the first one carries plotly.js inline, unless the page loads it
    itself (``inline_bundle=False``: advise.html shares one plotly.min.js beside it)."""

    def __init__(self, inline_bundle: bool = True) -> None:
        self.count = 0
        self.inline_bundle = inline_bundle

    def div(self, figure: Any, name: str) -> str:
        import plotly.io as pio

        self.count += 1
        markup = pio.to_html(
            figure,
            include_plotlyjs=self.inline_bundle and self.count == 1,
            full_html=False,
            div_id=f"chart-{name}",
            config={"displaylogo": False, "responsive": True},
            default_height="420px",
            validate=False,  # figures are plain dicts built here; plotly.js checks them when drawing
        )
        return f'<div class="chart" data-chart="{html.escape(name)}">{markup}</div>'


def html_table(header: list[str], rows: list[list[str]], raw_columns: tuple[int, ...] = ()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{cell if i in raw_columns else html.escape(str(cell))}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def plotly_figure(traces: list[dict[str, Any]], title: str, y_title: str) -> dict[str, Any]:
    """A plotly figure as a plain dict (plotly's figure classes cost a second of validation per report)."""
    return {
        "data": traces,
        "layout": {
            "title": {"text": title},
            "yaxis": {"title": {"text": y_title}},
            "margin": {"t": 60, "b": 40},
            "legend": {"orientation": "h", "y": -0.15},
        },
    }


# -- one run -------------------------------------------------------------------------------------
def size_figure(models: list[dict[str, Any]]) -> dict[str, Any]:
    names = [m["name"] for m in models]
    return plotly_figure(
        [
            {"type": "bar", "name": "on disk", "x": names, "y": [m["size_bytes"] / 1024 for m in models]},
            {"type": "bar", "name": "zipped", "x": names, "y": [m["compressed_size_bytes"] / 1024 for m in models]},
        ],
        "Size per stage",
        "KB",
    )


def metric_figure(models: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    names = [m["name"] for m in models]
    values = [m.get("metrics", {}).get(metric) for m in models]
    text = [f"{v:.4f}" if v is not None else "" for v in values]
    return plotly_figure(
        [
            {
                "type": "scatter",
                "mode": "lines+markers+text",
                "name": metric,
                "x": names,
                "y": values,
                "text": text,
                "textposition": "top center",
            }
        ],
        f"{metric} per stage",
        metric,
    )


def latency_keys(models: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for model in models:
        for item in model.get("latency", []):
            key = f"{item['requested_provider']}@{item['batch_size']}"
            if key not in keys:
                keys.append(key)
    return keys


def _latency(model: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((i for i in model.get("latency", []) if f"{i['requested_provider']}@{i['batch_size']}" == key), None)


def latency_figure(models: list[dict[str, Any]]) -> dict[str, Any]:
    names = [m["name"] for m in models]
    bars = []
    for key in latency_keys(models):
        items = [_latency(m, key) for m in models]
        bars.append(
            {
                "type": "bar",
                "name": key,
                "x": names,
                "y": [i["p50_ms"] if i else None for i in items],
                "error_y": {
                    "type": "data",
                    "symmetric": False,
                    "array": [(i["p90_ms"] - i["p50_ms"]) if i else 0 for i in items],
                },
            }
        )
    return plotly_figure(bars, "Latency per stage (p50, whisker to p90)", "ms")


def distribution_figure(models: list[dict[str, Any]], key: str) -> dict[str, Any]:
    boxes = []
    for model in models:
        item = _latency(model, key)
        if item and item.get("samples_ms"):
            boxes.append({"type": "box", "name": model["name"], "y": item["samples_ms"], "boxpoints": "outliers"})
    provider, _, batch = key.partition("@")
    figure = plotly_figure(boxes, f"Latency distribution — {provider}, batch {batch}", "ms per run (log scale)")
    figure["layout"]["yaxis"]["type"] = "log"  # a few slow outliers would flatten every box on a linear axis
    return figure


def render_html(report: dict[str, Any]) -> str:
    """report.html: summary, charts of size, metric and latency per stage, latency distributions, the recipe."""
    import yaml

    recipe = report["recipe"]
    summary = report.get("summary", {})
    models = report.get("models", [])
    passed = report.get("passed")
    status = "PASSED" if passed else ("FAILED" if report.get("status") == "failed" else "GATES FAILED")
    body = [
        f"<h1>{html.escape(recipe['name'])}</h1>",
        f'<p><span class="{"passed" if passed else "failed"}">{status}</span> · metric '
        f"<code>{html.escape(str(summary.get('metric')))}</code> · {report.get('seconds', 0):.1f} s</p>",
    ]
    if models:
        body += ["<h2>Models</h2>", html_table(*model_rows(report))]
    if report.get("gates"):
        body += ["<h2>Gates</h2>", html_table(["gate", "limit", "value", "result"], gate_rows(report))]
    figures = Figures()
    if models:
        body += [
            "<h2>Charts</h2>",
            figures.div(size_figure(models), "size"),
            figures.div(metric_figure(models, summary.get("metric") or recipe["evaluate"]["metric"]), "metric"),
            figures.div(latency_figure(models), "latency"),
        ]
        body.append("<h2>Latency distributions</h2>")
        for i, key in enumerate(latency_keys(models)):
            body.append(figures.div(distribution_figure(models, key), f"distribution-{i}"))
    else:
        body.append("<p>No model was measured before the run stopped; see run.log.</p>")
    stage_rows = [
        [
            str(s["index"]),
            s["type"] + (" (auto)" if s.get("auto") else ""),
            s["status"],
            "yes" if s.get("cached") else "no",
            f"{s['seconds']:.1f}",
        ]
        for s in report.get("stages", [])
    ]
    body += ["<h2>Stages</h2>", html_table(["#", "stage", "status", "cached", "seconds"], stage_rows)]
    env = report.get("environment", {})
    body += ["<h2>Environment</h2>", f"<pre>{html.escape(json.dumps(env, indent=2, default=str))}</pre>"]
    body += ["<h2>Recipe</h2>", f"<pre>{html.escape(yaml.safe_dump(recipe, sort_keys=False))}</pre>"]
    return html_page(f"{recipe['name']} — compressctl report", body)
