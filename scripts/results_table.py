"""Apply the example recipes one after another and print their figures as one markdown table.

    .venv/bin/python scripts/results_table.py                 # every recipe but the advise one
    .venv/bin/python scripts/results_table.py digits-resnet-int8 digits-resnet-prune

Each recipe runs with ``compressctl apply --force`` into ``out/results/<name>`` (nothing is
reused from an earlier run), so the table is measured now, on this machine, in one sitting.
Every figure comes from the run's report.json: ratios are final/baseline, the speedup is the
p50 latency ratio at the recipe's gate batch size, "gates" is what ``apply`` decided.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"digits-resnet-advise"}  # its stages are a starting point for `advise`, not a result


def run(name: str, out: Path) -> dict:
    started = time.perf_counter()
    recipe = ROOT / "recipes" / f"{name}.yaml"
    command = [sys.executable, "-m", "compressctl", "apply", str(recipe), "-o", str(out / name)]
    proc = subprocess.run(
        [*command, "--force", "--json", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - started
    if not proc.stdout.strip():
        return {"name": name, "exit": proc.returncode, "error": proc.stderr.strip().splitlines()[-1:], "wall": seconds}
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:  # stdout must carry only the report: say so instead of stopping the table
        return {"name": name, "exit": proc.returncode, "error": ["stdout is not the --json report"], "wall": seconds}
    return {"name": name, "exit": proc.returncode, "report": report, "wall": seconds}


def row(result: dict) -> str:
    if "report" not in result:
        return f"| {result['name']} | exit {result['exit']}: {result['error']} |" + " |" * 9
    summary = result["report"]["summary"]
    at = summary.get("gate_at")
    speedup = summary.get("speedup", {}).get(at)
    failed = [g["name"] for g in result["report"]["gates"] if not g["passed"]]
    gates = "pass" if not failed else "FAIL " + ", ".join(failed)
    metric = summary["metric"]
    batch = at.split("@")[-1] if at else ""

    def ratio(key: str) -> str:
        value = summary.get(key)
        return "–" if value is None else f"{value:.3f}×"

    return (
        f"| {result['name']} | {metric} {summary['baseline_metric']:.4f} → {summary['final_metric']:.4f} "
        f"| {100 * summary['accuracy_drop']:.2f} | {ratio('size_ratio')} | {ratio('compressed_size_ratio')} "
        f"| {ratio('params_ratio')} | {ratio('nonzero_params_ratio')} | {ratio('macs_ratio')} "
        f"| {'–' if speedup is None else f'{speedup:.2f}× @{batch}'} | {gates} | {result['wall']:.0f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help="recipe names under recipes/ (default: all but advise)")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "out" / "results")
    parser.add_argument("--json", type=Path, help="also write every summary to this file")
    args = parser.parse_args()
    names = args.recipes or sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml") if p.stem not in SKIP)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print()
    print(
        "| recipe | metric baseline → final | drop (pt) | size | zipped | params | nonzero | MACs | p50 speedup | gates | wall |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for name in names:
        result = run(name, args.output)
        results.append(result)
        print(row(result), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {k: v for k, v in r.items() if k != "report"} | {"summary": r.get("report", {}).get("summary")}
                    for r in results
                ],
                indent=2,
            )
        )
    sys.exit(max((r["exit"] for r in results), default=0))


if __name__ == "__main__":
    main()
