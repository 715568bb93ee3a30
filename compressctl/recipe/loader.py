"""Recipe loading: YAML with positions → overrides → pydantic → located errors."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from compressctl.errors import RecipeError
from compressctl.recipe.models import build_recipe_model
from compressctl.recipe.yaml_loader import PositionMap, format_path, load_yaml_file

_recipe_model_cache: dict[tuple[str, ...], type[BaseModel]] = {}


def recipe_model() -> type[BaseModel]:
    """The Recipe model for the runners registered now (built-ins and plugins)."""
    from compressctl.registry import registry

    runners = registry.all()
    key = tuple(sorted(f"{n}={r.config_model.__module__}.{r.config_model.__qualname__}" for n, r in runners.items()))
    if key not in _recipe_model_cache:
        configs = [runners[name].config_model for name in sorted(runners)]
        _recipe_model_cache[key] = build_recipe_model(configs)
    return _recipe_model_cache[key]


def parse_override(text: str) -> tuple[tuple[Any, ...], Any]:
    """``stages[1].amount=0.3`` → (("stages", 1, "amount"), 0.3). Values are YAML."""
    if "=" not in text:
        raise RecipeError([f"--set {text}: expected path=value, e.g. stages[1].amount=0.3"])
    raw_path, _, raw_value = text.partition("=")
    path: list[Any] = []
    for part in raw_path.replace("[", ".").replace("]", "").split("."):
        if part == "":
            raise RecipeError([f"--set {text}: malformed path '{raw_path}'"])
        path.append(int(part) if part.isdigit() else part)
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else None
    except yaml.YAMLError:
        raise RecipeError([f"--set {text}: value '{raw_value}' is not valid YAML"]) from None
    return tuple(path), value


def apply_override(data: dict[str, Any], path: tuple[Any, ...], value: Any, text: str) -> None:
    node: Any = data
    for i, key in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(node, list):
            if not isinstance(key, int) or key >= len(node):
                raise RecipeError([f"--set {text}: no element {format_path(path[: i + 1])}"])
            node = node[key]
            continue
        if not isinstance(node, dict):
            raise RecipeError([f"--set {text}: {format_path(path[:i])} is not a mapping"])
        if key not in node or node[key] is None:
            node[key] = [] if isinstance(nxt, int) else {}
        node = node[key]
    last = path[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last > len(node):
            raise RecipeError([f"--set {text}: no element {format_path(path)}"])
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise RecipeError([f"--set {text}: {format_path(path[:-1])} is not a mapping"])


def _strip_tags(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Drop discriminator/union tags pydantic inserts (stages.2.prune.amount → stages.2.amount)."""
    clean: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part not in node and clean:
            parent_value = node.get("type")
            if part == parent_value or "[" in part or part in ("NpzSource", "FactorySource"):
                continue
        clean.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(clean)


def _allowed_fields(model: type[BaseModel], loc: tuple[Any, ...], data: Any) -> list[str]:
    """The field names the model accepts at ``loc`` (for 'did you mean' hints)."""
    annotation: Any = model
    node = data
    for part in loc:
        if isinstance(part, int):
            args = getattr(annotation, "__args__", ())
            annotation = args[0] if args else None
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        current = _model_in(annotation, node)
        if current is None or part not in current.model_fields:
            return []
        annotation = current.model_fields[part].annotation
        node = node.get(part) if isinstance(node, dict) else None
    current = _model_in(annotation, node)
    return list(current.model_fields) if current is not None else []


def _model_in(annotation: Any, node: Any) -> Any:
    """The pydantic model that validates ``node`` under ``annotation`` (stage configs by type)."""
    from compressctl.registry import registry

    if isinstance(node, dict) and "type" in node:
        try:
            return registry.get(str(node["type"])).config_model
        except Exception:
            return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    candidates = [a for a in _flatten(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    if isinstance(node, dict):
        for candidate in candidates:
            if set(node) & set(candidate.model_fields):
                return candidate
    return candidates[0] if candidates else None


def _flatten(annotation: Any) -> list[Any]:
    found = []
    for arg in getattr(annotation, "__args__", ()) or getattr(annotation, "__metadata__", ()):
        found.append(arg)
        found.extend(_flatten(arg))
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and getattr(annotation, "__metadata__", None):
        found.append(origin)
        found.extend(_flatten(origin))
    return found


def _message(error: dict[str, Any], model: type[BaseModel], loc: tuple[Any, ...], data: Any) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        name = loc[-1]
        allowed = _allowed_fields(model, loc[:-1], data)
        close = difflib.get_close_matches(str(name), allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else (f"; allowed: {', '.join(allowed)}" if allowed else "")
        return f"unknown field '{name}'{hint}"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        from compressctl.registry import registry

        tag = error.get("ctx", {}).get("tag")
        if tag in registry.broken:
            return f"stage type '{tag}' comes from a plugin that failed to load: {registry.broken[tag]}"
        expected = error.get("ctx", {}).get("expected_tags", "")
        return f"unknown stage type '{tag}' (known: {expected})"
    if kind == "union_tag_not_found":
        return "each stage needs a 'type' (e.g. type: prune)"
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind not in ("value_error",) and not isinstance(value, (dict, list)):
        msg = f"{msg} (got {value!r})"
    return msg


def _locate(source: str, positions: PositionMap, loc: tuple[Any, ...], overrides: dict[tuple[Any, ...], str]) -> str:
    for i in range(len(loc), -1, -1):
        prefix = loc[:i]
        if prefix in overrides:
            return f"--set {overrides[prefix]}"
    for i in range(len(loc), -1, -1):
        if loc[:i] in positions:
            line, col = positions[loc[:i]]
            return f"{source}:{line}:{col}"
    return source


def validate_data(
    data: Any,
    source: str,
    positions: PositionMap | None = None,
    overrides: dict[tuple[Any, ...], str] | None = None,
) -> BaseModel:
    positions = positions or {}
    overrides = overrides or {}
    if not isinstance(data, dict):
        raise RecipeError([f"{source}:1:1: a recipe must be a mapping with version, name, model, stages"])
    model = recipe_model()
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = _strip_tags(tuple(error["loc"]), data)
            where = _locate(source, positions, loc, overrides)
            field = format_path(loc) or "(recipe)"
            problems.append(f"{where} {field}: {_message(error, model, loc, data)}")
        raise RecipeError(sorted(set(problems), key=problems.index)) from None


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> BaseModel:
    """Load, override and validate a recipe. Raises ``RecipeError`` listing every problem."""
    path = Path(path)
    data, positions = load_yaml_file(path)
    if data is None:
        raise RecipeError([f"{path}:1:1: the recipe is empty"])
    if not isinstance(data, dict):
        raise RecipeError([f"{path}:1:1: a recipe must be a mapping with version, name, model, stages"])
    applied: dict[tuple[Any, ...], str] = {}
    for text in overrides:
        key, value = parse_override(text)
        apply_override(data, key, value, text)
        applied[key] = text
    recipe = validate_data(data, str(path), positions, applied)
    recipe._source_path = path
    return recipe


def recipe_dir(recipe: BaseModel) -> Path:
    """Folder relative paths in the recipe are resolved against."""
    path = getattr(recipe, "_source_path", None)
    return Path(path).resolve().parent if path else Path.cwd()
