"""Ranks of a layer's unfoldings: a ratio of the full rank, retained energy, or empirical VBMF.

VBMF (Nakajima et al. 2013) estimates the rank of each mode unfolding
automatically, as Kim et al. 2016 do for Tucker-2.
"""

from __future__ import annotations

import math
from typing import Any


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


def mode_rank(matrix: Any, config: Any) -> int:
    """Rank for one unfolding ``[mode size, rest]`` under the configured rule."""
    full = min(matrix.shape)
    if config.ratio is not None:
        rank = math.ceil(config.ratio * full)
    elif config.energy is not None:
        rank = energy_rank(matrix, config.energy)
    else:
        rank = evbmf_rank(matrix.detach().double().numpy())
    return max(config.min_rank, min(full, rank))
