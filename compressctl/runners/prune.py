"""``prune``: structured (channel), unstructured (magnitude) and N:M pruning.

* ``structured`` removes channels for real through Torch-Pruning's dependency
  graph (see ``compressctl.pruning.structured``): the tensors shrink, and so do
  the exported model's MACs and latency.
* ``unstructured`` zeroes the smallest weights of Conv and Linear layers,
  globally or per layer; the zeros show in ``nonzero_params`` and the zipped size.
* ``nm`` keeps N of every M consecutive input weights (2:4 by default).

``reconstruct: least_squares`` (one-shot structured) then re-solves each narrowed
Linear layer on calibration data so it reproduces the unpruned model's outputs,
with no training (``compressctl.pruning.reconstruct``).

Schedules: one shot, ``iterations: K`` (prune → fine-tune, K times, up to the
target), or ``schedule: {kind: gradual, epochs: N}`` (sparsity rises on a cubic
ramp during N epochs of fine-tuning, Zhu & Gupta 2017). Sparse weights are
recorded as a ``sparse`` edit, so a later ``finetune`` keeps them at zero.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from compressctl.artifact import Artifact
from compressctl.errors import UserError
from compressctl.pruning.importance import IMPORTANCES, SEARCHED_IMPORTANCES
from compressctl.recipe.models import Strict
from compressctl.runners.base import Runner, StageConfig, searched

log = logging.getLogger("compressctl")


class ScheduleConfig(Strict):
    kind: Literal["oneshot", "gradual"] = Field(
        "oneshot",
        description="oneshot: prune, then fine-tune `epochs`; gradual: raise sparsity on a cubic ramp while fine-tuning.",
    )
    epochs: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Fine-tuning epochs inside the stage (per iteration for oneshot; in all for gradual).",
    )
    ramp_end: float = Field(
        0.7, gt=0, le=1, description="gradual: fraction of the fine-tuning after which the target is reached."
    )
    update_every: int = Field(
        10, gt=0, le=100_000, description="gradual unstructured: optimizer steps between mask updates."
    )
    lr: float = Field(0.001, gt=0, le=10, description="Peak learning rate of the fine-tuning.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="Optimizer of the fine-tuning.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="Weight decay of the fine-tuning.")
    batch_size: int | None = Field(None, gt=0, description="Override data.batch_size for the fine-tuning.")


class PruneConfig(StageConfig):
    type: Literal["prune"] = "prune"
    method: Literal["structured", "unstructured", "nm"] = Field(
        "structured", description="structured: remove channels; unstructured: zero single weights; nm: N:M sparsity."
    )
    amount: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Fraction removed: of channels (structured) or of Conv/Linear weights (unstructured).",
    )
    importance: Literal[tuple(IMPORTANCES)] = Field(  # type: ignore[valid-type]
        "l1",
        description="structured: channel ranking (bn_scale pairs with train's sparsity_regularization).",
        json_schema_extra=searched(choices=list(SEARCHED_IMPORTANCES), needs={"bn_scale": "BatchNormalization"}),
    )
    scope: Literal["global", "layer"] | None = Field(
        None,
        description="Rank across all layers (global) or within each layer (default: layer for structured, global for unstructured).",
    )
    layer_amounts: dict[str, float] = Field(
        default_factory=dict,
        description="Per-layer amount by module-name glob pattern, e.g. {'layer3.*': 0.3}.",
        json_schema_extra=searched(per="layer_group", range=[0.0, 0.8], step=0.05, models="torch"),
    )
    ignore: list[str] = Field(default_factory=list, description="Module-name glob patterns never pruned.")
    prune_head: bool = Field(
        False,
        description=(
            "unstructured/nm: also sparsify the layer producing the model's output (the classifier head); "
            "structured never removes output channels."
        ),
    )
    round_to: int | None = Field(
        None, gt=0, le=1024, description="structured: keep channel counts multiples of this (e.g. 8)."
    )
    max_layer_amount: float = Field(0.9, gt=0, lt=1, description="structured: most any single layer may lose.")
    attention_heads: float = Field(
        0.0,
        ge=0,
        lt=1,
        description=(
            "structured: fraction of whole attention heads removed in attention blocks with separate "
            "query/key/value layers (Hugging Face style); 0 keeps every head and narrows them with the channels."
        ),
    )
    reconstruct: Literal["none", "least_squares"] = Field(
        "none",
        description=(
            "structured: least_squares re-solves each narrowed Linear layer's weights on calibration data so "
            "its outputs match the unpruned model's (no training; convolutions keep their pruned weights)."
        ),
        json_schema_extra=searched(choices=["none", "least_squares"], needs={"least_squares": "Linear"}),
    )
    reconstruct_samples: int = Field(
        256, gt=0, le=100_000, description="least_squares: calibration samples the layers are solved on."
    )
    n: int = Field(2, ge=1, le=64, description="nm: weights kept per group.")
    m: int = Field(4, ge=2, le=64, description="nm: group size along the input channels.")
    iterations: int = Field(
        1, ge=1, le=100, description="Prune → fine-tune this many times, rising linearly to the target."
    )
    taylor_batches: int = Field(4, gt=0, le=1000, description="taylor: training batches whose gradients rank channels.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Fine-tuning inside the stage.")

    @model_validator(mode="after")
    def _consistent(self) -> PruneConfig:
        for pattern, value in self.layer_amounts.items():
            if not 0 <= value < 1:
                raise ValueError(f"layer_amounts['{pattern}'] must be in [0, 1) (got {value})")
        if self.method == "nm" and self.n >= self.m:
            raise ValueError(f"n must be smaller than m (got {self.n}:{self.m})")
        if self.method != "structured" and (
            self.importance != "l1" or self.round_to is not None or self.attention_heads
        ):
            raise ValueError("'importance', 'round_to' and 'attention_heads' apply to method structured")
        if self.reconstruct != "none" and (self.method != "structured" or self.iterations != 1 or self.schedule.epochs):
            raise ValueError(
                "reconstruct applies to one-shot structured pruning without fine-tuning inside the stage "
                "(iterations 1, schedule.epochs 0); a finetune or distill stage may follow"
            )
        if self.method == "nm" and self.schedule.kind == "gradual":
            raise ValueError("N:M sparsity has no gradual schedule; use kind oneshot with epochs")
        if self.schedule.kind == "gradual":
            if self.schedule.epochs == 0:
                raise ValueError("schedule.kind gradual needs schedule.epochs > 0")
            if self.iterations != 1:
                raise ValueError("give either iterations or a gradual schedule, not both")
        return self

    @property
    def ranking(self) -> str:
        return self.scope or ("layer" if self.method == "structured" else "global")


def replay_sparse(module: Any, edit: dict[str, Any]) -> Any:
    """Nothing to rebuild: the zeros come back with the weights."""
    return module


def sparsity_keeper(module: Any, edits: list[dict[str, Any]]) -> Any:
    """An ``after_step`` hook that keeps a sparse model's zeros at zero (None if nothing is sparse)."""
    from compressctl.pruning.sparse import apply_masks, masks_from_zeros

    names = sorted({n for e in edits if e.get("op") == "sparse" for n in e["tensors"]})
    if not names:
        return None
    masks = masks_from_zeros(module, names)
    return lambda: apply_masks(module, masks)


