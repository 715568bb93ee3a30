"""`compressctl compare`: two real report.json files, limits, Markdown for CI summaries, JUnit XML."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from compressctl.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_OK
from tests.conftest import tiny_recipe, write_recipe


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    from compressctl.pipeline import apply

    folder = tmp_path_factory.mktemp("compare")
    recipe = tiny_recipe(
        stages=[{"type": "export", "dynamo": False}],
        report={"providers": ["CPUExecutionProvider"], "batch_sizes": [1, 4], "warmup": 1, "repeat": 5},
    )
    return apply(write_recipe(folder, recipe), folder / "out")


def save(folder: Path, name: str, report: dict) -> Path:
    path = folder / name
    path.write_text(json.dumps(report))
    return path


def final(report: dict) -> dict:
    return next(m for m in report["models"] if m["name"] == "final")


def test_identical_reports_pass(tmp_path: Path, cli, report: dict) -> None:
    old = save(tmp_path, "old.json", report)
    result = cli("compare", old, old)
    assert result.exit_code == EXIT_OK, result.output
    assert "no regression" in result.output and "CPUExecutionProvider@4" in result.output


def test_accuracy_drop_beyond_the_limit_fails(tmp_path: Path, cli, report: dict) -> None:
    worse = copy.deepcopy(report)
    final(worse)["metrics"]["accuracy"] -= 0.02
    old, new = save(tmp_path, "old.json", report), save(tmp_path, "new.json", worse)
    result = cli("compare", old, new, "--max-accuracy-drop", "0.01", "--format", "json")
    assert result.exit_code == EXIT_GATE_FAILED
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["accuracy"]["status"] == "regressed"
    assert cli("compare", old, new, "--max-accuracy-drop", "0.03").exit_code == EXIT_OK  # within a looser limit


def test_latency_regression_beyond_the_limit_fails(tmp_path: Path, cli, report: dict) -> None:
    slower = copy.deepcopy(report)
    for item in final(slower)["latency"]:
        if item["batch_size"] == 4:
            item["p50_ms"] *= 1.5
    old, new = save(tmp_path, "old.json", report), save(tmp_path, "new.json", slower)
    result = cli("compare", old, new, "--max-latency-regression", "0.2", "--format", "json")
    assert result.exit_code == EXIT_GATE_FAILED
    statuses = {c["name"]: c["status"] for c in json.loads(result.stdout)["checks"]}
    assert statuses["p50_ms CPUExecutionProvider@4"] == "regressed"
    assert statuses["p50_ms CPUExecutionProvider@1"] == "ok"
    assert cli("compare", old, new, "--max-latency-regression", "0.6").exit_code == EXIT_OK


def test_markdown_goes_to_the_github_step_summary_and_junit_to_a_file(
    tmp_path: Path, cli, report: dict, monkeypatch
) -> None:
    worse = copy.deepcopy(report)
    final(worse)["metrics"]["accuracy"] -= 0.05
    old, new = save(tmp_path, "old.json", report), save(tmp_path, "new.json", worse)
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = tmp_path / "compare.xml"
    result = cli("compare", old, new, "--format", "markdown", "--junit", junit)
    assert result.exit_code == EXIT_GATE_FAILED
    assert result.stdout.startswith("### compressctl compare")
    assert "| accuracy |" in result.stdout and "REGRESSED" in result.stdout
    text = summary.read_text()
    assert text.startswith("earlier step\n") and result.stdout.strip() in text  # appended, not overwritten
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    failed = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None]
    assert failed == ["accuracy"]


def test_unreadable_or_unfinished_reports_are_bad_input(tmp_path: Path, cli, report: dict) -> None:
    good = save(tmp_path, "good.json", report)
    (tmp_path / "garbage.json").write_text("{not json")
    partial = copy.deepcopy(report)
    partial["models"] = [m for m in partial["models"] if m["name"] != "final"]
    for other in (tmp_path / "missing.json", tmp_path / "garbage.json", save(tmp_path, "partial.json", partial)):
        result = cli("compare", good, other)
        assert result.exit_code == EXIT_BAD_INPUT
        assert str(other) in result.output


def test_remeasure_times_both_final_models_in_one_sitting(tmp_path: Path, cli, report: dict) -> None:
    """Stored figures say "no change"; timed together, the new model is clearly slower."""
    from tests.measure.test_sitting import matmul_chain

    old, new = copy.deepcopy(report), copy.deepcopy(report)
    final(old)["path"] = str(matmul_chain(tmp_path / "small.onnx", 128))
    final(new)["path"] = str(matmul_chain(tmp_path / "big.onnx", 512))
    old_path, new_path = save(tmp_path, "old.json", old), save(tmp_path, "new.json", new)
    assert cli("compare", old_path, new_path).exit_code == EXIT_OK  # stored latencies are identical
    result = cli("compare", old_path, new_path, "--remeasure", "--format", "json")
    assert result.exit_code == EXIT_GATE_FAILED, result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    remeasured = [c for c in checks if c.endswith("(remeasured)")]
    assert sorted(remeasured) == [
        "latency CPUExecutionProvider@1 (remeasured)",
        "latency CPUExecutionProvider@4 (remeasured)",
    ]
    assert not any(name.startswith("p50_ms") for name in checks)  # stored figures are not divided
    assert all(checks[name]["status"] == "regressed" for name in remeasured)
    backwards = cli("compare", new_path, old_path, "--remeasure", "--format", "json")
    assert backwards.exit_code == EXIT_OK
    assert {c["status"] for c in json.loads(backwards.stdout)["checks"] if "remeasured" in c["name"]} == {"improved"}


def test_remeasure_needs_the_model_files(tmp_path: Path, cli, report: dict) -> None:
    gone = copy.deepcopy(report)
    final(gone)["path"] = str(tmp_path / "deleted.onnx")
    old, new = save(tmp_path, "old.json", report), save(tmp_path, "new.json", gone)
    result = cli("compare", old, new, "--remeasure")
    assert result.exit_code == EXIT_BAD_INPUT and "deleted.onnx is not there any more" in result.output
