"""Discovery of a zoo's recipes, through the guarded recipe loader (no subprocesses here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from compressctl.batch import discover
from compressctl.errors import RecipeError, UserError

RECIPE = "version: 1\nname: {name}\nstages: []\n"


def test_folders_zoo_files_and_recipes_are_found_by_their_names(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "b.yaml").write_text(RECIPE.format(name="bee"))
    (tmp_path / "models" / "a.yml").write_text(RECIPE.format(name="ay"))
    (tmp_path / "models" / "notes.txt").write_text("not a recipe")
    (tmp_path / "zoo.yaml").write_text("recipes: [models/b.yaml]\n")
    (tmp_path / "c.yaml").write_text(RECIPE.format(name="sea"))
    folder = [(e.name, e.recipe.name) for e in discover([tmp_path / "models"])]
    assert folder == [("ay", "a.yml"), ("bee", "b.yaml")]
    assert [(e.name, e.recipe) for e in discover([tmp_path / "zoo.yaml"])] == [
        ("bee", (tmp_path / "models" / "b.yaml").resolve())
    ]
    assert [e.name for e in discover([tmp_path / "c.yaml"])] == ["sea"]


def test_a_zoo_file_with_a_duplicate_key_is_refused_with_its_line(tmp_path: Path) -> None:
    # yaml.safe_load keeps the last `recipes:` silently; the guarded loader names both.
    (tmp_path / "a.yaml").write_text(RECIPE.format(name="a"))
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("recipes: [a.yaml]\nrecipes: [a.yaml, a.yaml]\n")
    with pytest.raises(RecipeError) as caught:
        discover([zoo])
    assert str(caught.value) == f"{zoo}:2:1 recipes: duplicate key 'recipes' (first defined at line 1)"


def test_a_zoo_file_with_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("\n".join([*lines, "recipes: *a8", ""]))
    with pytest.raises(RecipeError, match="too many YAML aliases"):
        discover([zoo])


def test_a_recipe_named_on_the_command_line_must_parse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nstages: [\n")
    with pytest.raises(UserError) as caught:
        discover([bad])
    assert str(caught.value).startswith(f"{bad}:3:1: invalid YAML") and "\n" not in str(caught.value)


def test_a_recipe_of_a_folder_that_does_not_parse_keeps_its_place_under_its_file_name(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(RECIPE.format(name="good"))
    (tmp_path / "bad.yaml").write_text("name: not-read\nstages: [\n")
    assert [e.name for e in discover([tmp_path])] == ["bad", "good"]


def test_names_that_cannot_name_a_folder_or_clash_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(RECIPE.format(name="../up"))
    with pytest.raises(UserError, match="cannot name a folder"):
        discover([tmp_path / "a.yaml"])
    with pytest.raises(UserError, match="no such file or folder"):
        discover([tmp_path / "missing"])