def fine_tune(
    module: Any, config: PruneConfig, context: Any, epochs: int, after_step: Any = None, **kwargs: Any
) -> Any:
    from compressctl.training import TrainSettings, fit

    schedule = config.schedule
    settings = TrainSettings(
        epochs=epochs,
        lr=schedule.lr,
        optimizer=schedule.optimizer,
        weight_decay=schedule.weight_decay,
        batch_size=schedule.batch_size or context.batch_size,
        **kwargs,
    )
    return fit(
        module,
        context.data,
        settings,
        seed=context.seed + context.index,
        after_step=after_step,
        progress=context.progress,
        task="prune-finetune",
    )


def taylor_gradients(module: Any, config: PruneConfig, context: Any) -> None:
    """Accumulate loss gradients on a few training batches (Taylor importance reads them)."""
    from itertools import islice

    import torch
    import torch.nn.functional as F

    from compressctl.training import model_outputs, to_tensors

    if not context.data.has_labels:
        raise UserError("prune importance taylor needs labelled data; use l1, l2 or bn_scale")
    module.zero_grad(set_to_none=True)
    batches = context.data.train.batches(context.batch_size, shuffle=True, seed=context.seed)
    for inputs, labels in islice(batches, config.taylor_batches):
        loss = F.cross_entropy(model_outputs(module, to_tensors(inputs)), torch.from_numpy(labels))
        loss.backward()


