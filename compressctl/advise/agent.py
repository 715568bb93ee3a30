"""``--strategy rl``: an AMC-style agent (He et al. 2018), in plain torch.

A small MLP reads each layer's embedding (layer type, log shape, share of MACs,
share of latency, sensitivity, bound) and emits one action per layer: a pruning
ratio from the dimension's grid for a layer group, float or INT8 for a node. The
stage-wide choices (channel ranking, number format, low-rank…) are learnt logits
of their own. One episode is one candidate, scored by the same proxy evaluation
as the other strategies. Its reward is the proxy's metric, less ``PENALTY`` per
relative unit by which it misses a limit (each capped at 1), plus a hundredth of
its log speedup to break ties towards the faster. AMC clips actions to meet its
FLOPs budget; a penalty lets the accuracy and latency limits count alike.
REINFORCE with a moving-average baseline (advantages scaled by the rewards'
spread) updates the policy after every episode.

Why no RL library: an episode is a single step of a dozen actions and a search
is a few dozen episodes. Stable-Baselines3, RLlib, TorchRL and Tianshou (all on
PyPI) are built around environments, vectorised rollouts and replay buffers that
would outweigh this policy, and torch is already a dependency.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from compressctl.advise.layers import Layer
from compressctl.advise.space import Dimension, Proposal, Space

HIDDEN = 32
LEARNING_RATE = 0.05
BASELINE_DECAY = 0.8
PENALTY = 1.0
SPEED_WEIGHT = 0.01
KINDS = ("conv", "linear", "node")


def embedding(layer: Layer) -> list[float]:
    """Layer type one-hot, log channels out/in and kernel size, MACs and latency shares, sensitivity, bound."""
    shape = list(layer.shape) or [1]
    kernel = math.prod(shape[2:]) if len(shape) > 2 else 1
    return [
        *(float(layer.kind == kind) for kind in KINDS),
        math.log1p(shape[0]) / 8,
        math.log1p(shape[1] if len(shape) > 1 else 1) / 8,
        math.log1p(kernel) / 4,
        layer.macs_share,
        layer.latency_share,
        layer.sensitivity,
        layer.upper,
    ]


FEATURES = len(embedding(Layer("x", "conv", [])))


def reward(figures: dict[str, Any], violations: dict[str, float], limits: dict[str, float]) -> float:
    shortfall = sum(min(1.0, max(0.0, v) / max(abs(limits.get(k, 1.0)), 1e-9)) for k, v in violations.items())
    speed = SPEED_WEIGHT * math.log(max(float(figures.get("speedup", 1.0)), 1e-6))
    return float(figures["metric"]) - PENALTY * shortfall + speed


def build_policy(space: Space) -> Any:
    """Per-layer heads (one per tagged per-layer field, as wide as its longest grid) and stage-wide logits."""
    import torch
    from torch import nn

    class Policy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths: dict[str, int] = {}
            for dim in space.dimensions:
                if dim.per:
                    key = f"{dim.stage}.{dim.field}"
                    widths[key] = max(widths.get(key, 0), len(dim.choices))
            self.head_index = {key: i for i, key in enumerate(widths)}
            self.body = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh())
            self.heads = nn.ModuleList(nn.Linear(HIDDEN, width) for width in widths.values())
            for head in self.heads:  # near-uniform at first: every ratio is tried
                nn.init.normal_(head.weight, std=0.01)
                nn.init.zeros_(head.bias)
            stagewide = [d for d in space.dimensions if not d.per]
            self.logit_index = {d.name: i for i, d in enumerate(stagewide)}
            self.logits = nn.ParameterList(nn.Parameter(torch.zeros(len(d.choices))) for d in stagewide)

        def forward(self, dim: Dimension) -> Any:
            if not dim.per:
                return self.logits[self.logit_index[dim.name]]
            features = torch.tensor(embedding(space.layers[dim.name]), dtype=torch.float32)
            head = self.heads[self.head_index[f"{dim.stage}.{dim.field}"]]
            return head(self.body(features))[: len(dim.choices)]

    return Policy()


class ReinforceAgent:
    """``ask``/``tell`` over ``space``: the starting points first, then the policy's samples."""

    def __init__(self, space: Space, seed: int, limits: dict[str, float], starting: list[dict[str, Any]]) -> None:
        import torch

        self.space = space
        self.limits = limits
        self.starting = list(starting)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = build_policy(space)
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=LEARNING_RATE)
        self.baseline: float | None = None
        self.rewards: list[float] = []
        self.asked = 0

    def ask(self) -> Proposal:
        import torch

        number, self.asked = self.asked, self.asked + 1
        if self.starting:
            return Proposal(number, self.space.fill(self.starting.pop(0)))
        actions: list[tuple[Dimension, int]] = []

        def choose(dim: Dimension) -> Any:
            with torch.no_grad():
                probs = torch.softmax(self.policy(dim), -1)
            index = int(torch.multinomial(probs, 1, generator=self.generator))
            actions.append((dim, index))
            return dim.choices[index]

        values = self.space.sample(choose)
        # the actions, not a graph: several proposals may be out at once (--jobs) and tells step the policy
        return Proposal(number, values, actions or None)

    def tell(self, proposal: Proposal, figures: dict[str, Any], violations: dict[str, float]) -> None:
        gained = reward(figures, violations, self.limits)
        self.rewards.append(gained)
        if self.baseline is None:
            self.baseline = gained
            return
        advantage = gained - self.baseline
        self.baseline = BASELINE_DECAY * self.baseline + (1 - BASELINE_DECAY) * gained
        spread = statistics.pstdev(self.rewards)
        if proposal.handle is None or spread == 0.0:  # a starting point: not the policy's own action
            return
        import torch

        log_prob = torch.stack([torch.log_softmax(self.policy(d), -1)[i] for d, i in proposal.handle]).sum()
        loss = -(advantage / spread) * log_prob
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def mean_action(self, name: str) -> float:
        """The policy's expected value of a numeric dimension (no sampling)."""
        import torch

        dim = next(d for d in self.space.dimensions if d.name == name)
        with torch.no_grad():
            probs = torch.softmax(self.policy(dim), -1)
        return float(sum(p * float(c) for p, c in zip(probs.tolist(), dim.choices, strict=True)))
