"""``lowrank``: the stage's options, its edit replayed from the cache, a recipe run (the math: tests/factorization)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from compressctl.artifact import Artifact, load_torch, save_torch
from compressctl.factorization.decompose import decompose
from compressctl.registry import registry
from compressctl.runners.lowrank import LowRankConfig
from tests.conftest import tiny_recipe, write_recipe
from tests.runners.cache_replay import rerun_replays_the_stage


def test_lowrank_edit_replays_from_the_cache(tmp_path: Path) -> None:
    from compressctl.zoo import digits_resnet

    torch.manual_seed(0)
    source = digits_resnet(width=8).eval()
    x = torch.randn(3, 1, 32, 32)
    module, done, _ = decompose(copy.deepcopy(source), LowRankConfig(method="tucker", ratio=0.5), (x[:1],), 0)
    edit = {"op": "lowrank", "layers": {n: {"method": p["method"], "ranks": p["ranks"]} for n, p in done.items()}}
    artifact = Artifact.from_module(source).with_module(module.eval(), edit)
    save_torch(artifact, tmp_path)
    loaded = load_torch(tmp_path, lambda: copy.deepcopy(source), registry.replay_edit)
    assert loaded.edits == [edit]
    assert isinstance(loaded.module.layer1.conv1, nn.Sequential)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), module(x))


def test_lowrank_stage_in_a_recipe_lowers_macs_and_is_cached(tmp_path: Path, cli) -> None:
    recipe = tiny_recipe(
        stages=[
            {"type": "train", "epochs": 1, "lr": 0.01},
            {"type": "lowrank", "method": "tucker", "ratio": 0.5, "exclude": ["0"]},
            {"type": "export", "dynamo": False},
        ]
    )
    path = write_recipe(tmp_path, recipe)
    out = tmp_path / "out"
    assert cli("apply", path, "-o", out, "-q").exit_code == 0
    report = json.loads((out / "report.json").read_text())
    baseline, final = report["models"][0], report["models"][-1]
    assert final["macs"] < 0.6 * baseline["macs"]
    details = report["stages"][1]["details"]
    assert details["rank_rule"] == "ratio 0.5"
    assert set(details["layers"]) == {"3", "7"} and details["layers"]["3"]["ranks"] == [16, 8]
    rerun_replays_the_stage(cli, path, out, "02-lowrank", "03-export")


@pytest.mark.parametrize("bad", [{"ratio": 0.5, "energy": 0.9}, {"ratio": 0}, {"method": "qr"}, {"rank": 3}])
def test_config_is_strict(bad: dict) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        LowRankConfig(**bad)