def prune_structured(module: Any, config: PruneConfig, context: Any, example: tuple[Any, ...]) -> dict[str, Any]:
    from compressctl.pruning.structured import build_pruner, cubic_schedule, linear_schedule, sync_attention_heads

    gradual = config.schedule.kind == "gradual"
    epochs = config.schedule.epochs
    steps = max(1, round(config.schedule.ramp_end * epochs)) if gradual else config.iterations
    # gradual: one epoch after each step but the last, which gets the rest
    epochs_after = [1] * (steps - 1) + [epochs - steps + 1] if gradual else [epochs] * steps
    pruner, ignored = build_pruner(
        module,
        example,
        amount=config.amount,
        importance=config.importance,
        global_ranking=config.ranking == "global",
        layer_amounts=config.layer_amounts,
        ignore=config.ignore,
        keep_head=True,
        round_to=config.round_to,
        max_layer_amount=config.max_layer_amount,
        heads=config.attention_heads,
        steps=steps,
        schedule=cubic_schedule if gradual else linear_schedule,
    )
    history = []
    for step in range(steps):
        module.eval()
        if config.importance == "taylor":
            taylor_gradients(module, config, context)
        pruner.step()
        sync_attention_heads(module, pruner)
        module.zero_grad(set_to_none=True)
        entry: dict[str, Any] = {"step": step + 1, "params": sum(p.numel() for p in module.parameters())}
        if epochs_after[step] > 0:
            result = fine_tune(module, config, context, epochs_after[step])
            entry["val_accuracy"] = result.best_val if result.best_val is not None else None
        history.append(entry)
        log.info("prune structured step %d/%d: %d params", step + 1, steps, entry["params"])
    return {"ignored": ignored, "steps": history}


def reconstruct_layers(original: Any, module: Any, config: PruneConfig, context: Any) -> dict[str, Any]:
    """Least-squares reconstruction of the narrowed Linear layers (``compressctl.pruning.reconstruct``)."""
    from compressctl.pruning.reconstruct import reconstruct
    from compressctl.training import to_tensors

    data = context.data.calibration.head(config.reconstruct_samples)
    batches = [to_tensors(inputs) for inputs, _ in data.batches(context.batch_size)]
    result = reconstruct(original, module, batches)
    if not result["solved"]:
        log.warning(
            "prune reconstruct: no Linear layer was re-solved (%s)",
            "; ".join(f"{k}: {v}" for k, v in result["skipped"].items()) or "no Linear layer lost inputs",
        )
    return result


def sparse_targets(module: Any, config: PruneConfig, example: tuple[Any, ...]) -> dict[str, Any]:
    """The Conv/Linear weights a sparse method may touch."""
    from torch import nn

    from compressctl.globs import matches
    from compressctl.pruning.sparse import nm_compatible
    from compressctl.pruning.structured import head_layers

    skip = set() if config.prune_head else set(head_layers(module, example))
    weights = {}
    for name, child in module.named_modules():
        if not isinstance(child, (nn.Linear, nn.modules.conv._ConvNd)) or name in skip or matches(name, config.ignore):
            continue
        if config.method == "nm" and not nm_compatible(child.weight, config.m):
            continue
        weights[f"{name}.weight"] = child.weight
    if not weights:
        raise UserError(f"prune {config.method}: no Conv or Linear weight can be pruned in this model")
    return weights


def sparse_masks(weights: dict[str, Any], config: PruneConfig, amount: float) -> dict[str, Any]:
    from compressctl.globs import first_match
    from compressctl.pruning.sparse import magnitude_masks, nm_mask

    if config.method == "nm":
        return {name: nm_mask(w, config.n, config.m) for name, w in weights.items()}
    masks = {}
    special = {}
    for name in weights:
        layer = name.rsplit(".", 1)[0]
        pattern = first_match(layer, list(config.layer_amounts))
        if pattern is not None:
            special[name] = config.layer_amounts[pattern] * amount / max(config.amount, 1e-12)
    rest = {n: w for n, w in weights.items() if n not in special}
    if rest:
        masks.update(magnitude_masks(rest, amount, config.ranking))
    for name, layer_amount in special.items():
        masks.update(magnitude_masks({name: weights[name]}, layer_amount, "layer"))
    return masks


