"""Weight-only int4 (ONNX Runtime's ``MatMulNBits``) and fp16 conversion of ONNX models."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("compressctl")


def gemm_to_matmul(model: Any) -> int:
    """Rewrite plain ``Gemm(A, W, bias)`` with a constant W as ``MatMul`` (+ ``Add``), in place.

    ``MatMulNBits`` replaces MatMul only; linear layers exported as Gemm would
    otherwise stay in float. Returns the number of nodes rewritten.
    """
    from onnx import helper, numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    rewritten = 0
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        weight = node.input[1] if node.op_type == "Gemm" and len(node.input) > 1 else None
        if not (plain and weight in initializers and uses.get(weight) == 1):
            nodes.append(node)
            continue
        if attrs.get("transB", 0):
            array = numpy_helper.to_array(initializers[weight]).T.copy()
            initializers[weight].CopyFrom(numpy_helper.from_array(array, weight))
        output = node.output[0]
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.name}__matmul" if has_bias else output
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_MatMul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [output], name=f"{node.name}_bias"))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return rewritten


def quantize_int4(
    model: Any,
    *,
    block_size: int,
    symmetric: bool,
    accuracy_level: int | None,
    op_types: tuple[str, ...],
    nodes_to_exclude: list[str],
) -> tuple[Any, dict[str, Any]]:
    """Block-wise 4-bit weights through ``MatMulNBitsQuantizer``; returns the model and a node count."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size,
        is_symmetric=symmetric,
        accuracy_level=accuracy_level,
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=op_types,
        bits=4,
    )
    # The quantizer logs a line per node at INFO; that drowns the run log.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    gemms = gemm_to_matmul(model) if "MatMul" in op_types else 0
    quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=nodes_to_exclude, algo_config=config)
    quantizer.process()
    result = quantizer.model.model
    counts: dict[str, int] = {}
    for node in result.graph.node:
        if node.op_type in ("MatMulNBits", "GatherBlockQuantized"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return result, {"quantized_nodes": counts, "gemm_rewritten_as_matmul": gemms}


def convert_fp16(
    model: Any, *, keep_io_types: bool, op_block_list: list[str] | None, node_block_list: list[str] | None
) -> Any:
    """Float16 weights and compute through ONNX Runtime's converter; inputs/outputs may stay float32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    return convert_float_to_float16(
        model,
        keep_io_types=keep_io_types,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(op_block_list or []),
        node_block_list=node_block_list,
        disable_shape_infer=False,
    )


def save(model: Any, path: Path, external: bool) -> None:
    from compressctl.onnxio import save_onnx

    save_onnx(model, path, external=external or None)


def transform_weights(source: Path, target: Path, config: Any) -> dict[str, Any]:
    """kmeans | int4 | fp16: rewrite the ONNX graph's weights; returns details for the report."""
    from compressctl.onnxio import load_onnx
    from compressctl.quantization.int8 import uses_external_data

    model = load_onnx(source)
    excluded = set(config.exclude_nodes) | {n.name for n in model.graph.node if n.op_type in config.exclude_op_types}
    details: dict[str, Any] = {}
    if config.mode == "kmeans":
        from compressctl.quantization.kmeans import DEFAULT_OP_TYPES, cluster_model

        bits = config.bits or 4
        op_types = tuple(config.op_types or DEFAULT_OP_TYPES)
        granularity = config.granularity or "tensor"
        model, tensors = cluster_model(
            model,
            bits,
            op_types=op_types,
            exclude_nodes=excluded,
            min_elements=config.min_elements,
            granularity=granularity,
        )
        if not tensors:
            raise ValueError(f"no weight of {', '.join(op_types)} nodes has {config.min_elements}+ elements to cluster")
        details.update(
            {
                "bits": bits,
                "centroids": 2**bits,
                "granularity": granularity,
                "clustered": tensors,
                "index_storage": "uint8, two 4-bit indices per byte" if bits <= 4 else "uint8",
            }
        )
    elif config.mode == "int4":
        op_types = tuple(config.int4_op_types or ["MatMul", "Gather"])
        model, found = quantize_int4(
            model,
            block_size=config.block_size or 128,
            symmetric=bool(config.symmetric),
            accuracy_level=config.accuracy_level or None,
            op_types=op_types,
            nodes_to_exclude=sorted(excluded),
        )
        if not found["quantized_nodes"]:
            raise ValueError(f"no {' or '.join(op_types)} node with a constant weight was quantized to int4")
        details.update({"block_size": config.block_size or 128, "symmetric": bool(config.symmetric), **found})
    else:
        keep = True if config.keep_io_types is None else config.keep_io_types
        model = convert_fp16(
            model,
            keep_io_types=keep,
            op_block_list=config.exclude_op_types or None,
            node_block_list=sorted(excluded) or None,
        )
        details["keep_io_types"] = keep
    save(model, target, external=uses_external_data(source))
    return details
