"""Recipe loading: valid recipes, every kind of bad recipe, overrides, schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compressctl.errors import RecipeError
from compressctl.recipe import load_recipe, recipe_schema
from tests.conftest import tiny_recipe, write_recipe

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_example_recipe_is_valid(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name == path.stem


def test_stage_configs_are_parsed_by_type(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path, tiny_recipe()))
    assert [s.type for s in recipe.stages] == ["train", "export"]
    assert recipe.stages[0].epochs == 1
    assert recipe.stages[1].dynamo is False


def problems_of(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> list[str]:
    path = write_recipe(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return info.value.problems


BASE = """\
version: 1
name: t
model:
  factory: compressctl.zoo:digits_cnn
  inputs:
    - {name: x, shape: [batch, 1, 8, 8]}
stages:
  - {type: train, epochs: 1}
"""

# (description, recipe text, expected line:col, expected fragment of the message)
BAD_RECIPES = [
    ("unknown top-level key", BASE + "stagess: []\n", "9:1", "unknown field 'stagess'; did you mean 'stages'?"),
    (
        "unknown stage option",
        BASE.replace("epochs: 1", "epocs: 1"),
        "8:19",
        "stages[0].epocs: unknown field 'epocs'; did you mean 'epochs'?",
    ),
    (
        "wrong type",
        BASE.replace("epochs: 1", "epochs: five"),
        "8:19",
        "stages[0].epochs: Input should be a valid integer",
    ),
    (
        "out of bounds",
        BASE.replace("epochs: 1}", "epochs: 1, lr: -1}"),
        "8:30",
        "stages[0].lr: Input should be greater than 0",
    ),
    ("unknown stage type", BASE.replace("type: train", "type: prunee"), "8:5", "unknown stage type 'prunee'"),
    ("stage without type", BASE.replace("{type: train, epochs: 1}", "{epochs: 1}"), "8:5", "needs a 'type'"),
    ("missing name", BASE.replace("name: t\n", ""), "1:1", "name: required field is missing"),
    ("wrong version", BASE.replace("version: 1", "version: 2"), "1:1", "version: Input should be 1"),
    ("duplicate key", BASE + "name: u\n", "9:1", "duplicate key 'name' (first defined at line 2)"),
    ("invalid YAML", BASE + "data: {source: [digits\n", "10:1", "invalid YAML"),
    (
        "factory and onnx",
        BASE.replace("  inputs:", "  onnx: m.onnx\n  inputs:"),
        "3:1",
        "give exactly one of 'factory' or 'onnx'",
    ),
    (
        "factory without inputs",
        "version: 1\nname: t\nmodel: {factory: compressctl.zoo:digits_cnn}\n",
        "3:1",
        "'inputs' is required",
    ),
    (
        "malformed factory",
        BASE.replace("compressctl.zoo:digits_cnn", "digits cnn"),
        "4:3",
        "must look like 'module:callable'",
    ),
    ("bad dtype", BASE.replace("8, 8]}", "8, 8], dtype: float64}"), "6:42", "Input should be 'float32'"),
    ("unknown data source", BASE + "data: {source: mnist}\n", "9:8", "unknown data source 'mnist'"),
    ("name that is a path", BASE.replace("name: t", "name: ../evil"), "2:1", "name: String should match pattern"),
    (
        "zero batch size",
        BASE + "report: {batch_sizes: [0]}\n",
        "9:24",
        "report.batch_sizes[0]: Input should be greater than 0",
    ),
    ("bad gate location", BASE + "gates: {at: cpu}\n", "9:9", "must look like 'CPUExecutionProvider@32'"),
    (
        "negative dimension",
        BASE.replace("[batch, 1, 8, 8]", "[batch, -1, 8, 8]"),
        "6:17",
        "dimensions must be positive",
    ),
    ("python object tag", BASE + "seed: !!python/object/apply:os.system [echo]\n", "9:7", "is not allowed in a recipe"),
    ("top level is a list", "- 1\n- 2\n", "1:1", "a recipe must be a mapping"),
    ("empty file", "", "1:1", "the recipe is empty"),
]


@pytest.mark.parametrize("text,where,fragment", [b[1:] for b in BAD_RECIPES], ids=[b[0] for b in BAD_RECIPES])
def test_bad_recipe_names_file_line_column_and_field(tmp_path: Path, text: str, where: str, fragment: str) -> None:
    problems = problems_of(tmp_path, text)
    joined = "\n".join(problems)
    assert f"recipe.yaml:{where}" in joined, joined
    assert fragment in joined, joined
    assert "Traceback" not in joined


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = BASE.replace("epochs: 1", "epochs: -1, lrr: 2") + "seeds: 3\n"
    problems = problems_of(tmp_path, text)
    assert len(problems) == 3, problems
    assert any("stages[0].epochs" in p for p in problems)
    assert any("stages[0].lrr" in p for p in problems)
    assert any("seeds" in p for p in problems)


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for name, prev in zip("bcdefgh", "abcdefg", strict=True):
        bomb += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    problems = problems_of(tmp_path, bomb)
    assert "too many YAML aliases" in problems[0]


def test_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"\x80\x81\xff\x00 binary")
    with pytest.raises(RecipeError, match="not UTF-8 text"):
        load_recipe(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no such file"):
        load_recipe(tmp_path / "nope.yaml")


def test_overrides_change_fields_and_are_validated(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe())
    recipe = load_recipe(path, ["stages[0].epochs=3", "report.batch_sizes=[1, 8]", "gates.min_speedup=1.5"])
    assert recipe.stages[0].epochs == 3
    assert recipe.report.batch_sizes == [1, 8]
    assert recipe.gates.min_speedup == 1.5
    with pytest.raises(RecipeError) as info:
        load_recipe(path, ["stages.0.lr=-2"])
    assert info.value.problems[0].startswith("--set stages.0.lr=-2 stages[0].lr:")


@pytest.mark.parametrize("override", ["noequals", "stages[9].epochs=1", "model.inputs[0].name.x=1"])
def test_bad_override_is_a_recipe_error(tmp_path: Path, override: str) -> None:
    path = write_recipe(tmp_path, tiny_recipe())
    with pytest.raises(RecipeError, match=re.escape(f"--set {override}")):
        load_recipe(path, [override])


def test_schema_describes_every_stage_type() -> None:
    schema = recipe_schema()
    text = str(schema)
    from compressctl.registry import registry

    types = registry.names()
    assert {"train", "finetune", "prune", "distill", "lowrank", "qat", "quantize", "export"} <= set(types)
    for stage in types:
        assert f"'const': '{stage}'" in text
    assert schema["additionalProperties"] is False
    assert "stages" in schema["properties"]


def test_schema_validates_example_recipe() -> None:
    """The JSON Schema accepts what the loader accepts (as editors will use it)."""
    import jsonschema
    import yaml

    for path in RECIPES:
        jsonschema.validate(yaml.safe_load(path.read_text()), recipe_schema())


CONSTANT = BASE.replace(
    "    - {name: x, shape: [batch, 1, 8, 8]}", "    - {name: x, shape: [batch, 1, 8, 8]}\n    - {name: sr, %s}"
)


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("shape: [], dtype: int64, value: 16000.5", "16000.5 does not fit dtype int64"),
        ("shape: [], dtype: int64, value: [16000]", "has shape [1], but shape is []"),
        ("shape: [2], dtype: float32, value: [1, 2, 3]", "has shape [3], but shape is [2]"),
        ("shape: [2], dtype: bool, value: [true, 1]", "1 does not fit dtype bool"),
        ("shape: [batch], dtype: int64, value: [1]", "a constant input has a fixed shape; shape names 'batch'"),
    ],
)
def test_a_constant_whose_value_disagrees_is_exit_2_naming_the_field(tmp_path: Path, cli, spec, fragment) -> None:
    from compressctl.errors import EXIT_BAD_INPUT

    result = cli("validate", write_recipe(tmp_path, CONSTANT % spec))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "recipe.yaml:7:" in result.stderr and "model.inputs[1].value: " in result.stderr, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.output


def test_a_constant_that_fits_is_valid(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path, CONSTANT % "shape: [], dtype: int64, value: 16000"))
    assert recipe.model.inputs[1].value == 16000 and recipe.model.inputs[1].batch_axis is None
