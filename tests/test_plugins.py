"""Third-party runners from the `compressctl.runners` entry point group work like built-ins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compressctl.errors import UserError
from compressctl.registry import Registry
from tests.conftest import tiny_recipe, write_recipe

PLUGIN = """
from typing import Literal

from pydantic import Field

from compressctl import Artifact, Runner, StageConfig


class ZeroSmallConfig(StageConfig):
    type: Literal["acme-zero-small"] = "acme-zero-small"
    threshold: float = Field(0.05, gt=0, description="Weights below this magnitude become zero.")


class ZeroSmallRunner(Runner):
    type = "acme-zero-small"
    config_model = ZeroSmallConfig
    consumes = "torch"
    produces = "torch"
    summary = "Zero every weight smaller than a threshold (an example plugin)."

    def run(self, artifact, config, context):
        import copy

        import torch

        module = copy.deepcopy(artifact.module)
        zeroed = 0
        with torch.no_grad():
            for p in module.parameters():
                if p.dim() > 1:
                    mask = p.abs() < config.threshold
                    zeroed += int(mask.sum())
                    p[mask] = 0.0
        context.details["zeroed"] = zeroed
        return Artifact.from_module(module, artifact.edits)
"""


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "acme_runners").mkdir(parents=True)
    (site / "acme_runners" / "__init__.py").write_text(PLUGIN)
    dist = site / "acme_runners-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-runners\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[compressctl.runners]\nacme-zero-small = acme_runners:ZeroSmallRunner\n")
    return site


def run_cli(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(Path(__file__).parents[1])]))
    return subprocess.run(
        [sys.executable, "-m", "compressctl", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


def test_entry_point_runner_is_listed_and_runs_from_a_recipe(tmp_path: Path, plugin_path: Path) -> None:
    listing = run_cli(["runners"], plugin_path, tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "acme-zero-small  (torch → torch)  Zero every weight smaller than a threshold" in listing.stderr
    assert "threshold = 0.05" in listing.stderr

    recipe = tiny_recipe(
        stages=[{"type": "train", "epochs": 1, "lr": 0.01}, {"type": "acme-zero-small", "threshold": 0.1}]
    )
    path = write_recipe(tmp_path, recipe)
    bad = run_cli(["validate", str(path), "--set", "stages[1].treshold=1"], plugin_path, tmp_path)
    assert bad.returncode == 2 and "unknown field 'treshold'; did you mean 'threshold'?" in bad.stderr

    result = run_cli(["apply", str(path), "-o", str(tmp_path / "out"), "--json"], plugin_path, tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    stage = report["stages"][1]
    assert stage["type"] == "acme-zero-small" and stage["details"]["zeroed"] > 0
    names = [m["name"] for m in report["models"]]
    assert names == ["baseline", "02-acme-zero-small", "final"]
    baseline, final = report["models"][0], report["models"][-1]
    assert final["nonzero_params"] < baseline["nonzero_params"]


def test_without_the_plugin_the_stage_type_is_unknown(tmp_path: Path) -> None:
    recipe = tiny_recipe(stages=[{"type": "acme-zero-small"}])
    result = run_cli(["validate", str(write_recipe(tmp_path, recipe))], tmp_path / "nothing", tmp_path)
    assert result.returncode == 2 and "unknown stage type 'acme-zero-small'" in result.stderr


def test_duplicate_stage_type_names_both_classes() -> None:
    from compressctl.runners.train import FinetuneRunner, TrainRunner

    registry = Registry()

    class Impostor(TrainRunner):
        pass

    registry.register(TrainRunner, "compressctl.runners.train:TrainRunner")
    with pytest.raises(
        UserError, match="two runners claim stage type 'train': compressctl.runners.train:TrainRunner and .*Impostor"
    ):
        registry.register(Impostor)
    registry.register(FinetuneRunner)
    assert registry._runners["finetune"] is FinetuneRunner


def test_broken_plugin_is_reported_not_fatal(tmp_path: Path, plugin_path: Path) -> None:
    (plugin_path / "acme_runners" / "__init__.py").write_text("raise ImportError('acme is broken')\n")
    listing = run_cli(["runners"], plugin_path, tmp_path)
    assert listing.returncode == 0
    assert (
        "acme-zero-small  (plugin failed to load: acme_runners:ZeroSmallRunner: ImportError: acme is broken)"
        in listing.stderr
    )
    recipe = tiny_recipe(stages=[{"type": "acme-zero-small"}])
    result = run_cli(["validate", str(write_recipe(tmp_path, recipe))], plugin_path, tmp_path)
    assert result.returncode == 2
    assert "stage type 'acme-zero-small' comes from a plugin that failed to load" in result.stderr
