"""The factorised layers: SVD for Linear, Tucker-2 and CP for Conv2d, each a small ``nn.Sequential``.

``*_structure`` builds an untrained replacement of the right shape, which is
what a cached stage replays before its weights load from safetensors.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any


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


def replace_layers(module: Any, layers: dict[str, dict[str, Any]]) -> Any:
    """Put untrained replacements (``{name: {"method", "ranks"}}``) in place of the named layers."""
    for name, layer in layers.items():
        set_submodule(module, name, structure_for(module.get_submodule(name), layer["method"], layer["ranks"]))
    return module
