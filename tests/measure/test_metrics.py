"""Faithfulness fits the output: class scores by agreement, every other output by cosine and SQNR."""

from __future__ import annotations

import numpy as np
import pytest

from compressctl.measure.metrics import evaluate_outputs, faithfulness, judged_metric, output_kind


@pytest.mark.parametrize(
    ("shape", "labels", "name", "kind"),
    [
        ((64, 10), True, "y", "classes"),
        ((64, 10), False, "logits", "classes"),
        ((64, 384), False, "sentence_embedding", "embedding"),
        ((64, 384), False, "output", "embedding"),
        ((8, 84, 8400), False, "output0", "detection"),
        ((8, 1, 96, 96), False, "sigmoid_0.tmp_0", "dense"),
        ((64, 1), False, "price", "regression"),
        ((64,), False, "y", "regression"),
    ],
)
def test_output_kind_from_shape_name_and_labels(shape, labels, name, kind) -> None:
    rng = np.random.default_rng(0)
    outputs = rng.standard_normal(shape).astype(np.float32)
    given = rng.integers(0, shape[-1], shape[0]) if labels else None
    assert output_kind(outputs, given, name) == kind


def test_probability_rows_are_class_scores_and_a_recipe_can_say_otherwise() -> None:
    logits = np.random.default_rng(0).standard_normal((32, 5))
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert output_kind(probabilities, None, "output") == "classes"
    assert output_kind(probabilities, None, "output", declared="embedding") == "embedding"


def test_a_detection_tensor_is_judged_by_cosine_not_argmax() -> None:
    """Near-uniform scores: argmax flips under tiny noise while the tensor is almost unchanged."""
    rng = np.random.default_rng(0)
    reference = 0.5 + 1e-4 * rng.standard_normal((16, 15, 500))
    quantized = reference + 2e-3 * rng.standard_normal(reference.shape)
    as_classes = faithfulness(quantized.reshape(16, -1), reference.reshape(16, -1), "classes")
    as_detection = faithfulness(quantized, reference, "detection")
    assert as_classes["fidelity"] < 0.2  # top-1 agreement says "unfaithful"
    assert as_detection["fidelity"] == as_detection["cosine_min"] > 0.999
    assert "agreement" not in as_detection and as_detection["sqnr_db"] > 40


def test_degenerate_float_outputs_never_give_nan() -> None:
    reference = np.ones((6, 4, 4))
    reference[:2] = 0.0  # the float model's output is zero on two samples
    quantized = reference.copy()
    quantized[1] = 1e-3  # one of them no longer zero
    found = faithfulness(quantized, reference, "dense")
    assert found["degenerate"] == 2
    assert all(np.isfinite(v) for v in found.values())
    assert found["cosine_min"] == 0.0 and found["cosine_mean"] == pytest.approx(5 / 6)


def test_accuracy_is_never_reported_for_a_non_classifier() -> None:
    rng = np.random.default_rng(0)
    outputs = rng.standard_normal((20, 384))
    labels = rng.integers(0, 384, 20)
    metrics = evaluate_outputs(outputs, labels, outputs, "accuracy", kind="embedding")
    assert "accuracy" not in metrics and "agreement" not in metrics and metrics["fidelity"] == pytest.approx(1.0)
    assert judged_metric("accuracy", "embedding", has_labels=True) == "fidelity"
    assert judged_metric("accuracy", "classes", has_labels=False) == "fidelity"
    assert judged_metric("accuracy", "classes", has_labels=True) == "accuracy"
