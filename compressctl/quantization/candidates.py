"""Building and judging quantized candidates, and variants of one where plain INT8 loses.

Where the fastest static candidate is not faithful, the stage does not ship
the loss: it quantizes the same format again with other calibrations
(percentile 99.99 and 99.999, then entropy: ``calibration.method: auto``),
then the most faithful of those with bias correction (``bias_correction:
auto``), judges each on the held-out samples like every
candidate, and puts the most faithful in the format's place for the choice. A variant is its
base's graph node for node (only scales and biases differ), so it keeps its
base's timing instead of a new sitting (``timing_of`` in the report). Variants
are tried only where one could change the choice, and until
``recover_seconds`` is spent.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compressctl.quantization.select import Candidate, choose

log = logging.getLogger("compressctl")

Score = dict[str, Any]


def build(source: Path, work: Path, config: Any, setting: dict[str, Any], reader: Any, judge: Any) -> Score:
    """One candidate quantized from ``source`` into ``work`` and judged; its score, or its error."""
    from compressctl.quantization.int8 import candidate_label, quantize_candidate

    label = candidate_label(setting)
    target = work / f"{label}.onnx"
    try:
        quantize_candidate(source, target, config, setting, reader)
        return {"candidate": label, **setting, "path": target, **judge(target)}
    except Exception as exc:
        log.warning("quantization candidate %s failed: %s", label, exc)
        return {"candidate": label, **setting, "error": f"{type(exc).__name__}: {exc}"}


def failures(scores: list[Score]) -> str:
    return "; ".join(f"{s['candidate']}: {s['error'][:160]}" for s in scores if "error" in s)


def setting_of(score: Score) -> dict[str, Any]:
    from compressctl.quantization.int8 import SETTING_KEYS

    return {k: score[k] for k in SETTING_KEYS if k in score}


def faithfulness_key(score: Score) -> tuple[float, float]:
    return score["judged_by"], score["cosine_mean"]


def within_tolerance(candidates: list[Candidate], tolerance: float) -> Callable[[Score], bool]:
    """The stage's rule without ``max_accuracy_drop``: within ``tolerance`` of the most faithful candidate."""
    best = max(c.fidelity for c in candidates)
    return lambda score: score["judged_by"] >= best - tolerance - 1e-12


def within_drop(judge: Any, metric: str, float_path: Path, max_drop: float) -> Callable[[Score], bool]:
    """The rule with ``max_accuracy_drop``: the metric on the validation split drops at most ``max_drop``."""
    from compressctl.quantization.fallback import validation_evaluator

    evaluate, _ = validation_evaluator(judge, judge.split.labels, metric)
    float_metric = functools.cache(lambda: evaluate(float_path))  # measured only when a candidate is judged
    return lambda score: float_metric() - evaluate(score["path"]) <= max_drop


def variant_settings(setting: dict[str, Any], config: Any) -> list[dict[str, Any]]:
    """The other calibrations of ``setting``'s format (``calibration.method: auto`` only)."""
    from compressctl.quantization.calibration import AUTO_TRIES

    if config.calibration.method != "auto":
        return []
    return [{**setting, "calibration": name} for name in AUTO_TRIES if name != setting.get("calibration")]


def recover(
    usable: list[Score],
    candidates: list[Candidate],
    graphs: dict[str, Path],
    config: Any,
    reader: Any,
    judge: Any,
    work: Path,
    faithful: Callable[[Score], bool],
) -> tuple[list[Score], list[Candidate]]:
    """Variants of the fastest static candidate when it is not ``faithful``.

    Returns the score of every variant tried (or skipped), and ``candidates``
    with the most faithful variant in its base's place, timed as its base.
    """
    static = {s["candidate"]: s for s in usable if s.get("mode") == "static"}
    timed = [c for c in candidates if c.name in static]
    if not timed:
        return [], candidates
    fastest = max(timed, key=lambda c: c.speedup)
    base = static[fastest.name]
    if not worth_recovering(fastest, candidates, config) or faithful(base):
        return [], candidates
    deadline = time.monotonic() + config.recover_seconds
    tried: list[Score] = []
    best = base

    def attempt(setting: dict[str, Any]) -> None:
        nonlocal best
        from compressctl.quantization.int8 import candidate_label

        if time.monotonic() > deadline:
            log.warning("quantize: recover_seconds spent; %s not tried", candidate_label(setting))
            tried.append(
                {"candidate": candidate_label(setting), **setting, "error": "not tried: recover_seconds spent"}
            )
            return
        score = {**build(graphs[setting["graph"]], work, config, setting, reader, judge), "timing_of": fastest.name}
        tried.append(score)
        if "error" not in score and faithfulness_key(score) > faithfulness_key(best):
            best = score

    log.info("quantize: %s is not faithful (%.4f); trying other calibrations", fastest.name, base["judged_by"])
    for setting in variant_settings(setting_of(base), config):
        attempt(setting)
    if config.bias_correction == "auto":
        attempt({**setting_of(best), "bias_correction": True})
    if best is base:
        return tried, candidates
    return tried, [c if c is not fastest else as_variant(c, best) for c in candidates]


def worth_recovering(fastest: Candidate, candidates: list[Candidate], config: Any) -> bool:
    """Whether a faithful variant could change the choice: its format is clearly faster than what would be kept.

    A variant has its base's speed, so when the base is not clearly faster than
    float and than the pick without it, no variant can win (``prefer: size``: always worth it).
    """
    if config.prefer == "size":
        return True
    pick, _ = choose(candidates, config.fidelity_tolerance, config.prefer)
    return pick is fastest or fastest.interval[0] > max(1.0, pick.interval[1])


def as_variant(base: Candidate, score: Score) -> Candidate:
    """The variant's figures with its base's timing (the same graph, node for node)."""
    from compressctl.onnxio import onnx_files

    size = sum(f.stat().st_size for f in onnx_files(Path(score["path"])))
    return dataclasses.replace(
        base, name=score["candidate"], fidelity=score["judged_by"], closeness=score["cosine_mean"], size_bytes=size
    )
