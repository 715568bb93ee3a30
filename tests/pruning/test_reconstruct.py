"""Least-squares reconstruction after channel pruning: the narrowed Linear layers re-solved on calibration data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from compressctl.artifact import Artifact
from compressctl.data import load_data
from compressctl.pruning.reconstruct import consumers, reconstruct
from compressctl.recipe.models import DataSpec, InputSpec
from compressctl.runners.prune import PruneConfig, PruneRunner
from compressctl.zoo import tiny_transformer
from tests.runners.contexts import stage_context

IMAGE = [InputSpec(name="x", shape=["batch", 1, 8, 8])]
TOKENS = [InputSpec(name="input_ids", shape=["batch", 16], dtype="int64", range=(0, 50))]
DIGITS = load_data(DataSpec(source="digits"), IMAGE, seed=0)
NO_FILES = Path("/nonexistent/prune-writes-no-files")


def mlp() -> nn.Module:
    """Digits through two hidden layers, trained a little so its hidden units carry the signal."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 48), nn.ReLU(), nn.Linear(48, 10))
    images = torch.from_numpy(DIGITS.train.inputs[0])
    labels = torch.from_numpy(DIGITS.train.labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model.eval()


def output_error(original: nn.Module, pruned: nn.Module, inputs: torch.Tensor) -> float:
    with torch.no_grad():
        want, got = original(inputs), pruned(inputs)
    return float((got - want).norm() / want.norm())


def run_prune(model: nn.Module, inputs: list[InputSpec], data, **options) -> tuple[nn.Module, dict]:
    context = stage_context(inputs, data, NO_FILES)
    result = PruneRunner().run(Artifact.from_module(model), PruneConfig(**options), context)
    return result.module, context.details


def test_reconstruction_brings_the_pruned_outputs_back_towards_the_originals():
    model = mlp()
    half = {"amount": 0.0, "layer_amounts": {"1": 0.5, "3": 0.5}}
    plain, _ = run_prune(model, IMAGE, DIGITS, **half)
    solved, details = run_prune(model, IMAGE, DIGITS, **half, reconstruct="least_squares")
    assert [layer.weight.shape for layer in solved if isinstance(layer, nn.Linear)] == [
        torch.Size([48, 64]),
        torch.Size([24, 48]),
        torch.Size([10, 24]),
    ]
    # both narrowed consumers re-solved, in the order they run, each closer to the original's outputs
    # (layer 3 lost outputs too: its bias says which it kept)
    assert list(details["reconstruct"]["solved"]) == ["3", "5"]
    for figures in details["reconstruct"]["solved"].values():
        assert figures["error_after"] < figures["error_before"]
    held_out = torch.from_numpy(DIGITS.val.inputs[0])  # not the calibration samples the layers were solved on
    assert output_error(model, solved, held_out) < 0.5 * output_error(model, plain, held_out)
    assert output_error(model, model, held_out) == 0.0  # the original was not touched


def test_the_encoders_feed_forward_layers_are_re_solved():
    torch.manual_seed(0)
    model = tiny_transformer(vocab_size=50, d_model=32, nhead=4, num_layers=2, dim_feedforward=64, max_len=16).eval()
    tokens = load_data(DataSpec(source="random", samples=64, num_classes=10), TOKENS, seed=0)
    _, details = run_prune(
        model, TOKENS, tokens, amount=0.0, layer_amounts={"encoder.layers.*.linear1": 0.5}, reconstruct="least_squares"
    )
    # (in eval mode PyTorch's encoder fast path would skip the Linear modules, but not while hooks are attached)
    assert list(details["reconstruct"]["solved"]) == ["encoder.layers.0.linear2", "encoder.layers.1.linear2"]
    assert details["reconstruct"]["skipped"] == {}


def test_only_linear_layers_that_lost_inputs_are_solved_and_only_where_their_kept_outputs_are_known():
    original = mlp()
    narrowed = mlp()
    narrowed[1] = nn.Linear(64, 40)  # lost outputs only: nothing to solve
    narrowed[3] = nn.Linear(40, 48)  # lost inputs, kept outputs: solved
    narrowed[5] = nn.Linear(40, 9)  # lost inputs and outputs, and a bias that matches none of the original's
    assert consumers(original, narrowed) == {"3": None}
    with torch.no_grad():
        narrowed[5].bias.copy_(original[5].bias[[0, 1, 2, 3, 4, 6, 7, 8, 9]])
    assert consumers(original, narrowed) == {"3": None, "5": [0, 1, 2, 3, 4, 6, 7, 8, 9]}
    assert reconstruct(original, original, [[torch.zeros(2, 1, 8, 8)]]) == {"solved": {}, "skipped": {}}


@pytest.mark.parametrize(
    "options",
    [
        {"method": "unstructured", "reconstruct": "least_squares"},
        {"iterations": 2, "reconstruct": "least_squares"},
        {"schedule": {"epochs": 1}, "reconstruct": "least_squares"},
    ],
)
def test_reconstruction_is_for_one_shot_structured_pruning_without_training_inside(options):
    with pytest.raises(ValidationError, match="reconstruct applies to one-shot structured pruning"):
        PruneConfig(**options)
