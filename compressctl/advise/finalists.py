"""advise's finalists: each confirmed by a full ``apply`` run, all timed together with the baseline, one recommended.

A finalist's run measures its latency only briefly (``brief_report``): the sitting
that judges it times every finalist and the baseline together (``time_finalists``),
so that no finalist wins or loses on when it ran.
"""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from compressctl.advise.budget import Budget

log = logging.getLogger("compressctl")

ACCURACY_TIE = 0.002  # finalists closer than this in metric count as equally accurate
SPEED_TIE = 0.10  # finalists within 10 % of the fastest count as equally fast (run-to-run timing noise)
FINALIST_REPORT_SECONDS = 10.0  # a finalist run's own latency sitting: its figures are kept aside (see confirm)
RETIME_MOST = 12  # candidates re-timed together before the finalists are chosen
RETIME_SECONDS = 20.0
BISECTION_STEPS = 2  # full runs at most, halving the pruning between finalists either side of the accuracy limit
FINALIST_SELECT_SECONDS = 20.0  # a finalist's quantize stage chooses its format in a sitting this long at most
FINALIST_QUANTIZE_SECONDS = 30.0  # that stage on a small model: calibration, the selection sitting, judging
REPORT_TIMING = ("p50_ms", "p90_ms", "speedup", "speedup_at_p90", "baseline_p50_ms")  # the apply run's own
LATENCY_GATES = ("min_speedup", "max_latency_ms")  # judged on the finalists' sitting


def recommend(feasible: list[dict[str, Any]], budget: Budget) -> dict[str, Any] | None:
    """The fastest finalist that meets the budget (the budget says what is accurate enough); among those
    equally fast (within ``SPEED_TIE``, the run-to-run noise of a latency), the most accurate, and among
    equally accurate ones (within ``ACCURACY_TIE``), the smallest.

    Finalists that still meet the latency limits at the slow end of their speedup's interval come
    first: one that meets them only at its estimate can miss them when the recipe is applied again.
    """
    if not feasible:
        return None
    robust = [c for c in feasible if budget.meets(at_slow_end(c["figures"]))]
    pool = robust or feasible
    fastest = max(c["figures"]["speedup"] for c in pool)
    as_fast = [c for c in pool if c["figures"]["speedup"] * (1 + SPEED_TIE) >= fastest]
    top = max(c["figures"]["metric"] for c in as_fast)
    tied = [c for c in as_fast if c["figures"]["metric"] >= top - ACCURACY_TIE]
    return min(tied, key=lambda c: (c["figures"]["size_bytes"], -c["figures"]["speedup"]))


def at_slow_end(figures: dict[str, Any]) -> dict[str, Any]:
    """The figures at the low end of the speedup's interval (the latency scaled alike)."""
    low = max(figures["speedup_ci"][0], 1e-9)
    return dict(figures, speedup=low, latency_ms=figures["latency_ms"] * figures["speedup"] / low)


def pin_quantization(data: dict[str, Any], report: dict[str, Any]) -> bool:
    """Write the INT8 format the run measured fastest into the recipe, so applying it rebuilds the same model.

    With ``format: auto`` the quantize stage picks among near-equal formats by a
    latency measurement, which noise can flip from one run to the next. When
    the stage kept the float model (no format was faster), the recipe drops it.
    """
    ran = [s for s in report["stages"] if s["type"] == "quantize"]
    stages = [s for s in data["stages"] if s["type"] == "quantize"]
    if not ran or not stages or "chosen" not in ran[-1]["details"]:
        return False
    chosen = next(c for c in ran[-1]["details"]["candidates"] if c["candidate"] == ran[-1]["details"]["chosen"])
    if "format" not in chosen:
        data["stages"].remove(stages[-1])
        return True
    stages[-1].update(format=chosen["format"], activation_type=chosen["activation"], weight_type=chosen["weight"])
    return True


def sitting_figures(figures: dict[str, Any], timing: dict[str, Any]) -> dict[str, Any]:
    """A finalist's report figures with its latency, speedup and interval from the finalists' sitting.

    Its apply report timed it in a sitting of its own run: those figures are kept
    apart, under ``apply_report_timing``, so that one speedup is shown, never two.
    """
    kept = {k: v for k, v in figures.items() if k not in REPORT_TIMING}
    return dict(kept, **timing, apply_report_timing={k: figures[k] for k in REPORT_TIMING if k in figures})


def time_finalists(bench: Any, finalists: list[dict[str, Any]], budget: Budget) -> dict[str, Any] | None:
    """Time every finalist's model and the baseline together in one sitting, and judge the finalists on it.

    Each report timed its model minutes apart from the others, and latency on a
    shared CPU drifts by up to a quarter over minutes: a finalist must not win or
    lose on when it ran. Accuracy, size and the other gates come from the reports.
    Returns the sitting's summary.
    """
    from compressctl.advise.timing import time_finalists as sit
    from compressctl.measure.runner import sitting_settings

    if not finalists:
        return None
    models = {f"finalist {f['finalist']}": Path(f["model_path"]) for f in finalists}
    timings, summary = sit(bench, models, sitting_settings(bench.recipe.report))
    for finalist, name in zip(finalists, models, strict=True):
        figures = sitting_figures(finalist["figures"], timings[name])
        finalist["figures"] = figures
        finalist["violations"] = budget.violations(figures)
        finalist["feasible"] = budget.meets(figures) and finalist.pop("other_gates_passed")
    return summary


