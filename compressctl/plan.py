"""Plans a recipe's stages: resolves runners, checks the order, inserts ``export`` where torch turns into ONNX."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compressctl.errors import UserError
from compressctl.registry import registry
from compressctl.runners.base import Runner, StageConfig


@dataclass
class PlannedStage:
    index: int  # 1-based position in the plan
    type: str
    config: StageConfig
    runner: Runner
    input_kind: str
    output_kind: str
    auto: bool = False  # inserted by the planner, not named in the recipe
    recipe_index: int | None = None

    @property
    def name(self) -> str:
        return f"{self.index:02d}-{self.type}"

    @property
    def measured(self) -> bool:
        """Whether the stage's output is measured: it changes the model.

        An export does not: its output was already measured as the torch stage
        before it (or as the baseline).
        """
        return self.runner.compresses and self.type != "export"


def plan_stages(recipe: Any) -> list[PlannedStage]:
    """Resolve runners and check the order; insert ``export`` where torch turns into ONNX."""
    export_runner = registry.get("export")
    kind = "onnx" if recipe.model.onnx else "torch"
    planned: list[PlannedStage] = []
    previous_onnx_stage: str | None = None

    def add(runner_cls: type[Runner], config: StageConfig, auto: bool, recipe_index: int | None) -> None:
        nonlocal kind
        runner = runner_cls()
        out_kind = runner.output_kind(kind)
        planned.append(
            PlannedStage(len(planned) + 1, runner_cls.type, config, runner, kind, out_kind, auto, recipe_index)
        )
        kind = out_kind

    for i, config in enumerate(recipe.stages):
        runner_cls = registry.get(config.type)
        if runner_cls.consumes == "torch" and kind == "onnx":
            if recipe.model.onnx and previous_onnx_stage is None:
                raise UserError(
                    f"stages[{i}] ({config.type}) needs a torch model, but the model is the ONNX file "
                    f"{recipe.model.onnx}; use model.factory for torch-level stages"
                )
            raise UserError(
                f"stages[{i}] ({config.type}) is a torch-level stage and cannot follow the ONNX-level "
                f"stage {previous_onnx_stage}; move it before the export"
            )
        if runner_cls.consumes == "onnx" and kind == "torch":
            add(export_runner, export_runner.config_model(type="export"), True, None)
        add(runner_cls, config, False, i)
        if kind == "onnx":
            previous_onnx_stage = f"stages[{i}] ({config.type})"
    if kind == "torch":
        add(export_runner, export_runner.config_model(type="export"), True, None)
    return planned


def baseline_position(plan: list[PlannedStage]) -> int:
    """Where the baseline is taken: before the first compressing stage (``len(plan)``: after the last stage)."""
    return next((i for i, stage in enumerate(plan) if stage.runner.compresses), len(plan))


def export_config(recipe: Any) -> StageConfig:
    """The recipe's export stage, else the export defaults: how every torch model is exported."""
    for stage in recipe.stages:
        if stage.type == "export":
            return stage
    return registry.get("export").config_model(type="export")
