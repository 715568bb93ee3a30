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

Without labels the hard-label term is left out: pure distillation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from compressctl.artifact import Artifact
from compressctl.errors import UserError
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


# -- teachers -------------------------------------------------------------------------------------


class TorchTeacher:
    def __init__(self, module: Any) -> None:
        import copy

        self.module = copy.deepcopy(module).eval()  # never touch the baseline artifact itself
        for p in self.module.parameters():
            p.requires_grad_(False)

    def __call__(self, inputs: list[Any]) -> Any:
        import torch

        from compressctl.training import model_outputs

        with torch.no_grad():
            return model_outputs(self.module, inputs)


class OnnxTeacher:
    """A teacher that runs in ONNX Runtime; it only gives outputs (no inner layers)."""

    module = None

    def __init__(self, path: Path, names: list[str]) -> None:
        from compressctl.measure.latency import make_session

        self.session = make_session(path)
        self.names = [i.name for i in self.session.get_inputs()]
        if len(self.names) != len(names):
            raise UserError(f"distill.teacher.onnx: the model has {len(self.names)} inputs, the recipe {len(names)}")

    def __call__(self, inputs: list[Any]) -> Any:
        import torch

        feeds = {name: t.numpy() for name, t in zip(self.names, inputs, strict=True)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def build_teacher(config: DistillConfig, artifact: Artifact, context: Any) -> tuple[Any, str]:
    if config.teacher is None:
        baseline = context.baseline or artifact
        if baseline.module is None:
            raise UserError("distill: the baseline is not a torch model; name a teacher")
        return TorchTeacher(baseline.module), "baseline"
    built = context.build_model(as_source(config.teacher, context))
    if built.kind == "onnx":
        return OnnxTeacher(Path(built.path), [i.name for i in context.inputs]), f"onnx {config.teacher.onnx}"
    return TorchTeacher(built.module), f"factory {config.teacher.factory}"


def as_source(ref: ModelRef, context: Any) -> Any:
    from compressctl.recipe.models import ModelSource

    return ModelSource(
        factory=ref.factory,
        kwargs=ref.kwargs,
        checkpoint=ref.checkpoint,
        onnx=ref.onnx,
        inputs=list(context.inputs) if ref.factory else [],
        dims=dict(context.dims),
    )


# -- losses ------------------------------------------------------------------------------------------


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


class DistillLoss:
    """The ``loss_fn`` for ``training.fit``: the weighted sum of the configured losses."""

    def __init__(self, student: Any, teacher: Any, config: DistillConfig, example: list[Any]) -> None:
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


def distill(
    student: Any, teacher: Any, data: Any, config: DistillConfig, batch_size: int, seed: int, progress: Any = None
) -> dict[str, Any]:
    """Train ``student`` in place against ``teacher``; returns what the report shows."""
    import itertools

    from compressctl.training import fit, to_tensors

    example = to_tensors(next(data.train.batches(min(8, len(data.train))))[0])
    loss = DistillLoss(student, teacher, config, example)
    try:
        result = fit(
            student,
            data,
            settings_from(config, batch_size),
            seed=seed,
            loss_fn=loss,
            parameters=itertools.chain(student.parameters(), loss.parameters()),
            progress=progress,
            task="distill",
            needs_labels=False,
        )
    finally:
        loss.close()
    return {
        "history": result.history,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val,
        "adapters": loss.adapter_notes,
        "adapter_params": sum(p.numel() for p in loss.parameters()),
        "labels_used": data.has_labels,
    }


def count_params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


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
            context.batch_size,
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
