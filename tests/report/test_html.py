"""report.html: a golden page from a fixed report; a real run's page is self-contained and renders in Chromium.

The zoo index.html's golden pages are in test_index.py; its charts render in Chromium here (they need the run).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from compressctl.report.html import render_html
from compressctl.report.index import render_index_html
from tests.conftest import tiny_recipe, write_recipe
from tests.report.fixed_report import fixed_report
from tests.report.golden import assert_matches_golden, without_plotly_bundle

# prefer: size — these tiny models are not faster in INT8, and these tests check the INT8 model.
QUANTIZE = {"type": "quantize", "mode": "static", "calibration": {"samples": 64}, "select_repeat": 3, "prefer": "size"}
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    """A real run with a compressing stage and two batch sizes: three models, two latency distributions."""
    from compressctl.pipeline import apply

    folder = tmp_path_factory.mktemp("html")
    recipe = tiny_recipe(
        stages=[{"type": "export", "dynamo": False}, QUANTIZE],
        report={"providers": ["CPUExecutionProvider"], "batch_sizes": [1, 4], "warmup": 1, "repeat": 20},
    )
    out = folder / "out"
    return out, apply(write_recipe(folder, recipe), out)


def rendered_dom(path: Path) -> str:
    """The DOM after scripts ran, as Chromium sees it; all network goes to a dead proxy, so only inline code works."""
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--proxy-server=http://127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
            "--virtual-time-budget=10000",
            "--dump-dom",
            path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def chart_divs(dom: str) -> dict[str, str]:
    """Each ``data-chart`` wrapper's markup, up to the next chart."""
    parts = re.split(r'(?=<div class="chart" data-chart=")', dom)
    return {re.search(r'data-chart="([^"]+)"', p).group(1): p for p in parts if p.startswith('<div class="chart"')}


def test_report_html_matches_the_golden_page() -> None:
    page = render_html(fixed_report())
    assert_matches_golden(without_plotly_bundle(page), "report.html")


def test_report_html_is_self_contained(run) -> None:
    out, _ = run
    page = (out / "report.html").read_text()
    assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', page)  # plotly.js is inline
    assert page.count("<script") >= 6 and "Plotly.newPlot" in page
    assert "compressctl.zoo:digits_cnn" in page  # the recipe is in the report


@needs_browser
def test_report_charts_render_in_a_browser(run) -> None:
    out, _ = run
    charts = chart_divs(rendered_dom(out / "report.html"))
    assert set(charts) == {"size", "metric", "latency", "distribution-0", "distribution-1"}
    expected_trace = {
        "size": "trace bars",
        "metric": "trace scatter",
        "latency": "trace bars",
        "distribution-0": "trace boxes",
        "distribution-1": "trace boxes",
    }
    for name, markup in charts.items():
        assert 'class="main-svg"' in markup, f"chart {name} did not render"
        assert expected_trace[name] in markup, f"chart {name} has no {expected_trace[name]}"
    # three models → three boxes in each latency distribution
    assert charts["distribution-1"].count('class="trace boxes"') == 3
    assert "batch 4" in charts["distribution-1"]


@needs_browser
def test_zoo_index_charts_render_in_a_browser(run, tmp_path: Path) -> None:
    from compressctl.batch import BatchResult, RecipeResult, summary_rows

    out, report = run
    batch = BatchResult([RecipeResult("tiny", "recipe.yaml", "passed", 0, 1.0, str(out), "", report)], 1.0, out.parent)
    index = {"passed": True, "exit_code": 0, "seconds": 1.0, "counts": {"passed": 1}, "models": summary_rows(batch)}
    page = tmp_path / "index.html"
    page.write_text(render_index_html(index))
    charts = chart_divs(rendered_dom(page))
    assert set(charts) == {"zoo-speedup", "zoo-size", "zoo-drop"}
    assert all('class="main-svg"' in markup and "trace bars" in markup for markup in charts.values())