def prune_sparse(module: Any, config: PruneConfig, context: Any, example: tuple[Any, ...]) -> dict[str, Any]:
    from compressctl.pruning.sparse import apply_masks
    from compressctl.pruning.structured import cubic_schedule

    weights = sparse_targets(module, config, example)
    state: dict[str, Any] = {"masks": {}}

    def keep_masks() -> None:
        apply_masks(module, state["masks"])

    if config.schedule.kind == "gradual":
        steps_per_epoch = max(1, -(-len(context.data.train) // (config.schedule.batch_size or context.batch_size)))
        ramp_steps = max(1, round(config.schedule.ramp_end * config.schedule.epochs * steps_per_epoch))
        updates = max(1, -(-ramp_steps // config.schedule.update_every))
        targets = cubic_schedule(config.amount, updates)
        counter = {"step": 0}

        def gradual_step() -> None:
            counter["step"] += 1
            done = counter["step"]
            if done % config.schedule.update_every == 0 or done == ramp_steps:
                update = min(updates, -(-done // config.schedule.update_every))
                state["masks"] = sparse_masks(weights, config, targets[update])
            keep_masks()

        # the best epoch could come before the ramp ends, with fewer zeros: keep the last one
        fine_tune(module, config, context, config.schedule.epochs, after_step=gradual_step, select_best=False)
        state["masks"] = sparse_masks(weights, config, config.amount)
        keep_masks()
        return {"mask_updates": updates, "ramp_steps": ramp_steps}
    for step in range(config.iterations):
        amount = config.amount * (step + 1) / config.iterations
        state["masks"] = sparse_masks(weights, config, amount)
        keep_masks()
        if config.schedule.epochs > 0:
            fine_tune(module, config, context, config.schedule.epochs, after_step=keep_masks)
    return {}


class PruneRunner(Runner):
    type = "prune"
    config_model = PruneConfig
    consumes = "torch"
    produces = "torch"
    summary = "Prune: remove channels (structured, via Torch-Pruning), zero weights (unstructured) or N:M sparsity."
    edit_replays: ClassVar[dict[str, Any]] = {"sparse": replay_sparse}

    def run(self, artifact: Artifact, config: PruneConfig, context: Any) -> Artifact:
        import copy

        import torch

        from compressctl.inputs import example_inputs
        from compressctl.pruning.sparse import sparsity
        from compressctl.pruning.structured import layer_widths, width_changes

        module = copy.deepcopy(artifact.module).eval()
        example = example_inputs(context.inputs, context.dims, batch=2)
        torch.manual_seed(context.seed + context.index)
        params_before = sum(p.numel() for p in module.parameters())
        widths_before = layer_widths(module)
        edit = None
        if config.method == "structured":
            details = prune_structured(module, config, context, example)
            if config.reconstruct == "least_squares":
                original = copy.deepcopy(artifact.module).eval()
                details["reconstruct"] = reconstruct_layers(original, module, config, context)
                del original
        else:
            details = prune_sparse(module, config, context, example)
            names = sorted(sparse_targets(module, config, example))
            details["weight_sparsity"] = round(sparsity(module, names), 4)
            edit = {"op": "sparse", "method": config.method, "tensors": names}
        module.eval()
        params_after = sum(p.numel() for p in module.parameters())
        nonzero = sum(int((p != 0).sum()) for p in module.parameters())
        context.details.update(
            {
                "method": config.method,
                "ranking": config.ranking,
                "params_before": params_before,
                "params_after": params_after,
                "nonzero_params_after": nonzero,
                "channels": width_changes(widths_before, layer_widths(module)),
                **details,
            }
        )
        log.info("prune %s: params %d → %d (%d nonzero)", config.method, params_before, params_after, nonzero)
        return artifact.with_module(module, edit)
