"""Rank rules: empirical VBMF finds the rank of noisy low-rank matrices."""

from __future__ import annotations

import numpy as np

from compressctl.factorization.ranks import evbmf_rank


def test_vbmf_finds_the_rank_of_a_noisy_low_rank_matrix() -> None:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((64, 6)) @ rng.standard_normal((6, 150))
    noisy = signal + 0.2 * rng.standard_normal(signal.shape)
    assert evbmf_rank(noisy) == 6
    assert evbmf_rank(noisy.T) == 6
    assert evbmf_rank(rng.standard_normal((40, 100))) <= 1  # pure noise: nothing to keep
