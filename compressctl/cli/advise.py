"""``compressctl advise RECIPE``: search for the compression that fits a budget."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from compressctl.cli.common import (
    ADDRESS,
    DEBUG,
    QUIET,
    VERBOSE,
    Executor,
    handle_errors,
    is_interactive,
    jobs_option,
    setup_logging,
    stderr_console,
)

log = logging.getLogger("compressctl")

DEFAULT_TIME_BUDGET = 15.0  # minutes: a search people wait for, or run in CI


class Strategy(StrEnum):
    """The search strategies (``compressctl.advise.strategies.STRATEGIES``)."""

    nsga2 = "nsga2"
    rl = "rl"
    random = "random"


class SearchProgress:
    """A bar over the trials showing the current Pareto front size (plain log lines off a terminal)."""

    def __init__(self, interactive: bool, console: Any) -> None:
        self.bar = None
        self.task = None
        if interactive:
            from compressctl.cli.progress import progress_bar

            self.bar = progress_bar(console)

    def __call__(self, kind: str, **fields: Any) -> None:
        if kind == "phase":
            log.info("advise: %s", fields["name"])
            if self.bar is not None:
                if self.task is not None:
                    self.bar.remove_task(self.task)
                self.task = self.bar.add_task(fields["name"], total=fields.get("total"))
        elif kind in ("trial", "finalist"):
            front = f", Pareto front {fields['front']}" if "front" in fields else ""
            if self.bar is not None and self.task is not None:
                name = "search" if kind == "trial" else "finalists (full runs)"
                self.bar.update(self.task, completed=fields["done"], description=f"{name}{front}")
            else:
                log.info("advise: %s %d/%d%s", kind, fields["done"], fields["total"], front)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def advise(
    recipe: Path = typer.Argument(
        ...,
        help="Recipe YAML: model, data, metric and providers (its stages before the first compressing stage make the baseline).",
    ),
    min_speedup: float | None = typer.Option(
        None,
        "--min-speedup",
        min=0.0,
        help="Speedup over the baseline, timed together with it in a sitting, at least this.",
    ),
    max_latency_ms: float | None = typer.Option(
        None,
        "--max-latency-ms",
        min=0.0,
        help="Candidate latency (ms at the gate batch, the sitting's estimate) at most this.",
    ),
    max_size_mb: float | None = typer.Option(
        None, "--max-size-mb", min=0.0, help="Model file size at most this (decimal MB)."
    ),
    max_accuracy_drop: float | None = typer.Option(
        None, "--max-accuracy-drop", min=0.0, help="Baseline metric minus candidate metric at most this (0.01 = 1 pt)."
    ),
    provider: list[str] = typer.Option(
        [], "--provider", help="Execution provider to measure on (default: the recipe's first)."
    ),
    trials: int = typer.Option(40, "--trials", min=1, help="Proxy candidates to evaluate."),
    finalists: int = typer.Option(4, "--finalists", min=1, help="Candidates confirmed by a full `apply` run."),
    time_budget: float = typer.Option(
        DEFAULT_TIME_BUDGET,
        "--time-budget",
        min=1.0,
        help=(
            "Minutes for the whole run, finalists included: the search stops early to leave them the time "
            "their full runs took to estimate."
        ),
    ),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Folder for advise.html, advise.json, recommended.yaml (default: out/<name>-advise).",
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override a recipe field (repeatable)."),
    keep_trials: bool = typer.Option(False, "--keep-trials", help="Keep the proxy models of every trial."),
    layers: bool = typer.Option(
        True, "--sensitivity/--no-sensitivity", help="Per-layer sensitivity analysis (plots and table)."
    ),
    strategy: Strategy = typer.Option(
        Strategy.nsga2,
        "--strategy",
        help="How candidates are proposed: nsga2 (Optuna's NSGA-II), rl (an AMC-style agent, one action per layer) "
        "or random.",
    ),
    jobs: int | None = jobs_option(
        "Trials built at the same time (default: 1 locally, one per CPU on Ray); latency is always timed "
        "here, one sitting at a time."
    ),
    executor: Executor = typer.Option(
        Executor.local,
        "--executor",
        help="Where trials are built: local (processes on this machine) or ray (a Ray cluster).",
    ),
    address: str | None = ADDRESS,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    debug: bool = DEBUG,
) -> None:
    """Search for the compression that fits a budget and write recommended.yaml.

    Exit codes: 0 a recommendation meets the budget; 1 no candidate meets it
    (the message names the closest ones; advise.html shows all); 2 bad input
    (no limit given, bad recipe, unavailable provider); 3 a stage failed.
    """
    with handle_errors(debug):
        from compressctl.advise import Budget
        from compressctl.advise.advisor import advise as run_advise
        from compressctl.advise.page import figures_line
        from compressctl.recipe import load_recipe

        setup_logging(verbose, quiet)
        loaded = load_recipe(recipe, overrides)
        budget = Budget(min_speedup, max_latency_ms, max_size_mb, max_accuracy_drop)
        folder = output or Path.cwd() / "out" / f"{loaded.name}-advise"
        console = stderr_console()
        progress = SearchProgress(is_interactive() and not quiet, console)
        try:
            result = run_advise(
                loaded,
                folder,
                budget,
                providers=provider or None,
                trials=trials,
                finalists=finalists,
                time_budget_min=time_budget,
                keep_trials=keep_trials,
                analyse_layers=layers,
                progress=progress,
                strategy=strategy.value,
                executor=executor.value,
                jobs=jobs,
                address=address,
            )
        finally:
            progress.close()
        best = result["recommended"]
        if not quiet:
            console.print(f"recommended: {best['description']}: {figures_line(best['figures'])}", soft_wrap=True)
            console.print(f"recipe: {folder / 'recommended.yaml'}", soft_wrap=True)
            console.print(f"page: {folder / 'advise.html'}", soft_wrap=True)
