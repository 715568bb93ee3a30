"""The training loop shared by train, finetune, distill, QAT and gradual pruning.

Deterministic (seeded initialisation, shuffling and algorithms), keeps the
best state on validation, and reports progress through a callback.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compressctl.errors import UserError

log = logging.getLogger("compressctl")

LossFn = Callable[[Any, list[Any], Any], Any]  # (model, inputs, labels) -> loss tensor


@dataclass
class TrainSettings:
    epochs: int
    lr: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str = "cosine"
    batch_size: int | None = None
    label_smoothing: float = 0.0
    select_best: bool = True
    sparsity_regularization: float = 0.0


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val: float | None = None


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def to_tensors(arrays: list[np.ndarray]) -> list[Any]:
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def model_outputs(model: Any, inputs: list[Any]) -> Any:
    from compressctl.onnxio import first_tensor

    return first_tensor(model(*inputs))


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    import torch.nn.functional as F

    def loss(model: Any, inputs: list[Any], labels: Any) -> Any:
        return F.cross_entropy(model_outputs(model, inputs), labels, label_smoothing=label_smoothing)

    return loss


def make_optimizer(params: Any, settings: TrainSettings) -> Any:
    import torch

    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay, nesterov=True
        )
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)


def evaluate_torch(model: Any, split: Any, batch_size: int) -> float | None:
    """Top-1 accuracy of a torch model on ``split`` (None without labels)."""
    import torch

    if split.labels is None:
        return None
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for inputs, labels in split.batches(batch_size):
            logits = model_outputs(model, to_tensors(inputs))
            correct += int((logits.argmax(-1).numpy() == labels).sum())
    model.train(was_training)
    return correct / len(split)


def bn_l1_penalty(model: Any) -> Any:
    """Sum of |γ| over BatchNorm layers (network slimming, Liu et al. 2017)."""
    import torch

    total = torch.zeros(())
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            total = total + module.weight.abs().sum()
    return total


def fit(
    model: Any,
    data: Any,
    settings: TrainSettings,
    *,
    seed: int,
    loss_fn: LossFn | None = None,
    parameters: Any = None,
    on_epoch_start: Callable[[int], None] | None = None,
    after_step: Callable[[], None] | None = None,
    progress: Callable[..., None] | None = None,
    task: str = "train",
    needs_labels: bool = True,
) -> TrainResult:
    """Train ``model`` in place on ``data.train``; restores the best validation state."""
    import torch

    if needs_labels and not data.has_labels:
        raise UserError(f"{task} needs labelled data; this data source has no labels")
    seed_everything(seed)
    loss_fn = loss_fn or cross_entropy_loss(settings.label_smoothing)
    params = [p for p in (parameters if parameters is not None else model.parameters()) if p.requires_grad]
    optimizer = make_optimizer(params, settings)
    batch_size = settings.batch_size or 64
    steps_per_epoch = max(1, -(-len(data.train) // batch_size))
    total_steps = steps_per_epoch * settings.epochs
    scheduler = None
    if settings.scheduler == "cosine" and total_steps > 0:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=settings.lr, total_steps=total_steps, pct_start=0.15, anneal_strategy="cos"
        )
    elif settings.scheduler == "step" and total_steps > 0:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, total_steps // 3), gamma=0.1)
    result = TrainResult()
    best_state = None
    report = progress or (lambda *a, **k: None)
    report("task", name=task, total=total_steps)
    for epoch in range(settings.epochs):
        if on_epoch_start:
            on_epoch_start(epoch)
        model.train()
        losses = []
        for inputs, labels in data.train.batches(batch_size, shuffle=True, seed=seed * 1000 + epoch):
            tensors = to_tensors(inputs)
            target = torch.from_numpy(labels) if labels is not None else None
            loss = loss_fn(model, tensors, target)
            if settings.sparsity_regularization > 0:
                loss = loss + settings.sparsity_regularization * bn_l1_penalty(model)
            if not torch.isfinite(loss):
                raise RuntimeError(f"the loss became {loss.item()} in epoch {epoch + 1}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if after_step:
                after_step()
            losses.append(float(loss.detach()))
            report("advance", name=task)
        val = evaluate_torch(model, data.val, batch_size * 4) if data.has_labels else None
        entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else 0.0}
        if val is not None:
            entry["val_accuracy"] = val
        result.history.append(entry)
        log.info(
            "%s epoch %d/%d: loss %.4f%s",
            task,
            epoch + 1,
            settings.epochs,
            entry["loss"],
            f", val accuracy {val:.4f}" if val is not None else "",
        )
        if settings.select_best and val is not None and (result.best_val is None or val >= result.best_val):
            result.best_val, result.best_epoch = val, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    report("task_done", name=task)
    return result
