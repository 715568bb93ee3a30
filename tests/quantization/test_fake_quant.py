"""Fake quantization for QAT: the weight rounding matches ONNX Runtime's, LSQ steps learn."""

from __future__ import annotations

import numpy as np
import torch

from compressctl.quantization import fake_quant


def test_weight_fake_quant_matches_onnxruntime_per_channel_symmetric_int8() -> None:
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    weight = torch.randn(4, 3, 3, 3)
    ours = fake_quant.fake_quant_weight(weight).numpy()
    for channel in range(4):
        data = weight[channel].numpy().ravel()
        zero, scale, q = quantize_data(data, TensorProto.INT8, symmetric=True)
        theirs = (q.astype(np.float32) - zero) * scale
        np.testing.assert_allclose(ours[channel].ravel(), theirs, rtol=1e-5, atol=1e-6)


def test_learned_step_gets_a_gradient_and_tracked_range_follows_data() -> None:
    learned = fake_quant.ActivationQuantizer(learned=True)
    learned.observing = True
    learned(torch.linspace(-1.0, 3.0, 100))
    learned.observing = False
    learned.start_learning()
    assert abs(float(learned.scale()) - 4.0 / 255) < 1e-6
    learned.train()
    x = torch.randn(64) * 2
    (learned(x) - x).pow(2).sum().backward()
    assert learned.log_scale.grad is not None and float(learned.log_scale.grad) != 0.0

    tracked = fake_quant.ActivationQuantizer(learned=False).train()
    for _ in range(400):
        tracked(torch.rand(32) * 10.0)
    scale, zero = tracked.quant_params()
    assert zero == 0 and 9.0 / 255 < scale < 10.5 / 255


def test_batchnorm_folding_keeps_outputs() -> None:
    from compressctl.zoo import digits_resnet

    model = digits_resnet(width=8).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    folded, count = fake_quant.fold_batchnorms(model)
    x = torch.randn(2, 1, 32, 32)
    assert count == 9
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
