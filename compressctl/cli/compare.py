"""``compressctl compare OLD.json NEW.json``: fail CI when a compressed model regressed."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path

import typer

from compressctl.cli.common import DEBUG, handle_errors, is_interactive
from compressctl.errors import EXIT_GATE_FAILED


class OutputFormat(StrEnum):
    """table: for people (stderr); markdown, json: for CI and scripts (stdout)."""

    table = "table"
    markdown = "markdown"
    json = "json"


def compare(
    old: Path = typer.Argument(..., help="The reference report.json (e.g. from the main branch)."),
    new: Path = typer.Argument(..., help="The report.json to check."),
    max_accuracy_drop: float = typer.Option(
        0.005, "--max-accuracy-drop", min=0, max=1, help="Largest allowed metric drop (0.005 = 0.5 pt)."
    ),
    max_latency_regression: float = typer.Option(
        0.20, "--max-latency-regression", min=0, help="Largest allowed p50 slowdown per provider@batch (0.2 = 20 %)."
    ),
    max_size_increase: float | None = typer.Option(
        None, "--max-size-increase", min=0, help="Largest allowed size growth (0.1 = 10 %); default: not gated."
    ),
    output_format: OutputFormat = typer.Option(
        OutputFormat.table,
        "--format",
        help="table (stderr), markdown (stdout, for a CI job summary) or json (stdout).",
    ),
    junit: Path | None = typer.Option(None, "--junit", help="Also write JUnit XML here (one test case per check)."),
    remeasure: bool = typer.Option(
        False,
        "--remeasure",
        help="Time both final models again, together in one sitting, instead of dividing stored figures.",
    ),
    debug: bool = DEBUG,
) -> None:
    """Diff two reports' final models; exit 1 on a regression beyond the limits.

    With $GITHUB_STEP_SUMMARY set, the Markdown table is also appended there.
    """
    with handle_errors(debug):
        from compressctl.compare import Limits, compare_reports, junit_xml, load_report, render_markdown
        from compressctl.compare import remeasure as remeasure_latency

        limits = Limits(max_accuracy_drop, max_latency_regression, max_size_increase)
        old_report, new_report = load_report(old), load_report(new)
        comparison = compare_reports(old_report, new_report, limits)
        if remeasure:
            comparison = remeasure_latency(old_report, new_report, comparison, limits)
        markdown = render_markdown(comparison)
        if output_format is OutputFormat.markdown:
            typer.echo(markdown)
        elif output_format is OutputFormat.json:
            typer.echo(json.dumps(comparison.to_dict(), indent=2))
        else:
            print_table(comparison)
        summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary_file:
            with open(summary_file, "a", encoding="utf-8") as handle:
                handle.write(markdown + "\n")
        if junit:
            from compressctl.fsutil import atomic_write_text

            atomic_write_text(junit, junit_xml(comparison))
    if comparison.regressed:
        raise typer.Exit(EXIT_GATE_FAILED)


def print_table(comparison) -> None:
    from rich.console import Console
    from rich.table import Table

    from compressctl.compare import HEADER, table_rows

    interactive = is_interactive()
    # Off a terminal (CI logs) there is no width to fit: keep every name whole.
    console = Console(
        stderr=True,
        no_color=bool(os.environ.get("NO_COLOR")),
        highlight=False,
        force_terminal=None if interactive else False,
        width=None if interactive else 160,
    )
    table = Table(title=f"{comparison.old_name} → {comparison.new_name}", title_justify="left")
    for column in HEADER:
        table.add_column(column, justify="left" if column in ("check", "limit", "result") else "right", no_wrap=True)
    for row in table_rows(comparison):
        table.add_row(*row)
    console.print(table)
    console.print("result: " + ("REGRESSED" if comparison.regressed else "no regression beyond the limits"))
