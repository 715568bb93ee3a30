"""The command-line interface: one module per command, composed into one Typer app.

This package is the only place that prints, knows about terminals and colours,
and turns errors into exit codes. It never imports torch or onnxruntime at
module top, so ``compressctl --help`` and ``validate`` start fast.
"""

from __future__ import annotations

import typer

from compressctl.cli import apply as apply_cmd
from compressctl.cli import bench as bench_cmd
from compressctl.cli import info as info_cmd

app = typer.Typer(
    name="compressctl",
    help="Compress neural networks from YAML recipes; measure size, accuracy and latency on ONNX Runtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("apply")(apply_cmd.apply)
app.command("validate")(info_cmd.validate)
app.command("schema")(info_cmd.schema)
app.command("runners")(info_cmd.runners)
app.command("bench")(bench_cmd.bench)


def _version_callback(value: bool) -> None:
    if value:
        from compressctl import __version__

        typer.echo(f"compressctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Show the version."),
) -> None:
    """compressctl."""


def main() -> None:
    app()
