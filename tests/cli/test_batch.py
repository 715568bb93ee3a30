"""`compressctl batch`: a zoo of real tiny recipes, each in its own process; isolation, caching, locking."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from compressctl.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_STAGE_FAILED
from tests.conftest import tiny_recipe, write_recipe

# Model factories that misbehave the way real jobs do: killed by the kernel (as the OOM killer
# does), or hanging. They live beside the recipes, where recipe factories are imported from.
FAULTS = """
import os, signal, time

def killed(**kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def hangs(**kwargs):
    time.sleep(600)
"""


def fast_recipe(**changes) -> dict:
    """The tiny recipe without training: a batch test is about processes and files, not accuracy."""
    return tiny_recipe(**{"stages": [{"type": "export", "dynamo": False}], **changes})


def faulty_recipe(name: str, factory: str) -> dict:
    recipe = fast_recipe(name=name)
    recipe["model"] = dict(recipe["model"], factory=f"zoo_faults:{factory}", kwargs={})
    return recipe


def make_zoo(folder: Path, recipes: dict[str, dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zoo_faults.py").write_text(FAULTS)
    for name, recipe in recipes.items():
        write_recipe(folder, dict(recipe, name=name), f"{name}.yaml")
    return folder


def read_index(out: Path) -> dict:
    return json.loads((out / "index.json").read_text())


def test_zoo_runs_every_recipe_in_parallel_and_writes_the_summary(tmp_path: Path, cli) -> None:
    zoo = make_zoo(tmp_path / "zoo", {"one": fast_recipe(), "two": fast_recipe(gates={"max_size_ratio": 5.0})})
    out = tmp_path / "out"
    result = cli("batch", zoo, "-o", out, "--jobs", "2")
    assert result.exit_code == EXIT_OK, result.output
    index = read_index(out)
    assert index["passed"] is True and index["counts"] == {"passed": 2}
    assert [row["name"] for row in index["models"]] == ["one", "two"]
    for row in index["models"]:
        folder = out / row["name"]
        assert (folder / "report.json").is_file() and (folder / "model.onnx").is_file()
        assert (out / row["report"]).is_file() and row["report"] == f"{row['name']}/report.html"
        assert "INFO" in (folder / "run.log").read_text()  # each recipe has its own timestamped log
        assert (folder / "console.log").is_file()
        assert row["size_bytes"] > 0 and row["size_ratio"] is not None and row["speedup"] > 0
        assert row["accuracy_drop"] is not None
    assert index["models"][1]["gates"][0]["name"] == "max_size_ratio"
    markdown = (out / "index.md").read_text()
    assert "| one | passed |" in markdown and "[report](two/report.html)" in markdown
    html = (out / "index.html").read_text()
    assert 'href="one/report.html"' in html and "<script src=" not in html.replace('<script src="data:', "")

    # Unchanged zoo: every stage and every measurement is reused, nothing is trained again.
    assert cli("batch", zoo, "-o", out, "--jobs", "2", "-q").exit_code == EXIT_OK
    for name in ("one", "two"):
        report = json.loads((out / name / "report.json").read_text())
        assert all(stage["cached"] for stage in report["stages"])
        assert all(model["measurement_cached"] for model in report["models"])


def test_a_crash_or_a_hang_costs_only_that_recipe(tmp_path: Path, cli) -> None:
    zoo = make_zoo(
        tmp_path / "zoo",
        {
            "good": fast_recipe(),
            "killed": faulty_recipe("killed", "killed"),
            "hangs": faulty_recipe("hangs", "hangs"),
            "broken": fast_recipe(stages=[{"type": "train", "epochs": -1}]),
        },
    )
    out = tmp_path / "out"
    started = time.monotonic()
    result = cli("batch", zoo, "-o", out, "--jobs", "4", "--keep-going", "--timeout", "12")
    assert time.monotonic() - started < 60
    assert result.exit_code == EXIT_STAGE_FAILED, result.output
    rows = {row["name"]: row for row in read_index(out)["models"]}
    assert rows["good"]["status"] == "passed" and rows["good"]["report"]
    assert rows["killed"]["status"] == "crashed" and "SIGKILL" in rows["killed"]["error"]
    assert rows["hangs"]["status"] == "timeout"
    assert rows["broken"]["status"] == "bad_input" and "epochs" in rows["broken"]["error"]
    assert rows["broken"]["exit_code"] == EXIT_BAD_INPUT
    assert "| killed | crashed: killed by SIGKILL" in (out / "index.md").read_text()


def test_without_keep_going_no_recipe_starts_after_a_failure(tmp_path: Path, cli) -> None:
    zoo = make_zoo(tmp_path / "zoo", {"a-killed": faulty_recipe("a-killed", "killed"), "b-good": fast_recipe()})
    out = tmp_path / "out"
    assert cli("batch", zoo, "-o", out).exit_code == EXIT_STAGE_FAILED
    rows = {row["name"]: row for row in read_index(out)["models"]}
    assert rows["a-killed"]["status"] == "crashed"
    assert rows["b-good"]["status"] == "skipped" and not (out / "b-good" / "report.json").exists()


def test_two_recipes_with_one_name_are_refused(tmp_path: Path, cli) -> None:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    write_recipe(zoo, fast_recipe(name="same"), "a.yaml")
    write_recipe(zoo, fast_recipe(name="same"), "b.yaml")
    result = cli("batch", zoo, "-o", tmp_path / "out")
    assert result.exit_code == EXIT_BAD_INPUT
    assert "two recipes are named 'same'" in result.output


def test_second_batch_on_a_running_output_fails_at_once_naming_the_lock(tmp_path: Path, cli) -> None:
    zoo = make_zoo(tmp_path / "zoo", {"hangs": faulty_recipe("hangs", "hangs")})
    out = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-m", "compressctl", "batch", str(zoo), "-o", str(out), "--timeout", "120"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, NO_COLOR="1"),
    )
    try:
        deadline = time.monotonic() + 30
        while not (out / "hangs" / "console.log").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (out / ".compressctl.lock").exists()
        started = time.monotonic()
        second = cli("batch", zoo, "-o", out)
        assert time.monotonic() - started < 5
        assert second.exit_code == EXIT_BAD_INPUT
        assert f"is locked by pid {first.pid}" in second.output and ".compressctl.lock" in second.output
    finally:
        first.send_signal(signal.SIGTERM)  # the batch takes its running recipes down with it
        _, stderr = first.communicate(timeout=30)
    assert first.returncode == 130, stderr
    assert not (out / ".compressctl.lock").exists()


def test_zoo_file_stale_lock_and_plain_logs_off_a_terminal(tmp_path: Path) -> None:
    make_zoo(tmp_path / "models", {"listed": fast_recipe(), "not-listed": faulty_recipe("not-listed", "killed")})
    zoo_file = tmp_path / "zoo.yaml"
    zoo_file.write_text(yaml.safe_dump({"recipes": ["models/listed.yaml"]}))  # paths relative to the zoo file
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = {"pid": dead.pid, "host": socket.gethostname(), "time": 0}
    (out / ".compressctl.lock").write_text(json.dumps(lock))  # left behind by a killed run
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "CI", "FORCE_COLOR")}
    command = [sys.executable, "-m", "compressctl", "batch", str(zoo_file), "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == EXIT_OK, done.stderr
    assert [row["name"] for row in read_index(out)["models"]] == ["listed"]
    assert "\x1b[" not in done.stderr and "━" not in done.stderr  # no colour, no progress bars
    first = done.stderr.splitlines()[0]
    assert first[2] == ":" and first[5] == ":" and " INFO " in first  # HH:MM:SS INFO ...
    quiet = subprocess.run([*command, "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == EXIT_OK and quiet.stderr == ""


def test_a_malformed_recipe_is_bad_input_named_in_one_line(tmp_path: Path, cli) -> None:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    bad = zoo / "bad.yaml"
    bad.write_text("version: 1\nname: bad\nstages: [\n")
    out = tmp_path / "out"
    # In a folder it gets its own run, which apply refuses as bad input: the batch exits 2, not 3.
    result = cli("batch", zoo, "-o", out, "-q")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    naming = [line for line in result.output.splitlines() if str(bad) in line]
    assert len(naming) == 1 and f"{bad}:4:1: invalid YAML" in naming[0], result.output
    assert read_index(out)["models"][0]["status"] == "bad_input"
    # Named on the command line it is refused before anything runs, in one line.
    result = cli("batch", bad, "-o", tmp_path / "out2")
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.output.startswith(f"error: {bad}:4:1: invalid YAML") and result.output.count("\n") == 1
