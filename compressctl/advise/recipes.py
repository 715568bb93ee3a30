"""Candidates as ordinary recipes (plain dicts validated by the recipe loader), and their real figures."""

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


def candidate_recipe(
    recipe: Any, candidate: dict[str, Any], budget: Budget, baseline_size_bytes: int, round_to: int | None
) -> dict[str, Any]:
    """The full recipe of a candidate: leading stages, prune + fine-tune, export, INT8; the budget as gates."""
    data = recipe_dict(recipe)
    stages = leading_stages(recipe)
    amounts = {k: v for k, v in (candidate.get("layer_amounts") or {}).items() if v > 0}
    if amounts:
        prune: dict[str, Any] = {
            "type": "prune",
            "method": "structured",
            "amount": 0.0,
            "importance": candidate.get("importance", "l1"),
            "layer_amounts": amounts,
        }
        if round_to:
            prune["round_to"] = round_to
        stages.append(prune)
        finetune = stage_template(recipe, "finetune", DEFAULT_FINETUNE)
        stages.append(finetune)
    if not recipe.model.onnx:
        stages.append(stage_template(recipe, "export", {"opset": 18}))
    if candidate.get("quantize"):
        quantize = stage_template(recipe, "quantize", DEFAULT_INT8)
        if quantize.get("mode", "static") not in ("static",):
            quantize = dict(DEFAULT_INT8)
        if "per_channel" in candidate:
            quantize["per_channel"] = candidate["per_channel"]
        if "calibration" in candidate:
            quantize["calibration"] = dict(quantize.get("calibration", {}), method=candidate["calibration"])
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
        "speedup": report["summary"]["speedup"][at],
        "p90_ms": timing["p90_ms"],
        "speedup_at_p90": base_timing["p50_ms"] / timing["p90_ms"],
        "size_bytes": final["size_bytes"],
        "baseline_size_bytes": baseline["size_bytes"],
        "at": at,
    }
