"""Accuracy-aware fallback: return the most sensitive quantized nodes to float.

The approach of NNCF's accuracy control and Intel Neural Compressor's tuning:
when the quantized model misses ``max_accuracy_drop``, rank the quantized
nodes by how much the metric recovers when each alone stays in float, then
return them to float one by one, most sensitive first, until the drop is
within bounds. Then every returned node the budget is met without goes
back to INT8: single-node gains do not add up, and every float node costs
speed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("compressctl")

QuantizeFn = Callable[[list[str]], Path]  # node names kept in float -> quantized model
EvaluateFn = Callable[[Path], float]  # model -> metric (higher is better)
RANKING_SHARE = 0.6  # of the time budget; the rest returns nodes to float and puts unneeded ones back


@dataclass
class FallbackResult:
    path: Path
    metric: float
    float_nodes: list[str] = field(default_factory=list)
    ranking: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    met: bool = False


def rank_by_sensitivity(
    nodes: list[str], quantize: QuantizeFn, evaluate: EvaluateFn, quantized_metric: float, deadline: float = math.inf
) -> list[dict[str, Any]]:
    """Each node's metric gain when it alone stays in float, largest first (graph order breaks ties).

    Past ``deadline`` (``time.monotonic()``) the nodes not yet tried are left out.
    """
    ranking = []
    for position, node in enumerate(nodes):
        if time.monotonic() > deadline:
            log.warning("fallback: time budget spent after ranking %d of %d nodes", position, len(nodes))
            break
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
    seconds: float = math.inf,
) -> FallbackResult:
    """Return nodes to float, most sensitive first, until ``float_metric - metric <= max_drop``.

    ``seconds`` bounds the whole search; the best model found by then is kept.
    """
    deadline = time.monotonic() + seconds
    result = FallbackResult(quantized, quantized_metric)
    if float_metric - quantized_metric <= max_drop:
        result.met = True
        return result
    # the ranking gets a share of the budget: returning the nodes it found must still fit
    ranking_deadline = time.monotonic() + seconds * RANKING_SHARE
    result.ranking = rank_by_sensitivity(nodes, quantize, evaluate, quantized_metric, ranking_deadline)
    kept: list[str] = []
    for entry in result.ranking[:max_nodes]:
        if time.monotonic() > deadline:
            break
        kept.append(entry["node"])
        path = quantize(list(kept))
        metric = evaluate(path)
        met = float_metric - metric <= max_drop
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
        if met or metric > result.metric:  # otherwise keep the best model seen so far
            result.path, result.metric, result.float_nodes = path, metric, list(kept)
        if met:
            result.met = True
            break
    if result.met:
        drop_unneeded(result, quantize, evaluate, float_metric, max_drop, deadline)
    return result


def drop_unneeded(
    result: FallbackResult,
    quantize: QuantizeFn,
    evaluate: EvaluateFn,
    float_metric: float,
    max_drop: float,
    deadline: float,
) -> None:
    """Put back to INT8 every float node the budget is met without (single-node gains do not add up)."""
    for node in list(reversed(result.float_nodes[:-1])):
        if time.monotonic() > deadline:
            return
        trial = [n for n in result.float_nodes if n != node]
        path = quantize(trial)
        metric = evaluate(path)
        needed = float_metric - metric > max_drop
        result.steps.append({"float_nodes": len(trial), "removed": node, "metric": metric, "needed": needed})
        log.info("fallback: %s %s (metric %.4f without it)", node, "stays float" if needed else "back to INT8", metric)
        if not needed:
            result.path, result.metric, result.float_nodes = path, metric, trial


def fallback_nodes(source: Path, config: Any) -> list[str]:
    """Named nodes the quantizer would quantize and the fallback may return to float."""
    from compressctl.onnxio import load_onnx

    model = load_onnx(source, load_external_data=False)
    allowed = set(config.fallback_op_types) & set(config.op_types or config.fallback_op_types)
    excluded = set(config.exclude_nodes)
    return [
        n.name
        for n in model.graph.node
        if n.name and n.op_type in allowed and n.op_type not in config.exclude_op_types and n.name not in excluded
    ]


OUTLIER_SAMPLES = 2  # samples whose activations order the nodes (every quantized node's input is kept at once)


def outlier_order(source: Path, nodes: list[str], judge: Any) -> tuple[list[str], dict[str, float]]:
    """``nodes`` with the heaviest-tailed activation input first (peak / RMS over a few held-out samples).

    Per-tensor activation scales lose most where a few values dwarf the rest
    (the inputs of a transformer's FFN down-projections), so those nodes are
    ranked first and a time-bounded ranking spends its budget on the likely
    culprits. Graph order where the activations cannot be read.
    """
    import tempfile

    import numpy as np
    import onnx

    from compressctl.measure.latency import make_session
    from compressctl.measure.metrics import predict_all

    try:
        model = onnx.load(str(source))
        constants = {t.name for t in model.graph.initializer}
        inputs = {n.name: next((i for i in n.input if i and i not in constants), None) for n in model.graph.node}
        tensors = sorted({inputs[n] for n in nodes if inputs.get(n)} - {o.name for o in model.graph.output})
        model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "activations.onnx"
            onnx.save_model(model, str(path), save_as_external_data=model.ByteSize() > 1_500_000_000)
            session = make_session(path, judge.provider, judge.threads)
            names = [o.name for o in session.get_outputs()]
            values = predict_all(session, judge.split.head(OUTLIER_SAMPLES), 1)
            del session
    except Exception as exc:  # an odd graph: keep graph order
        log.info("fallback: activations not read (%s: %s); nodes ranked in graph order", type(exc).__name__, exc)
        return nodes, {}
    found = dict(zip(names, values, strict=True))
    peaks = {}
    for node in nodes:
        x = found.get(inputs.get(node) or "")
        if x is not None and x.size:
            x = np.abs(x.astype(np.float64))
            peaks[node] = float(x.max() / (np.sqrt((x**2).mean()) + 1e-12))
    ordered = sorted(nodes, key=lambda n: -peaks.get(n, 0.0))  # stable: graph order among equals
    return ordered, peaks


def validation_evaluator(judge: Any, labels: Any, metric: str) -> tuple[EvaluateFn, str]:
    """A function ``path -> metric`` on the judge's held-out samples, and the metric's name.

    Accuracy (or top-5) for class scores with labels; otherwise the judge's
    faithfulness figure (top-1 agreement for classes, worst cosine for other outputs).
    """
    from compressctl.measure.metrics import CLASSES, accuracy, top_k

    if not (judge.kind == CLASSES and labels is not None and metric in ("accuracy", "top5")):

        def faithful(path: Path) -> float:
            return judge(path)["judged_by"]

        return faithful, judge.figure

    def evaluate(path: Path) -> float:
        outputs = judge.outputs(path)
        return accuracy(outputs, labels) if metric == "accuracy" else top_k(outputs, labels, 5)

    return evaluate, metric


def run_fallback(
    chosen: dict[str, Any],
    source: Path,
    float_path: Path,
    config: Any,
    reader: Any,
    judge: Any,
    metric: str,
    max_drop: float | None = None,
) -> dict[str, Any]:
    """Apply the accuracy-aware fallback to the chosen candidate; returns the details for the report.

    The budget is ``max_drop`` on ``metric`` (default: the stage's ``max_accuracy_drop``).
    """
    budget = float(config.max_accuracy_drop or 0.0) if max_drop is None else max_drop
    from compressctl.quantization.int8 import SETTING_KEYS, quantize_candidate

    evaluate, metric = validation_evaluator(judge, judge.split.labels, metric)
    float_metric = evaluate(float_path)
    quantized_metric = evaluate(chosen["path"])
    setting = {k: chosen[k] for k in SETTING_KEYS if k in chosen}
    work = Path(chosen["path"]).parent
    made: list[Path] = []

    def quantize(float_nodes: list[str]) -> Path:
        target = work / f"fallback_{len(made)}.onnx"
        quantize_candidate(source, target, config, setting, reader, float_nodes)
        made.append(target)
        return target

    nodes, peaks = outlier_order(source, fallback_nodes(source, config), judge)
    result = accuracy_aware_fallback(
        nodes,
        quantize,
        evaluate,
        float_metric=float_metric,
        quantized=Path(chosen["path"]),
        quantized_metric=quantized_metric,
        max_drop=budget,
        max_nodes=config.fallback_max_nodes,
        seconds=config.fallback_seconds,
    )
    if not result.met:
        log.warning(
            "accuracy-aware fallback: drop %.4f still exceeds %.4f with %d nodes in float",
            float_metric - result.metric,
            budget,
            len(result.float_nodes),
        )
    chosen["path"] = result.path
    return {
        "metric": metric,
        "max_accuracy_drop": budget,
        "float_metric": float_metric,
        "quantized_metric": quantized_metric,
        "final_metric": result.metric,
        "final_drop": float_metric - result.metric,
        "met": result.met,
        "float_nodes": result.float_nodes,
        "ranking": [
            {**{k: v for k, v in r.items() if k != "position"}, "peak_to_rms": peaks.get(r["node"])}
            for r in result.ranking
        ],
        "ranked_first": "heaviest-tailed activation input (peak / RMS)" if peaks else "graph order",
        "steps": result.steps,
    }
