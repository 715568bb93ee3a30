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

from compressctl.advise.budget import Budget
from compressctl.errors import EXIT_GATE_FAILED, CompressctlError, UserError

log = logging.getLogger("compressctl")

GAP_REFERENCES = (0.5, 0.7)  # uniform pruning ratios at which the proxies' accuracy gap is measured

DEFAULT_TRIALS = 40
DEFAULT_FINALISTS = 4


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
    from compressctl.advise.finalists import (
        BISECTION_STEPS,
        RETIME_SECONDS,
        bisection,
        confirm,
        finalist_seconds,
        recommend,
        retime,
        shared_finetune_seconds,
        time_finalists,
        write_recipe,
    )
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

    timeout = reserved = None
    if time_budget_min is not None:
        spent = time.perf_counter() - started
        shared = shared_finetune_seconds(base_report, recipe) if bench.module is not None else 0.0
        reserved = finalists * finalist_seconds(bench) + shared + recipe.report.max_seconds + RETIME_SECONDS
        timeout = max(30.0, time_budget_min * 60 - spent - reserved)
        log.info(
            "advise: %.0f s for the search, %.0f s kept for %d finalists and their sitting",
            timeout,
            reserved,
            finalists,
        )
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
    front_sitting = retime(bench, records, search_budget)
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
        confirmed.append(confirm(data, recipe, output_dir, number, providers, bench, record))
        progress("finalist", done=number, total=len(chosen))
    for _step in range(BISECTION_STEPS):
        left = None if time_budget_min is None else time_budget_min * 60 - (time.perf_counter() - started)
        if left is not None and left < finalist_seconds(bench) + recipe.report.max_seconds:
            break
        found = bisection(confirmed, budget)
        if found is None:
            break
        record, safe, fast = found
        log.info("advise: between finalists %d and %d (accuracy kept, lost)", safe["finalist"], fast["finalist"])
        data = recipes.candidate_recipe(recipe, record["candidate"], budget, baseline_size, bench.round_to)
        refined = confirm(data, recipe, output_dir, len(confirmed) + 1, providers, bench, record)
        confirmed.append(dict(refined, between=[safe["finalist"], fast["finalist"]]))
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
        "candidates_sitting": front_sitting,
        "finalist_sitting": sitting,
        "executor": {"kind": executor, "jobs": jobs, "timed_by": timing.process_id()},
        "recommended": best,
        "recommended_path": str(output_dir / "recommended.yaml") if best else None,
        "seconds": round(time.perf_counter() - started, 1),
        "time_budget": {"minutes": time_budget_min, "search_seconds": timeout, "reserved_seconds": reserved},
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
    beyond the proxies' short one (``Workbench.proxy_gap``), the most it recovers on uniform pruning at each
    of ``GAP_REFERENCES``: heavier pruning has more to recover. Proxies are judged leniently; the
    finalists' full runs are judged against the user's limit itself."""
    from compressctl.advise import recipes, search

    if budget.max_accuracy_drop is None or bench.module is None:
        return budget
    progress("phase", name="proxy calibration")
    groups = search.layer_groups(bench)
    epochs = recipes.recovery_stage(bench.recipe).get("epochs", recipes.DEFAULT_FINETUNE["epochs"])
    gap = 0.0
    for ratio in GAP_REFERENCES:
        reference = {"layer_amounts": {pattern: ratio for pattern in groups.values()}, "importance": "l1"}
        gap = max(gap, bench.proxy_gap(reference, epochs, folder / f"uniform-{ratio:g}"))
    return dataclasses.replace(budget, max_accuracy_drop=budget.max_accuracy_drop + gap)


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
