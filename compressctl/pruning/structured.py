"""Channel pruning on Torch-Pruning's dependency graph.

Torch-Pruning traces the model once and groups every tensor coupled to a
channel (BatchNorm, the next layer's inputs, both sides of a residual add,
concatenations, depthwise and grouped convolutions, LayerNorm, attention
projections), so removing a channel removes it everywhere at once. This module
chooses what the graph may touch (the classifier head is kept, ``ignore``
patterns, per-layer amounts, rounding that keeps attention heads whole) and
reports each layer's width before and after.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from compressctl.errors import UserError
from compressctl.globs import matches
from compressctl.pruning.importance import make_importance

log = logging.getLogger("compressctl")


def head_layers(module: Any, example: tuple[Any, ...]) -> list[str]:
    """Names of the layers that produce the model's output (the classifier head).

    Found by running the model once: the leaf module whose output *is* the
    model's output; else the last Conv/Linear that ran.
    """
    import torch
    from torch import nn

    from compressctl.onnxio import first_tensor

    produced: list[tuple[str, Any]] = []
    handles = []
    for name, child in module.named_modules():
        if name and not any(True for _ in child.children()):
            hook = lambda _m, _a, out, name=name: produced.append((name, out))  # noqa: E731
            handles.append(child.register_forward_hook(hook))
    try:
        with torch.no_grad():
            result = first_tensor(module(*example))
    finally:
        for handle in handles:
            handle.remove()
    found = [name for name, out in produced if out is result]
    if found:
        return found[-1:]
    layers = dict(module.named_modules())
    weighted = [name for name, _ in produced if isinstance(layers[name], (nn.Linear, nn.modules.conv._ConvNd))]
    return weighted[-1:]


def layer_widths(module: Any) -> dict[str, list[int]]:
    """``[in, out]`` channels of every Conv, Linear and attention layer."""
    from torch import nn

    widths = {}
    for name, child in module.named_modules():
        if isinstance(child, nn.modules.conv._ConvNd):
            widths[name] = [child.in_channels, child.out_channels]
        elif isinstance(child, nn.Linear):
            widths[name] = [child.in_features, child.out_features]
        elif isinstance(child, nn.MultiheadAttention):
            widths[name] = [child.embed_dim, child.embed_dim]
    return widths


def width_changes(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, dict[str, list[int]]]:
    """Per layer: ``{"in": [before, after], "out": [before, after]}``."""
    changes = {}
    for name, (in_before, out_before) in before.items():
        in_after, out_after = after.get(name, (in_before, out_before))
        changes[name] = {"in": [in_before, in_after], "out": [out_before, out_after]}
    return changes


def attention_heads(module: Any) -> dict[Any, int]:
    from torch import nn

    return {m: m.num_heads for m in module.modules() if isinstance(m, nn.MultiheadAttention)}


QKV = ("query", "key", "value")


def qkv_attention_blocks(module: Any) -> list[Any]:
    """Attention blocks with separate ``query``/``key``/``value`` Linear layers (Hugging Face style)."""
    from torch import nn

    return [
        m
        for m in module.modules()
        if hasattr(m, "num_attention_heads") and all(isinstance(getattr(m, n, None), nn.Linear) for n in QKV)
    ]


def sync_attention_heads(module: Any, pruner: Any) -> None:
    """After a pruning step, tell each q/k/v attention block how many heads and how wide it now is."""
    for block in qkv_attention_blocks(module):
        heads = pruner.num_heads.get(block.query)
        if heads:
            block.num_attention_heads = heads
            block.attention_head_size = block.query.out_features // heads
            block.all_head_size = block.query.out_features


def cubic_schedule(target: float, steps: int) -> list[float]:
    """Zhu & Gupta (2017): sparsity rises fast at first, then slowly, reaching ``target`` at the last step."""
    return [target * (1 - (1 - i / steps) ** 3) for i in range(steps + 1)]


def linear_schedule(target: float, steps: int) -> list[float]:
    return [target * i / steps for i in range(steps + 1)]


def build_pruner(
    module: Any,
    example: tuple[Any, ...],
    *,
    amount: float,
    importance: str,
    global_ranking: bool,
    layer_amounts: dict[str, float],
    ignore: list[str],
    keep_head: bool,
    round_to: int | None,
    max_layer_amount: float,
    steps: int,
    heads: float = 0.0,
    schedule: Callable[[float, int], list[float]],
) -> tuple[Any, list[str]]:
    """A Torch-Pruning pruner over ``module``; returns it and the names of the layers it leaves alone."""
    import torch_pruning as tp
    from torch import nn

    from compressctl.onnxio import first_tensor

    named = dict(module.named_modules())
    ignored_names = [n for n in named if n and matches(n, ignore)]
    if keep_head:
        ignored_names += [n for n in head_layers(module, example) if n not in ignored_names]
    prunable = (nn.modules.conv._ConvNd, nn.Linear)
    ratios = {}
    for pattern, ratio in layer_amounts.items():
        for name, child in named.items():
            if name and matches(name, [pattern]) and isinstance(child, prunable):
                ratios[child] = ratio
    if round_to and any(
        isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups < m.out_channels for m in module.modules()
    ):
        log.warning(
            "prune: round_to with grouped (not depthwise) convolutions can leave the layers coupled to them "
            "unpruned (Torch-Pruning rounds the whole width, not each group); check the channel counts"
        )
    fused = attention_heads(module)
    # nn.MultiheadAttention keeps embed_dim divisible by num_heads: round every width to a multiple.
    rounding = round_to or 1
    for count in fused.values():
        rounding = rounding * count // math.gcd(rounding, count)
    # q/k/v blocks: Torch-Pruning keeps their channels grouped per head, and removes whole heads
    # (each ranked by the summed importance of its channels) when ``heads`` > 0.
    blocks = qkv_attention_blocks(module)
    if heads and not blocks:
        raise UserError(
            "prune attention_heads: this model has no attention block with separate query/key/value layers "
            + ("(nn.MultiheadAttention fuses them; its heads narrow with 'amount' instead)" if fused else "")
        )
    num_heads = {getattr(b, n): b.num_attention_heads for b in blocks for n in QKV}
    pruner = tp.pruner.BasePruner(
        module,
        example,
        importance=make_importance(importance),
        global_pruning=global_ranking,
        pruning_ratio=amount,
        pruning_ratio_dict=ratios or None,
        max_pruning_ratio=max_layer_amount,
        iterative_steps=steps,
        iterative_pruning_ratio_scheduler=schedule,
        ignored_layers=[named[n] for n in ignored_names],
        round_to=rounding if rounding > 1 else None,
        output_transform=first_tensor,
        num_heads=num_heads,
        prune_num_heads=heads > 0,
        prune_head_dims=heads == 0,
        head_pruning_ratio=heads,
    )
    return pruner, ignored_names


def prunable_groups(module: Any, example: tuple[Any, ...]) -> dict[str, list[str]]:
    """Torch-Pruning's dependency groups: ``{first layer: layers whose output channels go together}``.

    Layers coupled by a residual add, a concatenation or a depthwise conv lose the
    same channels, so one pruning ratio per group is all there is to choose. The
    layers producing the model's output (the classifier head) are left out.
    """
    import torch_pruning as tp
    from torch import nn

    from compressctl.onnxio import first_tensor

    names = {child: name for name, child in module.named_modules()}
    order = list(names.values())
    named = dict(module.named_modules())
    head = [named[name] for name in head_layers(module, example)]
    graph = tp.DependencyGraph().build_dependency(module, example_inputs=example, output_transform=first_tensor)
    prunable = (nn.modules.conv._ConvNd, nn.Linear)
    groups: dict[str, list[str]] = {}
    for group in graph.get_all_groups(ignored_layers=head, root_module_types=prunable):
        members = [
            names[dep.target.module]
            for dep, _ in group
            if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(dep.target.module, prunable)
        ]
        members = sorted(set(members), key=order.index)
        if members:
            groups[members[0]] = members
    return dict(sorted(groups.items(), key=lambda item: order.index(item[0])))  # in the model's order
