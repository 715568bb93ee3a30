"""``validate``, ``schema`` and ``runners``: inspect recipes and stage types without running."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from compressctl.cli.common import DEBUG, error, handle_errors
from compressctl.errors import EXIT_BAD_INPUT, RecipeError


def validate(
    recipes: list[Path] = typer.Argument(..., help="Recipe files."),
    overrides: list[str] = typer.Option([], "--set", help="Override a field (repeatable)."),
    debug: bool = DEBUG,
) -> None:
    """Check recipes without running anything; every problem of every file is listed."""
    from compressctl.recipe import load_recipe

    failed = False
    with handle_errors(debug):
        for path in recipes:
            try:
                recipe = load_recipe(path, overrides)
                _check_plan(recipe)
            except RecipeError as exc:
                failed = True
                for problem in exc.problems:
                    error(problem)
                continue
            except Exception as exc:
                from compressctl.errors import UserError

                if not isinstance(exc, UserError):
                    raise
                failed = True
                error(f"{path}: {exc}")
                continue
            typer.echo(f"{path}: ok ({len(recipe.stages)} stages)", err=True)
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


def _check_plan(recipe) -> None:
    """Stage order is part of validity (torch stages after ONNX stages are refused)."""
    from compressctl.pipeline import plan_stages

    plan_stages(recipe)


def schema(debug: bool = DEBUG) -> None:
    """Print the JSON Schema of the recipe format (to stdout)."""
    with handle_errors(debug):
        from compressctl.recipe import recipe_schema

        typer.echo(json.dumps(recipe_schema(), indent=2))


def runners(
    json_out: bool = typer.Option(False, "--json", help="Print the listing as JSON to stdout."),
    debug: bool = DEBUG,
) -> None:
    """List stage types with their options and defaults (to stderr; --json to stdout)."""
    with handle_errors(debug):
        from compressctl.registry import registry

        listing = [_describe(name, runner, registry.origin(name)) for name, runner in sorted(registry.all().items())]
        broken = dict(registry.broken)
    if json_out:
        typer.echo(json.dumps(listing, indent=2, default=str))
    else:
        for item in listing:
            typer.echo(f"{item['type']}  ({item['consumes']} → {item['produces']})  {item['summary']}", err=True)
            for option in item["options"]:
                default = json.dumps(option["default"], default=str)
                typer.echo(f"    {option['name']} = {default}  — {option['description']}", err=True)
            typer.echo("", err=True)
    for name, why in broken.items():
        typer.echo(f"{name}  (plugin failed to load: {why})", err=True)


def _describe(name: str, runner, origin: str) -> dict:
    options = []
    for field_name, info in runner.config_model.model_fields.items():
        if field_name == "type":
            continue
        default = info.get_default(call_default_factory=True)
        if hasattr(default, "model_dump"):
            default = default.model_dump()
        options.append({"name": field_name, "default": default, "description": info.description or ""})
    return {
        "type": name,
        "consumes": runner.consumes,
        "produces": runner.produces,
        "summary": runner.summary,
        "origin": origin,
        "options": options,
    }
