"""What advise knows of a model's layers: Torch-Pruning's groups, decomposable convs, the nodes INT8 hurts most.

Each comes with what the RL agent embeds (shape, share of MACs and of latency,
sensitivity) and, for a layer group, the most it may lose: a group whose
one-shot pruning costs far more accuracy than the others' is bounded.
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field
from typing import Any

MAX_FLOAT_NODES = 8  # quantized nodes whose float-or-INT8 choice is searched
SENSITIVE_DROP = 0.05  # a group losing more than this (and twice the median) at 50 % one-shot pruning is sensitive
# the most a sensitive group may lose: a prior for the search, not a verdict. One-shot loss says
# little about what fine-tuning recovers: digits-resnet's stem loses 89 pt at 25 % one shot, yet at
# 70 % with 10 recovery epochs the model is as accurate as the baseline (measured 2026-12-02)
SENSITIVE_BOUND = 0.7


@dataclass
class Layer:
    """A layer group (pruning) or a quantized node, with what the RL agent embeds."""

    name: str  # the group's first layer, or the node's layer (its weight's name)
    kind: str  # conv, linear or node
    members: list[str]  # layers pruned together, or the node's ONNX names
    shape: list[int] = field(default_factory=list)  # weight shape of the first layer
    macs_share: float = 0.0
    latency_share: float = 0.0
    sensitivity: float = 0.0  # accuracy drop: 50 % one-shot pruning, or this node alone in INT8
    upper: float = 1.0  # the most the group may lose


def layer_macs(module: Any, example: tuple[Any, ...]) -> dict[str, tuple[int, list[int]]]:
    """Conv and Linear layers → (MACs per sample, weight shape), from one forward pass."""
    import torch
    from torch import nn

    found: dict[str, tuple[int, list[int]]] = {}
    handles = []
    for name, child in module.named_modules():
        if isinstance(child, (nn.modules.conv._ConvNd, nn.Linear)):

            def hook(layer: Any, _inputs: Any, out: Any, name: str = name) -> None:
                per_output = layer.weight[0].numel()
                found[name] = (int(out.numel() // out.shape[0] * per_output), list(layer.weight.shape))

            handles.append(child.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(*example)
    finally:
        for handle in handles:
            handle.remove()
    return found


def group_layers(bench: Any, analysis: dict[str, Any]) -> list[Layer]:
    """Torch-Pruning's groups of the baseline, with their MACs and latency shares, sensitivity and bound."""
    from compressctl.pruning.structured import prunable_groups

    module = copy.deepcopy(bench.module).eval()
    example = bench.example()
    macs = layer_macs(module, example)
    total = sum(m for m, _ in macs.values()) or 1
    drops = analysis.get("prune", {})
    shares = analysis.get("latency_share", {})
    layers = []
    for first, members in prunable_groups(module, example).items():
        layers.append(
            Layer(
                name=first,
                kind="conv" if len(macs.get(first, (0, []))[1]) > 2 else "linear",
                members=members,
                shape=macs.get(first, (0, []))[1],
                macs_share=round(sum(macs.get(m, (0, []))[0] for m in members) / total, 4),
                latency_share=round(sum(shares.get(m, 0.0) for m in members), 4),
                sensitivity=max((drops.get(m, {}).get("0.5", 0.0) for m in members), default=0.0),
            )
        )
    bound_sensitive(layers)
    return layers


def conv_layers(bench: Any, analysis: dict[str, Any]) -> list[Layer]:
    """Convs low-rank may factorise into cheaper ones (plain, not grouped, larger than 1×1), with their shares."""
    macs = layer_macs(copy.deepcopy(bench.module).eval(), bench.example())
    total = sum(m for m, _ in macs.values()) or 1
    shares = analysis.get("latency_share", {})
    return [
        Layer(name, "conv", [name], shape, round(count / total, 4), shares.get(name, 0.0))
        for name, (count, shape) in macs.items()
        if len(shape) == 4 and shape[2] * shape[3] > 1 and is_plain_conv(bench.module, name)
    ]


def is_plain_conv(module: Any, name: str) -> bool:
    from torch import nn

    layer = module.get_submodule(name)
    return isinstance(layer, nn.Conv2d) and layer.groups == 1


def bound_sensitive(layers: list[Layer]) -> None:
    """Groups that lose far more than the others at 50 % one-shot pruning may lose at most ``SENSITIVE_BOUND``."""
    if len(layers) < 2:
        return
    median = statistics.median(layer.sensitivity for layer in layers)
    for layer in layers:
        if layer.sensitivity > max(SENSITIVE_DROP, 2 * median):
            layer.upper = SENSITIVE_BOUND


def node_layers(bench: Any, analysis: dict[str, Any]) -> list[Layer]:
    """The ``MAX_FLOAT_NODES`` nodes INT8 hurts most (the analysis's quantization sensitivity)."""
    from compressctl.advise.sensitivity import node_layers as onnx_node_layers

    drops = analysis.get("quantize", {})
    if not drops or bench.baseline_path is None:
        return []
    names: dict[str, list[str]] = {}
    for node, label in onnx_node_layers(bench.baseline_path).items():
        names.setdefault(label, []).append(node)
    shares = analysis.get("latency_share", {})
    worst = sorted((label for label in drops if label in names), key=lambda label: -drops[label])
    return [
        Layer(label, "node", names[label], latency_share=shares.get(label, 0.0), sensitivity=drops[label])
        for label in worst[:MAX_FLOAT_NODES]
    ]
