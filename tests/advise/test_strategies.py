"""Search strategies: seeded and reproducible, starting points first, and the RL agent learns from its rewards."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from compressctl.advise.budget import Budget
from compressctl.advise.layers import Layer
from compressctl.advise.space import searched_runners, space_from
from compressctl.advise.strategies import make_strategy

LAYERS = [
    Layer("a", "conv", ["a"], [16, 3, 3, 3], macs_share=0.1, latency_share=0.1),
    Layer("b", "conv", ["b"], [64, 16, 3, 3], macs_share=0.6, latency_share=0.7, sensitivity=0.01),
    Layer("c", "linear", ["c"], [32, 64], macs_share=0.3, latency_share=0.2, sensitivity=0.2),
]


def prune_space():
    from compressctl.runners.prune import PruneConfig

    return space_from({"prune": PruneConfig}, {"layer_group": LAYERS}, False)


def figures_for(metric: float) -> dict:
    return {"metric": metric, "latency_ms": 1.0, "size_bytes": 1000, "speedup": 1.0, "accuracy_drop": 0.0}


def only_b_matters(values: dict) -> dict:
    """A synthetic proxy: the metric is layer b's pruning ratio, nothing else counts."""
    return figures_for(values["prune.layer_amounts:b"])


def proposals(name: str, seed: int, count: int, starting=()) -> list[dict]:
    space = prune_space()
    agent = make_strategy(name, space, seed=seed, limits={}, trials=count, starting=list(starting))
    found = []
    for _ in range(count):
        proposal = agent.ask()
        agent.tell(proposal, only_b_matters(proposal.values), {})
        found.append(proposal.values)
    return found


@pytest.mark.parametrize("name", ["rl", "random", "nsga2"])
def test_the_same_seed_proposes_the_same_candidates(name):
    first = proposals(name, seed=1, count=6)
    assert first == proposals(name, seed=1, count=6)
    assert first != proposals(name, seed=2, count=6)


@pytest.mark.parametrize("name", ["rl", "random", "nsga2"])
def test_starting_points_come_first(name):
    space = prune_space()
    point = space.fill({"prune.layer_amounts:a": 0.3, "prune.importance": "l2"})
    assert proposals(name, seed=0, count=2, starting=[point])[0] == point


def test_rl_policy_learns_the_only_action_that_matters():
    space = prune_space()
    agent = make_strategy("rl", space, seed=0, limits={}, trials=80, starting=[])
    before = agent.mean_action("prune.layer_amounts:b")
    rewards = []
    for _ in range(80):
        proposal = agent.ask()
        figures = only_b_matters(proposal.values)
        agent.tell(proposal, figures, {})
        rewards.append(figures["metric"])
    after = agent.mean_action("prune.layer_amounts:b")
    assert before == pytest.approx(0.4, abs=0.02)  # near-uniform over 0..0.8 at first
    assert after > before + 0.2
    assert sum(rewards[-20:]) > sum(rewards[:20])


def test_rl_reward_penalises_missed_limits():
    from compressctl.advise.agent import reward

    limits = Budget(min_speedup=5.0, max_accuracy_drop=0.01).limits()
    met = reward(dict(figures_for(0.95), speedup=5.0), {"min_speedup": 0.0, "max_accuracy_drop": -0.01}, limits)
    slow = reward(dict(figures_for(0.97), speedup=2.5), {"min_speedup": 2.5, "max_accuracy_drop": -0.01}, limits)
    assert met > slow  # 2 pt more accuracy does not buy half the speedup
    assert slow == pytest.approx(0.97 - 0.5 + 0.01 * 0.9163, abs=1e-3)


class FakeBench:
    """An ONNX-only workbench whose proxy metric rises with INT8 and k-means 8-bit (no model runs); its graph
    is not known (no baseline_path), so dynamic INT8 and int4 are offered too."""

    module = None
    baseline_path = None
    recipe = SimpleNamespace(stages=[])

    def evaluate(self, candidate: dict, folder) -> dict:
        kmeans = 0.8 + 0.01 * candidate.get("bits", 4)
        metric = {"int8": 0.9, "dynamic": 0.88, "int4": 0.7, "kmeans": kmeans}[candidate["quantize"]]
        return figures_for(metric)


@pytest.mark.parametrize("name", ["rl", "random", "nsga2"])
def test_run_search_records_the_strategys_proposals(tmp_path, name):
    from compressctl.advise.search import run_search

    def search(seed: int) -> list[dict]:
        return run_search(
            FakeBench(),
            Budget(max_accuracy_drop=0.5),
            tmp_path,
            trials=5,
            timeout_s=None,
            seed=seed,
            progress=lambda *a, **k: None,
            strategy=name,
        )

    records = search(3)
    assert [r["trial"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0]["params"]["quantize.mode"] == "static"  # the starting point
    assert records[0]["candidate"]["quantize"] == "int8" and records[0]["candidate"]["per_channel"] is True
    assert [r["params"] for r in records] == [r["params"] for r in search(3)]


def test_searched_runners_skip_torch_stages_for_onnx_models():
    assert set(searched_runners(set(), True)) >= {"quantize"}
    assert "prune" not in searched_runners(set(), True) and "prune" in searched_runners(set(), False)
