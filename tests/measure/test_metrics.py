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


def test_one_value_per_sample_is_judged_over_the_samples_not_by_its_sign() -> None:
    """A speech probability halved on a third of the samples: each sample's own cosine would still be 1."""
    reference = np.random.default_rng(0).uniform(0.05, 0.95, (30, 1))
    quantized = reference.copy()
    quantized[::3] *= 0.2
    found = faithfulness(quantized, reference, "regression")
    assert found["fidelity"] == found["cosine_min"] < 0.95
    assert faithfulness(reference, reference, "regression")["fidelity"] == pytest.approx(1.0)


def test_outputs_are_stacked_on_their_own_batch_axis(tmp_path) -> None:
    """``stateN`` [2, batch, 4] comes back as [samples, 2, 4], equal to running each sample alone."""
    from compressctl.data import Split
    from compressctl.measure.latency import make_session
    from compressctl.measure.metrics import predict_all
    from tests.stateful_onnx import stateful_model

    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 8)).astype(np.float32)
    state = rng.standard_normal((2, 10, 4)).astype(np.float32)
    sr = np.array(16000, np.int64)
    session = make_session(stateful_model(tmp_path / "m.onnx"))
    prob, state_n = predict_all(session, Split([x, state, sr], None, [0, 1, None]), batch_size=4)
    assert prob.shape == (10, 1) and state_n.shape == (10, 2, 4)
    for i in (0, 5, 9):
        alone = session.run(None, {"x": x[i : i + 1], "state": state[:, i : i + 1], "sr": sr})
        assert np.allclose(prob[i], alone[0][0], atol=1e-6) and np.allclose(state_n[i], alone[1][:, 0], atol=1e-6)
