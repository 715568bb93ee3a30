"""Where plain INT8 loses: other calibrations and bias correction, judged like every candidate.

Two tiny graphs built to fail in a known way: a rare activation spike that
stretches min/max ranges (percentile calibration clips it), and a conv whose
small weights all round to zero (the output's mean moves; bias correction
moves it back).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compressctl.data import Split
from compressctl.measure.latency import make_session
from compressctl.quantization.candidates import build, recover, within_tolerance
from compressctl.quantization.int8 import CalibrationReader, candidate_settings, quantize_candidate
from compressctl.quantization.select import FLOAT, Candidate, Judge
from compressctl.runners.quantize import QuantizeConfig

SIDE = 16


def save(path: Path, nodes: list, weights: dict[str, np.ndarray], channels: tuple[int, int], side: int) -> Path:
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels[0], SIDE, SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", channels[1], side, side])],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def spike_net(path: Path) -> Path:
    """x[:, 0] is zero but for rare spikes; conv1 turns a spike into 1000 in channel 0, which conv2 ignores."""
    rng = np.random.default_rng(0)
    w1 = np.zeros((8, 4, 1, 1))
    w1[0, 0] = 250.0
    w1[1:, 1:] = rng.normal(0, 0.5, (7, 3, 1, 1))
    w2 = rng.normal(0, 0.5, (4, 8, 1, 1))
    w2[:, 0] = 0.0
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv1"),
        helper.make_node("Conv", ["a", "w2", "b2"], ["y"], name="conv2"),
    ]
    weights = {"w1": w1, "b1": np.zeros(8), "w2": w2, "b2": rng.normal(0, 0.1, 4)}
    return save(path, nodes, weights, (4, 4), SIDE)


def spike_data(count: int, spikes: bool, seed: int) -> Split:
    x = np.clip(np.random.default_rng(seed).standard_normal((count, 4, SIDE, SIDE)), -2.5, 2.5).astype(np.float32)
    x[:, 0] = 0.0
    if spikes:
        x[::8, 0, 5, 5] = 4.0  # 1 activation in 16384: above the 99.99th percentile, below the 99.999th
    return Split([x], None)


def rounding_net(path: Path, small: float) -> Path:
    """A 3×3 conv over 16 channels: one weight sets each channel's scale, the 143 others are ``small`` steps.

    Steps of 0.4 all round to zero, so every output moves by ``-143 · 0.4 step · E[x]``.
    """
    step = 1.0 / 127  # 0.4 of an 8-bit step is 0.2 of a 7-bit one: it rounds to zero either way
    weight = np.full((4, 16, 3, 3), small * step)
    weight[:, 0, 0, 0] = 1.0
    bias = -(weight.sum(axis=(1, 2, 3)))  # float output ≈ 0 for inputs ≈ 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")]
    return save(path, nodes, {"w": weight, "b": bias}, (16, 4), SIDE - 2)


def rounding_data(count: int, seed: int) -> Split:
    noise = np.random.default_rng(seed).standard_normal((count, 16, SIDE, SIDE))
    return Split([(1.0 + 0.1 * noise).astype(np.float32)], None)


def config(**options) -> QuantizeConfig:
    """7-bit weights: u8·s8 products cannot saturate, so the figures are the same on CPUs with and without VNNI."""
    options = {"reduce_range": True, **options}
    return QuantizeConfig(type="quantize", mode="static", format="qdq", activation_type="uint8", **options)


def judge_of(path: Path, split: Split) -> Judge:
    return Judge(path, split, batch_size=16, provider="CPUExecutionProvider", threads=1, declared_kind="dense")


def timed(score: dict, speedup: float) -> Candidate:
    """A candidate as a sitting would give it (no timing needed: the choice is about faithfulness)."""
    interval = (speedup, speedup) if score["candidate"] == FLOAT else (speedup - 0.1, speedup + 0.1)
    return Candidate(score["candidate"], score["judged_by"], score["cosine_mean"], speedup, interval, 1000)


def recover_from_plain(tmp_path: Path, model: Path, calibration: Split, val: Split, cfg: QuantizeConfig, **kwargs):
    reader = CalibrationReader(calibration, ["x"], 16)
    judge = judge_of(model, val)
    plain = build(model, tmp_path, cfg, candidate_settings(cfg)[0], reader, judge)
    usable = [{"candidate": FLOAT, "path": model, **judge(model)}, plain]
    candidates = [timed(usable[0], 1.0), timed(plain, 2.0)]
    faithful = kwargs.get("faithful") or within_tolerance(candidates, cfg.fidelity_tolerance)
    tried, chosen = recover(usable, candidates, {"fused": model}, cfg, reader, judge, tmp_path, faithful)
    return plain, tried, chosen


def test_auto_calibration_replaces_an_unfaithful_minmax_candidate(tmp_path: Path) -> None:
    model = spike_net(tmp_path / "spike.onnx")
    calibration, val = spike_data(64, spikes=True, seed=0), spike_data(32, spikes=False, seed=1)
    cfg = config(bias_correction="never")
    plain, tried, chosen = recover_from_plain(tmp_path, model, calibration, val, cfg)
    assert plain["calibration"] == "minmax" and plain["judged_by"] < 0.9  # the spike wrecks the min/max range
    assert [t["calibration"] for t in tried] == ["percentile99.99", "percentile99.999", "entropy"]
    assert all("error" not in t and t["timing_of"] == plain["candidate"] for t in tried)
    best = max(tried, key=lambda t: t["judged_by"])
    assert best["calibration"] == "percentile99.99" and best["judged_by"] > 0.99  # it clips the spike away
    # the most faithful takes the plain candidate's place, with its timing (same graph, other scales)
    assert [c.name for c in chosen] == [FLOAT, best["candidate"]]
    assert chosen[1].fidelity == best["judged_by"] and chosen[1].speedup == 2.0


def test_explicit_calibration_tries_no_other(tmp_path: Path) -> None:
    model = spike_net(tmp_path / "spike.onnx")
    calibration, val = spike_data(64, spikes=True, seed=0), spike_data(32, spikes=False, seed=1)
    cfg = config(bias_correction="never", calibration={"method": "minmax"})
    plain, tried, chosen = recover_from_plain(tmp_path, model, calibration, val, cfg)
    assert plain["judged_by"] < 0.9 and tried == [] and chosen[1].name == plain["candidate"]


def mean_error(path: Path, reference: np.ndarray, split: Split) -> float:
    out = make_session(path, threads=1).run(None, {"x": split.inputs[0]})[0]
    return float(np.abs((out - reference).mean(axis=(0, 2, 3))).mean())


def test_bias_correction_moves_the_mean_back(tmp_path: Path) -> None:
    model = rounding_net(tmp_path / "rounding.onnx", small=0.4)
    calibration, val = rounding_data(64, seed=0), rounding_data(32, seed=1)
    reference = make_session(model, threads=1).run(None, {"x": val.inputs[0]})[0]
    setting = candidate_settings(config())[0]
    reader = CalibrationReader(calibration, ["x"], 16)
    quantize_candidate(model, tmp_path / "plain.onnx", config(), setting, reader)
    quantize_candidate(model, tmp_path / "fixed.onnx", config(), {**setting, "bias_correction": True}, reader)
    plain = mean_error(tmp_path / "plain.onnx", reference, val)
    fixed = mean_error(tmp_path / "fixed.onnx", reference, val)
    assert plain > 0.3  # 143 weights of 0.4 step (0.45 in all) rounded to zero, inputs ≈ 1
    assert fixed < 0.1 * plain
    # the bias is corrected in the float graph the quantizer reads; a node kept in float keeps its own
    quantize_candidate(model, tmp_path / "kept.onnx", config(), {**setting, "bias_correction": True}, reader, ["conv"])
    assert not np.array_equal(bias_of(tmp_path / "fixed-bias-corrected.onnx"), bias_of(model))
    assert np.array_equal(bias_of(tmp_path / "kept-bias-corrected.onnx"), bias_of(model))


def bias_of(path: Path) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in onnx.load(str(path)).graph.initializer if t.name == "b"))


@pytest.mark.parametrize(("small", "kept"), [(0.4, True), (0.0, False)])
def test_bias_correction_is_kept_only_where_it_is_more_faithful(tmp_path: Path, small: float, kept: bool) -> None:
    """Exact weights (``small: 0``) leave nothing to correct: the variant is no more faithful and is dropped."""
    model = rounding_net(tmp_path / "rounding.onnx", small=small)
    calibration, val = rounding_data(64, seed=0), rounding_data(32, seed=1)
    cfg = config(calibration={"method": "minmax"})
    plain, tried, chosen = recover_from_plain(tmp_path, model, calibration, val, cfg, faithful=lambda s: False)
    assert [t["candidate"] for t in tried] == [plain["candidate"] + "+bias_correction"]
    assert (chosen[1].name == tried[0]["candidate"]) is kept
    if kept:
        assert plain["judged_by"] < 0.9 < tried[0]["judged_by"]
