"""``lowrank``: replace Linear and Conv2d layers by low-rank factorisations.

* ``svd`` (Linear): ``W ≈ B·A`` as two Linear layers, ``in → r → out``.
* ``tucker`` (Conv2d): Tucker-2 on the channel modes, ``1×1 → k×k core → 1×1``
  (Kim et al. 2016).
* ``cp`` (Conv2d): CP decomposition, ``1×1 → k×1 depthwise → 1×k depthwise → 1×1``
  (Lebedev et al. 2015).

Ranks come from a ``ratio`` of each mode's full rank, from the retained
singular-value ``energy``, or automatically from empirical variational Bayesian
matrix factorisation (VBMF, Nakajima et al. 2013) of the mode unfoldings, as in
Kim et al. 2016. A layer is only replaced when that lowers its MACs.

Tucker and CP come from tensorly (a well-kept tensor library); SVD from
``torch.linalg``. Each replaced layer becomes a small ``nn.Sequential``; the
replacement is recorded as a ``lowrank`` edit so a cached stage rebuilds the
same structure before its weights load from safetensors.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import math
import warnings
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from compressctl.artifact import Artifact
from compressctl.runners.base import Runner, StageConfig

log = logging.getLogger("compressctl")


class LowRankConfig(StageConfig):
    type: Literal["lowrank"] = "lowrank"
    method: Literal["svd", "tucker", "cp"] = Field(
        "tucker", description="svd: Linear layers; tucker (Tucker-2) or cp: Conv2d layers."
    )
    ratio: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Keep this fraction of each mode's full rank (cp: of the smaller channel count).",
    )
    energy: float | None = Field(
        None, gt=0, le=1, description="Keep the smallest rank that retains this fraction of squared singular values."
    )
    layers: list[str] = Field(
        default_factory=lambda: ["*"], description="Module names (glob patterns) that may be decomposed."
    )
    exclude: list[str] = Field(default_factory=list, description="Module names (glob patterns) left untouched.")
    min_rank: int = Field(1, ge=1, le=100_000, description="Smallest rank used for any mode.")
    max_mac_ratio: float = Field(
        1.0, gt=0, le=1, description="Decompose a layer only if its MACs fall below this fraction of the original."
    )
    cp_iterations: int = Field(200, gt=0, le=100_000, description="cp: ALS iterations.")

    @model_validator(mode="after")
    def _one_rank_rule(self) -> LowRankConfig:
        if self.ratio is not None and self.energy is not None:
            raise ValueError("give at most one of 'ratio' or 'energy' (neither: ranks chosen by VBMF)")
        return self

    @property
    def rank_rule(self) -> str:
        if self.ratio is not None:
            return f"ratio {self.ratio:g}"
        if self.energy is not None:
            return f"energy {self.energy:g}"
        return "vbmf"


# -- rank selection ------------------------------------------------------------------------


def evbmf_rank(matrix: Any) -> int:
    """Rank of a matrix estimated by empirical VBMF (global analytic solution, Nakajima et al. 2013).

    The noise variance is chosen by minimising the free energy over its analytic
    bounds; singular values above the resulting threshold are kept.
    """
    import numpy as np
    from scipy.optimize import minimize_scalar

    y = np.asarray(matrix, dtype=np.float64)
    if y.shape[0] > y.shape[1]:
        y = y.T
    rows, cols = y.shape  # rows <= cols
    s = np.linalg.svd(y, compute_uv=False)
    h = rows
    alpha = rows / cols
    tau_bar = 2.5129 * math.sqrt(alpha)  # where the free energy of a component changes sign
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    residual = max(float(np.sum(y**2) - np.sum(s**2)), 0.0)

    # Bounds of the noise variance (Nakajima et al. 2013, Theorem 3 and after).
    upper = (float(np.sum(s**2)) + residual) / (rows * cols)
    tail_start = min(math.ceil(rows / (1 + alpha)) - 1, h)  # components that cannot all be signal
    tail_start = max(0, min(tail_start, h - 1))
    lower = max(s[tail_start] ** 2 / (cols * x_bar), float(np.mean(s[tail_start:] ** 2)) / cols)
    lower = min(lower, upper)
    if upper <= 0:
        return 0

    def free_energy(sigma2: float) -> float:
        x = s**2 / (cols * sigma2)
        big = x[x > x_bar]
        small = x[x <= x_bar]
        tau = 0.5 * (big - (1 + alpha) + np.sqrt(np.maximum((big - (1 + alpha)) ** 2 - 4 * alpha, 0)))
        value = np.sum(small - np.log(small)) + np.sum(big - tau)
        value += np.sum(np.log((tau + 1) / big)) + alpha * np.sum(np.log(tau / alpha + 1))
        return float(value + residual / (cols * sigma2) + (rows - h) * math.log(sigma2))

    if upper - lower < 1e-12 * upper:
        sigma2 = upper
    else:
        sigma2 = float(minimize_scalar(free_energy, bounds=(lower, upper), method="bounded").x)
    threshold = math.sqrt(cols * sigma2 * x_bar)
    return int(np.sum(s > threshold))


def energy_rank(matrix: Any, energy: float) -> int:
    import torch

    s = torch.linalg.svdvals(matrix.double())
    cumulative = torch.cumsum(s**2, 0) / torch.sum(s**2).clamp_min(1e-30)
    return int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=cumulative.dtype)).item()) + 1


def mode_rank(matrix: Any, config: LowRankConfig) -> int:
    """Rank for one unfolding ``[mode size, rest]`` under the configured rule."""
    full = min(matrix.shape)
    if config.ratio is not None:
        rank = math.ceil(config.ratio * full)
    elif config.energy is not None:
        rank = energy_rank(matrix, config.energy)
    else:
        rank = evbmf_rank(matrix.detach().double().numpy())
    return max(config.min_rank, min(full, rank))


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


# -- the factorisations ------------------------------------------------------------------------------


@functools.cache
def factored_linear_class() -> type:
    """``Sequential(Linear(in, r), Linear(r, out))`` that still exposes ``weight`` and ``bias``.

    Some modules read their children's dense weights directly (``nn.TransformerEncoderLayer``'s
    inference fast path does); the properties give them the product, so they keep working.
    """
    from torch import nn

    class FactoredLinear(nn.Sequential):
        @property
        def weight(self) -> Any:
            return self[1].weight @ self[0].weight

        @property
        def bias(self) -> Any:
            return self[1].bias

        @property
        def in_features(self) -> int:
            return self[0].in_features

        @property
        def out_features(self) -> int:
            return self[1].out_features

    return FactoredLinear


def factored_linear(in_features: int, out_features: int, rank: int, bias: bool) -> Any:
    from torch import nn

    return factored_linear_class()(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))


def svd_linear(linear: Any, rank: int) -> Any:
    import torch

    weight = linear.weight.detach().double()
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    root = torch.sqrt(s[:rank])
    layer = factored_linear(linear.in_features, linear.out_features, rank, linear.bias is not None)
    with torch.no_grad():
        layer[0].weight.copy_((root[:, None] * vh[:rank]).to(linear.weight.dtype))
        layer[1].weight.copy_((u[:, :rank] * root[None, :]).to(linear.weight.dtype))
        if linear.bias is not None:
            layer[1].bias.copy_(linear.bias.detach())
    return layer


def tucker_structure(conv: Any, ranks: list[int]) -> Any:
    from torch import nn

    r_out, r_in = ranks
    return nn.Sequential(
        nn.Conv2d(conv.in_channels, r_in, 1, bias=False),
        nn.Conv2d(
            r_in,
            r_out,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            bias=False,
            padding_mode=conv.padding_mode,
        ),
        nn.Conv2d(r_out, conv.out_channels, 1, bias=conv.bias is not None),
    )


def tucker_conv(conv: Any, ranks: list[int]) -> Any:
    import tensorly as tl
    import torch
    from tensorly.decomposition import partial_tucker

    weight = conv.weight.detach().double().numpy()
    with warnings.catch_warnings():  # tensorly warns when a rank equals a mode's size
        warnings.simplefilter("ignore", UserWarning)
        (core, (u_out, u_in)), _ = partial_tucker(weight, rank=ranks, modes=[0, 1], init="svd", n_iter_max=50)
    layer = tucker_structure(conv, ranks)
    as_tensor = lambda a: torch.from_numpy(tl.to_numpy(a).copy()).to(conv.weight.dtype)  # noqa: E731
    with torch.no_grad():
        layer[0].weight.copy_(as_tensor(u_in.T)[:, :, None, None])
        layer[1].weight.copy_(as_tensor(core))
        layer[2].weight.copy_(as_tensor(u_out)[:, :, None, None])
        if conv.bias is not None:
            layer[2].bias.copy_(conv.bias.detach())
    return layer


def cp_structure(conv: Any, ranks: list[int]) -> Any:
    from torch import nn

    (rank,) = ranks
    kh, kw = conv.kernel_size
    return nn.Sequential(
        nn.Conv2d(conv.in_channels, rank, 1, bias=False),
        nn.Conv2d(
            rank,
            rank,
            (kh, 1),
            (conv.stride[0], 1),
            (conv.padding[0], 0),
            (conv.dilation[0], 1),
            groups=rank,
            bias=False,
        ),
        nn.Conv2d(
            rank,
            rank,
            (1, kw),
            (1, conv.stride[1]),
            (0, conv.padding[1]),
            (1, conv.dilation[1]),
            groups=rank,
            bias=False,
        ),
        nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None),
    )


def cp_conv(conv: Any, ranks: list[int], iterations: int, seed: int) -> Any:
    import tensorly as tl
    import torch
    from tensorly.decomposition import parafac

    (rank,) = ranks
    weight = conv.weight.detach().double().numpy()
    with warnings.catch_warnings():  # the SVD initialisation warns for ranks above the kernel size
        warnings.simplefilter("ignore", UserWarning)
        cp = parafac(weight, rank=rank, init="svd", n_iter_max=iterations, normalize_factors=False, random_state=seed)
    weights, (f_out, f_in, f_h, f_w) = cp
    f_out = tl.to_numpy(f_out) * tl.to_numpy(weights)[None, :]
    layer = cp_structure(conv, ranks)
    as_tensor = lambda a: torch.from_numpy(tl.to_numpy(a).copy()).to(conv.weight.dtype)  # noqa: E731
    with torch.no_grad():
        layer[0].weight.copy_(as_tensor(f_in.T)[:, :, None, None])
        layer[1].weight.copy_(as_tensor(f_h.T)[:, None, :, None])
        layer[2].weight.copy_(as_tensor(f_w.T)[:, None, None, :])
        layer[3].weight.copy_(as_tensor(f_out)[:, :, None, None])
        if conv.bias is not None:
            layer[3].bias.copy_(conv.bias.detach())
    return layer


def structure_for(module: Any, method: str, ranks: list[int]) -> Any:
    """An untrained replacement of the right shape (used to replay a cached edit)."""
    if method == "svd":
        return factored_linear(module.in_features, module.out_features, ranks[0], module.bias is not None)
    if method == "tucker":
        return tucker_structure(module, ranks)
    return cp_structure(module, ranks)


def set_submodule(root: Any, name: str, new: Any) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


def replay_lowrank(module: Any, edit: dict[str, Any]) -> Any:
    for name, layer in edit["layers"].items():
        set_submodule(module, name, structure_for(module.get_submodule(name), layer["method"], layer["ranks"]))
    return module


# -- choosing the layers ----------------------------------------------------------------------------------


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def candidate_layers(module: Any, config: LowRankConfig) -> dict[str, Any]:
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
        if name in inside_attention or not _matches(name, config.layers) or _matches(name, config.exclude):
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


def plan_layer(name: str, layer: Any, config: LowRankConfig, sizes: dict[str, tuple]) -> dict[str, Any]:
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


def decompose(module: Any, config: LowRankConfig, example: tuple[Any, ...], seed: int) -> tuple[Any, dict, dict]:
    """Decompose ``module`` in place; returns (module, decomposed layers, skipped layers)."""
    from threadpoolctl import threadpool_limits

    # These matrices are small: one BLAS thread is fastest, and a multi-threaded
    # OpenBLAS spinning on a busy machine makes a 0.05 s SVD take seconds.
    with threadpool_limits(limits=1, user_api="blas"):
        return _decompose(module, config, example, seed)


def _decompose(module: Any, config: LowRankConfig, example: tuple[Any, ...], seed: int) -> tuple[Any, dict, dict]:
    layers = candidate_layers(module, config)
    sizes = spatial_sizes(module, layers, example) if config.method != "svd" else {}
    done: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    for name, layer in layers.items():
        if config.method != "svd" and name not in sizes:
            skipped[name] = {"reason": "not reached by the example input"}
            continue
        plan = plan_layer(name, layer, config, sizes)
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


class LowRankRunner(Runner):
    type = "lowrank"
    config_model = LowRankConfig
    consumes = "torch"
    produces = "torch"
    summary = "Low-rank factorisation: SVD for Linear, Tucker-2 or CP for Conv2d; ranks by ratio, energy or VBMF."
    edit_replays: ClassVar[dict[str, Any]] = {"lowrank": replay_lowrank}

    def run(self, artifact: Artifact, config: LowRankConfig, context: Any) -> Artifact:
        import copy

        import torch

        from compressctl.sources import example_inputs

        module = copy.deepcopy(artifact.module).eval()
        example = example_inputs(context.inputs, context.dims, batch=1)
        torch.manual_seed(context.seed + context.index)
        module, done, skipped = decompose(module, config, example, context.seed + context.index)
        if not done:
            log.warning("lowrank: no layer was decomposed (%d candidates)", len(skipped))
        context.details.update(
            {
                "method": config.method,
                "rank_rule": config.rank_rule,
                "layers": done,
                "skipped": skipped,
                "macs_before": sum(p["macs_before"] for p in done.values()),
                "macs_after": sum(p["macs_after"] for p in done.values()),
            }
        )
        edit = {"op": "lowrank", "layers": {n: {"method": p["method"], "ranks": p["ranks"]} for n, p in done.items()}}
        return artifact.with_module(module.eval(), edit if done else None)
