"""The command-line interface: one module per command, composed into one Typer app.

This package is the only place that prints, knows about terminals and colours,
and turns errors into exit codes. It never imports torch or onnxruntime at
module top, so ``compressctl --help`` and ``validate`` start fast.
"""

from __future__ import annotations

import importlib

import typer

# (command name, module, function): each command lives in its own module.
COMMANDS = [
    ("apply", "compressctl.cli.apply", "apply"),
    ("validate", "compressctl.cli.info", "validate"),
    ("schema", "compressctl.cli.info", "schema"),
    ("runners", "compressctl.cli.info", "runners"),
    ("bench", "compressctl.cli.bench", "bench"),
    ("batch", "compressctl.cli.batch", "batch"),
    ("compare", "compressctl.cli.compare", "compare"),
    ("advise", "compressctl.cli.advise", "advise"),
]

app = typer.Typer(
    name="compressctl",
    help="Compress neural networks from YAML recipes; measure size, accuracy and latency on ONNX Runtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

for _name, _module, _function in COMMANDS:
    try:
        _command_module = importlib.import_module(_module)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise
        continue  # a command not in this build
    app.command(_name)(getattr(_command_module, _function))


def _version_callback(value: bool) -> None:
    if value:
        from compressctl import __version__

        typer.echo(f"compressctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
) -> None:
    """compressctl."""


def main() -> None:
    app()
