"""``--jobs N`` caps the recipes running at once, for the local executor and for Ray."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ray  # installed with the ray extra: a missing ray fails loudly, it is not skipped

from compressctl.batch import RecipeResult, ZooEntry, executors, ray_tasks_in_flight, run_batch, run_local


def _zoo(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        (folder / f"r{i}.yaml").write_text(f"version: 1\nname: r{i}\nstages: []\n")
    return folder


def _passed(entry: ZooEntry, output_dir: Path, **_: Any) -> RecipeResult:
    return RecipeResult(entry.name, str(entry.recipe), "passed", 0, 0.0, str(output_dir), "", {"summary": {}})


class Concurrency:
    """A stand-in for ``run_recipe`` that records how many calls overlap."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, entry: ZooEntry, output_dir: Path, **kwargs: Any) -> RecipeResult:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return _passed(entry, output_dir)


@pytest.mark.parametrize("jobs", [1, 2])
def test_local_runs_at_most_jobs_recipes_at_once(tmp_path: Path, monkeypatch, jobs: int) -> None:
    recorder = Concurrency()
    monkeypatch.setattr(executors, "run_recipe", recorder)
    entries = [ZooEntry(f"r{i}", tmp_path / f"r{i}.yaml") for i in range(5)]
    results = run_local(
        entries, tmp_path, jobs=jobs, keep_going=False, timeout=None, extra_args=[], on_result=lambda r: None
    )
    assert [r.status for r in results] == ["passed"] * 5
    assert recorder.most == jobs


@pytest.mark.parametrize(
    ("jobs", "recipes", "in_flight"), [(1, 5, 1), (3, 5, 3), (8, 3, 3), (None, 5, 5), (None, 0, 1)]
)
def test_ray_keeps_at_most_jobs_tasks_in_flight(jobs: int | None, recipes: int, in_flight: int) -> None:
    assert ray_tasks_in_flight(jobs, recipes) == in_flight


class Task:
    """An object reference: hashable, holding the task's result."""

    def __init__(self, result: RecipeResult) -> None:
        self.result = result


class FakeRay:
    """Ray's task API, run inline: records the options of the remote function and the tasks in flight."""

    def __init__(self) -> None:
        self.options: dict[str, Any] = {}
        self.most_in_flight = 0

    def remote(self, **options: Any):
        self.options = options

        def wrap(function):
            class Remote:
                @staticmethod
                def remote(*args: Any, **kwargs: Any) -> Task:
                    return Task(function(*args, **kwargs))

            return Remote

        return wrap

    def wait(self, running: list[Any], num_returns: int) -> tuple[list[Any], list[Any]]:
        self.most_in_flight = max(self.most_in_flight, len(running))
        return running[:num_returns], running[num_returns:]


@pytest.mark.parametrize(("jobs", "in_flight"), [(1, 1), (2, 2), (None, 3)])
def test_jobs_reaches_the_ray_executor_from_run_batch(tmp_path: Path, monkeypatch, jobs, in_flight) -> None:
    fake = FakeRay()
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "remote", fake.remote)
    monkeypatch.setattr(ray, "wait", fake.wait)
    monkeypatch.setattr(ray, "get", lambda task: task.result)
    monkeypatch.setattr(executors, "run_recipe", _passed)
    batch = run_batch([_zoo(tmp_path / "zoo", 3)], tmp_path / "out", jobs=jobs, executor="ray")
    assert [r.status for r in batch.results] == ["passed"] * 3
    assert fake.most_in_flight == in_flight
    assert fake.options == {"num_cpus": executors.RAY_CPUS_PER_TASK, "max_retries": 0}
