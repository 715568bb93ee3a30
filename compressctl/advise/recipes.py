"""Candidates as ordinary recipes (plain dicts validated by the recipe loader), and their real figures.

A candidate is a plain dict chosen by the search:

* ``layer_amounts`` ({pattern: ratio}) and ``importance`` (``l1``, ``l2``, ``bn_scale``):
  structured pruning; ``bn_scale`` is network slimming, a fine-tuning with L1
  on the BatchNorm scales before the channels are ranked by them;
* ``reconstruct`` (``least_squares``): the pruned Linear layers re-solved on calibration
  data; with ``recovery: none`` no recovery training follows;
* ``lowrank`` ({"ratio": r} or {"energy": e}) and ``lowrank_order`` (``before``
  or ``after`` pruning): Tucker-2 on the convs, where it lowers their MACs;
* ``quantize`` (``float``, ``int8`` (static), ``dynamic`` (INT8), ``kmeans``,
  ``int4`` (weight-only)), ``bits`` (k-means) and ``float_fallback`` (INT8: the
  quantize stage's ``max_accuracy_drop``, None for none); ``float_nodes`` (INT8:
  ONNX nodes kept float, the stage's ``exclude_nodes``);
  ``per_channel`` / ``calibration`` for ONNX-only models;
* ``stage.field``: an option of a third-party torch stage the recipe lists (the
  search reads its tags), run after pruning and low-rank, before the fine-tuning.

``candidate_stages`` is the one translation of a candidate into stages: the
workbench runs the same stages (with a shorter recovery fine-tuning) as the
recipe it recommends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compressctl.advise.budget import MB, Budget

DEFAULT_FINETUNE = {"epochs": 5, "lr": 0.002}
DEFAULT_INT8 = {
    "type": "quantize",
    "mode": "static",
    "per_channel": True,
    "calibration": {"method": "minmax", "samples": 256},
    "max_accuracy_drop": 0.003,  # nodes that lose more than this go back to float
}
DEFAULT_DYNAMIC = {"type": "quantize", "mode": "dynamic", "per_channel": True, "exclude_op_types": ["Gather"]}
DEFAULT_INT4 = {"type": "quantize", "mode": "int4"}
# L1 weight on the BatchNorm scales during the slimming fine-tuning. With Adam and a
# few epochs a weight this large is needed for the scales of unneeded channels to
# fall clearly below the others (Liu et al. 2017 train far longer with 1e-4).
SLIMMING_PENALTY = 1e-3
LOWRANK_METHOD = "tucker"  # the convs' factorisation (svd is for Linear layers)


def recipe_dict(recipe: Any) -> dict[str, Any]:
    """The recipe as the user wrote it, with relative file paths made absolute (it is written elsewhere)."""
    from compressctl.recipe import recipe_dir

    data = recipe.model_dump(mode="json", exclude_unset=True)
    base = recipe_dir(recipe)
    model = data.get("model", {})
    for key in ("checkpoint", "onnx"):
        if model.get(key) and not Path(model[key]).is_absolute():
            model[key] = str((base / model[key]).resolve())
    source = data.get("data", {}).get("source")
    if isinstance(source, dict) and source.get("npz") and not Path(source["npz"]).is_absolute():
        source["npz"] = str((base / source["npz"]).resolve())
    if isinstance(source, dict) and source.get("factory"):
        source.setdefault("kwargs", {})
    data.pop("output", None)
    return data


def leading_stages(recipe: Any) -> list[dict[str, Any]]:
    """Stages before the first compressing stage (``train``): they make the baseline."""
    from compressctl.registry import registry

    stages = []
    for stage in recipe.stages:
        if registry.get(stage.type).compresses:
            break
        if stage.type != "export":
            stages.append(stage.model_dump(mode="json", exclude_unset=True))
    return stages


def stage_template(recipe: Any, stage_type: str, default: dict[str, Any]) -> dict[str, Any]:
    for stage in recipe.stages:
        if stage.type == stage_type:
            return stage.model_dump(mode="json", exclude_unset=True)
    return dict(default, type=stage_type)


def int8_template(recipe: Any, mode: str, default: dict[str, Any]) -> dict[str, Any]:
    """The recipe's quantize stage when it has this mode (static: also when it names none), else ``default``."""
    quantize = stage_template(recipe, "quantize", default)
    return quantize if quantize.get("mode", "static") == mode else dict(default)


