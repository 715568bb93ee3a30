"""What an ONNX graph is made of: op counts, dense layers, whether it is a transformer.

Standard library only, so any module may ask (export, fusion, quantize) without an import cycle.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def op_counts(model: Any) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def weight_matmuls(model: Any) -> int:
    """MatMul/Gemm nodes whose second input is a constant weight (dense layers)."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in constants)


def is_transformer(model: Any) -> bool:
    """A graph built of dense layers and attention (softmax), or one already fused as such."""
    ops = op_counts(model)
    if ops["Attention"] or ops["MultiHeadAttention"] or ops["QAttention"]:
        return True
    return ops["Softmax"] >= 1 and weight_matmuls(model) >= 4 and ops["Conv"] <= weight_matmuls(model)


def is_fused(model: Any) -> bool:
    ops = op_counts(model)
    return any(ops[name] for name in ("Attention", "MultiHeadAttention", "SkipLayerNormalization"))
