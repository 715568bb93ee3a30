"""Feature hints: adapters between student and teacher shapes."""

from __future__ import annotations

from torch import nn

from compressctl.distillation.features import make_adapter


def test_adapters_are_made_only_when_shapes_differ() -> None:
    assert make_adapter((2, 8, 4, 4), (2, 8, 4, 4))[0] is None
    conv, note = make_adapter((2, 8, 8, 8), (2, 16, 4, 4))
    assert isinstance(conv, nn.Conv2d) and conv.in_channels == 8 and conv.out_channels == 16 and "1x1" in note
    linear, _ = make_adapter((2, 12), (2, 20))
    assert isinstance(linear, nn.Linear) and linear.weight.shape == (20, 12)
