"""A model's speedup over the baseline under several estimates, from kept sitting records.

Each ``apply`` keeps its sittings (raw samples, the session set of every round) in
``<out>/measurements/sitting-<key>.json``. Copy that file after each of a few runs,
then compare how much each estimate spreads across the runs:

    .venv/bin/python scripts/sitting_estimators.py 05-quantize run1.json run2.json ...
"""

from __future__ import annotations

import json
import sys

import numpy as np


def estimate(samples: np.ndarray, phases: np.ndarray, how: str) -> float:
    if how == "min":
        return float(samples.min())
    if how in ("p5", "p10"):
        return float(np.percentile(samples, int(how[1:])))
    if how == "mean of fastest tenth":
        return float(np.sort(samples)[: max(1, len(samples) // 10)].mean())
    minima = np.array([samples[phases == p].min() for p in np.unique(phases)])
    return float(np.median(minima))  # median of the per-session-set minima


ESTIMATES = ("min", "p5", "p10", "mean of fastest tenth", "median of session-set minima")


def main() -> None:
    model, files = sys.argv[1], sys.argv[2:]
    table: dict[str, list[float]] = {how: [] for how in ESTIMATES}
    for path in files:
        records = json.loads(open(path).read())
        record = max(records, key=lambda r: r["batch_size"])
        phases = np.asarray(record["phases"])
        baseline, candidate = (np.asarray(record["samples_ms"][n]) for n in (record["reference"], model))
        for how in ESTIMATES:
            table[how].append(estimate(baseline, phases, how) / estimate(candidate, phases, how))
    for how, values in table.items():
        v = np.asarray(values)
        median = np.median(v)
        figures = " ".join(f"{x:.2f}" for x in v)
        print(f"| {how} | {figures} | {100 * (v.min() / median - 1):+.1f} % / {100 * (v.max() / median - 1):+.1f} % |")


if __name__ == "__main__":
    main()
