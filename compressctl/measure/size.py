"""Size on disk, zipped size, parameter counts and MACs of an ONNX model."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from compressctl.onnxio import onnx_files

# Initializers that hold metadata rather than weights.
_META_SUFFIXES = ("_scale", "_zero_point", "_scales", "_zero_points")


def size_on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in onnx_files(path))


def zipped_size(path: Path) -> int:
    """Bytes of a deflate zip of the model file(s): shows what unstructured sparsity saves."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for f in onnx_files(path):
            archive.write(f, arcname=f.name)
    return buffer.tell()


def count_params(model: Any) -> tuple[int, int]:
    """(params, nonzero params) over weight initializers (int8/int4/float, not shapes or scales)."""
    from onnx import TensorProto, numpy_helper

    weight_types = {
        TensorProto.FLOAT,
        TensorProto.FLOAT16,
        TensorProto.BFLOAT16,
        TensorProto.DOUBLE,
        TensorProto.INT8,
        TensorProto.UINT8,
        TensorProto.INT4,
        TensorProto.UINT4,
        TensorProto.INT32,
    }
    # bytes unpacked by a BitShift (k-means 4-bit indices) hold two values each
    packed = {node.input[0] for node in model.graph.node if node.op_type == "BitShift"}
    total = nonzero = 0
    for tensor in model.graph.initializer:
        if tensor.data_type not in weight_types or tensor.name.endswith(_META_SUFFIXES):
            continue
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        if count <= 1:
            continue
        if tensor.name in packed:
            total += 2 * count
            nonzero += 2 * count  # indices, not weights: a zero index is a centroid, not a zero
            continue
        total += count
        try:
            nonzero += int(np.count_nonzero(numpy_helper.to_array(tensor)))
        except Exception:  # packed types numpy cannot view: count as dense
            nonzero += count
    return total, nonzero


def _fixed_shape_model(model: Any, batch: int, dims: dict[str, int]) -> Any:
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_param") or not dim.HasField("dim_value"):
                name = dim.dim_param
                dim.Clear()
                dim.dim_value = dims.get(name, batch if i == 0 else 8)
    del fixed.graph.value_info[:]
    for value in fixed.graph.output:
        value.type.tensor_type.shape.Clear()
    return fixed


def _shape_map(model: Any) -> dict[str, list[int]]:
    """Static shapes of every value; ONNX Runtime's symbolic inference knows its contrib ops."""
    import onnx

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)
    except Exception:
        inferred = None
    if inferred is None:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def count_macs(model: Any, dims: dict[str, int] | None = None) -> int:
    """Multiply-accumulates for one sample (batch 1) of Conv/MatMul/Gemm-like nodes."""
    dims = dims or {}
    fixed = _fixed_shape_model(model, 1, dims)
    try:
        shapes = _shape_map(fixed)
    except Exception:
        return 0
    macs = 0
    for node in fixed.graph.node:
        op = node.op_type
        out = shapes.get(node.output[0]) if node.output else None
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            w_index = 3 if op == "QLinearConv" else 1
            w = shapes.get(node.input[w_index])
            if out and w:
                macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm", "QGemm", "FusedMatMul", "MatMulNBits"):
            a = shapes.get(node.input[0])
            if out and a:
                k = a[-1] if not (op in ("Gemm", "QGemm") and _attr(node, "transA", 0)) else a[-2]
                macs += int(np.prod(out)) * int(k)
            elif op in ("Gemm", "QGemm"):
                # Gemm is 2-D ([batch, K] x [K, N]): at batch 1 its MACs are the weight's size,
                # also where shape inference stopped at an op it does not know.
                weight = shapes.get(node.input[3 if op == "QGemm" else 1])
                if weight and len(weight) == 2:
                    macs += int(np.prod(weight))
        elif op == "ConvTranspose":
            x = shapes.get(node.input[0])
            w = shapes.get(node.input[1])
            if x and w:
                macs += int(np.prod(x)) * int(np.prod(w[1:]))
    return macs
