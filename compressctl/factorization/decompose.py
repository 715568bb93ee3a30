"""Choosing the layers, planning their ranks and MACs, and replacing those that get cheaper."""

from __future__ import annotations

import logging
import math
from typing import Any

from compressctl.factorization.layers import cp_conv, set_submodule, svd_linear, tucker_conv
from compressctl.factorization.ranks import mode_rank
from compressctl.globs import first_match, matches

log = logging.getLogger("compressctl")


# -- MACs of a layer and of its replacement ----------------------------------------------------


def linear_macs(in_features: int, out_features: int, rank: int | None = None) -> int:
    return in_features * out_features if rank is None else rank * (in_features + out_features)


def conv_macs(conv: Any, in_hw: tuple[int, int], out_hw: tuple[int, int], method: str | None, ranks: list[int]) -> int:
    """MACs per sample of ``conv`` (method None) or of its Tucker-2 / CP replacement."""
    kh, kw = conv.kernel_size
    out_pixels = out_hw[0] * out_hw[1]
    in_pixels = in_hw[0] * in_hw[1]
    cin, cout = conv.in_channels, conv.out_channels
    if method is None:
        return out_pixels * cout * (cin // conv.groups) * kh * kw
    if method == "tucker":
        r_out, r_in = ranks
        return in_pixels * cin * r_in + out_pixels * (r_in * r_out * kh * kw + r_out * cout)
    (rank,) = ranks
    # the k×1 stage runs at the output height and the input width
    mid_pixels = out_hw[0] * in_hw[1]
    return in_pixels * cin * rank + mid_pixels * rank * kh + out_pixels * rank * (kw + cout)


# -- choosing and planning the layers ----------------------------------------------------------


def candidate_layers(module: Any, config: Any) -> dict[str, Any]:
    """Layers the method applies to, named by the patterns, not inside attention modules."""
    from torch import nn

    kind = nn.Linear if config.method == "svd" else nn.Conv2d
    inside_attention = set()
    for name, child in module.named_modules():
        if isinstance(child, nn.MultiheadAttention):
            # MultiheadAttention reads out_proj.weight directly in its functional forward
            inside_attention.update(f"{name}.{sub}" if name else sub for sub, _ in child.named_modules() if sub)
    found = {}
    for name, child in module.named_modules():
        if not name or not isinstance(child, kind):
            continue
        if name in inside_attention or not matches(name, config.layers) or matches(name, config.exclude):
            continue
        if kind is nn.Conv2d and (child.groups != 1 or (child.kernel_size == (1, 1) and config.method == "cp")):
            continue
        found[name] = child
    return found


def spatial_sizes(module: Any, convs: dict[str, Any], example: tuple[Any, ...]) -> dict[str, tuple]:
    """Input and output (H, W) of each conv on one example batch."""
    import torch

    sizes: dict[str, tuple] = {}
    handles = []
    for name, conv in convs.items():

        def hook(_m: Any, args: Any, output: Any, name: str = name) -> None:
            sizes[name] = (tuple(args[0].shape[-2:]), tuple(output.shape[-2:]))

        handles.append(conv.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module.eval()(*example)
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def plan_layer(name: str, layer: Any, config: Any, sizes: dict[str, tuple]) -> dict[str, Any]:
    """Ranks and MACs for one layer; ``decompose`` False when it would not lower MACs."""
    weight = layer.weight.detach()
    if config.method == "svd":
        ranks = [mode_rank(weight, config)]
        before = linear_macs(layer.in_features, layer.out_features)
        after = linear_macs(layer.in_features, layer.out_features, ranks[0])
    else:
        out_unfold = weight.reshape(weight.shape[0], -1)
        in_unfold = weight.transpose(0, 1).reshape(weight.shape[1], -1)
        r_out, r_in = mode_rank(out_unfold, config), mode_rank(in_unfold, config)
        if config.method == "tucker":
            ranks = [r_out, r_in]
        elif config.ratio is not None:
            ranks = [max(config.min_rank, math.ceil(config.ratio * min(weight.shape[:2])))]
        else:
            ranks = [max(r_out, r_in)]
        in_hw, out_hw = sizes.get(name, ((1, 1), (1, 1)))
        before = conv_macs(layer, in_hw, out_hw, None, [])
        after = conv_macs(layer, in_hw, out_hw, config.method, ranks)
    ratio = after / before if before else 1.0
    return {
        "method": config.method,
        "ranks": ranks,
        "shape": list(weight.shape),
        "macs_before": before,
        "macs_after": after,
        "mac_ratio": round(ratio, 4),
        "decompose": ratio < config.max_mac_ratio,
    }


def layer_config(config: Any, name: str) -> Any:
    """The stage's config with the layer's own rank ratio when a ``layer_ratios`` pattern names it."""
    pattern = first_match(name, list(getattr(config, "layer_ratios", {})))
    if pattern is None:
        return config
    return config.model_copy(update={"ratio": config.layer_ratios[pattern], "energy": None})


def decompose(module: Any, config: Any, example: tuple[Any, ...], seed: int) -> tuple[Any, dict, dict]:
    """Decompose ``module`` in place; returns (module, decomposed layers, skipped layers).

    ``config`` is the stage's LowRankConfig: method, rank rule, layer patterns, MAC limit.
    """
    from threadpoolctl import threadpool_limits

    # These matrices are small: one BLAS thread is fastest, and a multi-threaded
    # OpenBLAS spinning on a busy machine makes a 0.05 s SVD take seconds.
    with threadpool_limits(limits=1, user_api="blas"):
        return _decompose(module, config, example, seed)


def _decompose(module: Any, config: Any, example: tuple[Any, ...], seed: int) -> tuple[Any, dict, dict]:
    layers = candidate_layers(module, config)
    sizes = spatial_sizes(module, layers, example) if config.method != "svd" else {}
    done: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    for name, layer in layers.items():
        if config.method != "svd" and name not in sizes:
            skipped[name] = {"reason": "not reached by the example input"}
            continue
        plan = plan_layer(name, layer, layer_config(config, name), sizes)
        if not plan.pop("decompose"):
            skipped[name] = {**plan, "reason": f"MACs would be {plan['mac_ratio']:.2f}× the original"}
            continue
        if config.method == "svd":
            new = svd_linear(layer, plan["ranks"][0])
        elif config.method == "tucker":
            new = tucker_conv(layer, plan["ranks"])
        else:
            new = cp_conv(layer, plan["ranks"], config.cp_iterations, seed)
        set_submodule(module, name, new)
        done[name] = plan
        log.info("lowrank %s %s: ranks %s, MACs %.2f×", config.method, name, plan["ranks"], plan["mac_ratio"])
    return module, done, skipped
