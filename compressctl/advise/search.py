"""Multi-objective search over compression settings with Optuna's NSGA-II.

Objectives: the recipe's metric (max), p50 latency at the gate batch on the
provider (min), size on disk (min). The budget's limits are constraints, so
NSGA-II ranks feasible candidates first. Each trial is a real proxy: the
workbench prunes, fine-tunes briefly, exports, quantizes and measures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compressctl.advise.budget import Budget

log = logging.getLogger("compressctl")

MAX_LAYER_PRUNE = 0.8
PRUNE_STEP = 0.05


def layer_groups(bench: Any) -> dict[str, str]:
    """Top-level parts of the model that hold prunable layers → their ``layer_amounts`` pattern."""
    from compressctl.advise.sensitivity import prunable_layers

    groups: dict[str, str] = {}
    for name in prunable_layers(bench.module, bench.example()):
        top = name.split(".")[0]
        groups.setdefault(top, f"{top}.*" if "." in name else top)
    return groups


def suggest(trial: Any, bench: Any, groups: dict[str, str]) -> dict[str, Any]:
    """One candidate from the trial: per-part prune ratios, ranking, INT8 or float, calibration."""
    if bench.module is None:  # an ONNX-only model: quantization settings only
        return {
            "quantize": True,
            "per_channel": trial.suggest_categorical("per_channel", [True, False]),
            "calibration": trial.suggest_categorical("calibration", ["minmax", "entropy", "percentile"]),
        }
    amounts = {
        pattern: round(trial.suggest_float(f"prune:{group}", 0.0, MAX_LAYER_PRUNE, step=PRUNE_STEP), 4)
        for group, pattern in groups.items()
    }
    return {
        "layer_amounts": amounts,
        "importance": trial.suggest_categorical("importance", ["l1", "l2"]),
        "quantize": trial.suggest_categorical("quantize", [True, False]),
    }


def starting_points(bench: Any, groups: dict[str, str]) -> list[dict[str, Any]]:
    """Trials run first: uniform pruning at a few ratios with INT8 (the usual hand-written recipes)."""
    if bench.module is None:
        return [{"per_channel": True, "calibration": "minmax"}]
    points = []
    for ratio in (0.5, 0.6, 0.7):
        point: dict[str, Any] = {f"prune:{g}": ratio for g in groups}
        points.append(dict(point, importance="l1", quantize=True))
    return points


def objectives(figures: dict[str, Any]) -> tuple[float, float, float]:
    return figures["metric"], figures["p50_ms"], float(figures["size_bytes"])


def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    (ma, la, sa), (mb, lb, sb) = objectives(a), objectives(b)
    return ma >= mb and la <= lb and sa <= sb and (ma > mb or la < lb or sa < sb)


def pareto_front(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-dominated feasible records (all records when none is feasible)."""
    feasible = [r for r in records if r["feasible"]]
    pool = feasible or records
    return [r for r in pool if not any(dominates(o["figures"], r["figures"]) for o in pool if o is not r)]


def run_search(
    bench: Any,
    budget: Budget,
    folder: Path,
    *,
    trials: int,
    timeout_s: float | None,
    seed: int,
    progress: Callable[..., None],
) -> list[dict[str, Any]]:
    """Run the study; returns one record per finished trial (candidate, proxy figures, feasibility)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    groups = layer_groups(bench) if bench.module is not None else {}
    records: list[dict[str, Any]] = []
    sampler = optuna.samplers.NSGAIISampler(population_size=max(4, min(12, trials // 3)), seed=seed)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    for point in starting_points(bench, groups)[:trials]:
        study.enqueue_trial(point)

    def objective(trial: Any) -> tuple[float, float, float]:
        candidate = suggest(trial, bench, groups)
        figures = bench.evaluate(candidate, folder / f"trial-{trial.number:03d}")
        violations = budget.violations(figures)
        for name, value in violations.items():
            trial.set_constraint(name, value)  # NSGA-II ranks feasible trials (all <= 0) first
        record = {
            "trial": trial.number,
            "candidate": candidate,
            "figures": {k: v for k, v in figures.items() if k != "params_path"},
            "violations": violations,
            "feasible": budget.meets(figures),
        }
        records.append(record)
        log.info(
            "trial %d: %s → metric %.4f, %.2f ms (%.2fx), %.0f kB%s",
            trial.number,
            describe_candidate(candidate),
            figures["metric"],
            figures["p50_ms"],
            figures["speedup"],
            figures["size_bytes"] / 1000,
            "" if record["feasible"] else " (outside the budget)",
        )
        return objectives(figures)

    def after_trial(study: Any, trial: Any) -> None:
        progress("trial", done=len(records), total=trials, front=len(pareto_front(records)))

    study.optimize(objective, n_trials=trials, timeout=timeout_s, callbacks=[after_trial])
    return records


def describe_candidate(candidate: dict[str, Any]) -> str:
    parts = []
    amounts = candidate.get("layer_amounts") or {}
    if any(v > 0 for v in amounts.values()):
        parts.append(
            "prune "
            + " ".join(f"{k.removesuffix('.*')}={v:.2f}" for k, v in amounts.items())
            + f" ({candidate.get('importance', 'l1')})"
        )
    if candidate.get("quantize"):
        extra = [f"{k}={candidate[k]}" for k in ("per_channel", "calibration") if k in candidate]
        parts.append("int8" + (f" ({', '.join(extra)})" if extra else ""))
    return " + ".join(parts) or "float baseline"


def choose_finalists(records: list[dict[str, Any]], count: int, budget: Budget) -> list[dict[str, Any]]:
    """Candidates worth a full run, best first.

    1. feasible Pareto-front members, fastest first;
    2. candidates that meet every limit but accuracy, most accurate first: one
       proxy epoch underrates accuracy, full fine-tuning often recovers it;
    3. the rest, by how far they miss the limits (relative to each limit).
    """
    limits = budget.limits()
    feasible = [r for r in pareto_front(records) if r["feasible"]]
    first = sorted(feasible, key=lambda r: (-r["figures"]["speedup"], -r["figures"]["metric"]))
    near = [
        r
        for r in records
        if not r["feasible"] and all(v <= 0 for k, v in r["violations"].items() if k != "max_accuracy_drop")
    ]
    second = sorted(near, key=lambda r: -r["figures"]["metric"])

    def shortfall(record: dict[str, Any]) -> float:
        return sum(max(0.0, v) / max(abs(limits[k]), 1e-9) for k, v in record["violations"].items())

    chosen: list[dict[str, Any]] = []
    seen: set[str] = set()
    for record in first + second + sorted(records, key=shortfall):
        key = describe_candidate(record["candidate"])
        if key not in seen:
            seen.add(key)
            chosen.append(record)
    return chosen[:count]
