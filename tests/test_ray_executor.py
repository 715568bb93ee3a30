"""The Ray executor: the same batch spread over a Ray instance this test starts, gathered into one summary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import ray  # make test installs the ray extra: a missing ray fails loudly, it is not skipped

from compressctl.errors import EXIT_BAD_INPUT, EXIT_OK
from tests.conftest import tiny_recipe, write_recipe


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_batch_on_ray_gathers_every_result_into_the_summary(tmp_path: Path, cli, local_ray) -> None:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    fast = {"stages": [{"type": "export", "dynamo": False}]}
    write_recipe(zoo, tiny_recipe(name="ray-one", **fast), "one.yaml")
    write_recipe(zoo, tiny_recipe(name="ray-two", **fast), "two.yaml")
    broken = tiny_recipe(name="ray-broken", **fast)
    broken["model"] = dict(broken["model"], factory="no_such_module:model")
    write_recipe(zoo, broken, "three.yaml")
    out = tmp_path / "out"
    result = cli("batch", zoo, "-o", out, "--executor", "ray", "--keep-going")
    assert result.exit_code == EXIT_BAD_INPUT, result.output  # the broken recipe is bad input, nothing crashed
    index = json.loads((out / "index.json").read_text())
    rows = {row["name"]: row for row in index["models"]}
    assert rows["ray-one"]["status"] == rows["ray-two"]["status"] == "passed"
    assert rows["ray-broken"]["status"] == "bad_input" and "no_such_module" in rows["ray-broken"]["error"]
    for name in ("ray-one", "ray-two"):
        report = json.loads((out / name / "report.json").read_text())
        assert report["passed"] and (out / rows[name]["report"]).is_file()
    # The recipes ran in Ray worker processes, not in the batch's own process (as the local executor does).
    workers = {row["worker"] for row in index["models"] if row["status"] == "passed"}
    assert workers
    assert all(w.rsplit(":", 1)[1] != str(os.getpid()) for w in workers)
    assert cli("batch", zoo / "one.yaml", "-o", tmp_path / "out2", "--executor", "ray", "-q").exit_code == EXIT_OK
