"""`compressctl schema`: the JSON Schema it prints accepts every example recipe and rejects bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import tiny_recipe

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    from typer.testing import CliRunner

    from compressctl.cli import app

    result = CliRunner().invoke(app, ["schema"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)  # stdout holds the schema and nothing else
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_there_are_example_recipes() -> None:
    assert len(RECIPES) >= 10


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_schema_accepts_every_example_recipe(validator, path: Path) -> None:
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


def prune(**options) -> dict:
    return tiny_recipe(stages=[{"type": "train", "epochs": 1}, {"type": "prune", **options}])


@pytest.mark.parametrize(
    ("recipe", "where"),
    [
        (tiny_recipe(seeds=1), []),  # unknown top-level key
        (tiny_recipe(version=2), ["version"]),
        (prune(amount=1.5), ["stages", 1]),  # out of bounds
        (prune(amount="half"), ["stages", 1]),  # wrong type
        (prune(amount=0.5, ammount=0.5), ["stages", 1]),  # unknown stage option
        (tiny_recipe(stages=[{"type": "shrink"}]), ["stages", 0]),  # unknown stage type
        (tiny_recipe(report={"providers": "CPUExecutionProvider"}), ["report", "providers"]),
    ],
    ids=["unknown-key", "version", "bound", "type", "stage-option", "stage-type", "providers"],
)
def test_schema_rejects_a_bad_recipe(validator, recipe: dict, where: list) -> None:
    errors = list(validator.iter_errors(recipe))
    assert errors, "the schema accepted a bad recipe"
    assert any(list(e.absolute_path)[: len(where)] == where for e in errors), [list(e.absolute_path) for e in errors]
