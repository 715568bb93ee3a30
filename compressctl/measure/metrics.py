"""Task metrics of an ONNX model on the validation split: accuracy, top-5, fidelity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compressctl.data import Split


def predict(session: Any, split: Split, batch_size: int) -> np.ndarray:
    """Run the first output of ``session`` over ``split``; outputs are stacked along axis 0."""
    names = [i.name for i in session.get_inputs()]
    outputs = []
    for inputs, _ in split.batches(batch_size):
        result = session.run(None, dict(zip(names, inputs, strict=False)))[0]
        outputs.append(np.asarray(result, dtype=np.float32))
    return np.concatenate(outputs, axis=0)


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.reshape(len(labels), -1).argmax(axis=1) == labels).mean())


def top_k(outputs: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    logits = outputs.reshape(len(labels), -1)
    k = min(k, logits.shape[1])
    best = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((best == labels[:, None]).any(axis=1).mean())


def agreement(outputs: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Fidelity to the baseline: top-1 agreement and cosine similarity of outputs."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    metrics = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
    if a.shape[1] > 1:
        metrics["fidelity"] = float((a.argmax(1) == b.argmax(1)).mean())
    else:
        metrics["fidelity"] = metrics["cosine_mean"]
    return metrics


def evaluate_outputs(
    outputs: np.ndarray,
    labels: np.ndarray | None,
    reference: np.ndarray | None,
    metric: str,
    metric_fn: Any = None,
) -> dict[str, float]:
    """All metrics we can compute; the recipe's ``metric`` is always among them."""
    metrics: dict[str, float] = {}
    if reference is not None:
        metrics.update(agreement(outputs, reference))
    if labels is not None and outputs.ndim >= 2 and outputs.shape[0] == len(labels):
        metrics["accuracy"] = accuracy(outputs, labels)
        metrics["top5"] = top_k(outputs, labels, 5)
    if metric == "factory" and metric_fn is not None:
        metrics["factory"] = float(metric_fn(outputs, labels))
    return metrics


def evaluate_onnx(path: Path, split: Split, batch_size: int, provider: str, threads: int) -> np.ndarray:
    from compressctl.measure.latency import make_session

    return predict(make_session(path, provider, threads), split, batch_size)
