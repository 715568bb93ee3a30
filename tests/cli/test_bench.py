"""`compressctl bench`: several ONNX models timed together, ratios with intervals."""

from __future__ import annotations

import json
from pathlib import Path

from compressctl.errors import EXIT_BAD_INPUT, EXIT_OK
from tests.measure.test_sitting import matmul_chain


def test_bench_times_models_together_with_intervals(tmp_path: Path, cli) -> None:
    big = matmul_chain(tmp_path / "big.onnx", 512)
    small = matmul_chain(tmp_path / "small.onnx", 128)
    result = cli("bench", big, small, "-b", "1", "-b", "8", "--repeat", "20", "--max-seconds", "10", "--json")
    assert result.exit_code == EXIT_OK, result.output
    found = json.loads(result.stdout)
    assert [m["name"] for m in found["models"]] == ["big.onnx", "small.onnx"] and found["reference"] == "big.onnx"
    assert [s["at"] for s in found["sittings"]] == ["CPUExecutionProvider@1", "CPUExecutionProvider@8"]
    big_entry, small_entry = found["models"]
    assert big_entry["speedup"] == {"CPUExecutionProvider@1": 1.0, "CPUExecutionProvider@8": 1.0}
    for key, value in small_entry["speedup"].items():
        low, high = small_entry["speedup_ci"][key]
        assert low <= value <= high and value > 1.0  # 16× less work
    assert small_entry["params"] == 4 * 128 * 128 and big_entry["macs"] == 4 * 512 * 512
    assert all(s["spinning"] is False and s["rounds"] >= 20 for s in found["sittings"])


def test_bench_prints_a_table_with_the_intervals(tmp_path: Path, cli) -> None:
    a = matmul_chain(tmp_path / "a.onnx", 256)
    b = matmul_chain(tmp_path / "b.onnx", 64)
    result = cli("bench", a, b, "--repeat", "10", "--max-seconds", "5")
    assert result.exit_code == EXIT_OK, result.output
    assert "speedup [95 %]" in result.output and "b.onnx" in result.output and "spinning off" in result.output


def test_bench_bounds_its_options_and_names_a_missing_file(tmp_path: Path, cli) -> None:
    model = matmul_chain(tmp_path / "m.onnx", 64)
    result = cli("bench", model, "--repeat", "0")
    assert result.exit_code == EXIT_BAD_INPUT and "internal error" not in result.output
    result = cli("bench", model, tmp_path / "missing.onnx")
    assert result.exit_code == EXIT_BAD_INPUT and "missing.onnx: no such file" in result.output
