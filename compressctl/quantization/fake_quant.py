"""Fake-quantized modules for quantization-aware training (QAT).

Weights: per-output-channel symmetric int8 with scale ``max|w| / 127`` — the
rule ONNX Runtime's quantizer applies to the same weights, so the rounding
learned here is the rounding the exported model gets. Activations entering
each Conv/Linear: asymmetric uint8, with a range either tracked (moving
min/max) or learned (LSQ, Esser et al. 2020: the step size is a parameter
trained through a straight-through estimator). BatchNorm is folded into the
convolution before training, as ONNX Runtime folds it before quantizing.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

WEIGHT_QMAX = 127
REDUCED_WEIGHT_QMAX = 64  # ONNX Runtime's reduce_range for int8 weights: [-64, 64], for CPUs without VNNI
ACT_QMIN, ACT_QMAX = 0, 255


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity in the backward pass."""
    return x + (torch.round(x) - x).detach()


def fake_quant_weight(weight: torch.Tensor, qmax: int = WEIGHT_QMAX) -> torch.Tensor:
    """Per-output-channel symmetric int8 fake quantization (``qmax`` 64: ONNX Runtime's reduced range)."""
    flat = weight.reshape(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12).detach() / qmax
    scale = scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return torch.clamp(round_ste(weight / scale), -qmax, qmax) * scale


class ActivationQuantizer(nn.Module):
    """Asymmetric uint8 fake quantization of one activation tensor."""

    def __init__(self, learned: bool, momentum: float = 0.01) -> None:
        super().__init__()
        self.learned = learned
        self.momentum = momentum
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))
        self.log_scale = nn.Parameter(torch.tensor(0.0), requires_grad=learned)
        self.observing = False  # calibration pass: record the exact min/max, no quantization

    def observe(self, x: torch.Tensor) -> None:
        low, high = x.detach().min().clamp(max=0.0), x.detach().max().clamp(min=0.0)
        if not bool(self.initialized) or self.observing:
            first = not bool(self.initialized)
            self.low.copy_(low if first else torch.minimum(self.low, low))
            self.high.copy_(high if first else torch.maximum(self.high, high))
            self.initialized.fill_(True)
        elif not self.learned:
            self.low.lerp_(low, self.momentum)
            self.high.lerp_(high, self.momentum)

    def start_learning(self) -> None:
        """Initialise the learned step from the calibrated range."""
        self.log_scale.data.fill_(math.log(max(float(self.high - self.low), 1e-8) / (ACT_QMAX - ACT_QMIN)))

    def zero_point(self, scale: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(-self.low / scale), ACT_QMIN, ACT_QMAX).detach()

    def scale(self) -> torch.Tensor:
        if self.learned:
            return self.log_scale.exp()
        return ((self.high - self.low) / (ACT_QMAX - ACT_QMIN)).clamp_min(1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.observing or not bool(self.initialized):
            self.observe(x)
        if self.observing:
            return x
        scale = self.scale()
        if self.learned:  # LSQ gradient scaling keeps the step's updates in proportion
            grad_scale = 1.0 / math.sqrt(x.numel() * ACT_QMAX)
            scale = scale * grad_scale + (scale - scale * grad_scale).detach()
        zero = self.zero_point(scale.detach())
        q = torch.clamp(round_ste(x / scale) + zero, ACT_QMIN, ACT_QMAX)
        return (q - zero) * scale

    def quant_params(self) -> tuple[float, int]:
        scale = self.scale().detach()
        return float(scale), int(self.zero_point(scale))


class QuantWrapper(nn.Module):
    """A Conv/Linear whose input and weight are fake-quantized (``enabled=False``: kept in float)."""

    def __init__(
        self, layer: nn.Module, learned_activations: bool, enabled: bool = True, weight_qmax: int = WEIGHT_QMAX
    ) -> None:
        super().__init__()
        self.layer = layer
        self.enabled = enabled
        self.weight_qmax = weight_qmax
        self.input_quant = ActivationQuantizer(learned_activations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.layer(x)
        x = self.input_quant(x)
        weight = fake_quant_weight(self.layer.weight, self.weight_qmax)
        if isinstance(self.layer, nn.Linear):
            return nn.functional.linear(x, weight, self.layer.bias)
        return self.layer._conv_forward(x, weight, self.layer.bias)


def fold_batchnorms(module: nn.Module) -> tuple[nn.Module, int]:
    """Fold every BatchNorm that directly follows a Conv into it (through torch.fx); returns the count."""
    import torch.fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    traced = torch.fx.symbolic_trace(module.eval())
    modules = dict(traced.named_modules())
    folded = 0
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.modules.batchnorm._BatchNorm):
            continue
        source = node.args[0]
        if not (isinstance(source, torch.fx.Node) and source.op == "call_module"):
            continue
        conv = modules[source.target]
        if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or len(source.users) != 1:
            continue
        fused = fuse_conv_bn_eval(conv, modules[node.target])
        _set_submodule(traced, source.target, fused)
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
        folded += 1
    traced.graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()
    return traced, folded


def _set_submodule(root: nn.Module, target: str, value: nn.Module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, name, value)


def wrap_layers(
    module: nn.Module, learned_activations: bool, skip: set[str], weight_qmax: int = WEIGHT_QMAX
) -> list[tuple[str, QuantWrapper]]:
    """Wrap every Conv/Linear layer in place; those named in ``skip`` stay float (wrapped, disabled)."""
    wrapped = []
    for name, layer in list(module.named_modules()):
        if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            continue
        wrapper = QuantWrapper(layer, learned_activations, enabled=name not in skip, weight_qmax=weight_qmax)
        _set_submodule(module, name, wrapper)
        wrapped.append((name, wrapper))
    return wrapped


def unwrap_layers(module: nn.Module, wrapped: list[tuple[str, QuantWrapper]]) -> nn.Module:
    """Put the trained float layers back (the quantizer of ONNX Runtime rounds them as QAT did)."""
    for name, wrapper in wrapped:
        _set_submodule(module, name, wrapper.layer)
    return module


def calls_in_order(module: nn.Module, wrapped: list[tuple[str, QuantWrapper]], inputs: list[Any]) -> list[str]:
    """Names of the wrapped layers in the order the forward pass calls them."""
    order: list[str] = []
    hooks = [
        w.register_forward_hook(lambda m, i, o, name=name: order.append(name) if name not in order else None)
        for name, w in wrapped
    ]
    try:
        with torch.no_grad():
            module.eval()(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return order
