"""Shared fixtures: small recipes written to tmp folders and a CLI runner."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

TINY_RECIPE: dict[str, Any] = {
    "version": 1,
    "name": "tiny",
    "seed": 0,
    "model": {
        "factory": "compressctl.zoo:digits_cnn",
        "kwargs": {"width": 16},
        "inputs": [{"name": "x", "shape": ["batch", 1, 8, 8], "dtype": "float32"}],
    },
    "data": {"source": "digits", "batch_size": 64},
    "evaluate": {"metric": "accuracy"},
    "stages": [{"type": "train", "epochs": 1, "lr": 0.01}, {"type": "export", "dynamo": False}],
    "report": {"providers": ["CPUExecutionProvider"], "batch_sizes": [4], "warmup": 1, "repeat": 3},
}


def tiny_recipe(**changes: Any) -> dict[str, Any]:
    """A fast recipe (digits_cnn, one epoch); top-level keys in ``changes`` replace the defaults."""
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe.update(copy.deepcopy(changes))
    return recipe


def write_recipe(folder: Path, recipe: dict[str, Any] | str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture
def cli():
    from compressctl.cli import app

    runner = CliRunner()

    def invoke(*args: str, **kwargs: Any):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


@pytest.fixture
def exploding_runner():
    """A registered runner whose stage raises, for failure-path tests."""
    from typing import Literal

    from compressctl.registry import registry
    from compressctl.runners.base import Runner, StageConfig

    class ExplodeConfig(StageConfig):
        type: Literal["explode"] = "explode"

    class ExplodeRunner(Runner):
        type = "explode"
        config_model = ExplodeConfig
        consumes = "torch"
        produces = "torch"
        summary = "Fails on purpose (tests)."

        def run(self, artifact, config, context):
            raise RuntimeError("boom in the middle of a stage")

    registry.register(ExplodeRunner)
    yield ExplodeRunner
    registry.unregister("explode")