def retime(bench: Any, records: list[dict[str, Any]], budget: Budget) -> dict[str, Any] | None:
    """Time the candidates that meet every limit but latency again, together with the baseline in one
    sitting of up to ``RETIME_SECONDS`` (the ``RETIME_MOST`` fastest by their proxies, one per model), and
    judge them on it before the finalists are chosen: one proxy's short sitting put the same model at
    5.7x and 7.6x in two runs (2026-12-06), and candidates timed minutes apart must not win or lose on
    when they ran. Returns the sitting's summary (None when there was nothing to time)."""
    import dataclasses

    from compressctl.advise.search import LATENCY_LIMITS, same_model_key
    from compressctl.advise.timing import proxy_settings, sit_with_baseline, sitting_summary, timed

    pool: dict[Any, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: -r["figures"]["speedup"]):
        met = all(v <= 0 for k, v in record["violations"].items() if k not in LATENCY_LIMITS)
        if met and record.get("model_path") and Path(record["model_path"]).exists():
            pool.setdefault(same_model_key(record), record)
    chosen = list(pool.values())[:RETIME_MOST]
    if not chosen:
        return None
    settings = dataclasses.replace(proxy_settings(bench), max_seconds=RETIME_SECONDS, max_rounds=2000)
    result = sit_with_baseline(bench, {f"trial {r['trial']}": Path(r["model_path"]) for r in chosen}, settings)
    for record in chosen:
        record["proxy_sitting"] = {k: record["figures"][k] for k in ("speedup", "speedup_ci", "latency_ms")}
        record["figures"].update(timed(result, f"trial {record['trial']}"))
        record["violations"] = budget.violations(record["figures"])
        record["feasible"] = budget.meets(record["figures"])
    return sitting_summary(result)


def accurate(finalist: dict[str, Any], budget: Budget) -> bool:
    """Whether a finalist's full run met the accuracy limit and every gate but latency (known before its sitting)."""
    drop = finalist["figures"].get("accuracy_drop")
    within = budget.max_accuracy_drop is None or (drop is not None and drop <= budget.max_accuracy_drop)
    return within and finalist["other_gates_passed"]


def pruning_level(candidate: dict[str, Any]) -> float:
    amounts = candidate.get("layer_amounts") or {}
    return sum(amounts.values()) / len(amounts) if amounts else 0.0


PRUNING_KEYS = ("layer_amounts", "importance", "reconstruct", "recovery")  # how a candidate prunes


def prunes_harder(fast: dict[str, Any], safe: dict[str, Any]) -> bool:
    """``fast`` is ``safe`` pruned at least as hard in every group and harder in one, all else equal (where
    ``safe`` prunes nothing, how ``fast`` prunes is its own: ranking, reconstruction, recovery)."""
    a, b = fast.get("layer_amounts") or {}, safe.get("layer_amounts") or {}
    ignored = PRUNING_KEYS if not any(b.values()) else ("layer_amounts",)
    if {k: v for k, v in fast.items() if k not in ignored} != {k: v for k, v in safe.items() if k not in ignored}:
        return False
    return set(a) == set(b) and all(a[k] >= b[k] for k in a) and any(a[k] > b[k] for k in a)


def bisection(finalists: list[dict[str, Any]], budget: Budget) -> tuple[dict[str, Any], dict, dict] | None:
    """The next candidate between the most pruned finalist that kept accuracy and the least pruned one of
    its harder-pruned twins that lost too much (of those pruned as little, the most faithful), each group's
    ratio halfway and pruned the twin's way, as a record for ``confirm`` with that pair (safe, fast); None
    when there is no such pair.

    Proxies fine-tune briefly, so the search ranks candidates near the accuracy limit poorly; full
    runs on either side of it bracket the heaviest pruning that keeps accuracy, and halving the
    bracket in a full run or two finds a faster recipe than the safe side."""
    kept = sorted((f for f in finalists if accurate(f, budget)), key=lambda f: -pruning_level(f["candidate"]))
    lost = [f for f in finalists if not accurate(f, budget)]
    for safe in kept:
        harder = [f for f in lost if prunes_harder(f["candidate"], safe["candidate"])]
        if harder:
            fast = min(harder, key=lambda f: (pruning_level(f["candidate"]), f["figures"].get("accuracy_drop", 1.0)))
            a, b = fast["candidate"]["layer_amounts"], safe["candidate"]["layer_amounts"]
            middle = {k: round((a[k] + b[k]) / 2, 3) for k in a}
            candidate = {**fast["candidate"], "layer_amounts": middle}
            if all(f["candidate"] != candidate for f in finalists):
                return {"trial": None, "candidate": candidate, "figures": {}}, safe, fast
    return None


