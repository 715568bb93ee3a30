"""``distill``: train the current model (the student) against a teacher.

The teacher defaults to the baseline (the model entering the first compression
stage), so "prune, then recover by distilling from the original" needs no
configuration; ``teacher:`` names any other model source (a factory with a
checkpoint, or an ONNX file run through ONNX Runtime). ``student:`` replaces
the current model by a new, smaller architecture ("distill into a smaller
model"); that replacement is recorded as a ``replace_model`` edit.

Losses, each with a weight, are summed:

* ``soft``: KL divergence between temperature-softened outputs, scaled by T²,
  mixed with the hard-label loss by ``alpha`` (Hinton et al. 2015);
* ``features``: hint losses between named layers, with 1×1 conv / linear
  adapters created when the shapes differ (FitNets, Romero et al. 2015);
* ``relational``: distance and angle relations between the samples of a batch
  (RKD, Park et al. 2019).

Without labels the hard-label term is left out: pure distillation. The
teachers, losses and loop live in ``compressctl.distillation``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from compressctl.artifact import Artifact
from compressctl.recipe.models import ModelRef, Strict
from compressctl.runners.base import Runner
from compressctl.runners.train import _TrainOptions, settings_from

log = logging.getLogger("compressctl")


class TeacherOrStudent(ModelRef):
    onnx: str | None = Field(None, description="An ONNX file (teacher only; run through ONNX Runtime).")

    @model_validator(mode="after")
    def _no_kwargs_for_onnx(self) -> TeacherOrStudent:
        if self.onnx and self.kwargs:
            raise ValueError("'kwargs' applies to 'factory' models, not to 'onnx'")
        return self


class SoftLoss(Strict):
    weight: float = Field(1.0, ge=0, le=1000, description="Weight of this loss in the sum.")
    temperature: float = Field(4.0, gt=0, le=100, description="Softmax temperature T (the KL term is scaled by T²).")
    alpha: float = Field(
        0.9, ge=0, le=1, description="Share of the soft (teacher) term; 1 - alpha goes to the hard-label loss."
    )


class FeaturePair(Strict):
    student: str = Field(description="Student module name whose output is matched (e.g. layer2).")
    teacher: str = Field(description="Teacher module name whose output is the target (e.g. layer3).")


class FeatureLoss(Strict):
    weight: float = Field(1.0, ge=0, le=1000, description="Weight of this loss in the sum.")
    pairs: list[FeaturePair] = Field(min_length=1, description="Student/teacher layers matched by MSE.")


class RelationalLoss(Strict):
    weight: float = Field(1.0, ge=0, le=1000, description="Weight of this loss in the sum.")
    distance: float = Field(1.0, ge=0, le=1000, description="Weight of the distance relation.")
    angle: float = Field(2.0, ge=0, le=1000, description="Weight of the angle relation.")
    student: str | None = Field(None, description="Student module whose output is related (default: model output).")
    teacher: str | None = Field(None, description="Teacher module whose output is related (default: model output).")

    @model_validator(mode="after")
    def _both_or_neither(self) -> RelationalLoss:
        if (self.student is None) != (self.teacher is None):
            raise ValueError("give both 'student' and 'teacher' layers, or neither (model outputs)")
        return self


class DistillConfig(_TrainOptions):
    type: Literal["distill"] = "distill"
    epochs: int = Field(10, ge=0, le=10_000, description="Passes over the training split.")
    teacher: TeacherOrStudent | None = Field(None, description="The teacher (default: the baseline model).")
    student: TeacherOrStudent | None = Field(
        None, description="A new student architecture from a factory (default: the current model)."
    )
    soft: SoftLoss | None = Field(default_factory=SoftLoss, description="Soft-target loss (Hinton et al.).")
    features: FeatureLoss | None = Field(None, description="Hint losses between named layers (FitNets).")
    relational: RelationalLoss | None = Field(None, description="Relational loss between samples (RKD).")

    @model_validator(mode="after")
    def _some_loss(self) -> DistillConfig:
        if not any((self.soft, self.features, self.relational)):
            raise ValueError("give at least one of 'soft', 'features' or 'relational'")
        if self.student is not None and self.student.onnx:
            raise ValueError("the student must be a torch 'factory' model, not 'onnx'")
        return self


# -- the model replacement edit ----------------------------------------------------------------


def replay_replace_model(module: Any, edit: dict[str, Any]) -> Any:
    """Build the student architecture; its weights load from the cached safetensors."""
    from compressctl.sources import call_factory

    return call_factory(edit["factory"], edit["kwargs"], Path.cwd(), what="distill.student.factory")


class DistillRunner(Runner):
    type = "distill"
    config_model = DistillConfig
    consumes = "torch"
    produces = "torch"
    summary = "Knowledge distillation from a teacher (default: the baseline): soft targets, feature hints, RKD."
    edit_replays: ClassVar[dict[str, Any]] = {"replace_model": replay_replace_model}

    def run(self, artifact: Artifact, config: DistillConfig, context: Any) -> Artifact:
        import copy

        import torch

        from compressctl.distillation.loop import count_params, distill
        from compressctl.distillation.teachers import as_source, build_teacher

        teacher, teacher_name = build_teacher(config, artifact, context)
        edit = None
        if config.student is not None:
            torch.manual_seed(context.seed + context.index)
            student = context.build_model(as_source(config.student, context)).module
            edit = {"op": "replace_model", "factory": config.student.factory, "kwargs": config.student.kwargs}
        else:
            student = copy.deepcopy(artifact.module)
        params_before = count_params(artifact.module)
        details = distill(
            student,
            teacher,
            context.data,
            config,
            settings_from(config, context.batch_size),
            context.seed + context.index,
            context.progress,
        )
        context.details.update(
            {
                "teacher": teacher_name,
                "teacher_params": count_params(teacher.module) if teacher.module is not None else None,
                "student": f"factory {config.student.factory}" if config.student else "current model",
                "student_params": count_params(student),
                "params_before": params_before,
                "losses": [name for name in ("soft", "features", "relational") if getattr(config, name)],
                **details,
            }
        )
        return artifact.with_module(student.eval(), edit)
