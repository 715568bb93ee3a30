"""advise's search space: the runners' search tags, laid over the model's layers.

A stage config field tagged with ``searched(...)`` (``compressctl.runners.base``)
becomes one dimension of the space, or one per layer with ``per``:

* ``prune.layer_amounts`` (``per: layer_group``): a pruning ratio for each of
  Torch-Pruning's dependency groups (layers a residual add couples lose the same
  channels, so they share one ratio);
* ``lowrank.layer_ratios`` (``per: layer``): a rank ratio (or the stage's rule)
  for each conv larger than 1×1;
* ``prune.reconstruct``: least-squares re-solving of the narrowed Linear layers, for
  models whose groups hold Linear layers (with ``advise.recovery``: the recipe's
  recovery training after it, or none);
* ``quantize.exclude_nodes`` (``per: node``): float or INT8 for each of the
  ``MAX_FLOAT_NODES`` nodes that INT8 hurts most in the sensitivity analysis;
* any other tagged field: one dimension (``prune.importance``, ``quantize.mode``,
  ``quantize.bits``, ``lowrank.ratio`` or ``energy``…).

Built-in runners are always searched. A third-party runner's tagged fields are
searched when the recipe lists its stage (a template, as the finetune and quantize
stages are); torch stages only, since the proxies run the torch stages.

The sensitivity analysis bounds and seeds the space: a group whose one-shot pruning
costs far more accuracy than the others may lose at most ``SENSITIVE_BOUND``; one
starting point prunes hardest where the latency share is high and the sensitivity
low (as AMC and HAQ start from the layers that are cheap to compress and dominate
latency).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compressctl.advise.layers import Layer

ORDER = "advise.lowrank_order"  # not a runner option: low-rank before or after pruning (the stage order)
# not a runner option: after a least-squares reconstruction, the recipe's recovery training ("train") or none
RECOVERY = "advise.recovery"


@dataclass(frozen=True)
class Dimension:
    """One choice of the search: ``name`` is the parameter, ``stage``/``field`` what it sets.

    ``kind`` float: ``choices`` is the grid ``low..high`` by ``step``. ``target``:
    the layer group or node of a per-layer dimension. ``when``: (parameter, allowed
    values) pairs that must hold for the dimension to be chosen at all. ``settings``:
    for fields joined by ``one_of``, the (field, value) each choice sets.
    """

    name: str
    stage: str
    field: str
    choices: tuple[Any, ...]
    kind: str = "categorical"
    step: float | None = None
    per: str | None = None
    target: str | None = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def low(self) -> float:
        return self.choices[0]

    @property
    def high(self) -> float:
        return self.choices[-1]

    def active(self, values: dict[str, Any]) -> bool:
        return all(name in values and values[name] in allowed for name, allowed in self.when)


@dataclass
class Proposal:
    """What a strategy asks to evaluate: parameter values, and its own record of them (``handle``)."""

    number: int
    values: dict[str, Any]
    handle: Any = None  # an Optuna trial, or the RL agent's log-probability of its actions


@dataclass
class Space:
    dimensions: list[Dimension]
    layers: dict[str, Layer]  # per-layer dimension name → its layer
    onnx_only: bool = False
    quantize_mode: str = "static"  # the INT8 mode of the starting points: the recipe's (dynamic for encoders)

    def sample(self, choose: Callable[[Dimension], Any]) -> dict[str, Any]:
        """Parameter values, dimension by dimension in order (``choose`` is asked only for active ones)."""
        values: dict[str, Any] = {}
        for dimension in self.dimensions:
            if dimension.active(values):
                values[dimension.name] = choose(dimension)
        return values

    def fill(self, point: dict[str, Any]) -> dict[str, Any]:
        """``point`` completed with each missing active dimension's first choice."""
        return self.sample(lambda d: point.get(d.name, d.choices[0]))

    def candidate(self, values: dict[str, Any]) -> dict[str, Any]:
        return to_candidate(self, values)


# -- from tags to dimensions ----------------------------------------------------------------------


