"""Compare advise's search strategies (nsga2, rl, random) at the same trial budget, over seeds.

All runs share one trained baseline, one sensitivity analysis and one proxy budget
(advise's own ``prepare``, ``sensitivity.analyse`` and ``proxy_budget``); each then
runs advise's proxy search alone (no finalists) with its strategy and seed, and
the proxies it proposes are measured as in ``compressctl advise``. Stages shared
between proxies (the slimming fine-tune, a low-rank factorisation of the baseline)
are recomputed for every run, so each run pays for its own. Prints a markdown table:
strategy, seed, the best feasible proxy (fastest; its speedup, accuracy drop and
size), how many feasible, trials to the first feasible, seconds.

Usage (it times models: run it alone on the machine):
    .venv/bin/python scripts/compare_search_strategies.py [--recipe R] [--trials 40] [--seeds 1 2 3]
        [--strategies nsga2 rl random] [--min-speedup 5] [--max-accuracy-drop 0.005] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def summarise(strategy: str, seed: int, records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    feasible = [r for r in records if r["feasible"]]
    best = max(feasible, key=lambda r: (r["figures"]["speedup"], r["figures"]["metric"]), default=None)
    first = next((position for position, r in enumerate(records, 1) if r["feasible"]), None)
    row: dict[str, Any] = {"strategy": strategy, "seed": seed, "trials": len(records), "feasible": len(feasible)}
    row["first_feasible"] = first
    row["seconds"] = round(seconds, 1)
    if best is not None:
        figures = best["figures"]
        row.update(speedup=figures["speedup"], drop=figures["accuracy_drop"], size_kb=figures["size_bytes"] / 1000)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| strategy | seed | best feasible speedup | its accuracy drop | its size | feasible / trials "
        "| trials to first feasible | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        best = (
            f"{row['speedup']:.2f}× | {row['drop'] * 100:.2f} pt | {row['size_kb']:.0f} kB"
            if "speedup" in row
            else "— | — | —"
        )
        first = row["first_feasible"] if row["first_feasible"] is not None else "none"
        lines.append(
            f"| {row['strategy']} | {row['seed']} | {best} | {row['feasible']} / {row['trials']} | {first} "
            f"| {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "digits-resnet-advise.yaml")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--strategies", nargs="+", default=["nsga2", "rl", "random"])
    parser.add_argument("--min-speedup", type=float, default=5.0)
    parser.add_argument("--max-accuracy-drop", type=float, default=0.005)
    parser.add_argument("--no-sensitivity", action="store_true", help="Skip the sensitivity analysis (faster).")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "compare-search-strategies")
    args = parser.parse_args()

    from compressctl.advise import Budget, sensitivity
    from compressctl.advise.advisor import prepare, proxy_budget
    from compressctl.advise.search import run_search
    from compressctl.recipe import load_recipe

    logging.basicConfig(level=logging.WARNING)
    recipe = load_recipe(args.recipe)
    budget = Budget(min_speedup=args.min_speedup, max_accuracy_drop=args.max_accuracy_drop)
    bench, _report = prepare(recipe, args.out, list(recipe.report.providers))
    analysis: dict[str, Any] = {"prune": {}, "quantize": {}, "latency_share": {}}
    if not args.no_sensitivity:
        analysis = sensitivity.analyse(bench, args.out / "trials" / "sensitivity")
    search_budget = proxy_budget(bench, budget, args.out / "trials" / "calibration")
    print(f"{recipe.name}: {budget.describe()} (proxies: {search_budget.describe()}), {args.trials} trials per run\n")
    rows = []
    for seed in args.seeds:
        for strategy in args.strategies:
            bench.shared.clear()  # each run computes its own shared stages
            started = time.perf_counter()
            records = run_search(
                bench,
                search_budget,
                args.out / "trials" / f"{strategy}-{seed}",
                trials=args.trials,
                timeout_s=None,
                seed=seed,
                progress=lambda *a, **k: None,
                analysis=analysis,
                strategy=strategy,
            )
            rows.append(summarise(strategy, seed, records, time.perf_counter() - started))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
