"""Teachers: a frozen copy of a torch model, or an ONNX model run through ONNX Runtime (outputs only)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressctl.errors import UserError

if TYPE_CHECKING:
    from compressctl.artifact import Artifact
    from compressctl.recipe.models import ModelRef


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


def build_teacher(config: Any, artifact: Artifact, context: Any) -> tuple[Any, str]:
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
