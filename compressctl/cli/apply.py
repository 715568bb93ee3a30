"""``compressctl apply RECIPE``: run a recipe and report."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from compressctl.cli.common import (
    DEBUG,
    FORCE,
    PROVIDER,
    QUIET,
    VERBOSE,
    WAIT,
    handle_errors,
    is_interactive,
    setup_logging,
    stderr_console,
)
from compressctl.errors import EXIT_GATE_FAILED


def apply(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="The run's folder (default: recipe output, else out/<name>)."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override a field: --set stages[1].amount=0.3 (repeatable)."),
    provider: list[str] = PROVIDER,
    json_out: bool = typer.Option(False, "--json", help="Print report.json to stdout and nothing else there."),
    force: bool = FORCE,
    wait: float = WAIT,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    debug: bool = DEBUG,
) -> None:
    """Run a recipe: stages, ONNX artifacts, and a measured report."""
    with handle_errors(debug):
        from compressctl.cli.progress import make_progress
        from compressctl.pipeline import apply as run_recipe
        from compressctl.recipe import load_recipe

        setup_logging(verbose, quiet)
        loaded = load_recipe(recipe, overrides)
        console = stderr_console()
        progress = make_progress(is_interactive() and not quiet, console)
        try:
            report = run_recipe(loaded, output, providers=provider or None, force=force, progress=progress, wait=wait)
        finally:
            progress.close()
        if json_out:
            from compressctl.report.write import report_json

            sys.stdout.write(report_json(report) + "\n")
        elif not quiet:
            print_summary(report, console)
    if not report["passed"]:
        raise typer.Exit(EXIT_GATE_FAILED)


def print_summary(report: dict, console) -> None:
    from rich import box
    from rich.table import Table

    from compressctl.report.tables import gate_rows, model_rows

    header, rows = model_rows(report)
    if not console.is_terminal:  # logs and CI: plain text that never truncates
        from compressctl.report.write import markdown_table

        console.print(markdown_table(header, rows), soft_wrap=True)
        if gate_rows(report):
            console.print(markdown_table(["gate", "limit", "value", "result"], gate_rows(report)), soft_wrap=True)
        console.print(f"report: {Path(report['output_dir']) / 'report.md'}", soft_wrap=True)
        console.print("result: " + verdict(report))
        return
    # The terminal gets the narrow view (report.md has every column).
    keep = [i for i, name in enumerate(header) if name not in ("zipped", "nonzero", "params")]
    table = Table(title=report["recipe"]["name"], title_justify="left", box=box.SIMPLE_HEAD)
    for i in keep:
        table.add_column(
            header[i].replace("speedup ", "× ").replace("p50 ms ", "ms "),
            justify="left" if i == 0 else "right",
            no_wrap=True,
        )
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    gates = gate_rows(report)
    if gates:
        gate_table = Table(box=box.SIMPLE_HEAD)
        for column in ("gate", "limit", "value", "result"):
            gate_table.add_column(column)
        for row in gates:
            gate_table.add_row(*row)
        console.print(gate_table)
    console.print(f"report: {Path(report['output_dir']) / 'report.md'}")
    console.print("result: " + verdict(report))


def verdict(report: dict) -> str:
    result = "passed" if report["passed"] else "GATE FAILED"
    return result + (" (measure-only: the recipe has no stages)" if report.get("measure_only") else "")
