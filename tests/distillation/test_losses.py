"""Distillation losses: soft targets, RKD relations, and the summed loss that trains feature adapters."""

from __future__ import annotations

import torch

from compressctl.distillation.losses import DistillLoss, rkd_angle_loss, rkd_distance_loss, soft_target_loss
from compressctl.distillation.teachers import TorchTeacher
from compressctl.runners.distill import DistillConfig


def test_soft_target_loss_is_zero_for_equal_outputs_and_scaled_by_t_squared() -> None:
    logits = torch.randn(8, 10)
    assert soft_target_loss(logits, logits, 4.0).abs() < 1e-6
    other = torch.randn(8, 10)
    plain = torch.nn.functional.kl_div(
        torch.log_softmax(logits / 2, -1), torch.softmax(other / 2, -1), reduction="batchmean"
    )
    torch.testing.assert_close(soft_target_loss(logits, other, 2.0), 4 * plain)


def test_relational_losses_ignore_scale_and_rotation_but_see_structure() -> None:
    x = torch.randn(6, 5)
    rotation, _ = torch.linalg.qr(torch.randn(5, 5))
    same = 3.0 * x @ rotation  # distances scale, angles do not change: RKD normalises both away
    assert rkd_distance_loss(same, x) < 1e-6 and rkd_angle_loss(same, x) < 1e-6
    assert rkd_distance_loss(torch.randn(6, 5), x) > 1e-3 and rkd_angle_loss(torch.randn(6, 5), x) > 1e-3


def test_feature_loss_trains_its_adapter_and_reaches_the_teacher_layers() -> None:
    from compressctl.zoo import digits_cnn

    torch.manual_seed(0)
    teacher, student = digits_cnn(width=8), digits_cnn(width=4)
    config = DistillConfig(
        features={"pairs": [{"student": "5", "teacher": "5"}]},
        relational={"student": "11", "teacher": "11"},
    )
    x = [torch.randn(4, 1, 8, 8)]
    loss = DistillLoss(student, TorchTeacher(teacher), config, x)
    assert loss.adapter_notes == {"5->5": "conv1x1 8→16, resize to [8, 8]"}
    (adapter,) = loss.adapters
    value = loss(student.train(), x, torch.tensor([0, 1, 2, 3]))
    value.backward()
    assert set(loss.last_parts) == {"soft", "features", "relational"}
    assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.teacher.module.parameters())
    loss.close()
