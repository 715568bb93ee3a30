"""Nothing lost, nothing let in: interruption, resumption, determinism, disk faults."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_recipe, write_recipe

ROOT = Path(__file__).parents[1]


def ctrl_c_reaches_it() -> None:
    """In the child: SIGINT at its default, as for a command in the foreground of a terminal.

    A shell starts background jobs (``make test &``, nohup, cron) with SIGINT ignored, the child
    inherits that, and Python then installs no KeyboardInterrupt handler: the interrupt tests would
    send a signal nobody hears.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def compressctl(*args: str, cwd: Path, preexec_fn=None, **kwargs) -> subprocess.Popen:
    def child_setup() -> None:
        ctrl_c_reaches_it()
        if preexec_fn is not None:
            preexec_fn()

    env = dict(os.environ, PYTHONPATH=str(ROOT), CI="1")
    return subprocess.Popen(
        [sys.executable, "-m", "compressctl", *args],
        cwd=cwd,
        env=env,
        preexec_fn=child_setup,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def slow_recipe() -> dict:
    # The second stage trains long enough to be interrupted in the middle.
    return tiny_recipe(
        stages=[
            {"type": "train", "epochs": 1, "lr": 0.01},
            {"type": "finetune", "epochs": 200, "lr": 0.001},
            {"type": "export", "dynamo": False},
        ]
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_exits_130_and_the_rerun_resumes(tmp_path: Path, sig: int) -> None:
    path = write_recipe(tmp_path, slow_recipe())
    out = tmp_path / "out"
    proc = compressctl("apply", str(path), "-o", str(out), cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (out / "stages" / ".02-finetune.tmp").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "finetune never started"
        time.sleep(0.2)
    time.sleep(1.0)
    sent = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - sent < 10
    assert "interrupted" in stderr.splitlines()[-1] and "Traceback" not in stderr
    assert (out / "stages" / "01-train" / "stage.json").is_file()  # the finished stage is kept
    assert not (out / "stages" / "02-finetune").exists()  # no half-written stage that looks finished
    assert not (out / ".compressctl.lock").exists()

    # Resume: the finished stage is reused, the rest runs (shortened through --set).
    rerun = compressctl("apply", str(path), "-o", str(out), "--set", "stages[1].epochs=1", "--json", cwd=tmp_path)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    report = json.loads(stdout)
    assert [s["cached"] for s in report["stages"]] == [True, False, False]


def test_sigkill_leaves_no_trusted_corrupt_cache(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, slow_recipe())
    out = tmp_path / "out"
    proc = compressctl("apply", str(path), "-o", str(out), cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not (out / "stages" / ".02-finetune.tmp").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the finetune stage never started"
        time.sleep(0.2)
    proc.kill()
    proc.communicate()
    # Truncate the finished stage's weights as a crash mid-write would; the rerun must notice.
    weights = out / "stages" / "01-train" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    rerun = compressctl("apply", str(path), "-o", str(out), "--set", "stages[1].epochs=1", "--json", cwd=tmp_path)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr  # the dead process's lock was detected as stale
    report = json.loads(stdout)
    assert [s["cached"] for s in report["stages"]] == [False, False, False]
    assert "cache of 01-train is corrupt" in stderr


def test_same_seed_gives_identical_metrics(tmp_path: Path) -> None:
    recipe = tiny_recipe(
        stages=[
            {"type": "train", "epochs": 2, "lr": 0.01},
            {"type": "export", "dynamo": False},
            # prefer: size — INT8 is about as fast as float on this tiny model; this test is about seeds, not timing
            {"type": "quantize", "calibration": {"samples": 64}, "select_repeat": 3, "prefer": "size"},
        ]
    )
    path = write_recipe(tmp_path, recipe)
    reports = []
    for name in ("a", "b"):
        proc = compressctl("apply", str(path), "-o", str(tmp_path / name), "--json", cwd=tmp_path)
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        reports.append(json.loads(stdout))
    for a, b in zip(reports[0]["models"], reports[1]["models"], strict=True):
        assert a["metrics"] == b["metrics"]
        assert a["nonzero_params"] == b["nonzero_params"] and a["macs"] == b["macs"]
    assert reports[0]["stages"][0]["details"]["history"] == reports[1]["stages"][0]["details"]["history"]


def test_file_size_limit_mid_write_exits_3_without_traceback(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe())
    limit = 40_000  # bytes: the baseline ONNX and stage weights are larger

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = compressctl("apply", str(path), "-o", str(tmp_path / "out"), cwd=tmp_path, preexec_fn=small_files)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 3, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "File too large" in last, stderr
    assert "Traceback" not in stderr


def test_read_only_output_folder_is_bad_input(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits; an output folder below a *file* fails the same check.
        (tmp_path / "plain").write_text("x")
        target = tmp_path / "plain" / "out"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        target = ro / "out"
    proc = compressctl("apply", str(write_recipe(tmp_path, tiny_recipe())), "-o", str(target), cwd=tmp_path)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr and str(target) in stderr
