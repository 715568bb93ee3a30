"""`compressctl apply` end to end on tiny recipes: reports, gates, exit codes, caching."""

from __future__ import annotations

import json
from pathlib import Path

from compressctl.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_STAGE_FAILED
from tests.conftest import tiny_recipe, write_recipe

# prefer: size — these tiny models are not faster in INT8, and these tests check the INT8 model.
QUANTIZE = {"type": "quantize", "mode": "static", "calibration": {"samples": 64}, "select_repeat": 3, "prefer": "size"}


def test_apply_writes_report_with_contract_fields(tmp_path: Path, cli) -> None:
    recipe = tiny_recipe(
        stages=[{"type": "train", "epochs": 2, "lr": 0.01}, {"type": "export", "dynamo": False}, QUANTIZE]
    )
    out = tmp_path / "out"
    result = cli("apply", write_recipe(tmp_path, recipe), "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # --json: stdout holds the report and nothing else
    assert report == json.loads((out / "report.json").read_text())
    assert (out / "report.md").is_file() and (out / "model.onnx").is_file()
    for key in (
        "schema_version",
        "tool_version",
        "recipe",
        "environment",
        "models",
        "summary",
        "gates",
        "passed",
        "stages",
    ):
        assert key in report
    assert set(report["environment"]) >= {"python", "torch", "onnxruntime", "onnx", "cpu", "providers_available"}
    names = [m["name"] for m in report["models"]]
    assert names == ["baseline", "03-quantize", "final"]
    for model in report["models"]:
        for key in (
            "path",
            "size_bytes",
            "compressed_size_bytes",
            "params",
            "nonzero_params",
            "macs",
            "metrics",
            "latency",
        ):
            assert key in model
        (latency,) = model["latency"]
        assert latency["provider"] == "CPUExecutionProvider" and latency["batch_size"] == 4
        assert latency["runs"] >= 3 and latency["p50_ms"] > 0 and latency["p99_ms"] >= latency["p50_ms"]
        assert latency["sitting"] == "CPUExecutionProvider@4"
        for key in ("p90_ms", "mean_ms", "std_ms", "throughput_per_s"):
            assert key in latency
    baseline, final = report["models"][0], report["models"][-1]
    assert final["size_bytes"] < 0.5 * baseline["size_bytes"]  # int8 weights are really smaller
    assert 0.5 < final["metrics"]["accuracy"] <= 1.0
    assert report["summary"]["speedup"].keys() == {"CPUExecutionProvider@4"}
    # every ratio comes from one sitting, with its interval and the sitting's settings
    low, high = report["summary"]["speedup_ci"]["CPUExecutionProvider@4"]
    assert low <= report["summary"]["speedup"]["CPUExecutionProvider@4"] <= high
    measurement = report["measurement"]
    assert measurement["order"].startswith("balanced") and measurement["spinning"] is False
    assert measurement["noise_cv"] >= 0 and measurement["runs"]["CPUExecutionProvider@4"] >= 3
    (sitting,) = measurement["sittings"]
    assert sitting["models"] == ["baseline", "03-quantize"] and sitting["reference"] == "baseline"
    assert [s["status"] for s in report["stages"]] == ["done", "done", "done"]
    quantize = report["stages"][2]["details"]
    assert quantize["chosen"] in {c["candidate"] for c in quantize["candidates"]}


def test_second_run_reuses_every_stage(tmp_path: Path, cli) -> None:
    path = write_recipe(tmp_path, tiny_recipe())
    out = tmp_path / "out"
    assert cli("apply", path, "-o", out, "-q").exit_code == 0
    first = json.loads((out / "report.json").read_text())
    assert cli("apply", path, "-o", out, "-q").exit_code == 0
    second = json.loads((out / "report.json").read_text())
    assert [s["cached"] for s in second["stages"]] == [True, True]
    assert second["models"][0]["metrics"] == first["models"][0]["metrics"]
    assert cli("apply", path, "-o", out, "-q", "--force").exit_code == 0
    third = json.loads((out / "report.json").read_text())
    assert [s["cached"] for s in third["stages"]] == [False, False]


def test_changed_stage_config_reruns_from_that_stage(tmp_path: Path, cli) -> None:
    path = write_recipe(tmp_path, tiny_recipe())
    out = tmp_path / "out"
    assert cli("apply", path, "-o", out, "-q").exit_code == 0
    assert cli("apply", path, "-o", out, "-q", "--set", "stages[1].opset=17").exit_code == 0
    report = json.loads((out / "report.json").read_text())
    assert [s["cached"] for s in report["stages"]] == [True, False]


def test_corrupt_cache_entry_is_recomputed(tmp_path: Path, cli) -> None:
    path = write_recipe(tmp_path, tiny_recipe())
    out = tmp_path / "out"
    assert cli("apply", path, "-o", out, "-q").exit_code == 0
    weights = out / "stages" / "01-train" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)
    assert cli("apply", path, "-o", out, "-q").exit_code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["stages"][0]["cached"] is False


def test_failed_gate_exits_1_and_still_writes_report(tmp_path: Path, cli) -> None:
    recipe = tiny_recipe(gates={"min_speedup": 50.0, "max_size_ratio": 2.0})
    result = cli("apply", write_recipe(tmp_path, recipe), "-o", tmp_path / "out")
    assert result.exit_code == EXIT_GATE_FAILED
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["min_speedup"]["passed"] is False and gates["max_size_ratio"]["passed"] is True
    assert report["passed"] is False
    assert "GATE FAILED" in result.stderr


