"""Safe YAML loading that remembers where every value came from.

``load_yaml_with_positions`` returns plain Python data plus a map from field
path (a tuple of keys and indices) to ``(line, column)``, so validation errors
can point at the exact place in the file. Duplicate keys, alias bombs, custom
tags and oversized files are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from compressctl.errors import RecipeError

MAX_RECIPE_BYTES = 1_000_000
MAX_ALIASES = 100
MAX_NODES = 200_000

_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")

Position = tuple[int, int]
PositionMap = dict[tuple[Any, ...], Position]


class _Loader(yaml.SafeLoader):
    """SafeLoader (no arbitrary tags) that counts alias uses."""


def _pos(node: yaml.Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _describe(source: str, node: yaml.Node, path: tuple[Any, ...]) -> str:
    line, col = _pos(node)
    where = _format_path(path)
    return f"{source}:{line}:{col}" + (f" {where}" if where else "")


def _format_path(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


class _Walker:
    """Converts a composed YAML node tree to Python data while recording positions."""

    def __init__(self, loader: _Loader, source: str) -> None:
        self.loader = loader
        self.source = source
        self.positions: PositionMap = {}
        self.problems: list[str] = []
        self.nodes = 0
        self.alias_uses = 0
        self._seen: set[int] = set()

    def convert(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise RecipeError([f"{self.source}: recipe is too large (over {MAX_NODES} YAML nodes)"])
        if id(node) in self._seen:
            # The same node reached twice is an alias: count it so that nested
            # aliases ("billion laughs") cannot expand without bound.
            self.alias_uses += 1
            if self.alias_uses > MAX_ALIASES:
                raise RecipeError(
                    [f"{_describe(self.source, node, path)}: too many YAML aliases (limit {MAX_ALIASES})"]
                )
        self._seen.add(id(node))
        self.positions.setdefault(path, _pos(node))
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
            raise RecipeError(
                [f"{_describe(self.source, node, path)}: YAML tag '{node.tag}' is not allowed in a recipe"]
            )
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(child, (*path, i)) for i, child in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: tuple[Any, ...]) -> dict[Any, Any]:
        self.loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                self.problems.append(f"{_describe(self.source, key_node, path)}: keys must be plain strings")
                continue
            if key in result:
                first = self.positions.get((*path, key), (0, 0))
                self.problems.append(
                    f"{_describe(self.source, key_node, (*path, key))}: duplicate key "
                    f"'{key}' (first defined at line {first[0]})"
                )
                continue
            self.positions[(*path, key)] = _pos(key_node)
            result[key] = self.convert(value_node, (*path, key))
        return result


def load_yaml_text(text: str, source: str) -> tuple[Any, PositionMap]:
    """Parse YAML text safely; return the data and a field-path → (line, col) map."""
    if len(text.encode("utf-8", errors="replace")) > MAX_RECIPE_BYTES:
        raise RecipeError([f"{source}: file is larger than {MAX_RECIPE_BYTES} bytes; is it a recipe?"])
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # e.g. control characters YAML does not allow
        raise RecipeError([f"{source}: invalid YAML: {str(exc).splitlines()[0]}"]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        walker = _Walker(loader, source)
        data = walker.convert(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "invalid YAML"
        raise RecipeError([f"{where}: invalid YAML: {problem}"]) from None
    except yaml.YAMLError as exc:
        raise RecipeError([f"{source}: invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()
    if walker.problems:
        raise RecipeError(walker.problems)
    return data, walker.positions


def load_yaml_file(path: Path) -> tuple[Any, PositionMap]:
    """Read and parse a YAML file; unreadable files are a ``RecipeError``."""
    try:
        if path.is_dir():
            raise RecipeError([f"{path}: is a folder, not a recipe file"])
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError([f"{path}: file is larger than {MAX_RECIPE_BYTES} bytes; is it a recipe?"])
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise RecipeError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError([f"{path}: not UTF-8 text (byte {exc.start}); is it a recipe?"]) from None
    return load_yaml_text(text, str(path))


format_path = _format_path
