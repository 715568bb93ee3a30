"""A stage that hands back its input file unchanged (quantize keeping float) is timed once:
it shares its twin's latency, and the run's speedup over the baseline is exactly 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from compressctl.pipeline import apply
from compressctl.recipe import load_recipe
from tests.conftest import tiny_recipe, write_recipe


def test_quantize_keeping_float_is_the_baselines_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import compressctl.quantization.int8 as int8

    def broken(*args, **kwargs) -> None:
        raise RuntimeError("no INT8 kernel for this graph")

    monkeypatch.setattr(int8, "quantize_candidate", broken)
    stages = [{"type": "train", "epochs": 1, "lr": 0.01}, {"type": "export", "dynamo": False}, {"type": "quantize"}]
    report = apply(load_recipe(write_recipe(tmp_path, tiny_recipe(stages=stages))), tmp_path / "out")
    quantize = next(s["details"] for s in report["stages"] if s["type"] == "quantize")
    assert quantize["kept_float"] and "every INT8 candidate failed" in quantize["reason"]
    assert all("error" in c for c in quantize["candidates"] if c["candidate"] != "float")
    models = {m["name"]: m for m in report["models"]}
    (timing,) = models["03-quantize"]["latency"]
    assert timing["same_file_as"] == "baseline"
    assert timing["samples_ms"] == models["baseline"]["latency"][0]["samples_ms"]
    assert report["summary"]["speedup"] == {"CPUExecutionProvider@4": 1.0}
    assert report["measurement"]["sittings"][0]["models"] == ["baseline"]