def budget_gates(budget: Budget, baseline_size_bytes: int) -> dict[str, float]:
    gates: dict[str, float] = {}
    if budget.min_speedup is not None:
        gates["min_speedup"] = budget.min_speedup
    if budget.max_latency_ms is not None:
        gates["max_latency_ms"] = budget.max_latency_ms
    if budget.max_accuracy_drop is not None:
        gates["max_accuracy_drop"] = budget.max_accuracy_drop
    if budget.max_size_mb is not None:
        gates["max_size_ratio"] = budget.max_size_mb * MB / baseline_size_bytes
    return gates


# -- reading a candidate ------------------------------------------------------------------------


def prune_amounts(candidate: dict[str, Any]) -> dict[str, float]:
    """The parts that lose channels, with their ratios (empty: no pruning)."""
    return {k: v for k, v in (candidate.get("layer_amounts") or {}).items() if v > 0}


def slims(candidate: dict[str, Any]) -> bool:
    """Network slimming: a fine-tuning with L1 on the BatchNorm scales, then pruning ranked by them."""
    return bool(prune_amounts(candidate)) and candidate.get("importance") == "bn_scale"


def quantization(candidate: dict[str, Any]) -> str:
    """``float``, ``int8``, ``dynamic``, ``kmeans`` or ``int4`` (``quantize: true/false`` from older advise.json
    files: int8/float)."""
    mode = candidate.get("quantize", "float")
    if mode is True:
        return "int8"
    return mode or "float"


def lowrank_rule(candidate: dict[str, Any]) -> dict[str, float] | None:
    """``{"ratio": r}`` or ``{"energy": e}`` when the candidate factorises its convs."""
    rule = candidate.get("lowrank")
    return dict(rule) if rule else None


# -- the stages of a candidate ----------------------------------------------------------------------