def write_recipe(path: Path, data: dict[str, Any], recipe: Any, candidate: dict[str, Any]) -> Path:
    """A candidate's recipe as a file ``compressctl apply`` takes, with a line saying where it came from."""
    from compressctl.advise.search import describe_candidate

    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by `compressctl advise` for {recipe.name}: {describe_candidate(candidate)}\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path


def finalist_seconds(bench: Any) -> float:
    """About how long one finalist's full run takes: its torch stages with full fine-tuning (timed by
    ``proxy_gap``), the quantize stage (calibration and a selection sitting of at most
    ``FINALIST_SELECT_SECONDS``), and a brief latency sitting per stage."""
    return (bench.full_build_seconds or 0.0) + FINALIST_QUANTIZE_SECONDS + 3 * FINALIST_REPORT_SECONDS


def shared_finetune_seconds(base_report: dict[str, Any], recipe: Any) -> float:
    """About how long the finalists' one shared full-width fine-tuning (network slimming, run once and
    cached) takes: the baseline's training time, scaled by the slimming template's epochs."""
    from compressctl.advise.recipes import slimming_stage
    from compressctl.runners.train import FinetuneConfig

    train = next((s for s in recipe.stages if s.type == "train"), None)
    trained = next((s for s in base_report["stages"] if s["type"] == "train"), None)
    if trained is None or train is None:
        return 0.0
    epochs = FinetuneConfig.model_validate(slimming_stage(recipe)).epochs  # the stage's default where unset
    return trained["seconds"] * epochs / max(1, train.epochs)


def brief_report(data: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """``data`` measured at the gate batch only, in short sittings: a finalist run's own timing is not
    what judges it (``time_finalists`` does, with the baseline and the other finalists). Its quantize
    stage picks a format in a selection sitting of at most ``FINALIST_SELECT_SECONDS``: formats that
    close are near equal."""
    brief = copy.deepcopy(data)
    report = brief.setdefault("report", {})
    report["batch_sizes"] = [batch_size]
    at_most(report, "max_seconds", FINALIST_REPORT_SECONDS)
    for stage in brief.get("stages", []):
        if stage.get("type") == "quantize":
            at_most(stage, "select_seconds", FINALIST_SELECT_SECONDS)
    return brief


def at_most(settings: dict[str, Any], key: str, most: float) -> None:
    """``settings[key]`` lowered to ``most`` (set to it when absent: the defaults are longer)."""
    settings[key] = min(float(settings.get(key, most)), most)


def confirm(
    data: dict[str, Any],
    recipe: Any,
    output_dir: Path,
    number: int,
    providers: list[str],
    bench: Any,
    record: dict[str, Any],
) -> dict[str, Any]:
    """Run a finalist's recipe with full fine-tuning through the pipeline; its report gives the real figures.

    The run measures latency briefly, at the gate batch only (``brief_report``): the
    finalists are timed together in ``time_finalists``. Its final model is kept
    beside the report, for that sitting. ``data`` (the recipe written for the user)
    keeps the recipe's report settings.
    """
    from compressctl.advise import recipes
    from compressctl.advise.search import describe_candidate
    from compressctl.onnxio import MODEL_FILE, onnx_files
    from compressctl.pipeline import apply
    from compressctl.recipe.loader import validate_data

    folder = output_dir / "finalists" / f"{number:02d}"
    recipe_path = write_recipe(folder / "recipe.yaml", data, recipe, record["candidate"])
    model = validate_data(brief_report(data, bench.batch_size), str(recipe_path))
    log.info("advise: finalist %d (%s): full run", number, describe_candidate(record["candidate"]))
    # the same run folder as the baseline: its train stage is reused from the cache
    report = apply(model, output_dir / "run", providers=providers)
    shutil.copyfile(output_dir / "run" / "report.json", folder / "report.json")
    if pin_quantization(data, report):
        write_recipe(recipe_path, data, recipe, record["candidate"])
        validate_data(data, str(recipe_path))
    for source in onnx_files(output_dir / "run" / MODEL_FILE):
        shutil.copyfile(source, folder / source.name)
    return {
        "finalist": number,
        "trial": record["trial"],
        "candidate": record["candidate"],
        "description": describe_candidate(record["candidate"]),
        "proxy": record["figures"],
        "figures": recipes.report_figures(report, bench.metric),
        "other_gates_passed": all(g["passed"] for g in report["gates"] if g["name"] not in LATENCY_GATES),
        "stages": [{"name": s["name"], "seconds": s["seconds"]} for s in report["stages"]],
        "recipe_path": str(recipe_path),
        "report_path": str(folder / "report.json"),
        "model_path": str(folder / MODEL_FILE),
    }
