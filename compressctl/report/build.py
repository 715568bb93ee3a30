"""Builds the report dictionary (report.json, schema_version 1) from a run."""

from __future__ import annotations

import platform
from typing import Any

from compressctl.environment import __version__, cpu_features, cpu_name, library_versions
from compressctl.errors import UserError

SCHEMA_VERSION = 1


def environment(providers_available: list[str]) -> dict[str, Any]:
    versions = library_versions()
    return {
        "python": platform.python_version(),
        "torch": versions.get("torch"),
        "onnxruntime": versions.get("onnxruntime"),
        "onnx": versions.get("onnx"),
        "numpy": versions.get("numpy"),
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "providers_available": providers_available,
    }


def latency_at(entry: dict[str, Any], key: str) -> dict[str, Any] | None:
    provider, _, batch = key.partition("@")
    for item in entry.get("latency", []):
        if item["requested_provider"] == provider and str(item["batch_size"]) == batch:
            return item
    return None


def gate_key(recipe: Any, providers: list[str]) -> str:
    if recipe.gates.at:
        return recipe.gates.at
    return f"{providers[0]}@{max(recipe.report.batch_sizes)}"


def sitting_speedups(sittings: list[Any], name: str) -> tuple[dict[str, float], dict[str, list[float]]]:
    """``name``'s speedups over the baseline and their intervals, by "provider@batch"."""
    speedup, interval = {}, {}
    for sitting in sittings:
        if name == sitting.reference:
            speedup[sitting.key], interval[sitting.key] = 1.0, [1.0, 1.0]
        elif name in sitting.speedups:
            point, low, high = sitting.speedups[name]
            speedup[sitting.key], interval[sitting.key] = point, [low, high]
    return speedup, interval


def check_gate_target(recipe: Any, providers: list[str]) -> None:
    """``gates.at`` must name a provider and batch size the run measures (else exit 2)."""
    at = recipe.gates.at
    if not at:
        return
    provider, _, batch = at.partition("@")
    if provider not in providers or int(batch) not in recipe.report.batch_sizes:
        raise UserError(
            f"gates.at: {at} is not measured by this run (providers: {', '.join(providers)}; "
            f"report.batch_sizes: {', '.join(map(str, recipe.report.batch_sizes))})"
        )


def summarize(
    recipe: Any, models: list[dict[str, Any]], providers: list[str], sittings: list[Any] | None = None, metric: str = ""
) -> dict[str, Any]:
    baseline = next((m for m in models if m["name"] == "baseline"), None)
    final = next((m for m in models if m["name"] == "final"), None)
    metric = metric or recipe.evaluate.metric
    summary: dict[str, Any] = {"metric": metric}
    if not baseline or not final:
        return summary
    summary["output_kind"] = final.get("output_kind")
    summary["size_ratio"] = final["size_bytes"] / baseline["size_bytes"] if baseline["size_bytes"] else None
    summary["compressed_size_ratio"] = (
        final["compressed_size_bytes"] / baseline["compressed_size_bytes"]
        if baseline["compressed_size_bytes"]
        else None
    )
    summary["params_ratio"] = final["params"] / baseline["params"] if baseline["params"] else None
    summary["nonzero_params_ratio"] = final["nonzero_params"] / baseline["params"] if baseline["params"] else None
    summary["macs_ratio"] = final["macs"] / baseline["macs"] if baseline["macs"] else None
    base_metric = baseline.get("metrics", {}).get(metric)
    final_metric = final.get("metrics", {}).get(metric)
    summary["baseline_metric"] = base_metric
    summary["final_metric"] = final_metric
    summary["accuracy_drop"] = (
        (base_metric - final_metric) if base_metric is not None and final_metric is not None else None
    )
    summary["speedup"], summary["speedup_ci"] = sitting_speedups(sittings or [], final.get("source", final["name"]))
    summary["gate_at"] = gate_key(recipe, providers)
    return summary


