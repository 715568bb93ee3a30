"""``lowrank``: replace Linear and Conv2d layers by low-rank factorisations.

* ``svd`` (Linear): ``W ≈ B·A`` as two Linear layers, ``in → r → out``.
* ``tucker`` (Conv2d): Tucker-2 on the channel modes, ``1×1 → k×k core → 1×1``
  (Kim et al. 2016).
* ``cp`` (Conv2d): CP decomposition, ``1×1 → k×1 depthwise → 1×k depthwise → 1×1``
  (Lebedev et al. 2015).

Ranks come from a ``ratio`` of each mode's full rank, from the retained
singular-value ``energy``, or automatically from empirical variational Bayesian
matrix factorisation (VBMF, Nakajima et al. 2013) of the mode unfoldings, as in
Kim et al. 2016. A layer is only replaced when that lowers its MACs.

The math lives in ``compressctl.factorization``. Each replaced layer becomes a
small ``nn.Sequential``; the replacement is recorded as a ``lowrank`` edit so a
cached stage rebuilds the same structure before its weights load from safetensors.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from compressctl.artifact import Artifact
from compressctl.factorization.layers import replace_layers
from compressctl.runners.base import Runner, StageConfig, searched

log = logging.getLogger("compressctl")


class LowRankConfig(StageConfig):
    type: Literal["lowrank"] = "lowrank"
    method: Literal["svd", "tucker", "cp"] = Field(
        "tucker",
        description="svd: Linear layers; tucker (Tucker-2) or cp: Conv2d layers.",
        json_schema_extra=searched(choices=["tucker"], optional=True, models="torch"),
    )
    ratio: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Keep this fraction of each mode's full rank (cp: of the smaller channel count).",
        json_schema_extra=searched(choices=[0.3, 0.5, 0.7], one_of="rank"),
    )
    energy: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Keep the smallest rank that retains this fraction of squared singular values.",
        json_schema_extra=searched(choices=[0.9], one_of="rank"),
    )
    layer_ratios: dict[str, float] = Field(
        default_factory=dict,
        description="Per-layer rank ratio by module-name glob pattern, e.g. {'layer3.*': 0.3}; others follow ratio/energy.",
        json_schema_extra=searched(per="layer", choices=[None, 0.3, 0.5, 0.7]),  # None: the stage's rule
    )
    layers: list[str] = Field(
        default_factory=lambda: ["*"], description="Module names (glob patterns) that may be decomposed."
    )
    exclude: list[str] = Field(default_factory=list, description="Module names (glob patterns) left untouched.")
    min_rank: int = Field(1, ge=1, le=100_000, description="Smallest rank used for any mode.")
    max_mac_ratio: float = Field(
        1.0, gt=0, le=1, description="Decompose a layer only if its MACs fall below this fraction of the original."
    )
    cp_iterations: int = Field(200, gt=0, le=100_000, description="cp: ALS iterations.")

    @model_validator(mode="after")
    def _one_rank_rule(self) -> LowRankConfig:
        if self.ratio is not None and self.energy is not None:
            raise ValueError("give at most one of 'ratio' or 'energy' (neither: ranks chosen by VBMF)")
        for pattern, value in self.layer_ratios.items():
            if not 0 < value <= 1:
                raise ValueError(f"layer_ratios['{pattern}'] must be in (0, 1] (got {value})")
        return self

    @property
    def rank_rule(self) -> str:
        if self.ratio is not None:
            return f"ratio {self.ratio:g}"
        if self.energy is not None:
            return f"energy {self.energy:g}"
        return "vbmf"


def replay_lowrank(module: Any, edit: dict[str, Any]) -> Any:
    """Rebuild the factorised structure; its weights load from the cached safetensors."""
    return replace_layers(module, edit["layers"])


class LowRankRunner(Runner):
    type = "lowrank"
    config_model = LowRankConfig
    consumes = "torch"
    produces = "torch"
    summary = "Low-rank factorisation: SVD for Linear, Tucker-2 or CP for Conv2d; ranks by ratio, energy or VBMF."
    edit_replays: ClassVar[dict[str, Any]] = {"lowrank": replay_lowrank}

    def run(self, artifact: Artifact, config: LowRankConfig, context: Any) -> Artifact:
        import copy

        import torch

        from compressctl.factorization.decompose import decompose
        from compressctl.inputs import example_inputs

        module = copy.deepcopy(artifact.module).eval()
        example = example_inputs(context.inputs, context.dims, batch=1)
        torch.manual_seed(context.seed + context.index)
        module, done, skipped = decompose(module, config, example, context.seed + context.index)
        if not done:
            log.warning("lowrank: no layer was decomposed (%d candidates)", len(skipped))
        context.details.update(
            {
                "method": config.method,
                "rank_rule": config.rank_rule,
                "layers": done,
                "skipped": skipped,
                "macs_before": sum(p["macs_before"] for p in done.values()),
                "macs_after": sum(p["macs_after"] for p in done.values()),
            }
        )
        edit = {"op": "lowrank", "layers": {n: {"method": p["method"], "ranks": p["ranks"]} for n, p in done.items()}}
        return artifact.with_module(module.eval(), edit if done else None)