def search_tags(config_model: Any) -> dict[str, dict[str, Any]]:
    """``{field: tag}`` of a stage config's tagged fields."""
    found = {}
    for name, info in config_model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and isinstance(extra.get("search"), dict):
            found[name] = dict(extra["search"])
    return found


def grid(low: float, high: float, step: float) -> tuple[float, ...]:
    count = round((high - low) / step)
    return tuple(round(low + i * step, 6) for i in range(count + 1))


def stage_dimensions(
    stage: str,
    config_model: Any,
    layers: dict[str, list[Layer]],
    onnx_only: bool,
    op_types: set[str] | None = None,
) -> tuple[list[Dimension], dict[str, Layer]]:
    """The dimensions one stage's tags give (per-layer ones expanded over ``layers[per]``; a choice
    that ``needs`` an op type only when ``op_types`` (``model_op_types``) has it, or when that is not known)."""
    tags = {
        name: offered(tag, op_types)
        for name, tag in search_tags(config_model).items()
        if tag.get("models") in (None, "onnx" if onnx_only else "torch")
    }
    # a choice the model cannot use left one: the field keeps its default, as for a runner without the tag
    tags = {name: tag for name, tag in tags.items() if not tag.get("needs") or len(tag["choices"]) > 1}
    # the switch (an optional field: None leaves the stage out) comes first; the others depend on it
    switch = next((n for n, t in tags.items() if t.get("optional") and not onnx_only), None)
    dims: list[Dimension] = []
    per_layer: dict[str, Layer] = {}
    joined: dict[str, list[tuple[str, Any]]] = {}
    for name in dependency_order(tags, switch):
        tag = tags[name]
        when = tuple((f"{stage}.{k}", tuple(v)) for k, v in tag.get("when", {}).items())
        if switch and name != switch:
            allowed = tuple(c for c in tags[switch]["choices"])
            when = ((f"{stage}.{switch}", allowed), *when)
        if tag.get("one_of"):
            joined.setdefault(tag["one_of"], []).extend((name, c) for c in tag["choices"])
            continue
        if tag.get("per"):
            for layer in layers.get(tag["per"], []):
                dim = per_layer_dimension(stage, name, tag, layer, when)
                dims.append(dim)
                per_layer[dim.name] = layer
            continue
        choices = tuple(tag["choices"]) if "choices" in tag else grid(*tag["range"], tag["step"])
        if name == switch:
            choices = (None, *choices)
        kind = "float" if "range" in tag else "categorical"
        dims.append(Dimension(f"{stage}.{name}", stage, name, choices, kind, tag.get("step"), when=when))
    for group, settings in joined.items():
        labels = tuple(f"{f} {v:g}" if isinstance(v, float) else f"{f} {v}" for f, v in settings)
        first = tags[settings[0][0]]
        when = ((f"{stage}.{switch}", tuple(tags[switch]["choices"])),) if switch else ()
        when += tuple((f"{stage}.{k}", tuple(v)) for k, v in first.get("when", {}).items())
        dims.append(Dimension(f"{stage}.{group}", stage, group, labels, when=when, settings=tuple(settings)))
    return dims, per_layer


def offered(tag: dict[str, Any], op_types: set[str] | None) -> dict[str, Any]:
    """``tag`` without the choices whose ``needs`` op type the model lacks."""
    needs = tag.get("needs") or {}
    if op_types is None or not needs:
        return tag
    return dict(tag, choices=[c for c in tag["choices"] if c not in needs or needs[c] in op_types])


def model_op_types(bench: Any, groups: list[Layer] = ()) -> set[str] | None:
    """What a tag's ``needs`` is checked against: the baseline graph's op types with a constant weight,
    ``BatchNormalization`` when the torch model has batch norms (exporters may fold them into convs,
    so the graph cannot say), and ``Linear`` when one of the prunable ``groups`` narrows an ``nn.Linear``
    (what ``prune.reconstruct`` re-solves). None when there is no baseline graph to read."""
    if bench.baseline_path is None:
        return None
    found = weighted_op_types(bench.baseline_path)
    if bench.module is not None:
        from torch import nn

        modules = dict(bench.module.named_modules())
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules.values()):
            found.add("BatchNormalization")
        if any(isinstance(modules.get(member), nn.Linear) for group in groups for member in group.members):
            found.add("Linear")
    return found


