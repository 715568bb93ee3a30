"""SmoothQuant before dynamic INT8: the float model is unchanged, INT8 gets closer to it on outlier inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compressctl.data import Split
from compressctl.measure.latency import make_session
from compressctl.quantization.int8 import CalibrationReader
from compressctl.quantization.smooth import smooth


def outlier_model(path: Path) -> np.ndarray:
    """x[·, 64] → two MatMuls reading x (one group) and a third reading their sum; returns inputs with outliers."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.1, (64, 64)).astype(np.float32), f"w{i}") for i in range(3)]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["a"], name="first"),
        helper.make_node("MatMul", ["x", "w1"], ["b"], name="second"),
        helper.make_node("Add", ["a", "b"], ["c"]),
        helper.make_node("MatMul", ["c", "w2"], ["y"], name="third"),
    ]
    graph = helper.make_graph(
        nodes,
        "outliers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.normal(0, 1, (256, 64)).astype(np.float32)
    x[:, [3, 40]] *= 80.0  # two channels far larger than the rest, as a GELU output's are
    return x


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return make_session(path).run(None, {"x": x})[0]


def worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def test_smoothing_keeps_the_float_model_and_brings_dynamic_int8_closer_to_it(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    plain = tmp_path / "plain.onnx"
    x = outlier_model(plain)
    reader = CalibrationReader(Split([x[:128]], None), ["x"], 32)
    smoothed = tmp_path / "smoothed.onnx"
    assert smooth(plain, smoothed, reader) == 2  # x (read by two MatMuls: one scale) and c
    nodes = onnx.load(str(smoothed)).graph.node
    assert [n.op_type for n in nodes].count("Mul") == 2
    held = x[128:]
    reference = run(plain, held)
    np.testing.assert_allclose(run(smoothed, held), reference, rtol=1e-4, atol=1e-3)  # the same function in float
    worst = {}
    for name, source in (("plain", plain), ("smoothed", smoothed)):
        target = tmp_path / f"{name}-int8.onnx"
        quantize_dynamic(str(source), str(target), per_channel=True, weight_type=QuantType.QInt8)
        worst[name] = worst_cosine(run(target, held), reference)
    assert worst["smoothed"] > worst["plain"] + 0.005, worst
