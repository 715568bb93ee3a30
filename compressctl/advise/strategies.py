"""Search strategies: ``ask`` for a candidate's parameter values, ``tell`` it the proxy's figures.

* ``nsga2`` (default): Optuna's NSGA-II over metric and speedup (max) and size (min),
  the budget's limits as constraints, so feasible candidates rank first;
* ``rl``: an AMC-style agent, one action per layer (``compressctl.advise.agent``);
* ``random``: Optuna's RandomSampler, the reference the others must beat.

Every strategy proposes the same starting points first (the hand recipe and its
sensitivity-guided variants), so they differ only in what they make of them. Each
is seeded: the same seed proposes the same candidates.
"""

from __future__ import annotations

from typing import Any, Protocol

from compressctl.advise.space import Dimension, Proposal, Space

STRATEGIES = ("nsga2", "rl", "random")


class Strategy(Protocol):
    def ask(self) -> Proposal: ...

    def tell(self, proposal: Proposal, figures: dict[str, Any], violations: dict[str, float]) -> None: ...


def objectives(figures: dict[str, Any]) -> tuple[float, float, float]:
    """What the search optimises: metric (max), speedup over the baseline in a sitting (max), size on disk (min)."""
    return figures["metric"], figures["speedup"], float(figures["size_bytes"])


def suggest(trial: Any, dim: Dimension) -> Any:
    if dim.kind == "float":
        return round(trial.suggest_float(dim.name, dim.low, dim.high, step=dim.step), 4)
    return trial.suggest_categorical(dim.name, dim.choices)


class OptunaStrategy:
    """An Optuna study driven by ask and tell (define-by-run: a dimension is only suggested when active)."""

    def __init__(self, space: Space, sampler: Any, starting: list[dict[str, Any]]) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.study = optuna.create_study(directions=["maximize", "maximize", "minimize"], sampler=sampler)
        for point in starting:
            self.study.enqueue_trial(point)

    def ask(self) -> Proposal:
        trial = self.study.ask()
        return Proposal(trial.number, self.space.sample(lambda dim: suggest(trial, dim)), trial)

    def tell(self, proposal: Proposal, figures: dict[str, Any], violations: dict[str, float]) -> None:
        for name, value in violations.items():
            proposal.handle.set_constraint(name, value)  # NSGA-II ranks feasible trials (all <= 0) first
        self.study.tell(proposal.handle, objectives(figures))


def make_strategy(
    name: str, space: Space, *, seed: int, limits: dict[str, float], trials: int, starting: list[dict[str, Any]]
) -> Strategy:
    """The strategy ``name`` over ``space``; ``starting`` (complete parameter values) is proposed first."""
    if name == "rl":
        from compressctl.advise.agent import ReinforceAgent

        return ReinforceAgent(space, seed, limits, starting)
    import optuna

    if name == "nsga2":
        sampler: Any = optuna.samplers.NSGAIISampler(population_size=max(4, min(12, trials // 3)), seed=seed)
    elif name == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        raise ValueError(f"unknown strategy '{name}' (known: {', '.join(STRATEGIES)})")
    return OptunaStrategy(space, sampler, starting)