def weighted_op_types(path: Any) -> set[str]:
    """Op types of ``path``'s nodes that take a constant weight (an initializer of two or more dimensions)."""
    from compressctl.onnxio import load_onnx

    graph = load_onnx(path, load_external_data=False).graph
    weights = {t.name for t in graph.initializer if len(t.dims) >= 2}
    return {node.op_type for node in graph.node if any(name in weights for name in node.input)}


def dependency_order(tags: dict[str, dict[str, Any]], switch: str | None) -> list[str]:
    """The switch first, then every field after the fields its ``when`` names."""
    ordered = [switch] if switch else []
    while len(ordered) < len(tags):
        ready = [
            name
            for name, tag in tags.items()
            if name not in ordered and all(k in ordered or k not in tags for k in tag.get("when", {}))
        ]
        if not ready:
            raise ValueError(f"search tags depend on each other in a circle: {sorted(set(tags) - set(ordered))}")
        ordered += ready[:1]
    return ordered


def per_layer_dimension(
    stage: str, name: str, tag: dict[str, Any], layer: Layer, when: tuple[tuple[str, tuple[Any, ...]], ...]
) -> Dimension:
    dim_name = f"{stage}.{name}:{layer.name}"
    if "range" in tag:
        low, high = tag["range"]
        high = max(low, min(high, layer.upper))
        return Dimension(
            dim_name, stage, name, grid(low, high, tag["step"]), "float", tag["step"], tag["per"], layer.name, when
        )
    choices = tuple(tag.get("choices", (False, True)))  # a node: True keeps it in float
    return Dimension(dim_name, stage, name, choices, per=tag["per"], target=layer.name, when=when)


def searched_runners(recipe_types: set[str], onnx_only: bool) -> dict[str, Any]:
    """Stage type → config model: the built-ins, and third-party stages the recipe lists."""
    from compressctl.registry import BUILTIN_RUNNERS, registry

    builtin = {target.partition(":")[0] for target in BUILTIN_RUNNERS}
    found = {}
    for stage, runner in registry.all().items():
        if runner.__module__ not in builtin and (stage not in recipe_types or runner.consumes == "onnx"):
            continue
        if onnx_only and runner.consumes == "torch":
            continue
        found[stage] = runner.config_model
    return found


def space_from(
    runners: dict[str, Any],
    layers: dict[str, list[Layer]],
    onnx_only: bool,
    op_types: set[str] | None = None,
    quantize_mode: str = "static",
) -> Space:
    """The space of ``runners``' tags over ``layers`` (``{"layer_group": [...], "node": [...]}``)."""
    dimensions: list[Dimension] = []
    per_layer: dict[str, Layer] = {}
    for stage, config_model in runners.items():
        dims, found = stage_dimensions(stage, config_model, layers, onnx_only, op_types)
        dimensions += dims
        per_layer.update(found)
        switch = next((d for d in dims if d.stage == "lowrank" and d.choices[0] is None), None)
        if switch is not None:  # low-rank before or after pruning: the stage order is advise's own choice
            dimensions.append(
                Dimension(
                    ORDER, "advise", "lowrank_order", ("after", "before"), when=((switch.name, switch.choices[1:]),)
                )
            )
    reconstruct = next((d for d in dimensions if d.name == "prune.reconstruct"), None)
    if reconstruct is not None:  # solved weights may need no training at all
        dimensions.append(
            Dimension(RECOVERY, "advise", "recovery", ("train", "none"), when=((reconstruct.name, ("least_squares",)),))
        )
    modes = next((d.choices for d in dimensions if d.name == "quantize.mode"), ())
    return Space(dimensions, per_layer, onnx_only, quantize_mode if quantize_mode in modes else "static")


