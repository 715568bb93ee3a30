"""Model sources: factories beside the recipe, checkpoints (weights only), ONNX files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from compressctl.errors import EXIT_BAD_INPUT, UserError
from compressctl.recipe.models import ModelSource
from compressctl.sources import build_torch_model, load_state_dict
from compressctl.zoo import digits_cnn
from tests.conftest import tiny_recipe, write_recipe

SOURCE = {
    "factory": "compressctl.zoo:digits_cnn",
    "kwargs": {"width": 16},
    "inputs": [{"name": "x", "shape": ["batch", 1, 8, 8]}],
}


def test_pt_checkpoint_loads_weights(tmp_path: Path) -> None:
    model = digits_cnn(width=16)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    built = build_torch_model(ModelSource(**SOURCE, checkpoint="model.pt"), tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(built.state_dict()[key], value)


def test_safetensors_checkpoint_loads_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = digits_cnn(width=16)
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    built = build_torch_model(ModelSource(**SOURCE, checkpoint="model.safetensors"), tmp_path)
    assert torch.equal(built.state_dict()["0.weight"], model.state_dict()["0.weight"])


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"weights": _RunsCode()}, handle)
    with pytest.raises(UserError, match="refused: it holds Python objects that would run code") as info:
        load_state_dict(path)
    assert "torch.save(model.state_dict()" in str(info.value)


@pytest.mark.parametrize(
    "content,fragment",
    [(b"PK\x03\x04 truncated", "not a readable checkpoint"), (b"", "not a readable checkpoint")],
)
def test_corrupt_checkpoint(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=fragment):
        load_state_dict(path)


def test_checkpoint_of_another_model(tmp_path: Path) -> None:
    torch.save(digits_cnn(width=8).state_dict(), tmp_path / "other.pt")
    with pytest.raises(UserError, match="model.checkpoint does not match the model"):
        build_torch_model(ModelSource(**SOURCE, checkpoint="other.pt"), tmp_path)


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    state = digits_cnn(width=16).state_dict()
    state["0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(UserError, match="weight '0.weight' contains NaN or Inf"):
        build_torch_model(ModelSource(**SOURCE, checkpoint="nan.pt"), tmp_path)


@pytest.mark.parametrize(
    "factory,fragment",
    [
        ("no_such_module_xyz:build", "cannot import module 'no_such_module_xyz'"),
        ("compressctl.zoo:no_such_builder", "has no attribute 'no_such_builder'"),
        ("compressctl.zoo:DEFAULT_NOT_CALLABLE", "has no attribute"),
    ],
)
def test_bad_factory(tmp_path: Path, factory: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        build_torch_model(ModelSource(**{**SOURCE, "factory": factory}), tmp_path)


def test_factory_module_beside_the_recipe_with_two_int64_inputs(tmp_path: Path, cli) -> None:
    """A BERT-style encoder (input_ids + attention_mask, int64) defined beside the recipe, end to end."""
    (tmp_path / "my_models.py").write_text(
        """
import torch
from torch import nn


class TinyEncoder(nn.Module):
    def __init__(self, vocab=100, dim=32, classes=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.layer = nn.TransformerEncoderLayer(dim, 4, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids, attention_mask):
        x = self.layer(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        return self.head((x * mask).sum(1) / mask.sum(1).clamp(min=1.0))


def build(**kwargs):
    return TinyEncoder(**kwargs)
"""
    )
    recipe = tiny_recipe(
        model={
            "factory": "my_models:build",
            "inputs": [
                {"name": "input_ids", "shape": ["batch", "seq"], "dtype": "int64", "range": [0, 100]},
                {"name": "attention_mask", "shape": ["batch", "seq"], "dtype": "int64", "range": [1, 2]},
            ],
            "dims": {"seq": 12},
        },
        data={"source": "random", "samples": 128, "num_classes": 4, "batch_size": 32},
        evaluate={"metric": "fidelity"},
        stages=[{"type": "train", "epochs": 1}, {"type": "quantize", "mode": "dynamic", "select_repeat": 3}],
    )
    result = cli("apply", write_recipe(tmp_path, recipe), "-o", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["type"] for s in report["stages"]] == ["train", "export", "quantize"]  # export inserted
    assert report["stages"][1]["auto"] is True
    final = report["models"][-1]
    assert final["metrics"]["fidelity"] >= 0.75
    assert report["models"][0]["macs"] > 0


def test_missing_onnx_source_is_bad_input(tmp_path: Path, cli) -> None:
    recipe = tiny_recipe(stages=[{"type": "quantize"}])
    recipe["model"] = {"onnx": "missing.onnx", "inputs": SOURCE["inputs"]}
    result = cli("apply", write_recipe(tmp_path, recipe), "-o", tmp_path / "out")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "model.onnx: no such file" in result.stderr


def test_truncated_onnx_source(tmp_path: Path, cli) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07\x12\x04trun")
    recipe = tiny_recipe(stages=[{"type": "quantize"}])
    recipe["model"] = {"onnx": "broken.onnx", "inputs": SOURCE["inputs"]}
    result = cli("apply", write_recipe(tmp_path, recipe), "-o", tmp_path / "out")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "broken.onnx" in result.stderr and "Traceback" not in result.output
