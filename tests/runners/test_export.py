"""The export stage: both exporters, dynamic axes, the output check, failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from compressctl.errors import StageError
from compressctl.onnxio import check_export, export_module, onnx_files, save_onnx
from compressctl.recipe.models import InputSpec
from compressctl.zoo import digits_cnn, tiny_transformer

IMAGE = [InputSpec(name="x", shape=["batch", 1, 8, 8])]
TOKENS = [InputSpec(name="input_ids", shape=["batch", "seq"], dtype="int64", range=(0, 1000))]


@pytest.mark.parametrize("dynamo", [True, False])
def test_export_has_dynamic_batch_and_matches_torch(tmp_path: Path, dynamo: bool) -> None:
    model = digits_cnn(width=8).eval()
    path = tmp_path / "m.onnx"
    exporter = export_module(model, IMAGE, (torch.randn(2, 1, 8, 8),), path, opset=18, dynamo=dynamo)
    assert exporter == ("dynamo" if dynamo else "torchscript")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 1, 8, 8)).astype(np.float32)
        assert session.run(None, {"x": x})[0].shape == (batch, 10)
    feeds = [np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32)]
    assert check_export(model, path, feeds, ["x"], rtol=1e-3, atol=1e-4) < 1e-4


def test_transformer_exports_with_dynamic_sequence(tmp_path: Path) -> None:
    model = tiny_transformer(d_model=32, nhead=2, num_layers=1, dim_feedforward=64).eval()
    path = tmp_path / "t.onnx"
    export_module(model, TOKENS, (torch.randint(0, 1000, (2, 8)),), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seq in (5, 16):
        ids = np.random.default_rng(seq).integers(0, 1000, (3, seq)).astype(np.int64)
        expected = model(torch.from_numpy(ids)).detach().numpy()
        np.testing.assert_allclose(session.run(None, {"input_ids": ids})[0], expected, rtol=1e-3, atol=1e-4)


class Diverges(nn.Module):
    """Exports fine, but behaves differently in ONNX than in torch (a Python-side branch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if float(x.sum()) > 0 else x * 3


def test_output_check_catches_a_wrong_export(tmp_path: Path) -> None:
    path = tmp_path / "d.onnx"
    export_module(Diverges(), IMAGE, (torch.ones(2, 1, 8, 8),), path, dynamo=False)
    with pytest.raises(StageError, match="ONNX Runtime outputs differ from torch outputs"):
        check_export(Diverges(), path, [-np.ones((2, 1, 8, 8), np.float32)], ["x"], rtol=1e-3, atol=1e-4)


def test_large_models_are_saved_with_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import compressctl.onnxio as onnxio

    monkeypatch.setattr(onnxio, "EXTERNAL_DATA_THRESHOLD", 1000)
    path = tmp_path / "m.onnx"
    export_module(digits_cnn(width=8).eval(), IMAGE, (torch.randn(2, 1, 8, 8),), path, dynamo=False)
    save_onnx(onnx.load(str(path)), path)
    files = onnx_files(path)
    assert [f.name for f in files] == ["m.onnx", "m.onnx.data"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.zeros((1, 1, 8, 8), np.float32)})[0].shape == (1, 10)