def build_space(bench: Any, analysis: dict[str, Any] | None = None) -> Space:
    """The space for the workbench's model, bounded and described by the sensitivity ``analysis``."""
    from compressctl.advise.layers import conv_layers, group_layers, node_layers

    analysis = analysis or {}
    onnx_only = bench.module is None
    layers = {"node": node_layers(bench, analysis)}
    if not onnx_only:
        layers["layer_group"] = group_layers(bench, analysis)
        layers["layer"] = conv_layers(bench, analysis)
    recipe_types = {stage.type for stage in bench.recipe.stages}
    mode = next((stage.mode for stage in bench.recipe.stages if stage.type == "quantize"), "static")
    op_types = model_op_types(bench, layers.get("layer_group", []))
    return space_from(searched_runners(recipe_types, onnx_only), layers, onnx_only, op_types, mode)


# -- from values to a candidate ------------------------------------------------------------------------


def stage_settings(space: Space, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{stage: {field: value}}`` of the chosen values (per-layer ones gathered into their field)."""
    stages: dict[str, dict[str, Any]] = {}
    for dim in space.dimensions:
        if dim.name not in values:
            continue
        value = values[dim.name]
        settings = stages.setdefault(dim.stage, {})
        if dim.per in ("layer_group", "layer"):  # a ratio per layer: None leaves the layer to the stage's rule
            members = space.layers[dim.name].members
            ratios = settings.setdefault(dim.field, {})
            if value is not None:
                ratios.update({member: round(float(value), 4) for member in members})
        elif dim.per == "node":
            settings.setdefault(dim.field, [])
            if value is True:
                settings[dim.field] += space.layers[dim.name].members
        elif dim.settings:
            name, setting = dict(zip(dim.choices, dim.settings, strict=True))[value]
            settings[name] = setting
        else:
            settings[dim.field] = value
    return stages


def to_candidate(space: Space, values: dict[str, Any]) -> dict[str, Any]:
    """The candidate dict ``advise.recipes`` reads: built-in stages under their keys, other stages as ``stage.field``."""
    stages = stage_settings(space, values)
    candidate: dict[str, Any] = {}
    prune = stages.pop("prune", {})
    if "layer_amounts" in prune:
        candidate["layer_amounts"] = prune["layer_amounts"]
        candidate["importance"] = prune.get("importance", "l1")
        if prune.get("reconstruct", "none") != "none" and any(v > 0 for v in prune["layer_amounts"].values()):
            candidate["reconstruct"] = prune["reconstruct"]
            candidate["recovery"] = stages.get("advise", {}).get("recovery", "train")
    lowrank = stages.pop("lowrank", {})
    if lowrank.get("method"):
        candidate["lowrank"] = {k: lowrank[k] for k in ("ratio", "energy", "layer_ratios") if lowrank.get(k)}
        candidate["lowrank_order"] = stages.get("advise", {}).get("lowrank_order", "after")
    stages.pop("advise", None)
    candidate.update(quantize_keys(stages.pop("quantize", {})))
    for stage, settings in stages.items():
        candidate.update({f"{stage}.{name}": value for name, value in settings.items()})
    return candidate


def quantize_keys(settings: dict[str, Any]) -> dict[str, Any]:
    mode = settings.get("mode")
    if mode == "kmeans":
        return {"quantize": "kmeans", "bits": settings.get("bits", 4)}
    if mode == "int4":
        return {"quantize": "int4"}
    if mode not in ("static", "dynamic"):
        return {"quantize": "float"}
    keys: dict[str, Any] = {"quantize": "int8" if mode == "static" else "dynamic"}
    keys["float_fallback"] = settings.get("max_accuracy_drop")
    if settings.get("exclude_nodes"):
        keys["float_nodes"] = sorted(settings["exclude_nodes"])
    keys.update({k: settings[k] for k in ("per_channel", "calibration") if k in settings})
    return keys
