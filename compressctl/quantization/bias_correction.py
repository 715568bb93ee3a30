"""Bias correction before static INT8 (Nagel et al. 2019, the data-aware form).

Quantizing a weight ``W`` to ``W + ΔW`` moves every output channel's mean by
``ΔW·E[x]``: an error that does not average out over samples. Subtracting it
from the bias before quantizing brings the mean back. ``ΔW`` comes from ONNX
Runtime's own weight quantizer (``quantize_data`` on the axes its Conv, Gemm
and MatMul quantizers use), and ``E[x]``, the mean input per channel, from the
calibration batches through ReduceMean outputs added to the float graph (a few
numbers per batch, not the activations). For a Conv the correction sums ``ΔW``
over the kernel's taps times the channel's mean input; padding at the borders
is ignored, the standard approximation.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("compressctl")


@dataclass
class Layer:
    """A Conv, Gemm or MatMul(+Add) with a constant weight and a bias only it uses."""

    node: Any
    weight: str
    bias: str
    axis: int  # the weight's per-channel axis in ONNX Runtime's quantizer
    scale: float = 1.0  # Gemm: alpha / beta

    @property
    def data(self) -> str:
        return self.node.input[0]


def find_layers(model: Any) -> list[Layer]:
    from onnx import helper

    initializers = {t.name: t for t in model.graph.initializer}
    uses = Counter(name for n in model.graph.node for name in n.input)
    readers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    layers = []
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if len(node.input) < 2 or node.input[1] not in initializers:
            continue
        bias = node.input[2] if len(node.input) > 2 else ""
        if node.op_type == "Conv":
            layers.append(Layer(node, node.input[1], bias, 0))
        elif node.op_type == "Gemm" and not attributes.get("transA", 0):
            scale = attributes.get("alpha", 1.0) / (attributes.get("beta", 1.0) or 1.0)
            layers.append(Layer(node, node.input[1], bias, 0 if attributes.get("transB", 0) else 1, scale))
        elif node.op_type == "MatMul" and len(initializers[node.input[1]].dims) == 2:
            add = readers.get(node.output[0], [])
            if len(add) == 1 and add[0].op_type == "Add":
                bias = next((i for i in add[0].input if i != node.output[0]), "")
                layers.append(Layer(node, node.input[1], bias, 1))
    return [layer for layer in layers if layer.bias in initializers and uses[layer.bias] == 1]


def quantization_error(weight: np.ndarray, axis: int | None, weight_type: str, reduce_range: bool) -> np.ndarray:
    """``ΔW``: the weight as ONNX Runtime's quantizer rounds it, minus the weight."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    qtype, symmetric = (TensorProto.INT8, True) if weight_type == "int8" else (TensorProto.UINT8, False)
    channels = np.moveaxis(weight, axis, 0) if axis is not None else weight[None]
    rounded = np.empty_like(channels)
    for index, channel in enumerate(channels):
        zero_point, scale, quantized = quantize_data(channel.ravel(), qtype, symmetric, reduce_range)[-3:]
        restored = (quantized.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
        rounded[index] = restored.reshape(channel.shape)
    rounded = np.moveaxis(rounded, 0, axis) if axis is not None else rounded[0]
    return rounded - weight


def output_shift(layer: Layer, delta: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``ΔW·E[x]`` per output channel (for a Gemm, in units of its bias)."""
    delta, mean = delta.astype(np.float64), mean.astype(np.float64)
    if layer.node.op_type == "Conv":
        groups = next((a.i for a in layer.node.attribute if a.name == "group"), 1) or 1
        out_channels, group_inputs = delta.shape[:2]
        taps = delta.reshape(groups, out_channels // groups, group_inputs, -1).sum(-1)
        return np.einsum("goi,gi->go", taps, mean.reshape(groups, group_inputs)).reshape(out_channels)
    if layer.node.op_type == "Gemm" and layer.axis == 0:  # transB: W is [N, K]
        return layer.scale * (delta @ mean)
    return layer.scale * (mean @ delta)


def mean_nodes(layers: list[Layer], model: Any) -> tuple[list[Any], list[Any], list[str]]:
    """ReduceMean nodes giving each layer's mean input per channel: nodes, initializers, output names."""
    from onnx import TensorProto, helper, numpy_helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    nodes, constants, outputs = [], [], []
    for index, layer in enumerate(layers):
        name = f"bias_correction_mean_{index}"
        data = layer.data
        if layer.node.op_type == "Conv":
            axes = [0, *range(2, len(weights[layer.weight]))]
        else:
            channels = weights[layer.weight][1 if layer.axis == 0 else 0]
            constants.append(numpy_helper.from_array(np.array([-1, channels], np.int64), f"{name}_shape"))
            nodes.append(helper.make_node("Reshape", [data, f"{name}_shape"], [f"{name}_rows"], name=f"{name}_rows"))
            data, axes = f"{name}_rows", [0]
        if opset >= 18:
            constants.append(numpy_helper.from_array(np.array(axes, np.int64), f"{name}_axes"))
            nodes.append(helper.make_node("ReduceMean", [data, f"{name}_axes"], [name], keepdims=0, name=name))
        else:
            nodes.append(helper.make_node("ReduceMean", [data], [name], axes=axes, keepdims=0, name=name))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return nodes, constants, outputs


def input_means(source: Path, layers: list[Layer], reader: Any, folder: Path) -> list[np.ndarray]:
    """Each layer's mean input per channel over the calibration batches (cached in ``reader.ranges``)."""
    from compressctl.measure.latency import make_session
    from compressctl.onnxio import load_onnx, onnx_files, save_onnx
    from compressctl.quantization.calibration import unique_file

    key = (str(source), "input_means")
    if key in reader.ranges:
        with np.load(reader.ranges[key]) as stored:
            return [stored[f"m{i}"] for i in range(len(layers))]
    model = load_onnx(source)
    nodes, constants, outputs = mean_nodes(layers, model)
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(constants)
    model.graph.output.extend(outputs)
    augmented = folder / f"{Path(source).stem}-means.onnx"
    save_onnx(model, augmented, external=len(onnx_files(Path(source))) > 1)
    session = make_session(augmented)
    names = [o.name for o in outputs]
    sums = [0.0] * len(names)
    count = 0
    reader.rewind()
    for batch in iter(reader.get_next, None):
        size = min(reader.batch_size, len(reader.split) - count)  # samples in this batch (the last may be short)
        sums = [s + size * m.astype(np.float64) for s, m in zip(sums, session.run(names, batch), strict=True)]
        count += size
    reader.rewind()
    del session
    found = [np.asarray(s) / max(count, 1) for s in sums]
    reader.ranges[key] = unique_file(folder, f"{Path(source).stem}-means-", ".npz")
    np.savez(reader.ranges[key], **{f"m{i}": m for i, m in enumerate(found)})
    return found


def correct_biases(
    source: Path,
    target: Path,
    reader: Any,
    config: Any,
    weight_type: str,
    reduce_range: bool,
    float_nodes: set[str],
) -> int:
    """``source`` with every quantized layer's bias corrected, saved as ``target``; how many were corrected."""
    from onnx import numpy_helper

    from compressctl.onnxio import load_onnx, onnx_files, save_onnx

    model = load_onnx(source)
    layers = find_layers(model)
    means = input_means(source, layers, reader, target.parent) if layers else []
    quantized = set(config.op_types or ("Conv", "Gemm", "MatMul"))
    initializers = {t.name: t for t in model.graph.initializer}
    corrected = 0
    for layer, mean in zip(layers, means, strict=True):
        if layer.node.op_type not in quantized or (layer.node.name and layer.node.name in float_nodes):
            continue
        weight = numpy_helper.to_array(initializers[layer.weight]).astype(np.float32)
        bias = numpy_helper.to_array(initializers[layer.bias])
        axis = layer.axis if config.per_channel else None
        shift = output_shift(layer, quantization_error(weight, axis, weight_type, reduce_range), mean)
        if bias.size != shift.size or not np.isfinite(shift).all():
            continue
        fixed = (bias.astype(np.float64) - shift.reshape(bias.shape)).astype(bias.dtype)
        initializers[layer.bias].CopyFrom(numpy_helper.from_array(fixed, layer.bias))
        corrected += 1
    save_onnx(model, target, external=len(onnx_files(Path(source))) > 1)
    log.info("quantize: bias correction of %d of %d layers", corrected, len(layers))
    return corrected
