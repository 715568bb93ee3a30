"""SVD / Tucker-2 / CP factorisations of real layers, and the MAC rule that decides which are replaced."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from compressctl.factorization.decompose import decompose
from compressctl.runners.lowrank import LowRankConfig


def low_rank_matrix(rows: int, cols: int, rank: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g)


def test_svd_is_exact_for_a_low_rank_linear_and_keeps_dense_weight_view() -> None:
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    with torch.no_grad():
        model[0].weight.copy_(low_rank_matrix(48, 64, 4))
    x = torch.randn(5, 64)
    expected = model(x)
    out, done, skipped = decompose(copy.deepcopy(model), LowRankConfig(method="svd", energy=0.9999), (x,), 0)
    assert done["0"]["ranks"] == [4]
    assert done["0"]["macs_after"] == 4 * (64 + 48) < done["0"]["macs_before"] == 64 * 48
    assert isinstance(out[0], nn.Sequential) and [m.out_features for m in out[0]] == [4, 48]
    torch.testing.assert_close(out(x), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[0].weight, model[0].weight, atol=1e-4, rtol=1e-4)
    # the 10×48 head at full rank would cost more MACs factored: it stays
    assert "2" in skipped and isinstance(out[2], nn.Linear)


def test_layer_is_not_decomposed_when_it_would_not_lower_macs() -> None:
    model = nn.Sequential(nn.Linear(32, 32))
    out, done, skipped = decompose(model, LowRankConfig(method="svd", ratio=0.6), (torch.randn(1, 32),), 0)
    assert done == {} and skipped["0"]["mac_ratio"] > 1 and isinstance(out[0], nn.Linear)


def tucker_low_rank_conv(cout: int, cin: int, r_out: int, r_in: int) -> nn.Conv2d:
    g = torch.Generator().manual_seed(1)
    core = torch.randn(r_out, r_in, 3, 3, generator=g)
    u_out, u_in = torch.randn(cout, r_out, generator=g), torch.randn(cin, r_in, generator=g)
    conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("abhw,oa,ib->oihw", core, u_out, u_in))
    return conv


def test_tucker2_reproduces_a_tucker_low_rank_conv() -> None:
    model = nn.Sequential(tucker_low_rank_conv(32, 24, 6, 5))
    x = torch.randn(2, 24, 16, 16)
    expected = model(x)
    out, done, _ = decompose(copy.deepcopy(model), LowRankConfig(method="tucker", energy=0.99999), (x[:1],), 0)
    assert done["0"]["ranks"] == [6, 5]
    kernels = [m.kernel_size for m in out[0]]
    assert kernels == [(1, 1), (3, 3), (1, 1)] and out[0][1].stride == (2, 2)
    assert done["0"]["mac_ratio"] < 0.3
    torch.testing.assert_close(out(x), expected, atol=1e-3, rtol=1e-3)


def test_cp_builds_separable_convs_and_approximates_a_cp_low_rank_conv() -> None:
    g = torch.Generator().manual_seed(2)
    f_out, f_in, f_h, f_w = (torch.randn(n, 4, generator=g) for n in (16, 12, 3, 3))
    conv = nn.Conv2d(12, 16, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("or,ir,hr,wr->oihw", f_out, f_in, f_h, f_w))
    model = nn.Sequential(conv)
    x = torch.randn(2, 12, 10, 10)
    expected = model(x)
    out, done, _ = decompose(copy.deepcopy(model), LowRankConfig(method="cp", ratio=4 / 12), (x[:1],), 0)
    assert done["0"]["ranks"] == [4]
    layers = list(out[0])
    assert [m.kernel_size for m in layers] == [(1, 1), (3, 1), (1, 3), (1, 1)]
    assert layers[1].groups == layers[2].groups == 4
    error = (out(x) - expected).norm() / expected.norm()
    assert error < 0.05


def test_svd_transformer_runs_in_eval_fast_path_and_training(tmp_path: Path) -> None:
    from compressctl.zoo import tiny_transformer

    torch.manual_seed(0)
    model = tiny_transformer(vocab_size=50, d_model=32, nhead=2, num_layers=1, dim_feedforward=64).eval()
    ids = torch.randint(0, 50, (4, 12))
    out, done, _ = decompose(copy.deepcopy(model), LowRankConfig(method="svd", ratio=0.25), (ids,), 0)
    assert set(done) == {"encoder.layers.0.linear1", "encoder.layers.0.linear2", "head"}
    assert isinstance(out.encoder.layers[0].self_attn.out_proj, nn.Linear)  # MHA reads out_proj.weight itself
    with torch.no_grad():
        fast = out(ids)  # eval + no_grad takes the fused encoder path, which reads linear1.weight
    slow = out.train()(ids)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)


def test_layer_ratios_give_a_layer_its_own_ranks() -> None:
    model = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1))
    x = torch.randn(1, 16, 8, 8)
    config = LowRankConfig(method="tucker", ratio=0.5, layer_ratios={"2": 0.25})
    _out, done, _ = decompose(copy.deepcopy(model), config, (x,), 0)
    assert done["0"]["ranks"] == [16, 8] and done["2"]["ranks"] == [8, 8]
