"""A sitting: several ONNX models timed together, so that their ratios mean something.

On a shared or virtual machine the speed drifts by tens of percent within
minutes. Timing model A for a while and then model B divides figures taken
under different conditions. A sitting instead:

* warms every model up, then runs them run by run in a balanced order
  (A B, B A, B A, A B, … for two models; rotations for more), so a slow drift
  hits every model alike;
* turns ONNX Runtime's intra-op spinning off, so a waiting thread pool does
  not steal the cores the model being timed needs;
* estimates each model's latency by its fastest run over many fresh sessions
  (``statistic="min"``; p10, p25 and the median are there too): contention
  on a shared machine only ever slows a run down, and it slows INT8 kernels
  far more than float ones, so the higher quantiles move with the
  neighbours while the minimum holds still. Each ratio gets a bootstrap
  interval over the session sets;
* repeats rounds until every ratio's 95 % interval is within the target
  (±3 % by default), or until its time budget runs out.

The statistics (:func:`balanced_order`, :func:`ratio_interval`) work on plain
arrays and are tested on synthetic timings; :class:`Sitting` runs real
sessions.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ORDER = "balanced run-by-run alternation"
STATISTICS = {"p10": 10.0, "p25": 25.0, "median": 50.0, "min": 0.0}
MIN_ROUNDS = 10  # a sitting's time budget never stops it before this many rounds


@dataclass(frozen=True)
class SittingSettings:
    warmup: int = 10  # untimed runs of each model before the first round
    min_rounds: int = 30  # rounds before the interval is first checked (the time budget may stop it sooner)
    max_rounds: int = 3000
    max_seconds: float = 60.0  # time budget of the timed rounds
    target: float = 0.03  # stop once every ratio's interval is within ±target of its estimate
    confidence: float = 0.95
    statistic: str = "min"  # the latency estimate a ratio divides (contention only ever slows a run down)
    spinning: bool = False  # ONNX Runtime intra-op spinning while alternating
    sessions: int = 6  # least fresh sessions per model: one session can land a few percent fast or slow
    rewarm: int = 1  # untimed runs right before each timed run: the caches hold this model, not the last one
    bootstrap: int = 500  # bootstrap resamples of the paired rounds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def balanced_order(count: int, round_index: int) -> list[int]:
    """The order of ``count`` models in one round.

    Rotations give every model every position; every second cycle runs
    reversed, so each model precedes and follows each other equally often.
    """
    rotation = round_index % count
    order = [(i + rotation) % count for i in range(count)]
    if (round_index // count) % 2 == 1:
        order.reverse()
    return order


def estimate(samples: np.ndarray, statistic: str = "p10", axis: int = -1) -> np.ndarray:
    return np.percentile(samples, STATISTICS[statistic], axis=axis)


def ratio_interval(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    statistic: str = "p10",
    confidence: float = 0.95,
    resamples: int = 500,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Speedup of ``candidate`` over ``reference`` (estimate, low, high).

    ``reference[i]`` and ``candidate[i]`` were timed in the same round: the
    bootstrap resamples rounds, keeping the pairs, so what both sides shared
    (a slow minute) stays shared. With ``groups`` (the session set each round
    ran in) it resamples whole groups instead: a fresh ONNX Runtime session
    can land a few percent faster or slower than the last, and the interval
    has to cover that too.
    """
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    point = float(estimate(reference, statistic) / estimate(candidate, statistic))
    rng = np.random.default_rng(seed)
    labels = np.unique(groups) if groups is not None else np.array([])
    if len(labels) >= 2:
        members = [np.flatnonzero(groups == label) for label in labels]
        ratios = np.empty(resamples)
        for b in range(resamples):
            picks = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
            ratios[b] = estimate(reference[picks], statistic) / estimate(candidate[picks], statistic)
    else:
        picks = rng.integers(0, len(reference), size=(resamples, len(reference)))
        ratios = estimate(reference[picks], statistic, axis=1) / estimate(candidate[picks], statistic, axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(ratios, [tail, 100.0 - tail])
    return point, float(low), float(high)


def relative_halfwidth(interval: tuple[float, float, float]) -> float:
    point, low, high = interval
    return (high - low) / 2.0 / point if point > 0 else math.inf


def latency_stats(samples_ms: np.ndarray, batch_size: int, statistic: str = "p10") -> dict[str, float]:
    from compressctl.measure.latency import summarize

    arr = np.asarray(samples_ms, dtype=np.float64)
    return {
        **summarize(list(arr), batch_size),
        "p10_ms": float(np.percentile(arr, 10)),
        "estimate_ms": float(estimate(arr, statistic)),
        "runs": len(arr),
    }


def noise_cv(samples_ms: np.ndarray) -> float:
    """Coefficient of variation of one model's runs: how much this machine wobbled."""
    arr = np.asarray(samples_ms, dtype=np.float64)
    return float(arr.std() / arr.mean()) if arr.mean() > 0 else 0.0


@dataclass
class SittingResult:
    """The runs of one sitting and what follows from them."""

    names: list[str]
    reference: str
    provider: str
    batch_size: int
    settings: SittingSettings
    samples_ms: dict[str, np.ndarray]
    providers_ran: dict[str, str]
    threads: int
    seconds: float
    stopped_by: str  # interval | time budget | max rounds
    phases: np.ndarray | None = None  # the session set each round ran in
    speedups: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.provider}@{self.batch_size}"

    @property
    def rounds(self) -> int:
        return len(next(iter(self.samples_ms.values())))

    def stats(self, name: str) -> dict[str, float]:
        return latency_stats(self.samples_ms[name], self.batch_size, self.settings.statistic)

    def latency_entry(self, name: str) -> dict[str, Any]:
        """The report's latency record of one model (report.json ``models[].latency[]``)."""
        ran = self.providers_ran[name]
        return {
            "provider": ran,
            "requested_provider": self.provider,
            "fallback": ran != self.provider,
            "batch_size": self.batch_size,
            "threads": self.threads,
            **self.stats(name),
            "warmup": self.settings.warmup,
            "sitting": self.key,
            "samples_ms": [round(float(t), 4) for t in self.samples_ms[name]],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.key,
            "models": self.names,
            "reference": self.reference,
            "order": ORDER,
            "spinning": self.settings.spinning,
            "statistic": self.settings.statistic,
            "rounds": self.rounds,
            "sessions": 1 if self.phases is None or not len(self.phases) else int(self.phases.max()) + 1,
            "rewarm": self.settings.rewarm,
            "seconds": round(self.seconds, 3),
            "stopped_by": self.stopped_by,
            "noise_cv": round(float(np.median([noise_cv(s) for s in self.samples_ms.values()])), 4),
            "speedup": {n: round(v[0], 4) for n, v in self.speedups.items()},
            "speedup_ci": {n: [round(v[1], 4), round(v[2], 4)] for n, v in self.speedups.items()},
        }

    def to_record(self) -> dict[str, Any]:
        """Everything needed to rebuild this result (the measurement cache keeps whole sittings)."""
        return {
            **self.to_dict(),
            "provider": self.provider,
            "batch_size": self.batch_size,
            "settings": self.settings.to_dict(),
            "providers_ran": self.providers_ran,
            "threads": self.threads,
            "samples_ms": {n: [round(float(t), 4) for t in s] for n, s in self.samples_ms.items()},
            "phases": [] if self.phases is None else [int(p) for p in self.phases],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SittingResult:
        result = cls(
            names=list(record["models"]),
            reference=record["reference"],
            provider=record["provider"],
            batch_size=int(record["batch_size"]),
            settings=SittingSettings(**record["settings"]),
            samples_ms={n: np.asarray(s) for n, s in record["samples_ms"].items()},
            providers_ran=dict(record["providers_ran"]),
            threads=int(record["threads"]),
            seconds=float(record["seconds"]),
            stopped_by=record["stopped_by"],
            phases=np.asarray(record.get("phases") or [], dtype=int),
        )
        result.speedups = {
            n: (float(record["speedup"][n]), *map(float, record["speedup_ci"][n])) for n in record["speedup"]
        }
        return result


def compute_speedups(
    samples_ms: dict[str, np.ndarray], reference: str, settings: SittingSettings, groups: np.ndarray | None = None
) -> dict[str, tuple[float, float, float]]:
    return {
        name: ratio_interval(
            samples_ms[reference],
            samples,
            statistic=settings.statistic,
            confidence=settings.confidence,
            resamples=settings.bootstrap,
            groups=groups,
        )
        for name, samples in samples_ms.items()
        if name != reference
    }


@dataclass
class Rounds:
    samples_ms: dict[str, np.ndarray]
    phases: np.ndarray  # the session set each round ran in
    stopped_by: str
    seconds: float


def run_rounds(runners: Any, settings: SittingSettings, reference: str, clock: Any = time.perf_counter) -> Rounds:
    """Time models in balanced rounds until the intervals are tight.

    ``runners`` maps a name to a zero-argument callable that runs the model
    once; or it is ``phase -> such a map``, called again every
    ``min_rounds / sessions`` rounds with a new phase number, so that each
    model is timed in fresh sessions again and again. Works on any callables:
    tests give it synthetic ones.
    """
    make = runners if callable(runners) else (lambda phase: runners)
    phase_rounds = max(MIN_ROUNDS, -(-settings.min_rounds // max(1, settings.sessions)))
    samples: dict[str, list[float]] = {}
    phases: list[int] = []
    current: dict[str, Any] = {}
    started = clock()
    check_every = phase_rounds
    stopped_by = "max rounds"
    for round_index in range(settings.max_rounds):
        phase = round_index // phase_rounds
        if round_index % phase_rounds == 0:
            # the previous phase's runners (and the sessions they hold) go before the next ones open:
            # both sets at once doubled the peak memory (YOLOv8n at 1024², batch 8: 4.2 GB)
            current, run = {}, None
            current = make(phase)
            for run in current.values():
                for _ in range(settings.warmup if round_index == 0 else min(settings.warmup, 2)):
                    run()
            if round_index == 0:
                samples, started = {n: [] for n in current}, clock()
        names = list(current)
        for position in balanced_order(len(names), round_index):
            run = current[names[position]]
            for _ in range(settings.rewarm):
                run()
            begin = clock()
            run()
            samples[names[position]].append((clock() - begin) * 1000.0)
        phases.append(phase)
        rounds = round_index + 1
        if rounds >= MIN_ROUNDS and clock() - started >= settings.max_seconds:
            stopped_by = "time budget"
            break
        if rounds < settings.min_rounds or rounds % check_every:
            continue
        arrays = {n: np.asarray(s) for n, s in samples.items()}
        speedups = compute_speedups(arrays, reference, settings, np.asarray(phases))
        if max((relative_halfwidth(v) for v in speedups.values()), default=0.0) <= settings.target:
            stopped_by = "interval"
            break
    return Rounds({n: np.asarray(s) for n, s in samples.items()}, np.asarray(phases), stopped_by, clock() - started)


class Sitting:
    """Named ONNX models on one provider, timed together at one batch size at a time.

    The first model is the reference every speedup divides by.
    """

    def __init__(
        self,
        models: dict[str, Path],
        *,
        provider: str = "CPUExecutionProvider",
        threads: int | None = None,
        settings: SittingSettings | None = None,
    ) -> None:
        from compressctl.measure.latency import default_threads

        if not models:
            raise ValueError("a sitting needs at least one model")
        self.settings = settings or SittingSettings()
        self.provider = provider
        self.threads = threads or default_threads()
        self.paths = {name: Path(path) for name, path in models.items()}
        self.sessions: dict[str, Any] = {}
        self.open_sessions()

    def open_sessions(self) -> None:
        """A fresh session of every model (the previous ones are closed first, to bound memory)."""
        from compressctl.measure.latency import make_session
        from compressctl.memory import trim

        self.sessions = {}
        trim()  # the previous sessions' memory goes back before the next ones take theirs
        self.sessions = {
            name: make_session(path, self.provider, self.threads, spinning=self.settings.spinning)
            for name, path in self.paths.items()
        }

    @property
    def reference(self) -> str:
        return next(iter(self.paths))

    def time(self, feeds: dict[str, dict[str, np.ndarray]], batch_size: int) -> SittingResult:
        """Time every model on its own feeds (``feeds[name]``); ratios against the first model."""

        def runner(session: Any, feed: dict[str, np.ndarray]) -> Any:
            return lambda: session.run(None, feed)

        def runners(phase: int) -> dict[str, Any]:
            if phase > 0:
                self.open_sessions()
            return {name: runner(self.sessions[name], feeds[name]) for name in self.paths}

        rounds = run_rounds(runners, self.settings, self.reference)
        samples, stopped_by, seconds = rounds.samples_ms, rounds.stopped_by, rounds.seconds
        result = SittingResult(
            names=list(self.paths),
            reference=self.reference,
            provider=self.provider,
            batch_size=batch_size,
            settings=self.settings,
            samples_ms=samples,
            providers_ran={n: s.get_providers()[0] for n, s in self.sessions.items()},
            threads=self.threads,
            seconds=seconds,
            stopped_by=stopped_by,
            phases=rounds.phases,
        )
        result.speedups = compute_speedups(samples, self.reference, self.settings, rounds.phases)
        return result


def time_together(
    models: dict[str, Path],
    feeds_for: Any,
    *,
    provider: str,
    batch_sizes: list[int],
    threads: int | None = None,
    settings: SittingSettings | None = None,
) -> list[SittingResult]:
    """One sitting per batch size. ``feeds_for(name, session, batch)`` makes a model's inputs."""
    sitting = Sitting(models, provider=provider, threads=threads, settings=settings)
    results = []
    for batch in batch_sizes:
        feeds = {name: feeds_for(name, sitting.sessions[name], batch) for name in models}
        results.append(sitting.time(feeds, batch))
    return results
