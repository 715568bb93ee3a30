"""``cache``: one key scheme, stage keys that chain, the stage cache's trust rules, edit replay."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch

from compressctl.artifact import Artifact, save_torch
from compressctl.cache import (
    STAGE_RECORD,
    StageCache,
    baseline_key,
    cache_key,
    load_stage_model,
    source_key,
    stage_key,
)
from compressctl.errors import UserError
from compressctl.plan import plan_stages
from compressctl.recipe.loader import validate_data
from compressctl.registry import registry
from compressctl.runners.base import Runner, StageConfig
from compressctl.zoo import digits_cnn
from tests.conftest import tiny_recipe

VERSIONS = {"compressctl": "0", "torch": "1"}


def recipe(**changes: Any) -> Any:
    return validate_data(tiny_recipe(**changes), "recipe.yaml")


def test_cache_key_is_canonical_and_sees_every_part() -> None:
    assert cache_key(a=1, b={"x": [1, 2]}) == cache_key(b={"x": [1, 2]}, a=1)
    assert cache_key(a=1, b={"x": [1, 2]}) != cache_key(a=1, b={"x": [2, 1]})
    assert cache_key(a=1) != cache_key(a="1")


def test_stage_keys_chain_from_the_source(tmp_path: Path) -> None:
    train, export = plan_stages(recipe())
    source = source_key(recipe(), tmp_path, VERSIONS)
    first = stage_key(source, train, VERSIONS, seed=0)
    assert first == stage_key(source, train, VERSIONS, seed=0)
    assert stage_key(first, export, VERSIONS, 0) != stage_key(source, export, VERSIONS, 0)  # the input counts
    assert first != stage_key(source, train, {**VERSIONS, "torch": "2"}, 0)
    assert first != stage_key(source, train, VERSIONS, seed=1)
    longer = plan_stages(recipe(stages=[{"type": "train", "epochs": 2, "lr": 0.01}]))[0]
    assert first != stage_key(source, longer, VERSIONS, 0)


def test_the_source_key_hashes_the_checkpoint_file(tmp_path: Path) -> None:
    model = {**tiny_recipe()["model"], "checkpoint": "weights.pt"}
    (tmp_path / "weights.pt").write_bytes(b"one")
    before = source_key(recipe(model=model), tmp_path, VERSIONS)
    assert before == source_key(recipe(model=model), tmp_path, VERSIONS)
    (tmp_path / "weights.pt").write_bytes(b"two")
    assert before != source_key(recipe(model=model), tmp_path, VERSIONS)
    assert before != source_key(recipe(model=model, seed=1), tmp_path, VERSIONS)


def test_the_baseline_key_sees_the_files_holding_the_model() -> None:
    export = plan_stages(recipe())[-1].config
    key = baseline_key("input", {"weights.safetensors": "aa"}, export)
    assert key != baseline_key("input", {"weights.safetensors": "bb"}, export)
    assert key != baseline_key("other", {"weights.safetensors": "aa"}, export)
    assert key != baseline_key("input", {"weights.safetensors": "aa"}, export.model_copy(update={"opset": 17}))


def saved_stage(tmp_path: Path) -> tuple[StageCache, Any, str]:
    cache = StageCache(tmp_path / "stages")
    stage = plan_stages(recipe())[0]
    folder = cache.folder(stage)
    folder.mkdir(parents=True)
    cache.save(stage, "key-1", Artifact.from_module(digits_cnn(width=4)), folder, {"note": 1}, 0.5)
    return cache, stage, "key-1"


def test_a_saved_torch_stage_is_reused_under_its_key_only(tmp_path: Path) -> None:
    cache, stage, key = saved_stage(tmp_path)
    artifact, record = cache.load(stage, key)
    assert artifact is None  # torch stages are loaded only when needed
    assert record["details"] == {"note": 1} and set(record["files"]) == {"weights.safetensors", "structure.json"}
    assert cache.load(stage, "key-2") is None
    assert StageCache(cache.root, force=True).load(stage, key) is None


def test_a_changed_file_or_unreadable_record_is_never_trusted(tmp_path: Path) -> None:
    cache, stage, key = saved_stage(tmp_path)
    (cache.folder(stage) / "structure.json").write_text("{}")
    assert cache.load(stage, key) is None
    (cache.folder(stage) / STAGE_RECORD).write_text("{not json")
    assert cache.load(stage, key) is None


def test_a_runner_may_not_write_its_model_outside_its_folder(tmp_path: Path) -> None:
    from compressctl.errors import StageError

    cache = StageCache(tmp_path / "stages")
    stage = plan_stages(recipe())[-1]
    (tmp_path / "elsewhere.onnx").write_bytes(b"")
    with pytest.raises(StageError, match="outside its stage folder"):
        cache.save(stage, "k", Artifact.from_onnx(tmp_path / "elsewhere.onnx"), tmp_path / "stages", {}, 0.0)


def wrap_first_layer(module: Any, edit: dict[str, Any]) -> Any:
    module[0] = torch.nn.Sequential(module[0], torch.nn.Identity())
    return module


class WrapConfig(StageConfig):
    type: Literal["wrap"] = "wrap"


class WrapRunner(Runner):
    """Records the edit 'wrap': the first layer goes inside a Sequential (its weights are renamed)."""

    type = "wrap"
    config_model = WrapConfig
    edit_replays: ClassVar[dict[str, Any]] = {"wrap": wrap_first_layer}

    def run(self, artifact: Artifact, config: Any, context: Any) -> Artifact:
        return artifact.with_module(wrap_first_layer(copy.deepcopy(artifact.module), {}), {"op": "wrap"})


@pytest.fixture
def wrap_runner():
    registry.register(WrapRunner)
    yield WrapRunner
    registry.unregister("wrap")


def test_a_cached_model_replays_the_edits_of_the_runner_that_registered_them(tmp_path: Path, wrap_runner) -> None:
    torch.manual_seed(0)
    source = digits_cnn(width=4).eval()
    wrapped = WrapRunner().run(Artifact.from_module(source), WrapConfig(), None)
    save_torch(wrapped, tmp_path)
    loaded = load_stage_model(tmp_path, lambda: copy.deepcopy(source))
    assert isinstance(loaded.module[0], torch.nn.Sequential)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), wrapped.module(x))
    registry.unregister("wrap")
    with pytest.raises(ValueError, match="unknown structural edit 'wrap'"):
        load_stage_model(tmp_path, lambda: copy.deepcopy(source))


def test_two_runners_may_not_replay_the_same_edit(wrap_runner) -> None:
    class Other(WrapRunner):
        type = "other-wrap"

    with pytest.raises(UserError, match="two runners replay the edit 'wrap'"):
        registry.register(Other)
    assert "other-wrap" not in registry.names()


def test_a_stage_record_is_json_with_the_stage_type(tmp_path: Path) -> None:
    cache, stage, _ = saved_stage(tmp_path)
    record = json.loads((cache.folder(stage) / STAGE_RECORD).read_text())
    assert record["type"] == "train" and record["kind"] == "torch" and record["seconds"] == 0.5
