"""Interrupt a real recipe mid-run, then rerun it: exit 130 first, then a complete run reusing stages.

    .venv/bin/python scripts/interrupt_resume.py [recipes/digits-resnet-prune-int8.yaml] [--after 2]

Starts ``compressctl apply --force`` on the recipe, waits until ``--after`` stage folders are
complete, sends SIGINT, and times how long the process takes to exit. Then it reruns ``apply``
(no ``--force``) on the same folder and prints which stages report.json marks ``cached``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def finished_stages(out: Path) -> list[str]:
    stages = out / "stages"
    return sorted(p.name for p in stages.glob("[0-9][0-9]-*") if (p / "stage.json").exists()) if stages.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", type=Path, default=ROOT / "recipes" / "digits-resnet-prune-int8.yaml")
    parser.add_argument("--after", type=int, default=2, help="stages to let finish before SIGINT")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "out" / "interrupt-resume")
    args = parser.parse_args()
    shutil.rmtree(args.output, ignore_errors=True)
    command = [sys.executable, "-m", "compressctl", "apply", str(args.recipe), "-o", str(args.output)]

    # A shell starts background jobs with SIGINT ignored, and a program keeps an ignored SIGINT
    # (as `nohup` intends); give the child the default disposition so Ctrl-C semantics apply.
    first = subprocess.Popen(
        [*command, "--force", "--quiet"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    while len(finished_stages(args.output)) < args.after and first.poll() is None:
        time.sleep(0.2)
    done_before = finished_stages(args.output)
    sent = time.perf_counter()
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    print(f"first run: SIGINT after {done_before}; exit {first.returncode} in {time.perf_counter() - sent:.2f} s")
    print(f"  stderr: {stderr.strip().splitlines()[-1] if stderr.strip() else '(empty)'}")
    print(f"  traceback printed: {'Traceback' in stderr}")

    started = time.perf_counter()
    second = subprocess.run([*command, "--json", "--quiet"], capture_output=True, text=True)
    report = json.loads(second.stdout)
    print(f"second run: exit {second.returncode} in {time.perf_counter() - started:.1f} s, status {report['status']}")
    for stage in report["stages"]:
        print(f"  {stage['index']:02d} {stage['type']:<9} cached={stage['cached']}  {stage['seconds']:.1f} s")
    ok = first.returncode == 130 and second.returncode in (0, 1) and report["status"] == "ok"
    ok = ok and all(s["cached"] for s in report["stages"][: len(done_before)])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
