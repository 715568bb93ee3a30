"""The sitting: scheduling and statistics on synthetic timings, then real ONNX Runtime sessions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compressctl.measure.sitting import (
    Sitting,
    SittingResult,
    SittingSettings,
    balanced_order,
    ratio_interval,
    relative_halfwidth,
    run_rounds,
    time_together,
)


class DriftingMachine:
    """A virtual clock: a run of ``work`` ms takes ``work × slowdown(now)`` plus noise.

    The machine slows down steadily, as a shared VM does when a neighbour wakes up.
    """

    def __init__(self, drift_per_s: float = 0.5, noise: float = 0.0, seed: int = 0) -> None:
        self.now = 0.0
        self.drift_per_s = drift_per_s
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    def clock(self) -> float:
        return self.now

    def runner(self, work_ms: float):
        def run() -> None:
            slowdown = 1.0 + self.drift_per_s * self.now
            jitter = abs(self.rng.normal(0.0, self.noise)) if self.noise else 0.0
            self.now += work_ms * slowdown * (1.0 + jitter) / 1000.0

        return run


def sequential_speedup(machine: DriftingMachine, slow_ms: float, fast_ms: float, runs: int) -> float:
    """Today's way: every run of one model, then every run of the other."""
    times = {}
    for name, work in (("slow", slow_ms), ("fast", fast_ms)):
        run, samples = machine.runner(work), []
        for _ in range(runs):
            start = machine.clock()
            run()
            samples.append(machine.clock() - start)
        times[name] = np.percentile(samples, 10)
    return times["slow"] / times["fast"]


def test_two_models_alternate_a_b_b_a() -> None:
    assert [balanced_order(2, r) for r in range(4)] == [[0, 1], [1, 0], [1, 0], [0, 1]]


def test_every_model_takes_every_position_equally() -> None:
    orders = [balanced_order(3, r) for r in range(6)]
    assert all(sorted(order) == [0, 1, 2] for order in orders)
    for model in range(3):
        assert Counter(order.index(model) for order in orders) == {0: 2, 1: 2, 2: 2}
    # each model runs right after each other model equally often
    follows = Counter((o[i], o[i + 1]) for o in orders for i in range(2))
    assert len(set(follows.values())) == 1 and len(follows) == 6


def test_a_slow_drift_biases_sequential_timing_but_not_alternation() -> None:
    true_speedup = 10.0 / 4.0
    biased = sequential_speedup(DriftingMachine(drift_per_s=0.5), 10.0, 4.0, runs=200)
    assert biased < true_speedup * 0.85  # the fast model ran later, on a slower machine

    machine = DriftingMachine(drift_per_s=0.5)
    runners = {"slow": machine.runner(10.0), "fast": machine.runner(4.0)}
    settings = SittingSettings(warmup=0, min_rounds=200, max_rounds=200, target=0.0)
    samples = run_rounds(runners, settings, "slow", clock=machine.clock).samples_ms
    point, low, high = ratio_interval(samples["slow"], samples["fast"])
    assert point == pytest.approx(true_speedup, rel=0.02)
    assert low <= true_speedup * 1.01 and high >= true_speedup * 0.99


def test_interval_holds_the_true_ratio_and_narrows_with_rounds() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for rounds in (30, 300):
        shared = rng.gamma(2.0, 0.15, rounds)  # the machine's mood, shared by both runs of a round
        slow = 6.0 * (1 + shared + rng.gamma(2.0, 0.05, rounds))
        fast = 2.0 * (1 + shared + rng.gamma(2.0, 0.05, rounds))
        interval = ratio_interval(slow, fast)
        assert interval[1] <= 3.0 * 1.03 and interval[2] >= 3.0 * 0.97
        widths.append(relative_halfwidth(interval))
    assert widths[1] < widths[0]


def test_rounds_stop_once_the_interval_is_tight() -> None:
    machine = DriftingMachine(drift_per_s=0.0, noise=0.02)
    runners = {"a": machine.runner(5.0), "b": machine.runner(2.5)}
    settings = SittingSettings(warmup=2, min_rounds=30, max_rounds=5000, target=0.03)
    rounds = run_rounds(runners, settings, "a", clock=machine.clock)
    samples, stopped_by = rounds.samples_ms, rounds.stopped_by
    assert stopped_by == "interval"
    assert len(samples["a"]) == len(samples["b"]) < 5000


def test_rounds_stop_at_the_time_budget_on_a_noisy_machine() -> None:
    machine = DriftingMachine(drift_per_s=0.0, noise=3.0)
    runners = {"a": machine.runner(5.0), "b": machine.runner(2.5)}
    settings = SittingSettings(warmup=0, min_rounds=30, max_rounds=100_000, max_seconds=2.0, target=0.001)
    rounds = run_rounds(runners, settings, "a", clock=machine.clock)
    samples, stopped_by, seconds = rounds.samples_ms, rounds.stopped_by, rounds.seconds
    assert stopped_by == "time budget"
    assert 2.0 <= seconds < 2.5 and len(samples["a"]) < 100_000


