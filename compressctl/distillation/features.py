"""Hint losses' plumbing (FitNets, Romero et al. 2015): taps on named layers and adapters between shapes."""

from __future__ import annotations

from typing import Any

from compressctl.errors import UserError


def make_adapter(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> tuple[Any, str]:
    """A learned map from student to teacher features, or None when the shapes agree."""
    from torch import nn

    if student_shape[1:] == teacher_shape[1:]:
        return None, "none (shapes agree)"
    if len(student_shape) == 4 and len(teacher_shape) == 4:
        cs, ct = student_shape[1], teacher_shape[1]
        return nn.Conv2d(cs, ct, 1, bias=False), f"conv1x1 {cs}→{ct}, resize to {list(teacher_shape[2:])}"
    if len(student_shape) >= 2 and len(teacher_shape) >= 2 and student_shape[:-1] == teacher_shape[:-1]:
        ds, dt = student_shape[-1], teacher_shape[-1]
        return nn.Linear(ds, dt, bias=False), f"linear {ds}→{dt}"
    if len(student_shape) == 2 and len(teacher_shape) == 2:
        return nn.Linear(student_shape[1], teacher_shape[1], bias=False), "linear"
    raise UserError(f"distill.features: cannot match a student feature {list(student_shape)} to {list(teacher_shape)}")


def adapt(adapter: Any, feature: Any, target_shape: tuple[int, ...]) -> Any:
    import torch.nn.functional as F

    if adapter is not None:
        feature = adapter(feature)
    if feature.dim() == 4 and tuple(feature.shape[2:]) != tuple(target_shape[2:]):
        feature = F.adaptive_avg_pool2d(feature, target_shape[2:])
    return feature


class FeatureTaps:
    """Forward hooks that keep the outputs of named modules from the latest forward pass."""

    def __init__(self, module: Any, names: list[str], where: str) -> None:
        self.values: dict[str, Any] = {}
        self.handles = []
        modules = dict(module.named_modules())
        for name in names:
            if name not in modules:
                near = ", ".join(n for n in modules if n)[:300]
                raise UserError(f"distill: the {where} has no module '{name}' (has: {near})")
            self.handles.append(modules[name].register_forward_hook(self._keep(name)))

    def _keep(self, name: str) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            from compressctl.onnxio import first_tensor

            self.values[name] = first_tensor(output)

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
