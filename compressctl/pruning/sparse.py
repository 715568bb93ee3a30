"""Weight sparsity: magnitude (unstructured) and N:M masks, kept through training.

A mask is a boolean tensor per weight; ``apply_masks`` zeroes the pruned
entries in place. Masks are "permanent" in the sense that matters for export:
the pruned weights are plain zeros in ordinary tensors, so no mask or
parametrization reaches the ONNX graph, and the zeros show up in
``nonzero_params`` and in the zipped size.
"""

from __future__ import annotations

from typing import Any

Masks = dict[str, Any]  # parameter name -> bool tensor of the parameter's shape


def magnitude_masks(weights: dict[str, Any], amount: float, scope: str) -> Masks:
    """Keep the largest ``1 - amount`` fraction of weights by magnitude (globally or per tensor)."""
    import torch

    if scope == "global":
        flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
        threshold = _kth_smallest(flat, amount)
        return {name: w.detach().abs() > threshold for name, w in weights.items()}
    return {name: w.detach().abs() > _kth_smallest(w.detach().abs().flatten(), amount) for name, w in weights.items()}


def _kth_smallest(values: Any, amount: float) -> float:
    import torch

    count = round(amount * values.numel())
    if count <= 0:
        return -1.0  # keeps everything, zeros included
    return float(torch.kthvalue(values, count).values)


def nm_group_axis(weight: Any) -> Any:
    """The weight viewed with its input-channel axis last (the axis N:M groups run along)."""
    return weight.movedim(1, -1) if weight.dim() > 2 else weight


def nm_compatible(weight: Any, m: int) -> bool:
    return weight.dim() >= 2 and weight.shape[1] % m == 0


def nm_mask(weight: Any, n: int, m: int) -> Any:
    """Keep the ``n`` largest of every ``m`` consecutive input-channel weights (2:4 by default)."""
    import torch

    grouped = nm_group_axis(weight.detach().abs())
    shape = grouped.shape
    rows = grouped.reshape(-1, m)
    keep = torch.zeros_like(rows, dtype=torch.bool)
    keep.scatter_(1, rows.topk(n, dim=1).indices, True)
    keep = keep.reshape(shape)
    return keep.movedim(-1, 1) if weight.dim() > 2 else keep


def apply_masks(module: Any, masks: Masks) -> None:
    import torch

    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)


def sparsity(module: Any, names: list[str]) -> float:
    params = dict(module.named_parameters())
    total = sum(params[n].numel() for n in names)
    zeros = sum(int((params[n] == 0).sum()) for n in names)
    return zeros / total if total else 0.0


def masks_from_zeros(module: Any, names: list[str]) -> Masks:
    """The masks of an already sparse model: its zero weights stay zero."""
    params = dict(module.named_parameters())
    return {n: params[n].detach() != 0 for n in names if n in params}
