"""The memory bound: a run that would exhaust memory fails with exit 3 and one line, and is not killed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compressctl.errors import UserError
from compressctl.memory import is_out_of_memory, parse_size
from tests.conftest import write_recipe


def wide_conv(path: Path) -> Path:
    """x[batch, 3, 256, 256] → 64 channels: 16 MB of output per sample."""
    weight = np.random.default_rng(0).standard_normal((64, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 256, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64, 256, 256])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_sizes_parse_and_a_bad_one_is_bad_input() -> None:
    assert parse_size("4G") == 4 << 30 and parse_size("512M") == 512 << 20 and parse_size("1.5GB") == 3 << 29
    with pytest.raises(UserError, match="COMPRESSCTL_MEMORY_LIMIT must look like 4G"):
        parse_size("lots")


def test_allocation_errors_are_recognised() -> None:
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : std::bad_alloc"))
    assert is_out_of_memory(RuntimeError("BFCArena::AllocateRawInternal Failed to allocate memory for buffer"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_a_run_past_the_memory_bound_exits_3_with_one_line(tmp_path: Path) -> None:
    wide_conv(tmp_path / "wide.onnx")
    recipe = {
        "version": 1,
        "name": "wide",
        "model": {"onnx": "wide.onnx", "inputs": [{"name": "x", "shape": ["batch", 3, 256, 256], "dtype": "float32"}]},
        "data": {"source": "random", "samples": 16},
        "evaluate": {"metric": "fidelity"},
        "report": {"batch_sizes": [64], "repeat": 3},  # 1 GB of output per run: past a 2 GB bound
    }
    env = {**os.environ, "COMPRESSCTL_MEMORY_LIMIT": "2G"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "compressctl",
            "apply",
            str(write_recipe(tmp_path, recipe)),
            "-o",
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 3, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ran out of memory" in errors[0] and "2.0 GB" in errors[0]
    assert "Traceback" not in done.stderr
    # what finished is kept: the partial report names the baseline it measured
    assert "baseline" in (tmp_path / "out" / "report.json").read_text()
