"""Graph fusion of ONNX models before quantizing them.

Transformer encoders go through ONNX Runtime's transformer optimizer
(``onnxruntime.transformers.optimizer``), which rewrites attention blocks into
one ``Attention`` node, residual + LayerNorm into ``SkipLayerNormalization``,
bias + GELU into ``BiasGelu``. The fused graph is what makes dynamic INT8 fast
on CPU: ``quantize_dynamic`` turns ``Attention`` into ``QAttention``. The
optimizer fails quietly when it does not recognise a pattern ("0 Attention
fused"), so the result lists what fused and what an encoder should have shown
but did not.

Other models get ONNX Runtime's offline graph optimisation at the basic level
(constant folding, redundant node removal), which stays portable across
execution providers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressctl.onnxgraph import is_fused, is_transformer, op_counts

log = logging.getLogger("compressctl")

#: Fused operators an encoder should show after the transformer optimizer.
ENCODER_FUSIONS = ("Attention", "SkipLayerNormalization")
FUSED_OPS = (
    "Attention",
    "MultiHeadAttention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)


@dataclass
class FusionResult:
    path: Path
    model_type: str  # "bert" (transformer optimizer) or "generic" (ONNX Runtime offline optimisation)
    fused: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "fused": self.fused,
            "missing": self.missing,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
        }

    def warning(self) -> str | None:
        if not self.missing:
            return None
        return (
            f"optimize: the transformer optimizer fused no {', '.join(self.missing)} "
            f"(fused: {', '.join(f'{k} {v}' for k, v in self.fused.items()) or 'nothing'}); "
            "export with the TorchScript exporter (export.dynamo: false) and eager attention so it can match the graph"
        )


def detect_model_type(model: Any) -> str:
    return "bert" if is_transformer(model) else "generic"


def fuse(
    source: Path,
    target: Path,
    *,
    model_type: str = "auto",
    num_heads: int = 0,
    hidden_size: int = 0,
    expect: list[str] | None = None,
) -> FusionResult:
    """Write the fused model to ``target``; the result says what fused and what did not."""
    from compressctl.onnxio import load_onnx
    from compressctl.quantization.int8 import uses_external_data

    model = load_onnx(source, load_external_data=False)
    chosen = detect_model_type(model) if model_type == "auto" else model_type
    before = len(model.graph.node)
    external = uses_external_data(source)
    if chosen == "generic":
        optimize_offline(source, target)
    else:
        optimize_transformer(source, target, chosen, num_heads, hidden_size, external)
    fused_model = load_onnx(target, load_external_data=False)
    counts = op_counts(fused_model)
    fused = {op: counts[op] for op in FUSED_OPS if counts[op]}
    wanted = list(expect) if expect is not None else (list(ENCODER_FUSIONS) if chosen != "generic" else [])
    result = FusionResult(
        path=target,
        model_type=chosen,
        fused=fused,
        missing=[op for op in wanted if not counts[op]],
        nodes_before=before,
        nodes_after=len(fused_model.graph.node),
    )
    log.info("optimize (%s): %d → %d nodes, fused %s", chosen, before, result.nodes_after, fused or "nothing")
    return result


def optimize_transformer(
    source: Path, target: Path, model_type: str, num_heads: int, hidden_size: int, external: bool
) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level 0: only the Python fusions, so the result holds standard and com.microsoft ops that every
    # CPU build runs (ONNX Runtime's own level-2 passes would add provider-specific nodes).
    optimized = optimize_model(
        str(source), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    optimized.save_model_to_file(str(target), use_external_data_format=external, all_tensors_to_one_file=True)
    if external:
        from compressctl.quantization.int8 import rename_external_data

        rename_external_data(target)


def optimize_offline(source: Path, target: Path) -> None:
    """ONNX Runtime's basic graph optimisations, saved (constant folding, redundant node removal)."""
    from compressctl.measure.latency import make_session

    make_session(source, optimized_path=target, level="basic")


def looks_transformer(path: Path) -> bool:
    from compressctl.onnxio import load_onnx

    return is_transformer(load_onnx(path, load_external_data=False))


def fuse_encoder(source: Path, work: Path) -> FusionResult | None:
    """The fused encoder in ``work`` when ``source`` is an unfused transformer, else None."""
    from compressctl.onnxio import load_onnx

    model = load_onnx(source, load_external_data=False)
    if not is_transformer(model) or is_fused(model):
        return None
    try:
        return fuse(source, work / "fused.onnx")
    except Exception as exc:  # the optimizer's pattern code raises on graphs it half-recognises
        log.warning("quantize: graph fusion failed (%s: %s); quantizing the graph as it is", type(exc).__name__, exc)
        return None
