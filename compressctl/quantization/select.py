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

from dataclasses import dataclass
from typing import Any

FLOAT = "float"


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


def no_gain_line(candidates: list[Candidate], at: str) -> str:
    """The one line a user reads when float is kept."""
    quantized = [c for c in candidates if not c.is_float]
    if not quantized:
        return "quantize: every candidate failed; keeping the float model"
    best = max(quantized, key=lambda c: c.speedup)
    low, high = best.interval
    return (
        f"quantize: no quantized candidate is faithful and faster than float at {at} "
        f"(best {best.name}: {best.speedup:.2f}× [{low:.2f}–{high:.2f}], fidelity {best.fidelity:.4f}); "
        "keeping the float model"
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
        from compressctl.measure.metrics import output_kind, predict

        self.batch_size, self.provider, self.threads, self.figure = batch_size, provider, threads, figure
        session = make_session(float_path, provider, threads)
        first = predict(session, split.head(batch_size), batch_size)
        per_sample = max(1, first[:1].nbytes)
        self.split = split.head(max(1, min(max_samples, CHECK_OUTPUT_BUDGET // per_sample)))
        self.reference = predict(session, self.split, batch_size)
        self.kind = output_kind(self.reference, self.split.labels, session.get_outputs()[0].name, declared_kind)

    def outputs(self, path: Any) -> Any:
        from compressctl.measure.latency import make_session
        from compressctl.measure.metrics import predict

        return predict(make_session(path, self.provider, self.threads), self.split, self.batch_size)

    def __call__(self, path: Any) -> dict[str, float]:
        from compressctl.measure.metrics import faithfulness

        found = faithfulness(self.outputs(path), self.reference, self.kind)
        found["judged_by"] = found[self.figure] if self.figure in found else found["fidelity"]
        return found
