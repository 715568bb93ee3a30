"""``optimize``: graph fusion of an ONNX model (see ``compressctl.fusion``).

Transformer encoders get ONNX Runtime's transformer optimizer (Attention,
SkipLayerNormalization, BiasGelu, EmbedLayerNormalization); other graphs get
ONNX Runtime's basic offline optimisation. The stage reports which fusions
applied and warns in one line when an encoder's expected fusions did not.
The quantize stage runs the same fusion first on encoders (``fuse: auto``), so
a recipe needs this stage only to fuse without quantizing or to set options.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from compressctl.artifact import Artifact
from compressctl.runners.base import Runner, StageConfig

log = logging.getLogger("compressctl")


class OptimizeConfig(StageConfig):
    type: Literal["optimize"] = "optimize"
    model_type: Literal["auto", "bert", "vit", "generic"] = Field(
        "auto",
        description=(
            "auto: the transformer optimizer (as bert) when the graph is built of dense layers and softmax "
            "attention, else ONNX Runtime's basic offline optimisation (generic)."
        ),
    )
    num_heads: int = Field(0, ge=0, le=1024, description="Attention heads (0: detected from the graph).")
    hidden_size: int = Field(0, ge=0, le=65536, description="Hidden size (0: detected from the graph).")
    expect: list[str] | None = Field(
        None,
        description="Fused operators that must appear, else a warning (default for encoders: Attention, SkipLayerNormalization).",
    )


class OptimizeRunner(Runner):
    type = "optimize"
    config_model = OptimizeConfig
    consumes = "onnx"
    produces = "onnx"
    summary = "Graph fusion: ONNX Runtime's transformer optimizer for encoders, basic offline optimisation otherwise."

    def run(self, artifact: Artifact, config: OptimizeConfig, context: Any) -> Artifact:
        from compressctl.fusion import fuse
        from compressctl.onnxio import MODEL_FILE

        output = context.stage_dir / MODEL_FILE
        result = fuse(
            Path(artifact.path),
            output,
            model_type=config.model_type,
            num_heads=config.num_heads,
            hidden_size=config.hidden_size,
            expect=config.expect,
        )
        if result.warning():
            log.warning(result.warning())
        context.details.update(result.to_dict())
        return Artifact.from_onnx(output)
