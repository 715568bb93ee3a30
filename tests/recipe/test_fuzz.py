"""Property-based fuzzing of the recipe loader: never a traceback, always ok or a RecipeError."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from compressctl.errors import RecipeError, UserError
from compressctl.pipeline import plan_stages
from compressctl.recipe.loader import validate_data
from compressctl.recipe.yaml_loader import load_yaml_text

ROOT = Path(__file__).parents[2]
SEED_TEXT = (ROOT / "recipes" / "digits-resnet-int8.yaml").read_text()
SEED_DATA = yaml.safe_load(SEED_TEXT)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-3, 300), max_size=4),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=3),
)


def load_text(text: str) -> None:
    """What `validate` does with a file's text: must end in success or a RecipeError/UserError."""
    try:
        data, positions = load_yaml_text(text, "fuzz.yaml")
        recipe = validate_data(data, "fuzz.yaml", positions)
        plan_stages(recipe)
    except (RecipeError, UserError) as exc:
        assert str(exc).strip(), "an error must say something"


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_text_never_crashes(data: st.DataObject) -> None:
    text = SEED_TEXT
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = data.draw(
            st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"#,\n\t ab01.%@\\")), min_size=1, max_size=4)
        )
        if action == "insert":
            text = text[:position] + chunk + text[position:]
        elif action == "delete":
            text = text[:position] + text[position + len(chunk) :]
        else:
            text = text[:position] + chunk + text[position + len(chunk) :]
    load_text(text)


def paths(node: object, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += paths(value, (*prefix, i))
    return found


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_structure_never_crashes(data: st.DataObject) -> None:
    import copy

    recipe = copy.deepcopy(SEED_DATA)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths(recipe)))
        if not path:
            continue
        parent = recipe
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = data.draw(leaves)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(leaves)
        else:
            parent.append(data.draw(leaves))
    load_text(yaml.safe_dump(recipe))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=200))
def test_validate_cli_exit_code_is_0_or_2(text: str) -> None:
    import tempfile

    from compressctl.cli import app

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.yaml"
        path.write_bytes(text.encode("utf-8", "replace"))
        result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
