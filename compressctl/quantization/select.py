"""Choosing among quantized candidates, float included, by measurement.

Every candidate (and the float model) is judged on held-out samples by a
faithfulness metric that fits the output (see ``measure.metrics``) and timed
against float in one sitting. The rule:

1. *faithful*: within ``tolerance`` of the most faithful (float itself is);
2. ``prefer: speed``: the fastest faithful candidate; candidates whose
   speedup intervals overlap it are a tie, broken by the more faithful, then
   the smaller. Float is in every tie it takes part in and is the most
   faithful, so a quantized model that is not clearly faster than float is
   never shipped;
3. ``prefer: size``: the smallest faithful candidate (then the faster).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("compressctl")

FLOAT = "float"
FUSED_FLOAT = "float_fused"  # the float model after graph fusion (see compressctl.fusion)


@dataclass
class Candidate:
    name: str
    fidelity: float  # the judging faithfulness figure, higher is better (agreement or worst cosine)
    closeness: float  # a finer figure for ties (mean cosine)
    speedup: float  # over float, from the sitting
    interval: tuple[float, float]
    size_bytes: int

    @property
    def is_float(self) -> bool:
        return self.name == FLOAT

    @property
    def is_quantized(self) -> bool:
        return self.name not in (FLOAT, FUSED_FLOAT)


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def choose(candidates: list[Candidate], tolerance: float, prefer: str = "speed") -> tuple[Candidate, str]:
    """The candidate to keep and one sentence saying why."""
    best = max(c.fidelity for c in candidates)
    faithful = [c for c in candidates if c.fidelity >= best - tolerance - 1e-12]
    if prefer == "size":
        pick = min(faithful, key=lambda c: (c.size_bytes, -c.speedup))
        return pick, f"smallest of {len(faithful)} candidates within {tolerance:g} of the most faithful"
    fastest = max(faithful, key=lambda c: c.speedup)
    tied = [c for c in faithful if overlaps(c.interval, fastest.interval)]
    pick = max(tied, key=lambda c: (c.fidelity, c.closeness, -c.size_bytes))
    if len(tied) == 1:
        return pick, f"fastest of {len(faithful)} candidates within {tolerance:g} of the most faithful"
    others = ", ".join(c.name for c in tied if c is not pick)
    return pick, f"as fast as {others} within the timing interval, and more faithful or smaller"


def judged_by(judge: Any) -> str:
    """The faithfulness figure candidates were compared by, by its own name."""
    if judge.figure != "fidelity":
        return judge.figure
    return "agreement" if judge.kind == "classes" else "cosine_min"


def is_quantized(score: dict[str, Any]) -> bool:
    return score["candidate"] not in (FLOAT, FUSED_FLOAT)


def retimed_after_repair(usable: list[dict[str, Any]], pick: str, repaired: dict[str, Any]) -> list[dict[str, Any]]:
    """What a repaired candidate is timed against: the float models and the faithful pick it would
    replace (a repair that is not faster than that pick must not win by its absence), not the other
    quantized candidates, whose unrepaired forms failed or lost."""
    kept = [s for s in usable if not is_quantized(s) or s["candidate"] == pick]
    return [*kept, repaired]


def repairable(candidates: list[Candidate], pick: Candidate, tolerance: float) -> Candidate | None:
    """The fastest quantized candidate when it is clearly faster than the pick but not faithful, else None."""
    best = max(c.fidelity for c in candidates)
    quantized = [c for c in candidates if c.is_quantized and c.interval[0] > max(1.0, pick.interval[1])]
    if not quantized:
        return None
    fastest = max(quantized, key=lambda c: c.speedup)
    return fastest if fastest.fidelity < best - tolerance else None


def no_gain_line(candidates: list[Candidate], at: str, kept: str = FLOAT) -> str:
    """The one line a user reads when float (or the fused float model) is kept."""
    model = "the fused float model" if kept == FUSED_FLOAT else "the float model"
    quantized = [c for c in candidates if c.is_quantized]
    if not quantized:
        return f"quantize: every candidate failed; keeping {model}"
    best = max(quantized, key=lambda c: c.speedup)
    low, high = best.interval
    return (
        f"quantize: no quantized candidate is faithful and faster than float at {at} "
        f"(best {best.name}: {best.speedup:.2f}× [{low:.2f}–{high:.2f}], fidelity {best.fidelity:.4f}); "
        f"keeping {model}"
    )


def candidate_table(candidates: list[Candidate]) -> list[dict[str, Any]]:
    return [
        {
            "candidate": c.name,
            "fidelity": round(c.fidelity, 6),
            "cosine_mean": round(c.closeness, 6),
            "speedup": round(c.speedup, 4),
            "speedup_ci": [round(c.interval[0], 4), round(c.interval[1], 4)],
            "size_bytes": c.size_bytes,
        }
        for c in candidates
    ]


CHECK_OUTPUT_BUDGET = 256 * 1024 * 1024  # bytes of float outputs kept to judge candidates against


class Judge:
    """Faithfulness of models to the float model on held-out samples, by the metric that fits the output."""

    def __init__(
        self,
        float_path: Any,
        split: Any,
        *,
        batch_size: int,
        provider: str,
        threads: int,
        declared_kind: str = "auto",
        figure: str = "fidelity",
        max_samples: int = 256,
    ) -> None:
        from compressctl.measure.latency import make_session
        from compressctl.measure.metrics import output_kind, predict_all

        self.batch_size, self.provider, self.threads, self.figure = batch_size, provider, threads, figure
        session = make_session(float_path, provider, threads)
        first = predict_all(session, split.head(batch_size), batch_size)
        per_sample = max(1, sum(o[:1].nbytes for o in first))
        self.split = split.head(max(1, min(max_samples, CHECK_OUTPUT_BUDGET // per_sample)))
        self.references = predict_all(session, self.split, batch_size)
        self.names = [o.name for o in session.get_outputs()]
        # The first output is the one the recipe's output_kind describes; the others are told by their own shape.
        self.kinds = [
            output_kind(r, self.split.labels if i == 0 else None, name, declared_kind if i == 0 else "auto")
            for i, (r, name) in enumerate(zip(self.references, self.names, strict=True))
        ]
        self.reference, self.kind = self.references[0], self.kinds[0]

    def outputs(self, path: Any) -> Any:
        """The first output over the judging samples (what accuracy is computed on)."""
        return self.all_outputs(path)[0]

    def all_outputs(self, path: Any) -> list[Any]:
        from compressctl.measure.latency import make_session
        from compressctl.measure.metrics import predict_all

        return predict_all(make_session(path, self.provider, self.threads), self.split, self.batch_size)

    def __call__(self, path: Any) -> dict[str, float]:
        """The first output's figures; ``judged_by`` is the worst output's (every output is judged)."""
        from compressctl.measure.metrics import faithfulness

        each = [
            faithfulness(out, ref, kind)
            for out, ref, kind in zip(self.all_outputs(path), self.references, self.kinds, strict=True)
        ]
        found = dict(each[0])
        figures = [f[self.figure] if self.figure in f else f["fidelity"] for f in each]
        found["judged_by"] = min(figures)
        if len(each) > 1:
            found["outputs"] = {name: round(figure, 6) for name, figure in zip(self.names, figures, strict=True)}
        return found


SELECT_MEMORY = 1 << 30  # bytes of sessions one selection sitting may hold; more are timed in several, each with float


def session_footprint(path: Path, split: Any, batch: int, provider: str, threads: int) -> int:
    """Bytes one session of ``path`` adds to this process after two runs at ``batch`` (0 where RSS is unknown)."""
    from compressctl.measure.latency import batch_feeds, make_session
    from compressctl.memory import resident_bytes, trim

    trim()
    before = resident_bytes()
    if before is None:
        return 0
    session = make_session(path, provider, threads, spinning=False)
    feeds = batch_feeds(session.get_inputs(), split, batch)
    for _ in range(2):
        session.run(None, feeds)
    after = resident_bytes() or before
    del session, feeds
    trim()
    return max(0, after - before)


def sitting_groups(names: list[str], footprint: int, budget: int = SELECT_MEMORY) -> list[list[str]]:
    """``names`` (float not among them) in groups whose sessions fit ``budget`` beside float's; one group
    when they all fit. ``footprint`` is float's session: quantized ones are no larger."""
    per = len(names) if footprint * (len(names) + 1) <= budget else max(1, budget // max(footprint, 1) - 1)
    return [names[i : i + per] for i in range(0, len(names), per)] or [[]]


class Timing:
    """The sitting (or, for models too large to hold every session at once, the sittings) of a selection."""

    def __init__(self, results: list[Any], footprint: int) -> None:
        self.results, self.footprint = results, footprint
        self.speedups = {name: v for result in results for name, v in result.speedups.items()}

    @property
    def key(self) -> str:
        return self.results[0].key

    def to_dict(self) -> dict[str, Any]:
        if len(self.results) == 1:
            return self.results[0].to_dict()
        groups = [result.to_dict() for result in self.results]
        return {
            **groups[0],
            "models": [groups[0]["models"][0], *(m for g in groups for m in g["models"][1:])],
            "seconds": round(sum(g["seconds"] for g in groups), 3),
            "speedup": {k: v for g in groups for k, v in g["speedup"].items()},
            "speedup_ci": {k: v for g in groups for k, v in g["speedup_ci"].items()},
            "memory": f"sessions of {self.footprint / 2**20:.0f} MB each: {len(groups)} sittings, float in each",
            "groups": groups,
        }


def time_candidates(
    usable: list[dict[str, Any]], judge: Any, batch: int, config: Any, provider: str, spec: Any
) -> tuple[list[Candidate], Timing]:
    """Float and every candidate timed together in one sitting (in several, each with float, when their
    sessions would hold more than ``SELECT_MEMORY``); returns the candidates and the timing."""
    from compressctl.measure.latency import batch_feeds, default_threads
    from compressctl.measure.sitting import Sitting, SittingSettings
    from compressctl.onnxio import onnx_files

    models = {s["candidate"]: Path(s["path"]) for s in usable}
    threads = spec.threads or default_threads()
    reference, *others = models
    footprint = session_footprint(models[reference], judge.split, batch, provider, threads)
    groups = sitting_groups(others, footprint)
    results = []
    for group in groups:
        settings = SittingSettings(
            warmup=min(spec.warmup, 5),
            min_rounds=config.select_repeat,
            max_rounds=50 * config.select_repeat,
            max_seconds=config.select_seconds / len(groups),
            target=spec.interval,
            statistic=spec.statistic,
        )
        sitting = Sitting(
            {n: models[n] for n in (reference, *group)}, provider=provider, threads=threads, settings=settings
        )
        feeds = {n: batch_feeds(session.get_inputs(), judge.split, batch) for n, session in sitting.sessions.items()}
        results.append(sitting.time(feeds, batch))
        del sitting, feeds
    timing = Timing(results, footprint)
    candidates = []
    for score in usable:
        name = score["candidate"]
        point, low, high = timing.speedups.get(name, (1.0, 1.0, 1.0))
        size = sum(f.stat().st_size for f in onnx_files(Path(score["path"])))
        candidates.append(Candidate(name, score["judged_by"], score["cosine_mean"], point, (low, high), size))
        log.info(
            "candidate %s: %.2f× [%.2f–%.2f] over float at batch %d, %s %.4f",
            name,
            point,
            low,
            high,
            batch,
            judge.figure,
            score["judged_by"],
        )
    return candidates, timing
