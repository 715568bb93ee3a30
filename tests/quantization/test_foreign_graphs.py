"""Graphs other tools write, quantized with the stage's defaults and judged by the metric
that fits each output: an opset-11 classifier, dynamic spatial dims, two outputs, and a
graph on which ONNX Runtime's symbolic shape inference fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from compressctl.pipeline import apply
from compressctl.recipe import load_recipe
from tests.conftest import write_recipe

QUANTIZE = {"type": "quantize", "select_repeat": 3, "select_seconds": 5}


def onnx_recipe(model: Path, inputs: list[dict], data: Any, **changes: Any) -> dict:
    recipe = {
        "version": 1,
        "name": "foreign",
        "seed": 0,
        "model": {"onnx": str(model), "inputs": inputs},
        "data": data,
        "evaluate": {"metric": "fidelity"},
        "stages": [QUANTIZE],
        "report": {"providers": ["CPUExecutionProvider"], "batch_sizes": [4], "warmup": 1, "repeat": 3},
    }
    recipe.update(changes)
    return recipe


def quantize_details(tmp_path: Path, recipe: dict) -> dict:
    report = apply(load_recipe(write_recipe(tmp_path, recipe)), tmp_path / "out")
    return next(s["details"] for s in report["stages"] if s["type"] == "quantize")


def export(module: nn.Module, example: tuple, path: Path, opset: int, axes: dict, outputs: list[str]) -> Path:
    torch.onnx.export(
        module.eval(),
        example,
        str(path),
        input_names=list(axes)[: len(example)],
        output_names=outputs,
        opset_version=opset,
        dynamic_axes=axes,
        dynamo=False,
    )
    return path


def test_an_opset_11_classifier_is_upgraded_and_judged_by_agreement(tmp_path: Path) -> None:
    from compressctl.zoo import digits_cnn

    torch.manual_seed(0)
    axes = {"x": {0: "batch"}, "logits": {0: "batch"}}
    model = export(digits_cnn(width=8), (torch.randn(2, 1, 8, 8),), tmp_path / "m.onnx", 11, axes, ["logits"])
    image = [{"name": "x", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    details = quantize_details(tmp_path, onnx_recipe(model, image, {"source": "digits", "batch_size": 64}))
    assert "opset 11 upgraded to 13 for per-channel quantization" in details["notes"]
    assert details["judged_by"] == "agreement" and details["output_kind"] == "classes"
    assert any(c.get("format") for c in details["candidates"] if "error" not in c)


class DenseHead(nn.Module):
    """Fully convolutional: any H×W in, a one-channel map of the same size out."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.body(x)))


def test_dynamic_spatial_dims_take_the_recipes_size_and_a_map_is_judged_by_cosine(tmp_path: Path) -> None:
    torch.manual_seed(0)
    axes = {"image": {0: "n", 2: "h", 3: "w"}, "map": {0: "n", 2: "h", 3: "w"}}
    model = export(DenseHead(), (torch.randn(1, 3, 20, 28),), tmp_path / "m.onnx", 17, axes, ["map"])
    image = [{"name": "image", "shape": ["batch", 3, 24, 32], "dtype": "float32"}]
    data = {"source": "random", "samples": 96, "batch_size": 16}
    details = quantize_details(tmp_path, onnx_recipe(model, image, data))
    assert details["output_kind"] == "dense" and details["judged_by"] == "cosine_min"
    for candidate in details["candidates"]:
        assert "error" not in candidate and 0.0 <= candidate["cosine_min"] <= 1.0 + 1e-9


class TwoHeads(nn.Module):
    """Class scores and an embedding, as retrieval and multitask models return."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.classes = nn.Linear(64, 10)
        self.embedding = nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.classes(features), self.embedding(features)


def test_each_of_two_outputs_is_judged_and_the_worst_decides(tmp_path: Path) -> None:
    torch.manual_seed(0)
    axes = {"x": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}}
    model = export(TwoHeads(), (torch.randn(2, 1, 8, 8),), tmp_path / "m.onnx", 17, axes, ["logits", "embedding"])
    image = [{"name": "x", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    details = quantize_details(tmp_path, onnx_recipe(model, image, {"source": "digits", "batch_size": 64}))
    quantized = [c for c in details["candidates"] if c["candidate"] != "float" and "error" not in c]
    assert quantized
    for candidate in quantized:
        assert set(candidate["outputs"]) == {"logits", "embedding"}
        assert abs(candidate["judged_by"] - min(candidate["outputs"].values())) < 1e-6


def test_a_graph_that_symbolic_shape_inference_cannot_follow_still_quantizes(tmp_path: Path, monkeypatch) -> None:
    from compressctl.onnxio import export_module
    from compressctl.recipe.models import InputSpec
    from compressctl.zoo import tiny_transformer

    torch.manual_seed(0)
    tokens = [InputSpec(name="input_ids", shape=["batch", "seq"], dtype="int64", range=(0, 100))]
    model = tmp_path / "m.onnx"
    kwargs = {"vocab_size": 100, "d_model": 32, "nhead": 2, "num_layers": 1, "dim_feedforward": 64, "max_len": 16}
    export_module(tiny_transformer(**kwargs), tokens, (torch.randint(0, 100, (2, 8)),), model, opset=18, dynamo=True)
    inputs = [{"name": "input_ids", "shape": ["batch", "seq"], "dtype": "int64", "range": [0, 100]}]
    data = {"source": "random", "samples": 96, "batch_size": 16}
    recipe = onnx_recipe(model, inputs, data)
    recipe["model"]["dims"] = {"seq": 8}
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    details = quantize_details(tmp_path, recipe)
    assert "symbolic shape inference failed; pre-processing ran without it" in details["notes"]
    # ONNX Runtime dumps its partial model into the working directory when it fails: not the user's
    assert list(elsewhere.iterdir()) == []
    assert details["chosen"] and any("error" not in c for c in details["candidates"] if c["candidate"] != "float")


def test_a_state_batched_on_axis_1_and_a_scalar_sample_rate_quantize_and_both_outputs_are_judged(
    tmp_path: Path,
) -> None:
    """A streaming model (a VAD's shape): state [2, batch, 4], sr a constant; prob and stateN each judged."""
    from tests.stateful_onnx import STATE_INPUTS, stateful_data, stateful_model

    model = stateful_model(tmp_path / "m.onnx")
    data = {"source": {"npz": str(stateful_data(tmp_path / "d.npz"))}, "batch_size": 16}
    details = quantize_details(tmp_path, onnx_recipe(model, STATE_INPUTS, data))
    assert details["judged_by"] == "cosine_min" and details["output_kind"] == "regression"
    quantized = [c for c in details["candidates"] if c["candidate"] != "float" and "error" not in c]
    assert quantized, details["candidates"]
    for candidate in quantized:
        assert set(candidate["outputs"]) == {"prob", "stateN"}
        assert abs(candidate["judged_by"] - min(candidate["outputs"].values())) < 1e-6
        assert 0.5 < candidate["judged_by"] <= 1.0 + 1e-9
