"""Batch wall times on a zoo of four copies of recipes/digits-cnn-int8.yaml (issue 6 "done when").

Measures, in one run: ``--jobs 1`` vs ``--jobs 2`` from scratch (target ratio ≤ 0.65), a rerun over
the unchanged zoo (target ≤ 10 s), and how fast a second batch on a busy output folder gives up.

    .venv/bin/python scripts/bench_batch.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "digits-cnn-int8.yaml"


def make_zoo(folder: Path, copies: int = 4) -> Path:
    zoo = folder / "zoo"
    zoo.mkdir(parents=True)
    text = RECIPE.read_text()
    for i in range(copies):
        name = f"digits-cnn-int8-{chr(ord('a') + i)}"
        (zoo / f"{name}.yaml").write_text(text.replace("name: digits-cnn-int8", f"name: {name}", 1))
    return zoo


def batch(*args: str) -> list[str]:
    return [sys.executable, "-m", "compressctl", "batch", *args]


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    return time.perf_counter() - started, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=Path, help="Work in this folder and keep it (default: a temporary one).")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        zoo = make_zoo(work)
        # A B B A order, each from scratch: the machine is shared, so load drifts during the runs.
        times: dict[int, list[float]] = {1: [], 2: []}
        for i, jobs in enumerate((1, 2, 2, 1)):
            seconds, done = timed(batch(str(zoo), "-o", str(work / f"jobs{jobs}-{i}"), "--jobs", str(jobs), "-q"))
            assert done.returncode == 0, done.stderr
            times[jobs].append(seconds)
            print(f"run {i + 1}: --jobs {jobs}: {seconds:.1f} s", flush=True)
        rerun, done3 = timed(batch(str(zoo), "-o", str(work / "jobs2-2"), "--jobs", "2", "-q"))
        cached = json.loads((work / "jobs2-2" / "index.json").read_text())

        # A second batch while the first is running on the same folder.
        first = subprocess.Popen(batch(str(zoo), "-o", str(work / "busy"), "-q"), stderr=subprocess.DEVNULL)
        lock = work / "busy" / ".compressctl.lock"
        while not lock.exists() and first.poll() is None:
            time.sleep(0.1)
        second_s, second = timed(batch(str(zoo), "-o", str(work / "busy"), "-q"))
        first.terminate()
        first.wait()

        print(f"zoo: 4 × {RECIPE.relative_to(ROOT)} in {work}")
        one, two = sum(times[1]), sum(times[2])
        print("--jobs 1: " + ", ".join(f"{t:.1f} s" for t in times[1]))
        print("--jobs 2: " + ", ".join(f"{t:.1f} s" for t in times[2]))
        print(f"ratio --jobs 2 / --jobs 1 (sums): {two / one:.2f} (target ≤ 0.65)")
        print(f"rerun, unchanged zoo, --jobs 2: {rerun:5.1f} s (exit {done3.returncode}; target ≤ 10 s)")
        print(
            "  every stage cached:",
            all(
                all(
                    s["cached"]
                    for s in json.loads((work / "jobs2-2" / row["name"] / "report.json").read_text())["stages"]
                )
                for row in cached["models"]
            ),
        )
        print(
            f"second batch on a busy folder: exit {second.returncode} after {second_s:.1f} s: {second.stderr.strip()}"
        )
        print(f"first batch after SIGTERM: exit {first.returncode}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
