"""train / finetune: learning, determinism, best-on-validation, sparsity regularization."""

from __future__ import annotations

import torch

from compressctl.data import load_data
from compressctl.recipe.models import DataSpec, InputSpec
from compressctl.training import TrainSettings, bn_l1_penalty, evaluate_torch, fit
from compressctl.zoo import digits_cnn

DATA = load_data(DataSpec(source="digits"), [InputSpec(name="x", shape=["batch", 1, 8, 8])], seed=0)


def trained(seed: int, **settings) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(seed)
    model = digits_cnn(width=8)
    result = fit(model, DATA, TrainSettings(epochs=2, lr=0.01, batch_size=64, **settings), seed=seed)
    return model, result


def test_training_learns_digits() -> None:
    model, result = trained(0)
    assert evaluate_torch(model, DATA.val, 256) > 0.8
    assert result.best_val == max(h["val_accuracy"] for h in result.history)


def test_same_seed_same_weights() -> None:
    a, _ = trained(1)
    b, _ = trained(1)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_sparsity_regularization_shrinks_batchnorm_scales() -> None:
    plain, _ = trained(2)
    slim, _ = trained(2, sparsity_regularization=1e-3)
    assert float(bn_l1_penalty(slim)) < float(bn_l1_penalty(plain))
