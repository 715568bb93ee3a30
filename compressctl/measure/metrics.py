"""Task metrics and faithfulness of an ONNX model's outputs.

Faithfulness fits the output. Class scores are judged by accuracy (with
labels) or top-1 agreement with the float model. Everything else
(embeddings, detection tensors, dense maps, regression) is judged by the
cosine similarity of each sample's output to float (mean and worst) and by
SQNR: the argmax of an embedding or a raw detection tensor means nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from compressctl.data import Split

CLASSES = "classes"
TENSOR_KINDS = ("embedding", "detection", "dense", "regression", "tensor")
OUTPUT_KINDS = ("auto", CLASSES, *TENSOR_KINDS)
NORM_EPSILON = 1e-6  # outputs with a smaller L2 norm are degenerate: their direction means nothing
CLASS_NAME = re.compile(r"logit|prob|class|label|score|softmax", re.IGNORECASE)
TENSOR_NAME = re.compile(r"embed|hidden|pool|feature|box|mask|map|depth|seg", re.IGNORECASE)


def predict(session: Any, split: Split, batch_size: int) -> np.ndarray:
    """Run the first output of ``session`` over ``split``; outputs are stacked along axis 0."""
    return predict_all(session, split, batch_size, first_only=True)[0]


def predict_all(session: Any, split: Split, batch_size: int, *, first_only: bool = False) -> list[np.ndarray]:
    """Every float output of ``session`` over ``split`` (or the first), each with its samples on axis 0."""
    names = [i.name for i in session.get_inputs()]
    metas = session.get_outputs()[: 1 if first_only else None]
    outputs: list[list[np.ndarray]] = [[] for _ in metas]
    axes: list[int] | None = None
    for inputs, _ in split.batches(batch_size):
        results = session.run([o.name for o in metas], dict(zip(names, inputs, strict=False)))
        if axes is None:
            count = len(Split(inputs, None, split.axes))
            axes = output_batch_axes(session.get_inputs(), split.axes or [], metas, results, count)
        for store, result, axis in zip(outputs, results, axes, strict=True):
            store.append(np.moveaxis(np.asarray(result, dtype=np.float32), axis, 0))
    return [np.concatenate(parts, axis=0) for parts in outputs]


def output_batch_axes(
    input_metas: list[Any], input_axes: list[int | None], output_metas: list[Any], results: list[Any], count: int
) -> list[int]:
    """The axis each output holds its samples on (a recurrent state's ``[2, batch, 128]``: 1).

    The axis whose symbolic dim is the inputs' batch dim, else the first axis
    as long as the batch of ``count`` samples that made ``results``, else 0.
    """
    batch_dims = {
        meta.shape[axis]
        for meta, axis in zip(input_metas, input_axes, strict=False)
        if axis is not None and axis < len(meta.shape or []) and isinstance(meta.shape[axis], str)
    }
    axes = []
    for meta, result in zip(output_metas, results, strict=True):
        named = [i for i, dim in enumerate(meta.shape or []) if isinstance(dim, str) and dim in batch_dims]
        sized = [i for i, size in enumerate(np.shape(result)) if size == count]
        axes.append((named or sized or [0])[0])
    return axes


def output_kind(outputs: np.ndarray, labels: np.ndarray | None = None, name: str = "", declared: str = "auto") -> str:
    """What the model's output is: ``classes`` or a tensor kind.

    Only a per-sample vector of scores can be class scores: ``[N, C]`` with
    ``C >= 2``. It is taken for one when labels index it, when its name says
    so (logits, probabilities), or when its rows are probability
    distributions. Anything else is judged as a tensor, since cosine means
    something for every output while top-1 agreement does not.
    """
    if declared != "auto":
        return declared
    if outputs.ndim != 2 or outputs.shape[1] < 2:
        return "detection" if outputs.ndim == 3 else ("dense" if outputs.ndim >= 4 else "regression")
    if labels is not None and len(labels) == len(outputs) and np.issubdtype(np.asarray(labels).dtype, np.integer):
        if labels.min() >= 0 and labels.max() < outputs.shape[1]:
            return CLASSES
    if TENSOR_NAME.search(name):
        return "embedding"
    if CLASS_NAME.search(name):
        return CLASSES
    rows = outputs.astype(np.float64)
    if rows.min() >= 0 and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
        return CLASSES
    return "embedding"


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.reshape(len(labels), -1).argmax(axis=1) == labels).mean())


def top_k(outputs: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    logits = outputs.reshape(len(labels), -1)
    k = min(k, logits.shape[1])
    best = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((best == labels[:, None]).any(axis=1).mean())


def faithfulness(outputs: np.ndarray, reference: np.ndarray, kind: str = "tensor") -> dict[str, float]:
    """How close ``outputs`` are to the float ``reference``, sample by sample.

    ``fidelity`` is the figure that judges: top-1 agreement for class scores,
    the worst sample's cosine otherwise. A sample whose float output is
    (near) zero has no direction: it counts as faithful when the quantized
    output is near zero too, and ``degenerate`` says how many there were.
    An output of one value per sample (a score, a probability) is judged as
    one vector over the samples: the cosine of the column, and its SQNR.
    """
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    if a.shape[1] == 1 and len(a) > 1:  # one value per sample: its own cosine is its sign; judge the column
        a, b = a.T, b.T
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    degenerate = norm_b < NORM_EPSILON
    cos = (a * b).sum(1) / np.maximum(norm_a * norm_b, NORM_EPSILON**2)
    cos[degenerate] = np.where(norm_a[degenerate] < NORM_EPSILON, 1.0, 0.0)
    error = ((a - b) ** 2).sum(1)
    sqnr = 10.0 * np.log10(np.maximum((b**2).sum(1), 1e-30) / np.maximum(error, 1e-30))
    metrics = {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "sqnr_db": float(np.median(np.minimum(sqnr, 300.0))),
        "degenerate": int(degenerate.sum()),
    }
    if kind == CLASSES:
        metrics["agreement"] = float((a.argmax(1) == b.argmax(1)).mean())
        metrics["fidelity"] = metrics["agreement"]
    else:
        metrics["fidelity"] = metrics["cosine_min"]
    return metrics


def evaluate_outputs(
    outputs: np.ndarray,
    labels: np.ndarray | None,
    reference: np.ndarray | None,
    metric: str,
    metric_fn: Any = None,
    kind: str = CLASSES,
) -> dict[str, float]:
    """All metrics that mean something for this output; the recipe's ``metric`` is among them when it can be."""
    metrics: dict[str, float] = {}
    if reference is not None:
        metrics.update(faithfulness(outputs, reference, kind))
    if kind == CLASSES and labels is not None and outputs.ndim >= 2 and outputs.shape[0] == len(labels):
        metrics["accuracy"] = accuracy(outputs, labels)
        metrics["top5"] = top_k(outputs, labels, 5)
    if metric == "factory" and metric_fn is not None:
        metrics["factory"] = float(metric_fn(outputs, labels))
    return metrics


def judged_metric(metric: str, kind: str, has_labels: bool) -> str:
    """The metric a run is judged by: the recipe's, unless it means nothing for this output."""
    if metric in ("accuracy", "top5") and (kind != CLASSES or not has_labels):
        return "fidelity"
    return metric


def evaluate_onnx(path: Path, split: Split, batch_size: int, provider: str, threads: int) -> np.ndarray:
    from compressctl.measure.latency import make_session

    return predict(make_session(path, provider, threads), split, batch_size)
