"""The qat stage: fake-quantized fine-tuning exported as a QDQ INT8 model that
ONNX Runtime runs with int8 kernels, compared with post-training INT8 on the same model."""

from __future__ import annotations

from pathlib import Path

import onnx

from compressctl.pipeline import apply
from compressctl.recipe import load_recipe
from tests.conftest import tiny_recipe, write_recipe

TRAIN = {"type": "train", "epochs": 1, "lr": 0.01}


def run(tmp_path: Path, stages: list[dict], name: str) -> dict:
    recipe = tiny_recipe(name=name, stages=stages)
    return apply(load_recipe(write_recipe(tmp_path, recipe, f"{name}.yaml")), tmp_path / name)


def test_qat_exports_int8_qdq_with_learned_ranges_and_beats_post_training_int8(tmp_path: Path) -> None:
    qat = run(
        tmp_path,
        [
            TRAIN,
            {"type": "qat", "epochs": 1, "lr": 0.002, "activation_ranges": "learned", "calibration": {"samples": 64}},
        ],
        "qat",
    )
    details = next(s["details"] for s in qat["stages"] if s["type"] == "qat")
    assert details["batchnorms_folded"] == 3 and details["quantized_layers"] == 4
    assert details["learned_ranges_exported"] == 4 and not details["notes"]
    assert details["int8_kernels"].get("QLinearConv", 0) == 3  # ORT fused the QDQ pairs into int8 kernels
    model = onnx.load(str(tmp_path / "qat" / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("DequantizeLinear") >= 8
    weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    assert len(weights) == 4  # the weights are stored as int8

    ptq = run(
        tmp_path,
        [
            TRAIN,
            {"type": "export", "dynamo": False},
            {
                "type": "quantize",
                "mode": "static",
                "format": "qdq",
                "activation_type": "uint8",
                "calibration": {"samples": 64},
                "select_repeat": 3,
            },
        ],
        "ptq",
    )
    # Same seed, same training: both start from the same float model.
    assert qat["models"][0]["metrics"]["accuracy"] == ptq["models"][0]["metrics"]["accuracy"]
    assert qat["models"][-1]["metrics"]["accuracy"] >= ptq["models"][-1]["metrics"]["accuracy"]


def test_excluded_layer_stays_float_and_layers_map_to_onnx_nodes(tmp_path: Path) -> None:
    import torch

    from compressctl.quantization import fake_quant
    from compressctl.runners.qat import map_layers
    from compressctl.zoo import digits_cnn

    module = digits_cnn(width=8).eval()
    wrapped = fake_quant.wrap_layers(module, learned_activations=False, skip={"12"})
    x = torch.randn(4, 1, 8, 8)
    module(x)  # first call initialises the activation ranges
    order = fake_quant.calls_in_order(module, wrapped, [x])
    layers = [(name, dict(wrapped)[name]) for name in order]
    float_module = fake_quant.unwrap_layers(module, wrapped)
    path = tmp_path / "float.onnx"
    torch.onnx.export(float_module, (x,), str(path), input_names=["x"], dynamo=False, opset_version=18)
    model = onnx.load(str(path))
    overrides, float_nodes, notes = map_layers(model, layers)
    gemm = [n.name for n in model.graph.node if n.op_type == "Gemm"]
    assert not notes and float_nodes == gemm and len(overrides) == 3
    assert order == ["0", "3", "7", "12"]
