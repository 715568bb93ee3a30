"""``compressctl batch PATH...``: run a model zoo from CI or cron."""

from __future__ import annotations

from pathlib import Path

import typer

from compressctl.cli.common import (
    ADDRESS,
    DEBUG,
    FORCE,
    PROVIDER,
    QUIET,
    VERBOSE,
    WAIT,
    Executor,
    handle_errors,
    jobs_option,
    setup_logging,
)


def batch(
    paths: list[Path] = typer.Argument(
        ..., help="Folders of recipes, zoo files (a YAML list of recipe paths) or recipes."
    ),
    output: Path = typer.Option(
        Path("out/zoo"), "-o", "--output", help="Batch folder: one DIR/<name>/ per recipe and the zoo summary."
    ),
    jobs: int | None = jobs_option(
        "At most N recipes run at the same time, with either executor (default: 1 locally, one per free CPU on Ray)."
    ),
    keep_going: bool = typer.Option(False, "-k", "--keep-going", help="Run every recipe even after one fails."),
    timeout: float | None = typer.Option(
        None, "--timeout", min=1, help="Seconds one recipe may run before it is killed."
    ),
    executor: Executor = typer.Option(
        Executor.local, "--executor", help="local (processes on this machine) or ray (a Ray cluster)."
    ),
    address: str | None = ADDRESS,
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a field in every recipe: --set report.repeat=50 (repeatable)."
    ),
    provider: list[str] = PROVIDER,
    force: bool = FORCE,
    wait: float = WAIT,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    debug: bool = DEBUG,
) -> None:
    """Run every recipe of a zoo, each isolated in its own process; write index.md/json/html."""
    with handle_errors(debug):
        import logging

        from compressctl.batch import run_batch

        setup_logging(verbose, quiet)
        log = logging.getLogger("compressctl")
        extra = [arg for value in overrides for arg in ("--set", value)]
        extra += [arg for value in provider for arg in ("--provider", value)]
        extra += ["--force"] if force else []
        extra += ["--debug"] if debug else []

        def on_result(result) -> None:
            where = f" — {result.error}" if result.error else ""
            level = logging.INFO if result.status == "passed" else logging.WARNING
            log.log(
                level,
                "%s: %s in %.1f s%s (log: %s/console.log)",
                result.name,
                result.status,
                result.seconds,
                where,
                result.output_dir,
            )

        outcome = run_batch(
            paths,
            output,
            jobs=jobs,
            keep_going=keep_going,
            timeout=timeout,
            executor=executor.value,
            address=address,
            extra_args=extra,
            wait_lock=wait,
            on_result=on_result,
        )
        counts: dict[str, int] = {}
        for result in outcome.results:
            counts[result.status] = counts.get(result.status, 0) + 1
        if not quiet:
            summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
            typer.echo(f"{len(outcome.results)} recipes in {outcome.seconds:.1f} s: {summary}", err=True)
            typer.echo(f"summary: {outcome.output_dir / 'index.md'}", err=True)
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)