def evaluate_gates(recipe: Any, models: list[dict[str, Any]], summary: dict[str, Any]) -> list[dict[str, Any]]:
    gates = recipe.gates
    final = next((m for m in models if m["name"] == "final"), None)
    at = summary.get("gate_at")
    checks: list[tuple[str, float | None, float | None, bool]] = []  # name, limit, value, lower-is-better
    if gates.max_accuracy_drop is not None:
        checks.append(("max_accuracy_drop", gates.max_accuracy_drop, summary.get("accuracy_drop"), True))
    if gates.min_accuracy is not None:
        checks.append(("min_accuracy", gates.min_accuracy, summary.get("final_metric"), False))
    if gates.min_speedup is not None:
        checks.append(("min_speedup", gates.min_speedup, summary.get("speedup", {}).get(at), False))
    if gates.max_size_ratio is not None:
        checks.append(("max_size_ratio", gates.max_size_ratio, summary.get("size_ratio"), True))
    for ratio in ("macs_ratio", "nonzero_params_ratio", "compressed_size_ratio"):
        limit = getattr(gates, f"max_{ratio}", None)
        if limit is not None:
            checks.append((f"max_{ratio}", limit, summary.get(ratio), True))
    if gates.max_latency_ms is not None:
        item = latency_at(final, at) if final and at else None
        checks.append(("max_latency_ms", gates.max_latency_ms, item["p50_ms"] if item else None, True))
    results = []
    for name, limit, value, lower_is_better in checks:
        passed = value is not None and (value <= limit if lower_is_better else value >= limit)
        gate: dict[str, Any] = {"name": name, "limit": limit, "value": value, "passed": bool(passed)}
        interval = summary.get("speedup_ci", {}).get(at) if name == "min_speedup" else None
        if interval is not None:
            low, high = interval
            gate["interval"] = interval
            gate["uncertain"] = bool(low < limit <= high)
            if gates.confidence is not None:
                gate["confidence"] = gates.confidence
                gate["passed"] = bool(low >= limit)
        results.append(gate)
    return results


def measurement_block(run: Any) -> dict[str, Any]:
    """How the latencies were taken: the settings and noise of the run's sittings."""
    recipe = run.recipe
    measurer = run.measurer
    sittings = measurer.sittings if measurer else []
    block: dict[str, Any] = {
        "threads": measurer.threads if measurer else None,
        "warmup": recipe.report.warmup,
        "repeat": recipe.report.repeat,
        "providers_requested": run.providers,
        "batch_sizes": recipe.report.batch_sizes,
        "metric": measurer.metric if measurer and measurer.kind else recipe.evaluate.metric,
        "output_kind": measurer.kind if measurer else None,
    }
    if sittings:
        from compressctl.measure.sitting import ORDER

        block.update(
            {
                "order": ORDER,
                "spinning": sittings[0].settings.spinning,
                "statistic": sittings[0].settings.statistic,
                "interval_target": sittings[0].settings.target,
                "confidence": sittings[0].settings.confidence,
                "runs": {s.key: s.rounds for s in sittings},
                "noise_cv": max(s.to_dict()["noise_cv"] for s in sittings),
                "cached": measurer.sitting_cached,
                "sittings": [s.to_dict() for s in sittings],
            }
        )
    return block


def build_report(run: Any, failed: bool = False) -> dict[str, Any]:
    from compressctl.measure.latency import available_providers

    recipe = run.recipe
    models = run.measured
    measurer = run.measurer
    sittings = measurer.sittings if measurer else []
    metric = measurer.metric if measurer and measurer.kind else ""
    summary = summarize(recipe, models, run.providers, sittings, metric)
    gates = evaluate_gates(recipe, models, summary) if not failed else []
    return {
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "status": "failed" if failed else "ok",
        "recipe": recipe.model_dump(mode="json"),
        "recipe_path": str(getattr(recipe, "_source_path", "") or ""),
        "output_dir": str(run.output_dir),
        "environment": environment(available_providers()),
        "measurement": measurement_block(run),
        "models": models,
        "summary": summary,
        "gates": gates,
        "passed": (not failed) and all(g["passed"] for g in gates),
        "measure_only": not recipe.stages,
        "stages": run.stage_records,
        "seconds": round(getattr(run, "total_seconds", 0.0), 2),
    }
