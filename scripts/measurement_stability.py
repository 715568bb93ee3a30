"""How much a speedup moves between repeated measurements, by timing method, on this machine.

Times two ONNX files (by default the `make demo` recipe's baseline and final
model) with each method several times and prints the spread of the speedup
(± half the range, relative to the median) as a Markdown table:

* sequential: 100 runs of one model, then 100 of the other, spinning on (the old way);
* blocks of 10 runs alternating, spinning on;
* run-by-run alternation (A B B A …), spinning off, speedup from the 10th percentile,
  the minimum, the median;
* compressctl's sitting: the same alternation, repeated until the 95 % interval is
  within ±3 % (what `apply`, `bench` and the quantize stage use).

    .venv/bin/python scripts/measurement_stability.py [--trials 6] [--batch 32] [A.onnx B.onnx]

Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "out" / "digits-resnet-prune-int8"


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000.0


def sequential(runs: dict, count: int) -> dict[str, list[float]]:
    return {name: [timed(run) for _ in range(count)] for name, run in runs.items()}


def blocks(runs: dict, count: int, block: int = 10) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(count // block):
        for name, run in runs.items():
            times[name] += [timed(run) for _ in range(block)]
    return times


def alternating(runs: dict, count: int) -> dict[str, list[float]]:
    from compressctl.measure.sitting import balanced_order

    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(count):
        for position in balanced_order(len(names), index):
            times[names[position]].append(timed(runs[names[position]]))
    return times


def spread(values: list[float]) -> str:
    median = float(np.median(values))
    return f"±{(max(values) - min(values)) / 2 / median * 100:.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, help="Two ONNX files (default: the demo's baseline and final).")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=100, help="Timed runs of each model per trial.")
    args = parser.parse_args()

    from compressctl.inputs import session_feeds
    from compressctl.measure.latency import default_threads, make_session
    from compressctl.measure.sitting import Sitting, SittingSettings, ratio_interval

    paths = args.models or [DEMO / "baseline" / "model.onnx", DEMO / "model.onnx"]
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"{path}: no such file (run `make demo` first, or name two ONNX files)")
    threads = default_threads()

    def sessions(spinning: bool) -> dict:
        runs = {}
        for name, path in zip(("a", "b"), paths, strict=True):
            session = make_session(path, "CPUExecutionProvider", threads, spinning=spinning)
            feeds = session_feeds(session, args.batch)
            for _ in range(10):
                session.run(None, feeds)
            runs[name] = (lambda s, f: lambda: s.run(None, f))(session, feeds)
        return runs

    def p50_ratio(times: dict) -> float:
        return float(np.median(times["a"]) / np.median(times["b"]))

    def quantile_ratio(q: float):
        return lambda times: float(np.percentile(times["a"], q) / np.percentile(times["b"], q))

    methods = [
        ("100 runs of one model, then 100 of the other, spinning on (the old way)", True, sequential, p50_ratio),
        ("Blocks of 10 runs alternating, spinning on", True, blocks, p50_ratio),
        ("Run-by-run alternation, spinning off, 10th percentile", False, alternating, quantile_ratio(10)),
        ("Same, minimum", False, alternating, quantile_ratio(0)),
        ("Same, median", False, alternating, quantile_ratio(50)),
    ]
    found: dict[str, list[float]] = {label: [] for label, *_ in methods}
    sitting_found: list[float] = []
    sitting_rounds: list[int] = []
    on, off = sessions(True), sessions(False)
    for trial in range(args.trials):
        for label, spinning, schedule, estimate in methods:
            found[label].append(estimate(schedule(on if spinning else off, args.runs)))
        sitting = Sitting(dict(zip(("a", "b"), paths, strict=True)), threads=threads, settings=SittingSettings())
        result = sitting.time({n: session_feeds(s, args.batch) for n, s in sitting.sessions.items()}, args.batch)
        sitting_found.append(ratio_interval(result.samples_ms["a"], result.samples_ms["b"])[0])
        sitting_rounds.append(result.rounds)
        print(f"trial {trial + 1}/{args.trials}: " + ", ".join(f"{v[-1]:.2f}×" for v in found.values()), flush=True)

    print(f"\n{paths[0]} vs {paths[1]}, batch {args.batch}, {threads} threads, {args.trials} trials\n")
    print("| method | speedups | spread |")
    print("|---|---|---|")
    for label, values in found.items():
        print(f"| {label} | {' '.join(f'{v:.2f}' for v in values)} | {spread(values)} |")
    label = f"compressctl sitting (until ±3 % at 95 %; {min(sitting_rounds)}–{max(sitting_rounds)} rounds)"
    print(f"| {label} | {' '.join(f'{v:.2f}' for v in sitting_found)} | {spread(sitting_found)} |")


if __name__ == "__main__":
    main()
