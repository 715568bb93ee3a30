"""Graph fusion (compressctl.fusion): a BERT-style encoder exported by torch, fused by
ONNX Runtime's transformer optimizer, with the same outputs; a CNN gets the generic path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from compressctl.fusion import fuse, fuse_encoder
from compressctl.measure.latency import make_session
from compressctl.onnxgraph import is_fused, is_transformer, op_counts
from compressctl.onnxio import export_module, load_onnx
from compressctl.recipe.models import InputSpec
from compressctl.zoo import digits_cnn, sentence_encoder

TOKENS = [
    InputSpec(name="input_ids", shape=["batch", "seq"], dtype="int64"),
    InputSpec(name="attention_mask", shape=["batch", "seq"], dtype="int64"),
]


def encoder_feeds(batch: int = 4, seq: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[1, seq // 2 :] = 0  # one padded sentence: the mask must reach attention
    return {"input_ids": rng.integers(0, 1000, (batch, seq)).astype(np.int64), "attention_mask": mask}


def run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return make_session(path).run(None, feeds)[0]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("encoder") / "model.onnx"
    example = tuple(torch.from_numpy(v[:2]) for v in encoder_feeds().values())
    exporter = export_module(sentence_encoder(), TOKENS, example, path, opset=17, dynamo="auto")
    return path, exporter


def test_auto_export_writes_transformers_with_torchscript(encoder: tuple[Path, str]) -> None:
    path, exporter = encoder
    assert exporter == "torchscript"
    assert is_transformer(load_onnx(path)) and not is_fused(load_onnx(path))


def test_encoder_fuses_attention_and_keeps_outputs(encoder: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = encoder
    result = fuse(path, tmp_path / "fused.onnx")
    assert result.model_type == "bert"
    assert result.fused["Attention"] == 2 and result.fused["SkipLayerNormalization"] >= 2
    assert result.missing == [] and result.warning() is None
    assert result.nodes_after < result.nodes_before
    feeds = encoder_feeds()
    np.testing.assert_allclose(run(tmp_path / "fused.onnx", feeds), run(path, feeds), atol=1e-4)


def test_missing_attention_fusion_is_reported(tmp_path: Path) -> None:
    """The dynamo exporter's graph is not one the optimizer recognises: say so, do not fail quietly."""
    torch.manual_seed(0)
    example = tuple(torch.from_numpy(v[:2]) for v in encoder_feeds().values())
    path = tmp_path / "dynamo.onnx"
    assert export_module(sentence_encoder(), TOKENS, example, path, opset=18, dynamo=True) == "dynamo"
    result = fuse(path, tmp_path / "fused.onnx")
    assert "Attention" in result.missing
    assert "fused no Attention" in result.warning() and "dynamo: false" in result.warning()


def test_cnn_takes_the_generic_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = [InputSpec(name="x", shape=["batch", 1, 8, 8], dtype="float32")]
    path = tmp_path / "cnn.onnx"
    export_module(digits_cnn(width=8), spec, (torch.randn(2, 1, 8, 8),), path, opset=17, dynamo="auto")
    assert not is_transformer(load_onnx(path))
    assert fuse_encoder(path, tmp_path) is None
    result = fuse(path, tmp_path / "optimized.onnx")
    assert result.model_type == "generic" and result.missing == []
    x = {"x": np.random.default_rng(1).normal(size=(3, 1, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(run(tmp_path / "optimized.onnx", x), run(path, x), atol=1e-5)
    assert op_counts(load_onnx(tmp_path / "optimized.onnx"))["Conv"] >= 1
