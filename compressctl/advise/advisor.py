"""``advise``: train the baseline once, analyse layers, search, confirm finalists with real runs, recommend.

Folder layout of DIR:
  run/             the pipeline's run folder (the baseline's train stage is cached there and
                   reused by every finalist)
  baseline.onnx    the trained baseline, as measured by the proxies
  trials/          proxy models of the search (removed at the end unless keep_trials)
  finalists/NN/    recipe.yaml, report.json and model.onnx of each finalist's full `apply` run
  recommended.yaml the winning recipe, advise.json (all figures), advise.html (the page)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from compressctl.advise.budget import Budget
from compressctl.errors import EXIT_GATE_FAILED, CompressctlError, UserError

log = logging.getLogger("compressctl")

DEFAULT_TRIALS = 40
DEFAULT_FINALISTS = 4
ACCURACY_TIE = 0.002  # finalists closer than this in metric count as equally accurate
SPEED_TIE = 0.10  # finalists within 10 % of the fastest count as equally fast (run-to-run timing noise)


class BudgetNotMet(CompressctlError):
    """No candidate meets the budget (exit 1, like a failed gate)."""

    exit_code = EXIT_GATE_FAILED


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def advise(
    recipe: Any,
    output_dir: Path,
    budget: Budget,
    *,
    providers: list[str] | None = None,
    trials: int = DEFAULT_TRIALS,
    finalists: int = DEFAULT_FINALISTS,
    time_budget_min: float | None = None,
    keep_trials: bool = False,
    analyse_layers: bool = True,
    progress: Callable[..., None] | None = None,
    strategy: str = "nsga2",
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Search for the compression that fits ``budget``; writes DIR/recommended.yaml, advise.json, advise.html.

    ``strategy``: ``nsga2``, ``rl`` or ``random`` (``compressctl.advise.strategies``).
    ``executor``/``jobs``/``address``: where the trials' proxies are built (``advise.trials``); every latency
    is timed in this process.
    """
    from compressctl.advise import findings, page, recipes, search, sensitivity, timing
    from compressctl.advise.strategies import STRATEGIES
    from compressctl.advise.trials import check_executor, trial_evaluator

    progress = progress or _noop
    started = time.perf_counter()
    check_executor(executor, jobs)
    output_dir = Path(output_dir).resolve()  # builders on other processes and nodes see the same paths
    output_dir.mkdir(parents=True, exist_ok=True)
    if not budget.limits():
        raise UserError(
            "advise needs a budget: give at least one of --min-speedup, --max-latency-ms, "
            "--max-size-mb, --max-accuracy-drop"
        )
    if strategy not in STRATEGIES:
        raise UserError(f"--strategy: unknown strategy '{strategy}' (known: {', '.join(STRATEGIES)})")
    providers = providers or list(recipe.report.providers)
    provider = providers[0]

    progress("phase", name="baseline")
    bench, base_report = prepare(recipe, output_dir, providers)
    log.info(
        "advise: baseline %s %.4f, %.2f ms at batch %d on %s",
        bench.metric,
        bench.baseline["metric"],
        bench.baseline["latency_ms"],
        bench.batch_size,
        provider,
    )

    progress("phase", name="sensitivity")
    analysis = {"prune": {}, "quantize": {}, "latency_share": {}}
    if analyse_layers:
        analysis = sensitivity.analyse(bench, output_dir / "trials" / "sensitivity")

    search_budget = proxy_budget(bench, budget, output_dir / "trials" / "calibration", progress)

    timeout = None
    if time_budget_min is not None:
        spent = time.perf_counter() - started
        # keep about a third of what is left for the finalists' full runs
        timeout = max(30.0, (time_budget_min * 60 - spent) * 0.6)
    progress("phase", name="search", total=trials)
    with trial_evaluator(bench, executor=executor, jobs=jobs, address=address) as (evaluate, slots):
        records = search.run_search(
            bench,
            search_budget,
            output_dir / "trials",
            trials=trials,
            timeout_s=timeout,
            seed=recipe.seed,
            progress=progress,
            analysis=analysis,
            strategy=strategy,
            evaluate=evaluate,
            jobs=slots,
        )
    records.sort(key=lambda r: r["trial"])
    front = search.pareto_front(records)
    chosen = search.choose_finalists(records, finalists, search_budget)
    baseline_size = base_report_size(base_report)
    for record in records:
        data = recipes.candidate_recipe(recipe, record["candidate"], budget, baseline_size, bench.round_to)
        path = output_dir / "candidates" / f"trial-{record['trial']:03d}.yaml"
        record["recipe_path"] = str(write_recipe(path, data, recipe, record["candidate"]))

    progress("phase", name="finalists", total=len(chosen))
    confirmed = []
    for number, record in enumerate(chosen, start=1):
        data = recipes.candidate_recipe(recipe, record["candidate"], budget, baseline_size, bench.round_to)
        confirmed.append(confirm(data, recipe, output_dir, number, providers, bench.metric, record))
        progress("finalist", done=number, total=len(chosen))
    sitting = time_finalists(bench, confirmed, budget)

    feasible = [c for c in confirmed if c["feasible"]]
    best = recommend(feasible, budget)
    if best is not None:
        shutil.copyfile(best["recipe_path"], output_dir / "recommended.yaml")
    result = {
        "recipe": recipe.name,
        "budget": budget.to_dict(),
        "strategy": strategy,
        "proxy_budget": search_budget.to_dict(),
        "provider": provider,
        "batch_size": bench.batch_size,
        "baseline": {k: v for k, v in bench.baseline.items() if k != "outputs"},
        "baseline_size_bytes": baseline_size,
        "sensitivity": analysis,
        "trials": records,
        "pareto_front": [r["trial"] for r in front],
        "finalists": confirmed,
        "finalist_sitting": sitting,
        "executor": {"kind": executor, "jobs": jobs, "timed_by": timing.process_id()},
        "recommended": best,
        "recommended_path": str(output_dir / "recommended.yaml") if best else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    result["findings"] = findings.findings(result)
    result["explanation"] = findings.explain(result)
    (output_dir / "advise.json").write_text(json.dumps(result, indent=2, default=str))
    page.write_page(result, output_dir / "advise.html")
    if not keep_trials:
        shutil.rmtree(output_dir / "trials", ignore_errors=True)
    if best is None:
        raise BudgetNotMet(
            f"no candidate meets the budget ({budget.describe()}); closest: "
            + "; ".join(page.figures_line(c["figures"]) for c in confirmed),
            hint=f"see {output_dir / 'advise.html'}; relax a limit or raise --trials",
        )
    return result


def proxy_budget(bench: Any, budget: Budget, folder: Path, progress: Callable[..., None] = _noop) -> Budget:
    """The budget proxies are judged against: ``max_accuracy_drop`` widened by what full fine-tuning recovers
    beyond the proxies' short one (``Workbench.proxy_gap``, measured on uniform 50 % pruning)."""
    from compressctl.advise import recipes, search

    if budget.max_accuracy_drop is None or bench.module is None:
        return budget
    progress("phase", name="proxy calibration")
    groups = search.layer_groups(bench)
    reference = {"layer_amounts": {pattern: 0.5 for pattern in groups.values()}, "importance": "l1"}
    stages = bench.recipe.stages
    epochs = next((s.epochs for s in stages if s.type == "finetune"), recipes.DEFAULT_FINETUNE["epochs"])
    gap = bench.proxy_gap(reference, epochs, folder)
    return dataclasses.replace(budget, max_accuracy_drop=budget.max_accuracy_drop + gap)


def recommend(feasible: list[dict[str, Any]], budget: Budget) -> dict[str, Any] | None:
    """The most accurate finalist that meets the budget; among equally accurate ones, the fastest,
    and among those equally fast (within ``SPEED_TIE``, the run-to-run noise of a latency), the smallest.

    Finalists that still meet the latency limits at the slow end of their speedup's interval come
    first: one that meets them only at its estimate can miss them when the recipe is applied again.
    """
    if not feasible:
        return None
    robust = [c for c in feasible if budget.meets(at_slow_end(c["figures"]))]
    pool = robust or feasible
    top = max(c["figures"]["metric"] for c in pool)
    tied = [c for c in pool if c["figures"]["metric"] >= top - ACCURACY_TIE]
    fastest = max(c["figures"]["speedup"] for c in tied)
    as_fast = [c for c in tied if c["figures"]["speedup"] * (1 + SPEED_TIE) >= fastest]
    return min(as_fast, key=lambda c: (c["figures"]["size_bytes"], -c["figures"]["speedup"]))


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


def base_report_size(report: dict[str, Any]) -> int:
    return next(m["size_bytes"] for m in report["models"] if m["name"] == "baseline")


def prepare(recipe: Any, output_dir: Path, providers: list[str]) -> tuple[Any, dict[str, Any]]:
    """Run the baseline stages through the pipeline (cached), and load the trained model into a workbench."""
    from compressctl.advise import recipes
    from compressctl.advise.workbench import Workbench
    from compressctl.artifact import load_torch
    from compressctl.data import load_data
    from compressctl.measure.latency import default_threads
    from compressctl.pipeline import apply
    from compressctl.recipe import recipe_dir
    from compressctl.recipe.loader import validate_data
    from compressctl.sources import build_torch_model, resolve_path

    data = recipes.recipe_dict(recipe)
    leading = recipes.leading_stages(recipe)
    data["stages"] = leading
    data["gates"] = {}
    base = validate_data(data, f"{recipe.name} (baseline)")
    run_dir = output_dir / "run"
    report = apply(base, run_dir, providers=providers)
    bundle = load_data(
        recipe.data, list(recipe.model.inputs), dims=recipe.model.dims, seed=recipe.seed, base_dir=recipe_dir(recipe)
    )
    gate_batch = int(report["summary"]["gate_at"].rsplit("@", 1)[1])
    bench = Workbench(
        recipe=recipe,
        data=bundle,
        folder=output_dir / "trials",
        provider=providers[0],
        threads=recipe.report.threads or default_threads(),
        batch_size=gate_batch,
        first_index=len(leading) + 1,
    )
    for stage in recipe.stages:
        if stage.type == "export":
            bench.export_options = {"opset": stage.opset, "dynamo": stage.dynamo}
    baseline_path = output_dir / "baseline.onnx"
    if recipe.model.onnx:
        source = resolve_path(recipe.model.onnx, recipe_dir(recipe))
        bench.measure_baseline(source)
        return bench, report

    def build_source() -> Any:
        return build_torch_model(recipe.model, recipe_dir(recipe), recipe.seed)

    if leading:
        folder = run_dir / "stages" / f"{len(leading):02d}-{leading[-1]['type']}"
        bench.module = load_torch(folder, build_source).module.eval()
    else:
        bench.module = build_source().eval()
    shutil.copyfile(run_dir / "model.onnx", baseline_path)
    bench.measure_baseline(baseline_path)
    return bench, report


REPORT_TIMING = ("p50_ms", "p90_ms", "speedup", "speedup_at_p90", "baseline_p50_ms")  # the apply run's own


def sitting_figures(figures: dict[str, Any], timing: dict[str, Any]) -> dict[str, Any]:
    """A finalist's report figures with its latency, speedup and interval from the finalists' sitting.

    Its apply report timed it in a sitting of its own run: those figures are kept
    apart, under ``apply_report_timing``, so that one speedup is shown, never two.
    """
    kept = {k: v for k, v in figures.items() if k not in REPORT_TIMING}
    return dict(kept, **timing, apply_report_timing={k: figures[k] for k in REPORT_TIMING if k in figures})


LATENCY_GATES = ("min_speedup", "max_latency_ms")  # judged on the finalists' sitting


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


def write_recipe(path: Path, data: dict[str, Any], recipe: Any, candidate: dict[str, Any]) -> Path:
    """A candidate's recipe as a file ``compressctl apply`` takes, with a line saying where it came from."""
    from compressctl.advise.search import describe_candidate

    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by `compressctl advise` for {recipe.name}: {describe_candidate(candidate)}\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path


def confirm(
    data: dict[str, Any],
    recipe: Any,
    output_dir: Path,
    number: int,
    providers: list[str],
    metric: str,
    record: dict[str, Any],
) -> dict[str, Any]:
    """Run a finalist's recipe with full fine-tuning through the pipeline; its report gives the real figures.

    Its final model is kept beside the report, for ``time_finalists`` to time with the others.
    """
    from compressctl.advise import recipes
    from compressctl.advise.search import describe_candidate
    from compressctl.onnxio import MODEL_FILE, onnx_files
    from compressctl.pipeline import apply
    from compressctl.recipe.loader import validate_data

    folder = output_dir / "finalists" / f"{number:02d}"
    recipe_path = write_recipe(folder / "recipe.yaml", data, recipe, record["candidate"])
    model = validate_data(data, str(recipe_path))
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
        "figures": recipes.report_figures(report, metric),
        "other_gates_passed": all(g["passed"] for g in report["gates"] if g["name"] not in LATENCY_GATES),
        "stages": [{"name": s["name"], "seconds": s["seconds"]} for s in report["stages"]],
        "recipe_path": str(recipe_path),
        "report_path": str(folder / "report.json"),
        "model_path": str(folder / MODEL_FILE),
    }
