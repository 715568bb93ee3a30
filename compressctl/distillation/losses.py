"""Distillation losses: soft targets, relational (RKD), and their weighted sum with feature hints."""

from __future__ import annotations

from typing import Any

from compressctl.distillation.features import FeatureTaps, adapt, make_adapter
from compressctl.errors import UserError


def soft_target_loss(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """KL(teacher ‖ student) on softened outputs, scaled by T² (Hinton et al. 2015)."""
    import torch.nn.functional as F

    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def rkd_distance_loss(student: Any, teacher: Any) -> Any:
    """Pairwise distances, each normalised by its batch mean, matched with smooth L1 (Park et al. 2019)."""
    import torch.nn.functional as F

    def normalised(x: Any) -> Any:
        d = torch_cdist(x)
        mean = d[d > 0].mean() if (d > 0).any() else d.new_ones(())
        return d / mean.clamp_min(1e-12)

    return F.smooth_l1_loss(normalised(student), normalised(teacher).detach())


def torch_cdist(x: Any) -> Any:
    import torch

    flat = x.flatten(1)
    return torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist")


def rkd_angle_loss(student: Any, teacher: Any) -> Any:
    """Cosines of the angles formed by every triplet of samples, matched with smooth L1."""
    import torch.nn.functional as F

    def angles(x: Any) -> Any:
        flat = x.flatten(1)
        diff = F.normalize(flat.unsqueeze(0) - flat.unsqueeze(1), p=2, dim=2)
        return (diff @ diff.transpose(1, 2)).flatten()

    return F.smooth_l1_loss(angles(student), angles(teacher).detach())


class DistillLoss:
    """The ``loss_fn`` for ``training.fit``: the weighted sum of the losses ``config`` (the stage's DistillConfig) names."""

    def __init__(self, student: Any, teacher: Any, config: Any, example: list[Any]) -> None:
        from torch import nn

        self.config = config
        self.teacher = teacher
        student_layers, teacher_layers = self._layers()
        if teacher_layers and teacher.module is None:
            raise UserError("distill: feature and relational losses on inner layers need a torch teacher, not ONNX")
        self.student_taps = FeatureTaps(student, student_layers, "student")
        self.teacher_taps = FeatureTaps(teacher.module, teacher_layers, "teacher") if teacher_layers else None
        self.adapters = nn.ModuleList()
        self.adapter_index: dict[int, int] = {}
        self.adapter_notes: dict[str, str] = {}
        self.last_parts: dict[str, float] = {}
        if config.features:
            self._build_adapters(student, example)

    def _layers(self) -> tuple[list[str], list[str]]:
        s, t = [], []
        if self.config.features:
            s += [p.student for p in self.config.features.pairs]
            t += [p.teacher for p in self.config.features.pairs]
        rel = self.config.relational
        if rel and rel.student:
            s.append(rel.student)
            t.append(rel.teacher)
        return list(dict.fromkeys(s)), list(dict.fromkeys(t))

    def _build_adapters(self, student: Any, example: list[Any]) -> None:
        import torch

        was_training = student.training
        with torch.no_grad():
            student.eval()(*example)
            self.teacher(example)
        student.train(was_training)
        for i, pair in enumerate(self.config.features.pairs):
            s_shape = tuple(self.student_taps.values[pair.student].shape)
            t_shape = tuple(self.teacher_taps.values[pair.teacher].shape)
            adapter, note = make_adapter(s_shape, t_shape)
            if adapter is not None:
                self.adapter_index[i] = len(self.adapters)
                self.adapters.append(adapter)
            self.adapter_notes[f"{pair.student}->{pair.teacher}"] = note

    def parameters(self) -> Any:
        return self.adapters.parameters()

    def __call__(self, model: Any, inputs: list[Any], labels: Any) -> Any:
        import torch
        import torch.nn.functional as F

        from compressctl.training import model_outputs

        config = self.config
        outputs = model_outputs(model, inputs)
        teacher_outputs = self.teacher(inputs)
        parts: dict[str, Any] = {}
        if config.soft:
            soft = soft_target_loss(outputs, teacher_outputs, config.soft.temperature)
            if labels is not None:
                hard = F.cross_entropy(outputs, labels, label_smoothing=config.label_smoothing)
                soft = config.soft.alpha * soft + (1 - config.soft.alpha) * hard
            parts["soft"] = config.soft.weight * soft
        if config.features:
            total = outputs.new_zeros(())
            for i, pair in enumerate(config.features.pairs):
                target = self.teacher_taps.values[pair.teacher].detach()
                adapter = self.adapters[self.adapter_index[i]] if i in self.adapter_index else None
                feature = adapt(adapter, self.student_taps.values[pair.student], tuple(target.shape))
                total = total + F.mse_loss(feature, target)
            parts["features"] = config.features.weight * total / len(config.features.pairs)
        if config.relational:
            rel = config.relational
            s = self.student_taps.values[rel.student] if rel.student else outputs
            t = self.teacher_taps.values[rel.teacher].detach() if rel.teacher else teacher_outputs
            relation = rel.distance * rkd_distance_loss(s, t) + rel.angle * rkd_angle_loss(s, t)
            parts["relational"] = rel.weight * relation
        self.last_parts = {k: float(v.detach()) for k, v in parts.items()}
        return torch.stack(list(parts.values())).sum()

    def close(self) -> None:
        self.student_taps.remove()
        if self.teacher_taps:
            self.teacher_taps.remove()
