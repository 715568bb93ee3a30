"""One rule for every command: people read stderr, programs read stdout.

Human output (tables, progress, log lines, messages) goes to stderr; stdout
carries only machine output that was asked for: `apply --json`, `bench --json`,
`runners --json`, `compare --format json|markdown`, and `schema`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from compressctl.errors import EXIT_BAD_INPUT, EXIT_OK
from tests.conftest import tiny_recipe, write_recipe
from tests.measure.test_sitting import matmul_chain


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> SimpleNamespace:
    """One measure-only `apply` run, human and --json, kept for the commands that read its report."""
    from compressctl.cli import app

    folder = tmp_path_factory.mktemp("streams")
    recipe = write_recipe(folder, tiny_recipe(stages=[]))
    runner = CliRunner()
    human = runner.invoke(app, ["apply", str(recipe), "-o", str(folder / "out")], catch_exceptions=False)
    machine = runner.invoke(app, ["apply", str(recipe), "-o", str(folder / "out"), "--json"], catch_exceptions=False)
    return SimpleNamespace(recipe=recipe, report=folder / "out" / "report.json", human=human, machine=machine)


def test_apply(measured) -> None:
    assert measured.human.exit_code == EXIT_OK, measured.human.output
    assert measured.human.stdout == ""
    assert "result: passed" in measured.human.stderr and "| baseline |" in measured.human.stderr
    assert measured.machine.exit_code == EXIT_OK
    report = json.loads(measured.machine.stdout)  # the report and nothing else
    assert report == json.loads(measured.report.read_text())
    assert "result: passed" not in measured.machine.stdout and "INFO" in measured.machine.stderr


def test_validate(cli, measured) -> None:
    result = cli("validate", measured.recipe)
    assert result.exit_code == EXIT_OK
    assert result.stdout == "" and result.stderr == f"{measured.recipe}: ok (0 stages)\n"


def test_schema(cli) -> None:
    result = cli("schema")
    assert result.exit_code == EXIT_OK and result.stderr == ""
    assert "stages" in json.loads(result.stdout)["properties"]


def test_runners(cli) -> None:
    human = cli("runners")
    assert human.exit_code == EXIT_OK
    assert human.stdout == "" and "prune  (torch → torch)" in human.stderr
    machine = cli("runners", "--json")
    assert machine.exit_code == EXIT_OK and machine.stderr == ""
    assert "prune" in {item["type"] for item in json.loads(machine.stdout)}


def test_compare(cli, measured) -> None:
    table = cli("compare", measured.report, measured.report)
    assert table.exit_code == EXIT_OK
    assert table.stdout == "" and "no regression beyond the limits" in table.stderr
    machine = cli("compare", measured.report, measured.report, "--format", "json")
    assert machine.stderr == "" and json.loads(machine.stdout)["regressed"] is False
    markdown = cli("compare", measured.report, measured.report, "--format", "markdown")
    assert markdown.stderr == "" and markdown.stdout.startswith("### compressctl compare")


def test_bench(cli, tmp_path: Path) -> None:
    model = matmul_chain(tmp_path / "m.onnx", 32)
    result = cli("bench", model, "--repeat", "5", "--max-seconds", "2")
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout == "" and "m.onnx" in result.stderr and "speedup [95 %]" in result.stderr


def test_batch(cli, tmp_path: Path, measured) -> None:
    result = cli("batch", measured.recipe, "-o", tmp_path / "zoo")
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout == ""
    assert "1 recipes in" in result.stderr and "tiny: passed" in result.stderr


def test_advise(cli, monkeypatch, measured) -> None:
    import compressctl.advise.advisor

    figures = {"speedup": 2.0, "speedup_ci": [1.9, 2.1], "latency_ms": 1.5, "metric": 0.99}
    figures.update(accuracy_drop=0.001, size_bytes=100_000)
    found = {"recommended": {"description": "prune 50 % + INT8", "figures": figures}}
    monkeypatch.setattr(compressctl.advise.advisor, "advise", lambda *args, **kwargs: found)
    result = cli("advise", measured.recipe, "--min-speedup", "1.5", "-o", measured.recipe.parent / "advise")
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout == ""
    assert (
        "recommended: prune 50 % + INT8: 2.00x [1.90-2.10], 1.50 ms" in result.stderr
        and "recommended.yaml" in result.stderr
    )


def test_errors_go_to_stderr(cli, tmp_path: Path) -> None:
    result = cli("apply", tmp_path / "missing.yaml")
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stdout == "" and result.stderr.startswith("error: ")


# -- options with a fixed set of values are choices: listed in --help, anything else is exit 2 ----
@pytest.mark.parametrize(
    ("command", "option", "choices", "wrong"),
    [("compare", "--format", "table|markdown|json", "xml"), ("batch", "--executor", "local|ray", "slurm")],
)
def test_choices_are_listed_and_enforced(cli, tmp_path: Path, command, option, choices, wrong) -> None:
    help_text = cli(command, "--help").stdout
    assert f"{option} <{choices}>" in help_text, help_text
    args = [tmp_path / "a.json", tmp_path / "b.json"] if command == "compare" else [tmp_path]
    result = cli(command, *args, option, wrong)
    assert result.exit_code == EXIT_BAD_INPUT
    assert f"Invalid value for '{option}'" in result.stderr and f"'{wrong}' is not one of" in result.stderr


# -- the provider that ran is the one reported -------------------------------------------------------
def test_unavailable_provider_is_exit_2(cli, tmp_path: Path) -> None:
    result = cli("bench", matmul_chain(tmp_path / "m.onnx", 32), "--provider", "CUDAExecutionProvider")
    assert result.exit_code == EXIT_BAD_INPUT and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: execution provider CUDAExecutionProvider is not available in this onnxruntime build")
    assert "(available: " in line and "CPUExecutionProvider" in line


def test_silent_fallback_to_cpu_is_detected(cli, tmp_path: Path, monkeypatch) -> None:
    """A provider ONNX Runtime lists but cannot start: it runs on CPU without an error; the entry says so."""
    import compressctl.measure.latency

    listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(compressctl.measure.latency, "available_providers", lambda: listed)
    model = matmul_chain(tmp_path / "m.onnx", 32)
    args = ("bench", model, "--provider", "CUDAExecutionProvider", "--repeat", "5", "--max-seconds", "2")
    result = cli(*args, "--json")
    assert result.exit_code == EXIT_OK, result.output
    (entry,) = json.loads(result.stdout)["models"][0]["latency"]
    assert entry["requested_provider"] == "CUDAExecutionProvider"
    assert entry["provider"] == "CPUExecutionProvider" and entry["fallback"] is True
    table = cli(*args)
    assert "CPU (fallback)" in table.stderr


def test_silent_fallback_in_apply_is_logged_and_reported(cli, tmp_path: Path, monkeypatch, measured) -> None:
    import compressctl.measure.latency

    listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(compressctl.measure.latency, "available_providers", lambda: listed)
    result = cli("apply", measured.recipe, "-o", tmp_path / "out", "--provider", "CUDAExecutionProvider", "--json")
    assert result.exit_code == EXIT_OK, result.output
    (entry,) = json.loads(result.stdout)["models"][0]["latency"]
    assert entry["provider"] == "CPUExecutionProvider" and entry["fallback"] is True
    assert "WARNING CUDAExecutionProvider was requested but ONNX Runtime ran CPUExecutionProvider" in result.stderr


def test_native_prints_during_export_go_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    """The TorchScript exporter prints its graph to fd 1 from C++ when it fails; --json needs stdout clean."""
    import os

    from compressctl.onnxio import stdout_to_stderr

    with stdout_to_stderr():
        os.write(1, b"native noise\n")
    print("after", flush=True)
    out, err = capfd.readouterr()
    assert "native noise" in err and "native noise" not in out
    assert out == "after\n"  # stdout is back afterwards
