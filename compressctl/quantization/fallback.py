"""Accuracy-aware fallback: return the most sensitive quantized nodes to float.

The approach of NNCF's accuracy control and Intel Neural Compressor's tuning:
when the quantized model misses ``max_accuracy_drop``, rank the quantized
nodes by how much the metric recovers when each alone stays in float, then
return them to float one by one, most sensitive first, until the drop is
within bounds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("compressctl")

QuantizeFn = Callable[[list[str]], Path]  # node names kept in float -> quantized model
EvaluateFn = Callable[[Path], float]  # model -> metric (higher is better)


@dataclass
class FallbackResult:
    path: Path
    metric: float
    float_nodes: list[str] = field(default_factory=list)
    ranking: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    met: bool = False


def rank_by_sensitivity(
    nodes: list[str], quantize: QuantizeFn, evaluate: EvaluateFn, quantized_metric: float
) -> list[dict[str, Any]]:
    """Each node's metric gain when it alone stays in float, largest first (graph order breaks ties)."""
    ranking = []
    for position, node in enumerate(nodes):
        metric = evaluate(quantize([node]))
        ranking.append({"node": node, "metric": metric, "gain": metric - quantized_metric, "position": position})
        log.info("sensitivity of %s: metric %.4f with it in float (%+.4f)", node, metric, metric - quantized_metric)
    ranking.sort(key=lambda r: (-r["gain"], r["position"]))
    return ranking


def accuracy_aware_fallback(
    nodes: list[str],
    quantize: QuantizeFn,
    evaluate: EvaluateFn,
    *,
    float_metric: float,
    quantized: Path,
    quantized_metric: float,
    max_drop: float,
    max_nodes: int,
) -> FallbackResult:
    """Return nodes to float, most sensitive first, until ``float_metric - metric <= max_drop``."""
    result = FallbackResult(quantized, quantized_metric)
    if float_metric - quantized_metric <= max_drop:
        result.met = True
        return result
    result.ranking = rank_by_sensitivity(nodes, quantize, evaluate, quantized_metric)
    kept: list[str] = []
    for entry in result.ranking[:max_nodes]:
        kept.append(entry["node"])
        path = quantize(list(kept))
        metric = evaluate(path)
        result.steps.append(
            {"float_nodes": len(kept), "added": entry["node"], "metric": metric, "drop": float_metric - metric}
        )
        log.info(
            "fallback step %d: %s back to float, metric %.4f (drop %.4f)",
            len(kept),
            entry["node"],
            metric,
            float_metric - metric,
        )
        met = float_metric - metric <= max_drop
        if met or metric > result.metric:  # otherwise keep the best model seen so far
            result.path, result.metric, result.float_nodes = path, metric, list(kept)
        if met:
            result.met = True
            break
    return result
