"""Finds the recipes of a zoo: folders of recipes, zoo files listing them, or recipe files themselves.

Every file is read through the guarded recipe loader (size limit, no custom tags, no alias bombs,
duplicate keys refused), the same one ``apply`` uses, so a zoo file is held to a recipe's rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressctl.errors import RecipeError, UserError
from compressctl.recipe.yaml_loader import load_yaml_file

RECIPE_SUFFIXES = (".yaml", ".yml")


@dataclass
class ZooEntry:
    """One recipe of the zoo: its file and the folder name its run gets under the batch output."""

    name: str
    recipe: Path


def discover(paths: Iterable[Path]) -> list[ZooEntry]:
    """Recipes from folders (every *.yaml/*.yml, sorted) and zoo files (a YAML list or ``recipes:`` list)."""
    entries: list[ZooEntry] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in RECIPE_SUFFIXES and p.is_file())
            if not files:
                raise UserError(f"{path}: no recipes (*.yaml, *.yml) in this folder")
            entries += [ZooEntry(recipe_name(f), f) for f in files]
        elif path.is_file():
            entries += _zoo_or_recipe(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    seen: dict[str, Path] = {}
    for entry in entries:
        if entry.name in seen:
            raise UserError(
                f"two recipes are named '{entry.name}' ({seen[entry.name]} and {entry.recipe}); "
                "each recipe of a zoo needs its own name, because it names the output folder"
            )
        seen[entry.name] = entry.recipe
    if not entries:
        raise UserError("no recipes given")
    return entries


def _zoo_or_recipe(path: Path) -> list[ZooEntry]:
    """A zoo file lists recipes (paths relative to it); any other YAML file is a recipe itself.

    A file named on the command line must parse: its ``RecipeError`` (one line, file:line:col) stops the batch.
    """
    data, _ = load_yaml_file(path)
    listed = data.get("recipes") if isinstance(data, dict) and "stages" not in data else data
    if isinstance(listed, list):
        entries = []
        for i, item in enumerate(listed):
            if not isinstance(item, str):
                raise UserError(f"{path}: recipes[{i}] must be a path to a recipe file (got {item!r})")
            recipe = (path.parent / item).resolve() if not Path(item).is_absolute() else Path(item)
            if not recipe.is_file():
                raise UserError(f"{path}: recipes[{i}]: no such file {recipe}")
            entries.append(ZooEntry(recipe_name(recipe), recipe))
        return entries
    if isinstance(data, dict) and "stages" in data:
        return [ZooEntry(_name_in(path, data), path)]
    raise UserError(f"{path}: neither a recipe nor a zoo file (a list of recipe paths, or `recipes: [...]`)")


def recipe_name(path: Path) -> str:
    """The recipe's ``name`` (the folder its run gets), else the file stem; apply validates the rest.

    A recipe of a folder or a zoo file that does not parse still gets its run (named after the file),
    so that its ``apply`` reports the problem as that recipe's ``bad_input`` and the rest of the zoo runs.
    """
    try:
        data, _ = load_yaml_file(path)
    except RecipeError:
        data = None
    return _name_in(path, data)


def _name_in(path: Path, data: Any) -> str:
    name = data.get("name") if isinstance(data, dict) else None
    name = str(name) if name else path.stem
    if "/" in name or name in (".", ".."):
        raise UserError(f"{path}: recipe name '{name}' cannot name a folder")
    return name