def finetune_templates(recipe: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The slimming and the recovery fine-tuning: the recipe's first ``finetune`` stage with L1 on the
    BatchNorm scales and its first without. Where it lists only one, the other is made from it (the
    slimming adds ``SLIMMING_PENALTY``, the recovery drops the penalty); where none, from
    ``DEFAULT_FINETUNE``."""
    slimming = recovery = None
    for stage in recipe.stages:
        if stage.type != "finetune":
            continue
        fields = stage.model_dump(mode="json", exclude_unset=True)
        if fields.get("sparsity_regularization"):
            slimming = slimming or fields
        else:
            recovery = recovery or fields
    if recovery is None:
        plain = {k: v for k, v in (slimming or {}).items() if k != "sparsity_regularization"}
        recovery = plain or dict(DEFAULT_FINETUNE, type="finetune")
    return slimming or dict(recovery, sparsity_regularization=SLIMMING_PENALTY), recovery


def slimming_stage(recipe: Any) -> dict[str, Any]:
    """The network-slimming fine-tuning (``finetune_templates``)."""
    return finetune_templates(recipe)[0]


def prune_stage(candidate: dict[str, Any], round_to: int | None) -> dict[str, Any]:
    prune: dict[str, Any] = {
        "type": "prune",
        "method": "structured",
        "amount": 0.0,
        "importance": candidate.get("importance", "l1"),
        "layer_amounts": prune_amounts(candidate),
    }
    if candidate.get("reconstruct"):
        prune["reconstruct"] = candidate["reconstruct"]
    if round_to:
        prune["round_to"] = round_to
    return prune


def lowrank_stage(rule: dict[str, float]) -> dict[str, Any]:
    """Tucker-2 on the convs; the runner only replaces a conv where that lowers its MACs."""
    return {"type": "lowrank", "method": LOWRANK_METHOD, **rule}


def quantize_stage(recipe: Any, candidate: dict[str, Any]) -> dict[str, Any] | None:
    mode = quantization(candidate)
    if mode == "kmeans":
        return {"type": "quantize", "mode": "kmeans", "bits": int(candidate.get("bits", 4))}
    if mode == "int4":
        return int8_template(recipe, "int4", DEFAULT_INT4)
    if mode not in ("int8", "dynamic"):
        return None
    if mode == "dynamic":
        quantize = int8_template(recipe, "dynamic", DEFAULT_DYNAMIC)
    else:
        quantize = int8_template(recipe, "static", DEFAULT_INT8)
    if "per_channel" in candidate:
        quantize["per_channel"] = candidate["per_channel"]
    if "calibration" in candidate:
        quantize["calibration"] = dict(quantize.get("calibration", {}), method=candidate["calibration"])
    if candidate.get("float_nodes"):
        quantize["exclude_nodes"] = sorted(set(quantize.get("exclude_nodes", [])) | set(candidate["float_nodes"]))
    if "float_fallback" in candidate:
        quantize.pop("max_accuracy_drop", None)
        if candidate["float_fallback"] is not None:
            quantize["max_accuracy_drop"] = candidate["float_fallback"]
    return quantize


def plugin_stages(recipe: Any, candidate: dict[str, Any]) -> list[dict[str, Any]]:
    """Third-party stages the candidate sets options of (``stage.field`` keys): the recipe's stage with them."""
    settings: dict[str, dict[str, Any]] = {}
    for key, value in candidate.items():
        stage, dot, name = key.partition(".")
        if dot:
            settings.setdefault(stage, {})[name] = value
    return [dict(stage_template(recipe, stage, {}), **fields) for stage, fields in settings.items()]


def torch_stages(
    recipe: Any, candidate: dict[str, Any], round_to: int | None, finetune_epochs: int | None = None
) -> list[dict[str, Any]]:
    """The torch-level compression stages, in order: [slimming] → [low-rank] → [prune] → [low-rank] → [third-party]
    → fine-tune.

    ``finetune_epochs`` shortens the recovery fine-tuning (the workbench's proxies).
    """
    stages: list[dict[str, Any]] = []
    amounts = prune_amounts(candidate)
    rule = lowrank_rule(candidate)
    before = rule is not None and (candidate.get("lowrank_order") == "before" or not amounts)
    if slims(candidate):
        stages.append(slimming_stage(recipe))
    if rule is not None and before:
        stages.append(lowrank_stage(rule))
    if amounts:
        stages.append(prune_stage(candidate, round_to))
    if rule is not None and not before:
        stages.append(lowrank_stage(rule))
    plugins = plugin_stages(recipe, candidate)
    stages += plugins
    if (amounts and candidate.get("recovery") != "none") or rule is not None or plugins:
        recovery = recovery_stage(recipe)
        if finetune_epochs is not None:
            recovery["epochs"] = finetune_epochs
        stages.append(recovery)
    return stages


def recovery_stage(recipe: Any) -> dict[str, Any]:
    """What recovers a candidate's accuracy: the recipe's ``distill`` stage when it lists one (from the
    baseline, its default teacher: what a model judged by fidelity to the baseline should learn), else
    its plain ``finetune`` stage (on the labels; the slimming one without its penalty if it lists no
    other)."""
    if any(stage.type == "distill" for stage in recipe.stages):
        return stage_template(recipe, "distill", {})
    return finetune_templates(recipe)[1]


def candidate_recipe(
    recipe: Any, candidate: dict[str, Any], budget: Budget, baseline_size_bytes: int, round_to: int | None
) -> dict[str, Any]:
    """The full recipe of a candidate: leading stages, its torch stages, export, quantize; the budget as gates."""
    data = recipe_dict(recipe)
    stages = leading_stages(recipe)
    if not recipe.model.onnx:
        stages += torch_stages(recipe, candidate, round_to)
        stages.append(stage_template(recipe, "export", {"opset": 18}))
    quantize = quantize_stage(recipe, candidate)
    if quantize is not None:
        stages.append(quantize)
    data["stages"] = stages
    data["gates"] = budget_gates(budget, baseline_size_bytes)
    data["name"] = f"{recipe.name}-advised"
    return data


def report_figures(report: dict[str, Any], metric: str) -> dict[str, Any]:
    """Speedup, p50, size and metric of a report's final model, read where its gates read them."""
    models = {m["name"]: m for m in report["models"]}
    final, baseline = models["final"], models["baseline"]
    at = report["summary"]["gate_at"]
    batch = int(at.rsplit("@", 1)[1])
    timing = next(item for item in final["latency"] if item["batch_size"] == batch)
    base_timing = next(item for item in baseline["latency"] if item["batch_size"] == batch)
    p50 = timing["p50_ms"]
    base_metric = baseline["metrics"].get(metric)
    final_metric = final["metrics"].get(metric)
    return {
        "metric": final_metric,
        "baseline_metric": base_metric,
        "accuracy_drop": base_metric - final_metric,
        "p50_ms": p50,
        "baseline_p50_ms": base_timing["p50_ms"],
        "speedup": report["summary"]["speedup"][at],
        "p90_ms": timing["p90_ms"],
        "speedup_at_p90": base_timing["p50_ms"] / timing["p90_ms"],
        "size_bytes": final["size_bytes"],
        "baseline_size_bytes": baseline["size_bytes"],
        "at": at,
    }