# -- real ONNX Runtime -------------------------------------------------------------------------------
def matmul_chain(path: Path, width: int, depth: int = 4) -> Path:
    """x[batch, width] through ``depth`` MatMuls: work grows with width²."""
    rng = np.random.default_rng(width)
    nodes, inits, name = [], [], "x"
    for i in range(depth):
        inits.append(numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) * 0.1, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [name, f"w{i}"], [f"h{i}"]))
        name = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_real_sitting_times_models_together(tmp_path: Path) -> None:
    big = matmul_chain(tmp_path / "big.onnx", 512)
    small = matmul_chain(tmp_path / "small.onnx", 128)
    settings = SittingSettings(warmup=2, min_rounds=20, max_rounds=400, max_seconds=10)

    def feeds(name, session, batch):
        width = session.get_inputs()[0].shape[1]
        return {"x": np.ones((batch, width), np.float32)}

    results = time_together(
        {"big": big, "small": small}, feeds, provider="CPUExecutionProvider", batch_sizes=[1, 16], settings=settings
    )
    assert [r.key for r in results] == ["CPUExecutionProvider@1", "CPUExecutionProvider@16"]
    for result in results:
        assert result.rounds >= 20 and len(result.samples_ms["big"]) == len(result.samples_ms["small"])
        point, low, high = result.speedups["small"]
        assert low <= point <= high and point > 1.0  # 16× less work is faster, whatever the noise
        entry = result.latency_entry("small")
        assert entry["provider"] == "CPUExecutionProvider" and not entry["fallback"]
        assert entry["min_ms"] <= entry["p10_ms"] <= entry["p50_ms"] <= entry["p90_ms"]
        summary = result.to_dict()
        assert summary["spinning"] is False and summary["order"].startswith("balanced")
        assert summary["speedup_ci"]["small"] == [round(low, 4), round(high, 4)]
        assert SittingResult.from_record(result.to_record()).speedups["small"] == pytest.approx(
            (round(point, 4), round(low, 4), round(high, 4))
        )


def test_sessions_turn_spinning_off(tmp_path: Path) -> None:
    sitting = Sitting({"m": matmul_chain(tmp_path / "m.onnx", 64)}, threads=2)
    config = sitting.sessions["m"].get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert config == "0"


def test_fresh_sessions_each_phase_and_their_luck_widens_the_interval() -> None:
    """A session can land a few percent fast or slow; grouping rounds by session set keeps the interval honest."""
    machine = DriftingMachine(drift_per_s=0.0, noise=0.01)
    luck = np.random.default_rng(3).uniform(0.9, 1.1, 100)
    made: list[int] = []

    def runners(phase: int) -> dict:
        made.append(phase)
        return {"a": machine.runner(6.0), "b": machine.runner(2.0 * luck[phase])}

    settings = SittingSettings(warmup=1, min_rounds=60, max_rounds=60, sessions=6, target=0.0)
    rounds = run_rounds(runners, settings, "a", clock=machine.clock)
    assert made == [0, 1, 2, 3, 4, 5] and list(np.unique(rounds.phases)) == made
    grouped = ratio_interval(rounds.samples_ms["a"], rounds.samples_ms["b"], groups=rounds.phases)
    pooled = ratio_interval(rounds.samples_ms["a"], rounds.samples_ms["b"])
    assert relative_halfwidth(grouped) > 2 * relative_halfwidth(pooled)


def test_a_phase_lets_go_of_its_sessions_before_the_next_phase_opens_its_own() -> None:
    """Two session sets alive at once doubled the peak memory (YOLOv8n at 1024², batch 8: 4.2 GB)."""
    import weakref

    machine = DriftingMachine(drift_per_s=0.0)
    alive: list[int] = []
    held: list[weakref.ref] = []

    class Session:  # stands for an ONNX Runtime session: its runner closes over it
        def __init__(self, work_ms: float) -> None:
            self.run = machine.runner(work_ms)

    def runners(phase: int) -> dict:
        alive.append(sum(ref() is not None for ref in held))  # earlier phases' sessions still reachable
        sessions = {"a": Session(6.0), "b": Session(2.0)}
        held.extend(weakref.ref(s) for s in sessions.values())
        return {name: (lambda s=session: s.run()) for name, session in sessions.items()}

    settings = SittingSettings(warmup=1, min_rounds=30, max_rounds=30, sessions=3, target=0.0)
    run_rounds(runners, settings, "a", clock=machine.clock)
    assert alive == [0, 0, 0]
