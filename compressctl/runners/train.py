"""``train`` and ``finetune``: supervised training of the current torch model.

``train`` is not a compression stage: the baseline is the model it produces.
``finetune`` recovers accuracy after a compression stage.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from compressctl.artifact import Artifact
from compressctl.runners.base import Runner, StageConfig


class _TrainOptions(StageConfig):
    epochs: int = Field(5, ge=0, le=10_000, description="Passes over the training split.")
    lr: float = Field(0.002, gt=0, le=10, description="Peak learning rate.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="Optimizer.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="Weight decay.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    scheduler: Literal["cosine", "step", "none"] = Field(
        "cosine", description="Learning-rate schedule (cosine = one-cycle warm-up then cosine decay)."
    )
    batch_size: int | None = Field(None, gt=0, description="Override data.batch_size for this stage.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing.")
    select_best: bool = Field(True, description="Keep the epoch with the best validation accuracy.")
    sparsity_regularization: float = Field(
        0.0, ge=0, description="L1 penalty on BatchNorm scales (network slimming); pair with prune importance bn_scale."
    )


class TrainConfig(_TrainOptions):
    type: Literal["train"] = "train"


class FinetuneConfig(_TrainOptions):
    type: Literal["finetune"] = "finetune"
    epochs: int = Field(3, ge=0, le=10_000, description="Passes over the training split.")
    lr: float = Field(0.001, gt=0, le=10, description="Peak learning rate.")


def settings_from(config: _TrainOptions, data_batch_size: int) -> Any:
    from compressctl.training import TrainSettings

    return TrainSettings(
        epochs=config.epochs,
        lr=config.lr,
        optimizer=config.optimizer,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        scheduler=config.scheduler,
        batch_size=config.batch_size or data_batch_size,
        label_smoothing=config.label_smoothing,
        select_best=config.select_best,
        sparsity_regularization=config.sparsity_regularization,
    )


def train_copy(artifact: Artifact, config: _TrainOptions, context: Any, task: str) -> Artifact:
    import copy

    from compressctl.runners.prune import sparsity_keeper
    from compressctl.training import fit

    module = copy.deepcopy(artifact.module)
    result = fit(
        module,
        context.data,
        settings_from(config, context.batch_size),
        seed=context.seed + context.index,
        progress=context.progress,
        task=task,
        after_step=sparsity_keeper(module, artifact.edits),  # a pruned model's zeros stay zero
    )
    context.details["history"] = result.history
    context.details["best_epoch"] = result.best_epoch
    context.details["best_val_accuracy"] = result.best_val
    return Artifact.from_module(module, artifact.edits)


class TrainRunner(Runner):
    type = "train"
    config_model = TrainConfig
    consumes = "torch"
    produces = "torch"
    compresses = False
    summary = "Train the model on the recipe's data (the baseline is taken after this stage)."

    def run(self, artifact: Artifact, config: TrainConfig, context: Any) -> Artifact:
        return train_copy(artifact, config, context, "train")


class FinetuneRunner(Runner):
    type = "finetune"
    config_model = FinetuneConfig
    consumes = "torch"
    produces = "torch"
    summary = "Fine-tune after compression to recover accuracy."

    def run(self, artifact: Artifact, config: FinetuneConfig, context: Any) -> Artifact:
        return train_copy(artifact, config, context, "finetune")
