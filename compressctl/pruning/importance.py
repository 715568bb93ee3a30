"""Channel-ranking criteria of structured pruning: one table from recipe name to Torch-Pruning importance.

The table is the single list of names: the prune stage's ``importance`` option,
the pruner and the advisor's search space all read it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _magnitude(p: int) -> Any:
    import torch_pruning as tp

    return tp.importance.MagnitudeImportance(p=p)


def _taylor() -> Any:
    import torch_pruning as tp

    return tp.importance.TaylorImportance()


def _bn_scale() -> Any:
    import torch_pruning as tp

    return tp.importance.BNScaleImportance()


def _random() -> Any:
    import torch_pruning as tp

    return tp.importance.RandomImportance()


IMPORTANCES: dict[str, Callable[[], Any]] = {
    "l1": lambda: _magnitude(1),
    "l2": lambda: _magnitude(2),
    "taylor": _taylor,  # needs loss gradients from labelled batches
    "bn_scale": _bn_scale,  # network slimming: pairs with train's sparsity_regularization
    "random": _random,  # a reference point, not a choice
}

#: What the advisor searches over: taylor needs labels and random is only a reference.
SEARCHED_IMPORTANCES = tuple(name for name in IMPORTANCES if name not in ("taylor", "random"))


def make_importance(name: str) -> Any:
    """The Torch-Pruning importance named ``name`` (a key of :data:`IMPORTANCES`)."""
    return IMPORTANCES[name]()
