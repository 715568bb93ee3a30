"""``pipeline``: what a runner gets from a run, and a rerun with nothing changed rebuilds nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from compressctl.artifact import Artifact
from compressctl.pipeline import apply
from compressctl.registry import registry
from compressctl.runners.base import Runner, StageConfig, StageContext
from tests.conftest import tiny_recipe, write_recipe

FAST_REPORT = {"providers": ["CPUExecutionProvider"], "batch_sizes": [2], "warmup": 1, "repeat": 3, "threads": 1}


class ProbeConfig(StageConfig):
    type: Literal["probe"] = "probe"


class ProbeRunner(Runner):
    """Copies its ONNX input into its folder and keeps the context it was given."""

    type = "probe"
    config_model = ProbeConfig
    consumes = "onnx"
    produces = "onnx"
    seen: ClassVar[list[StageContext]] = []  # what the runner was given, for the test to read

    def run(self, artifact: Artifact, config: Any, context: StageContext) -> Artifact:
        self.seen.append(context)
        target = context.stage_dir / "model.onnx"
        shutil.copyfile(artifact.path, target)
        return Artifact.from_onnx(target)


@pytest.fixture
def probe():
    ProbeRunner.seen = []
    registry.register(ProbeRunner)
    yield ProbeRunner
    registry.unregister("probe")


def test_a_runner_gets_a_stage_context_with_the_run_settings(tmp_path: Path, probe) -> None:
    recipe = tiny_recipe(stages=[{"type": "export", "dynamo": False}, {"type": "probe"}], report=FAST_REPORT)
    apply(write_recipe(tmp_path, recipe), tmp_path / "out")
    (context,) = probe.seen
    assert isinstance(context, StageContext)
    assert (context.index, context.name, context.seed) == (2, "02-probe", 0)
    assert context.stage_dir == tmp_path / "out" / "stages" / ".02-probe.tmp"
    assert (context.provider, context.threads, context.batch_size) == ("CPUExecutionProvider", 1, 64)
    assert [i.name for i in context.inputs] == ["x"] and context.report.batch_sizes == [2]
    assert context.evaluate.metric == "accuracy" and len(context.data.val) > 0
    # the baseline is the model entering the first compressing stage: the export's output
    assert context.baseline.path == tmp_path / "out" / "stages" / "01-export" / "model.onnx"
    assert callable(context.export) and callable(context.build_model)


def test_a_rerun_with_nothing_changed_rebuilds_nothing(tmp_path: Path, monkeypatch) -> None:
    """Every stage comes from the cache and no model is built: not the source, not the trained baseline."""
    import compressctl.sources

    stages = [
        {"type": "train", "epochs": 1, "lr": 0.01},
        {"type": "prune", "amount": 0.25},
        {"type": "export", "dynamo": False},
    ]
    path = write_recipe(tmp_path, tiny_recipe(stages=stages, report=FAST_REPORT))
    first = apply(path, tmp_path / "out")
    assert [s["cached"] for s in first["stages"]] == [False, False, False]
    baseline_key = (tmp_path / "out" / "baseline" / "key.txt").read_text()

    def no_building(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a fully cached rerun built the torch model")

    monkeypatch.setattr(compressctl.sources, "build_torch_model", no_building)
    second = apply(path, tmp_path / "out")
    assert [s["cached"] for s in second["stages"]] == [True, True, True]
    assert (tmp_path / "out" / "baseline" / "key.txt").read_text() == baseline_key
    assert "01-train: unchanged, reusing" in (tmp_path / "out" / "run.log").read_text()
    assert [m["name"] for m in second["models"]] == [m["name"] for m in first["models"]]
