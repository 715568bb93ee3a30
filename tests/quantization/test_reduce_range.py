"""7-bit weights where ONNX Runtime's u8×s8 kernels saturate (x86 without VNNI or AMX)."""

from __future__ import annotations

import platform

import pytest
import torch

from compressctl import environment
from compressctl.quantization.fake_quant import REDUCED_WEIGHT_QMAX, fake_quant_weight
from compressctl.quantization.int8 import reduces_range

U8S8 = {"activation": "uint8", "weight": "int8"}


@pytest.fixture
def x86(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")


@pytest.mark.parametrize(
    ("features", "saturates"),
    [
        (["avx2"], True),
        (["avx2", "avx512f", "avx512bw"], True),  # AVX-512 without VNNI still sums pairs in 16 bits
        (["avx2", "avx512f", "avx512bw", "avx512_vnni"], False),
        (["avx2", "avx_vnni"], False),
        (["avx2", "avx512f", "amx_int8"], False),
    ],
)
def test_saturation_follows_the_int8_instructions(x86: None, features: list[str], saturates: bool) -> None:
    assert environment.int8_saturates(features) is saturates


def test_arm_never_saturates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert environment.int8_saturates([]) is False


@pytest.mark.parametrize("vnni", [True, False])
def test_auto_reduces_only_u8s8_on_a_saturating_cpu(x86: None, monkeypatch: pytest.MonkeyPatch, vnni: bool) -> None:
    monkeypatch.setattr(environment, "cpu_features", lambda: ["avx2", "avx512_vnni"] if vnni else ["avx2"])
    assert reduces_range("auto", U8S8) is (not vnni)
    assert reduces_range("auto", {"activation": "int8", "weight": "int8"}) is False
    assert reduces_range("auto", {"activation": "uint8", "weight": "uint8"}) is False
    assert reduces_range(True, {"activation": "int8", "weight": "int8"}) is True  # an explicit choice stands
    assert reduces_range(False, U8S8) is False


def test_the_features_this_machine_reports_are_known_flags() -> None:
    assert set(environment.cpu_features()) <= set(environment.INT8_FLAGS)
    assert environment.machine_key()[2] == ",".join(environment.cpu_features())


def test_reduced_fake_quant_uses_the_range_onnx_runtime_rounds_to() -> None:
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 3, 3)
    levels = fake_quant_weight(weight, REDUCED_WEIGHT_QMAX)
    scale = weight.reshape(4, -1).abs().amax(dim=1) / REDUCED_WEIGHT_QMAX
    codes = levels.reshape(4, -1) / scale[:, None]
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.abs().max() <= REDUCED_WEIGHT_QMAX + 1e-4
    assert codes.abs().amax(dim=1).round().eq(REDUCED_WEIGHT_QMAX).all()  # each channel's largest weight maps to 64
