"""Regression check between two report.json files: metric, size and latency of the final models."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compressctl.errors import UserError

SUPPORTED_SCHEMA = 1


@dataclass
class Limits:
    max_accuracy_drop: float = 0.005  # metric points as a fraction (0.005 = 0.5 pt)
    max_latency_regression: float = 0.20  # new p50 may be at most 20 % slower
    max_size_increase: float | None = None  # fraction; None: size is reported, not gated


@dataclass
class Check:
    name: str  # "accuracy", "size", "latency CPUExecutionProvider@32"
    old: float | None
    new: float | None
    change: str  # human-readable difference
    limit: str
    status: str  # ok | regressed | improved | missing

    @property
    def regressed(self) -> bool:
        return self.status == "regressed"


@dataclass
class Comparison:
    old_name: str
    new_name: str
    checks: list[Check]

    @property
    def regressed(self) -> bool:
        return any(c.regressed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "old": self.old_name,
            "new": self.new_name,
            "regressed": self.regressed,
            "checks": [asdict(c) for c in self.checks],
        }


def load_report(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable report.json ({exc})") from None
    if not isinstance(report, dict) or "models" not in report:
        raise UserError(f"{path}: not a compressctl report.json (no 'models')")
    if report.get("schema_version") != SUPPORTED_SCHEMA:
        raise UserError(
            f"{path}: report schema_version {report.get('schema_version')} (this compressctl reads {SUPPORTED_SCHEMA})"
        )
    if final_model(report) is None:
        raise UserError(f"{path}: the report has no final model (the run failed before finishing)")
    return report


def final_model(report: dict[str, Any]) -> dict[str, Any] | None:
    return next((m for m in report.get("models", []) if m.get("name") == "final"), None)


def metric_name(report: dict[str, Any]) -> str:
    return report.get("summary", {}).get("metric") or report.get("recipe", {}).get("evaluate", {}).get(
        "metric", "accuracy"
    )


def latencies(model: dict[str, Any]) -> dict[str, float]:
    return {f"{i['requested_provider']}@{i['batch_size']}": i["p50_ms"] for i in model.get("latency", [])}


def compare_reports(old: dict[str, Any], new: dict[str, Any], limits: Limits | None = None) -> Comparison:
    limits = limits or Limits()
    old_final, new_final = final_model(old), final_model(new)
    assert old_final is not None and new_final is not None
    checks = [_metric_check(old, new, old_final, new_final, limits), _size_check(old_final, new_final, limits)]
    old_lat, new_lat = latencies(old_final), latencies(new_final)
    for key in list(old_lat) + [k for k in new_lat if k not in old_lat]:
        checks.append(_latency_check(key, old_lat.get(key), new_lat.get(key), limits))
    return Comparison(old.get("recipe", {}).get("name", "old"), new.get("recipe", {}).get("name", "new"), checks)


def remeasure(old: dict[str, Any], new: dict[str, Any], comparison: Comparison, limits: Limits) -> Comparison:
    """Replace the stored latency checks by both final models timed again, together, in one sitting.

    Reports from different days (or machines) are not comparable by their
    stored figures: the machine's speed drifts. The sitting runs at every
    provider × batch size the new report measured.
    """
    from compressctl.measure.sitting import time_together

    paths = {}
    for label, report in (("old", old), ("new", new)):
        path = Path(final_model(report)["path"])
        if not path.is_file():
            raise UserError(f"--remeasure: the {label} report's final model {path} is not there any more")
        paths[label] = path
    keys = list(latencies(final_model(new)))
    if not keys:
        raise UserError("--remeasure: the new report has no latency to compare")
    checks = [c for c in comparison.checks if not c.name.startswith("p50_ms ")]
    pool = _feeds_pool(new)
    for provider in dict.fromkeys(k.partition("@")[0] for k in keys):
        batches = [int(k.partition("@")[2]) for k in keys if k.startswith(provider + "@")]
        for sitting in time_together(paths, pool, provider=provider, batch_sizes=batches):
            old_ms, new_ms = (sitting.stats(n)["estimate_ms"] for n in ("old", "new"))
            _point, low, high = sitting.speedups["new"]
            check = _latency_check(sitting.key, old_ms, new_ms, limits)
            check.name = f"latency {sitting.key} (remeasured)"
            check.change += f" [{(1 / high - 1) * 100:+.1f} to {(1 / low - 1) * 100:+.1f} %]"
            checks.append(check)
    return Comparison(comparison.old_name, comparison.new_name, checks)


def _feeds_pool(report: dict[str, Any]) -> Any:
    """Inputs for a remeasurement: generated from each session's inputs and the recipe's dims."""
    from compressctl.inputs import session_feeds

    dims = report.get("recipe", {}).get("model", {}).get("dims") or {}

    def feeds(name: str, session: Any, batch: int) -> Any:
        return session_feeds(session, batch, dims)

    return feeds


def _metric_check(old: dict, new: dict, old_final: dict, new_final: dict, limits: Limits) -> Check:
    metric = metric_name(new)
    before, after = old_final.get("metrics", {}).get(metric), new_final.get("metrics", {}).get(metric)
    limit = f"drop ≤ {limits.max_accuracy_drop * 100:.2f} pt"
    if before is None or after is None:
        return Check(metric, before, after, "–", limit, "missing")
    drop = before - after
    status = "regressed" if drop > limits.max_accuracy_drop + 1e-12 else ("improved" if drop < 0 else "ok")
    return Check(metric, before, after, f"{(after - before) * 100:+.2f} pt", limit, status)


def _size_check(old_final: dict, new_final: dict, limits: Limits) -> Check:
    before, after = old_final.get("size_bytes"), new_final.get("size_bytes")
    limit = "–" if limits.max_size_increase is None else f"≤ {limits.max_size_increase * 100:+.0f} %"
    if not before or after is None:
        return Check("size_bytes", before, after, "–", limit, "missing")
    growth = after / before - 1
    regressed = limits.max_size_increase is not None and growth > limits.max_size_increase
    status = "regressed" if regressed else ("improved" if growth < 0 else "ok")
    return Check("size_bytes", before, after, f"{growth * 100:+.1f} %", limit, status)


def _latency_check(key: str, before: float | None, after: float | None, limits: Limits) -> Check:
    limit = f"p50 ≤ {limits.max_latency_regression * 100:+.0f} %"
    if not before or after is None:
        return Check(f"p50_ms {key}", before, after, "–", limit, "missing")
    growth = after / before - 1
    status = "regressed" if growth > limits.max_latency_regression else ("improved" if growth < 0 else "ok")
    return Check(f"p50_ms {key}", before, after, f"{growth * 100:+.1f} %", limit, status)


# -- output --------------------------------------------------------------------------------------
def _value(check: Check, value: float | None) -> str:
    if value is None:
        return "–"
    if check.name == "size_bytes":
        from compressctl.report.tables import human_bytes

        return human_bytes(value)
    return f"{value:.4f}" if not check.name.startswith(("p50_ms", "latency")) else f"{value:.3f} ms"


HEADER = ["check", "old", "new", "change", "limit", "result"]


def table_rows(comparison: Comparison) -> list[list[str]]:
    return [
        [c.name, _value(c, c.old), _value(c, c.new), c.change, c.limit, c.status.upper() if c.regressed else c.status]
        for c in comparison.checks
    ]


def render_markdown(comparison: Comparison) -> str:
    from compressctl.report.write import markdown_table

    verdict = "❌ regression beyond the limits" if comparison.regressed else "✅ no regression beyond the limits"
    title = (
        comparison.new_name
        if comparison.old_name == comparison.new_name
        else f"{comparison.old_name} → {comparison.new_name}"
    )
    return "\n".join(
        [f"### compressctl compare: {title}", "", verdict, "", markdown_table(HEADER, table_rows(comparison)), ""]
    )


def junit_xml(comparison: Comparison) -> str:
    """One test case per check; a regression is a <failure>, a missing figure is <skipped>."""
    failures = sum(c.regressed for c in comparison.checks)
    skipped = sum(c.status == "missing" for c in comparison.checks)
    suite = ET.Element(
        "testsuite",
        name=f"compressctl compare {comparison.new_name}",
        tests=str(len(comparison.checks)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
    )
    for check in comparison.checks:
        case = ET.SubElement(suite, "testcase", classname=f"compressctl.compare.{comparison.new_name}", name=check.name)
        detail = f"old {_value(check, check.old)}, new {_value(check, check.new)}, change {check.change}, limit {check.limit}"
        if check.regressed:
            ET.SubElement(
                case, "failure", message=f"{check.name} regressed: {check.change} (limit {check.limit})"
            ).text = detail
        elif check.status == "missing":
            ET.SubElement(case, "skipped", message=f"{check.name} is missing from one report")
        else:
            ET.SubElement(case, "system-out").text = detail
    root = ET.Element("testsuites", tests=str(len(comparison.checks)), failures=str(failures))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
