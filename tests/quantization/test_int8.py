"""INT8 calibration with bounded memory, and the opset upgrade before per-channel quantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compressctl.data import Split
from compressctl.quantization.int8 import (
    CALIBRATION_INPUT_BUDGET,
    CalibrationReader,
    calibration_batch_size,
    model_opset,
    quantize_candidate,
    upgrade_opset,
)
from compressctl.runners.quantize import QuantizeConfig

QDQ_U8 = {"format": "qdq", "activation": "uint8", "weight": "int8"}


def conv_net(path: Path, opset: int = 17) -> Path:
    """x[batch, 3, 16, 16] → Conv → Relu → Conv → Relu."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
            helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
            helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
            helper.make_node("Relu", ["c2"], ["y"], name="relu2"),
        ],
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 16, 16])],
        [
            numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
            numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, "w2"),
            numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def samples(count: int, seed: int = 0) -> Split:
    return Split([np.random.default_rng(seed).standard_normal((count, 3, 16, 16)).astype(np.float32)], None)


def config(**options) -> QuantizeConfig:
    return QuantizeConfig(type="quantize", mode="static", **options)


def scales(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("_scale")}


def test_reader_reads_stride_by_stride() -> None:
    reader = CalibrationReader(samples(10), ["x"], batch_size=4)
    assert len(reader) == 3
    reader.set_range(1, 2)
    batch = reader.get_next()
    assert batch is not None and batch["x"].shape == (4, 3, 16, 16) and reader.get_next() is None
    reader.rewind()
    assert [b["x"].shape[0] for b in iter(reader.get_next, None)] == [4, 4, 2]


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_calibration_holds_one_batch_at_a_time(tmp_path: Path, monkeypatch, method: str) -> None:
    """ONNX Runtime's calibrator keeps what one collect reads: with strided reading that is one batch."""
    from onnxruntime.quantization import calibrate

    held: list[int] = []
    if method == "minmax":
        original = calibrate.MinMaxCalibrater.compute_data

        def spy(self):
            held.append(len(self.intermediate_outputs))
            return original(self)

        monkeypatch.setattr(calibrate.MinMaxCalibrater, "compute_data", spy)
    else:
        original = calibrate.HistogramCollector.collect

        def spy(self, name_to_arr):
            held.append(max(len(v) for v in name_to_arr.values()))
            return original(self, name_to_arr)

        monkeypatch.setattr(calibrate.HistogramCollector, "collect", spy)
    reader = CalibrationReader(samples(40), ["x"], batch_size=4)
    quantize_candidate(
        conv_net(tmp_path / "f.onnx"), tmp_path / "q.onnx", config(calibration={"method": method}), QDQ_U8, reader
    )
    assert len([h for h in held if h]) >= 10  # every one of the 10 batches was collected...
    assert max(held) == 1  # ...and none was kept beside another


def test_strided_calibration_finds_the_same_ranges_as_one_pass(tmp_path: Path) -> None:
    source = conv_net(tmp_path / "f.onnx")
    data = samples(48, seed=3)
    quantize_candidate(source, tmp_path / "strided.onnx", config(), QDQ_U8, CalibrationReader(data, ["x"], 4))
    quantize_candidate(source, tmp_path / "whole.onnx", config(), QDQ_U8, CalibrationReader(data, ["x"], 48))
    strided, whole = scales(tmp_path / "strided.onnx"), scales(tmp_path / "whole.onnx")
    assert strided.keys() == whole.keys() and len(strided) >= 4
    for name in strided:
        np.testing.assert_allclose(strided[name], whole[name], rtol=1e-6)


def test_large_inputs_calibrate_in_small_batches() -> None:
    small = Split([np.zeros((4, 1, 32, 32), np.float32)], None)
    large = Split([np.zeros((2, 3, 480, 480), np.float32)], None)
    assert calibration_batch_size(small, 32) == 32
    per_sample = 3 * 480 * 480 * 4
    assert calibration_batch_size(large, 32) == CALIBRATION_INPUT_BUDGET // per_sample < 8


def test_old_opset_is_upgraded_before_per_channel_quantization(tmp_path: Path) -> None:
    source = conv_net(tmp_path / "old.onnx", opset=11)
    notes: list[str] = []
    upgraded = upgrade_opset(source, tmp_path / "upgraded.onnx", notes)
    assert model_opset(upgraded) == 13 and notes == ["opset 11 upgraded to 13 for per-channel quantization"]
    assert upgrade_opset(upgraded, tmp_path / "again.onnx", notes) == upgraded and len(notes) == 1
    target = tmp_path / "q.onnx"
    quantize_candidate(upgraded, target, config(per_channel=True), QDQ_U8, CalibrationReader(samples(16), ["x"], 8))
    axes = [a.i for n in onnx.load(str(target)).graph.node if n.op_type == "DequantizeLinear" for a in n.attribute]
    assert 0 in axes  # per-channel weights
    x = samples(2).inputs[0]
    out = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ref = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.99