def test_unavailable_provider_is_bad_input(tmp_path: Path, cli) -> None:
    result = cli(
        "apply",
        write_recipe(tmp_path, tiny_recipe()),
        "-o",
        tmp_path / "out",
        "--provider",
        "TensorrtExecutionProvider",
    )
    assert result.exit_code == EXIT_BAD_INPUT
    assert "TensorrtExecutionProvider is not available" in result.stderr
    assert "CPUExecutionProvider" in result.stderr  # the list of available ones
    assert "Traceback" not in result.output


def test_bad_recipe_exit_2_one_line_per_problem(tmp_path: Path, cli) -> None:
    recipe = tiny_recipe(stages=[{"type": "train", "epochs": -1}], seeds=1)
    result = cli("apply", write_recipe(tmp_path, recipe))
    assert result.exit_code == EXIT_BAD_INPUT
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") and "recipe.yaml:" in line for line in lines), lines


def test_stage_failure_exits_3_and_keeps_finished_stages(tmp_path: Path, cli, exploding_runner) -> None:
    recipe = tiny_recipe(stages=[{"type": "train", "epochs": 1, "lr": 0.01}, {"type": "explode"}])
    out = tmp_path / "out"
    result = cli("apply", write_recipe(tmp_path, recipe), "-o", out)
    assert result.exit_code == EXIT_STAGE_FAILED
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: stage 02-explode failed: RuntimeError: boom in the middle of a stage"
    )
    assert (out / "stages" / "01-train" / "stage.json").is_file()
    assert not (out / "stages" / "02-explode").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and report["passed"] is False
    assert [s["status"] for s in report["stages"]] == ["done", "failed"]
    # The finished stage is reused by the next run.
    result = cli("apply", write_recipe(tmp_path, recipe), "-o", out)
    report = json.loads((out / "report.json").read_text())
    assert report["stages"][0]["cached"] is True


def test_onnx_only_pipeline(tmp_path: Path, cli) -> None:
    out = tmp_path / "first"
    assert cli("apply", write_recipe(tmp_path, tiny_recipe()), "-o", out, "-q").exit_code == 0
    # This test is about the ONNX-only pipeline, not faithfulness: a one-epoch model's INT8 agreement varies by
    # machine, and where it missed the default tolerance CI's repair returned a conv to float (size 0.59).
    recipe = tiny_recipe(stages=[{**QUANTIZE, "fidelity_tolerance": 1.0}])
    recipe["model"] = {"onnx": str(out / "model.onnx")}
    recipe["model"]["inputs"] = tiny_recipe()["model"]["inputs"]
    second = tmp_path / "second"
    result = cli("apply", write_recipe(tmp_path, recipe, "onnx.yaml"), "-o", second, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [m["name"] for m in report["models"]] == ["baseline", "01-quantize", "final"]
    assert report["summary"]["size_ratio"] < 0.5


def test_torch_stage_after_onnx_stage_is_refused(tmp_path: Path, cli) -> None:
    recipe = tiny_recipe(stages=[QUANTIZE, {"type": "finetune", "epochs": 1}])
    result = cli("apply", write_recipe(tmp_path, recipe), "-o", tmp_path / "out")
    assert result.exit_code == EXIT_BAD_INPUT
    assert (
        "stages[1] (finetune) is a torch-level stage and cannot follow the ONNX-level stage stages[0] (quantize)"
        in result.stderr
    )


def test_output_folder_that_is_a_file(tmp_path: Path, cli) -> None:
    target = tmp_path / "out"
    target.write_text("not a folder")
    result = cli("apply", write_recipe(tmp_path, tiny_recipe()), "-o", target)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "exists and is a file" in result.stderr


def test_locked_output_folder(tmp_path: Path, cli) -> None:
    import os
    import socket

    out = tmp_path / "out"
    out.mkdir()
    # A live process (this one) holds the lock.
    (out / ".compressctl.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": 0}))
    result = cli("apply", write_recipe(tmp_path, tiny_recipe()), "-o", out)
    assert result.exit_code == EXIT_BAD_INPUT
    assert f"is locked by pid {os.getpid()}" in result.stderr
    # A dead process's lock is stale and taken over.
    (out / ".compressctl.lock").write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname(), "time": 0}))
    assert cli("apply", write_recipe(tmp_path, tiny_recipe()), "-o", out, "-q").exit_code == 0
    assert not (out / ".compressctl.lock").exists()


def test_gates_at_an_unmeasured_batch_is_bad_input(tmp_path: Path, cli) -> None:
    recipe = tiny_recipe(gates={"at": "CPUExecutionProvider@64", "min_speedup": 1.0})
    result = cli("apply", write_recipe(tmp_path, recipe), "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "gates.at: CPUExecutionProvider@64 is not measured by this run" in result.output
    assert "report.batch_sizes: 4" in result.output and not (tmp_path / "out" / "report.json").exists()


def test_a_recipe_without_stages_says_it_only_measures(tmp_path: Path, cli) -> None:
    result = cli("apply", write_recipe(tmp_path, tiny_recipe(stages=[])), "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "no stages: measuring the model as it is" in result.output
    assert "result: passed (measure-only: the recipe has no stages)" in result.output
    assert json.loads((tmp_path / "out" / "report.json").read_text())["measure_only"] is True
