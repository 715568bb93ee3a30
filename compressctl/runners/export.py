"""``export``: torch → ONNX through ``torch.onnx.export``, checked against torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from compressctl.artifact import Artifact
from compressctl.runners.base import Runner, StageConfig, StageContext


class ExportConfig(StageConfig):
    type: Literal["export"] = "export"
    opset: int = Field(18, ge=17, le=23, description="ONNX opset version.")
    dynamo: bool | Literal["auto"] = Field(
        "auto",
        description=(
            "true: the dynamo exporter (falls back to TorchScript if tracing fails); false: the TorchScript "
            "exporter; auto: dynamo, except transformers, which TorchScript writes in the form ONNX Runtime's "
            "transformer optimizer fuses (Attention, SkipLayerNormalization)."
        ),
    )
    check: bool = Field(True, description="Run onnx.checker and compare ONNX Runtime with torch outputs.")
    rtol: float = Field(1e-3, gt=0, description="Relative tolerance of the output check.")
    atol: float = Field(1e-4, gt=0, description="Absolute tolerance of the output check.")
    check_samples: int = Field(16, gt=0, le=4096, description="Real samples used for the output check.")
    external_data: Literal["auto", "always", "never"] = Field(
        "auto", description="Weights in a .data file beside model.onnx: auto = only above 1.5 GB (protobuf's limit)."
    )


def export_and_check(
    module: Any, path: Path, config: ExportConfig, inputs: list[Any], dims: dict[str, int], data: Any
) -> dict[str, Any]:
    """Export ``module`` to ``path`` and verify it on ``data``'s validation split; returns details for the report."""
    from compressctl.inputs import example_inputs
    from compressctl.onnxio import check_export, export_module

    example = example_inputs(inputs, dims, batch=2)
    external = {"auto": None, "always": True, "never": False}[config.external_data]
    exporter = export_module(
        module, inputs, example, Path(path), opset=config.opset, dynamo=config.dynamo, external_data=external
    )
    details: dict[str, Any] = {"exporter": exporter, "opset": config.opset}
    if config.check:
        feeds, _ = next(data.val.batches(config.check_samples))
        diff = check_export(module, Path(path), feeds, [i.name for i in inputs], rtol=config.rtol, atol=config.atol)
        details["max_abs_diff"] = diff
    return details


class ExportRunner(Runner):
    type = "export"
    config_model = ExportConfig
    consumes = "torch"
    produces = "onnx"
    compresses = False
    summary = "Export the torch model to ONNX (dynamic batch axis), checked against torch outputs."

    def run(self, artifact: Artifact, config: ExportConfig, context: StageContext) -> Artifact:
        from compressctl.onnxio import MODEL_FILE

        path = context.stage_dir / MODEL_FILE
        context.details.update(
            export_and_check(artifact.module, path, config, context.inputs, context.dims, context.data)
        )
        return Artifact.from_onnx(path)
