"""The distillation loop: ``training.fit`` with the distillation loss and its adapters' parameters."""

from __future__ import annotations

from typing import Any

from compressctl.distillation.losses import DistillLoss


def distill(
    student: Any, teacher: Any, data: Any, config: Any, settings: Any, seed: int, progress: Any = None
) -> dict[str, Any]:
    """Train ``student`` in place against ``teacher``; returns what the report shows.

    ``config`` is the stage's DistillConfig (its losses), ``settings`` a ``TrainSettings``.
    """
    import itertools

    from compressctl.training import fit, to_tensors

    example = to_tensors(next(data.train.batches(min(8, len(data.train))))[0])
    loss = DistillLoss(student, teacher, config, example)
    try:
        result = fit(
            student,
            data,
            settings,
            seed=seed,
            loss_fn=loss,
            parameters=itertools.chain(student.parameters(), loss.parameters()),
            progress=progress,
            task="distill",
            needs_labels=False,
        )
    finally:
        loss.close()
    return {
        "history": result.history,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val,
        "adapters": loss.adapter_notes,
        "adapter_params": sum(p.numel() for p in loss.parameters()),
        "labels_used": data.has_labels,
    }


def count_params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())
