"""``qat``: quantization-aware training, exported as a QDQ INT8 ONNX model.

BatchNorm is folded into the convolutions, every Conv/Linear gets fake-quantized
weights (per-channel symmetric int8) and inputs (uint8, range tracked or
learned with LSQ), and the model is fine-tuned with the shared training loop.
The trained float weights are exported, and ONNX Runtime's quantizer writes the
QDQ model with the activation scales and zero points learned in training
(``TensorQuantOverrides``); tensors QAT did not cover get calibrated ranges.
ONNX Runtime fuses the QDQ pairs into int8 kernels (QLinearConv, QGemm…): the
report counts them in the optimized graph.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from compressctl.artifact import Artifact
from compressctl.errors import UserError
from compressctl.quantization.calibration import CalibrationConfig, calibration_method
from compressctl.runners.base import Runner
from compressctl.runners.train import _TrainOptions, settings_from

log = logging.getLogger("compressctl")

INT8_KERNELS = (
    "QLinearConv",
    "QGemm",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "QLinearAdd",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
)


class QatConfig(_TrainOptions):
    type: Literal["qat"] = "qat"
    epochs: int = Field(3, ge=0, le=10_000, description="Fake-quantized fine-tuning passes over the training split.")
    lr: float = Field(0.0005, gt=0, le=10, description="Peak learning rate (lower than training: weights move little).")
    activation_ranges: Literal["tracked", "learned"] = Field(
        "tracked", description="tracked: moving min/max of activations; learned: LSQ step size trained by gradient."
    )
    reduce_range: bool | Literal["auto"] = Field(
        "auto", description="7-bit weights, trained and exported; auto: on x86 CPUs without VNNI or AMX (see quantize)."
    )
    fold_batchnorm: bool = Field(True, description="Fold BatchNorm into convolutions before training (as ORT does).")
    exclude_layers: list[str] = Field(
        default_factory=list, description="Module names (e.g. fc) kept in float: neither fake-quantized nor quantized."
    )
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig,
        description="Initial activation ranges, and ranges of tensors QAT does not cover.",
    )


def quantized_layers(model: Any) -> list[tuple[str, list[int], str]]:
    """(node name, weight shape, input tensor) of each Conv/Gemm/MatMul with a constant weight, in graph order."""
    initializers = {t.name: list(t.dims) for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in initializers:
            found.append((node.name, initializers[node.input[1]], node.input[0]))
    return found


def map_layers(model: Any, layers: list[tuple[str, Any]]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Match the ONNX layers with the QAT layers (both in call order, checked by weight shape).

    Returns the TensorQuantOverrides for the inputs of quantized layers, the ONNX
    nodes of layers kept in float, and notes on anything that did not match.
    """
    import numpy as np
    from onnxruntime.quantization import QuantType

    nodes = quantized_layers(model)
    if len(nodes) != len(layers):
        return {}, [], [f"{len(nodes)} ONNX layers vs {len(layers)} QAT layers: activation ranges calibrated instead"]
    overrides: dict[str, Any] = {}
    in_float = []
    for (node, shape, tensor), (name, wrapper) in zip(nodes, layers, strict=True):
        weight_shape = list(wrapper.layer.weight.shape)
        if sorted(shape) != sorted(weight_shape):
            return {}, [], [f"{node} ({shape}) does not match {name} ({weight_shape}): ranges calibrated instead"]
        if not wrapper.enabled:
            in_float.append(node)
            continue
        scale, zero = wrapper.input_quant.quant_params()
        override = {
            "scale": np.array(scale, dtype=np.float32),
            "zero_point": np.array(zero, dtype=np.uint8),
            "quant_type": QuantType.QUInt8,
        }
        overrides.setdefault(tensor, [override])
    return overrides, in_float, []


def count_kernels(path: Path, optimized: Path) -> dict[str, int]:
    """Op types of ONNX Runtime's optimized CPU graph, for the int8 kernels it fused."""
    import onnx

    from compressctl.measure.latency import make_session

    make_session(path, optimized_path=optimized)
    counts: dict[str, int] = {}
    for node in onnx.load(str(optimized), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def calibrate_ranges(module: Any, wrapped: list[tuple[str, Any]], calibration: Any, config: QatConfig) -> None:
    """Initial activation ranges: exact min/max over the calibration samples."""
    import torch

    from compressctl.training import to_tensors

    for _, wrapper in wrapped:
        wrapper.input_quant.observing = True
    with torch.no_grad():
        for inputs, _ in calibration.batches(config.calibration.batch_size):
            module.eval()(*to_tensors(inputs))
    for _, wrapper in wrapped:
        wrapper.input_quant.observing = False
        if config.activation_ranges == "learned":
            wrapper.input_quant.start_learning()


class QatRunner(Runner):
    type = "qat"
    config_model = QatConfig
    consumes = "torch"
    produces = "onnx"
    summary = "Quantization-aware training (fake-quant fine-tuning, LSQ optional), exported as QDQ INT8 ONNX."

    def run(self, artifact: Artifact, config: QatConfig, context: Any) -> Artifact:
        import copy

        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        from compressctl.onnxio import MODEL_FILE, load_onnx
        from compressctl.quantization import fake_quant
        from compressctl.quantization.int8 import CalibrationReader, preprocess, reduces_range
        from compressctl.training import fit, to_tensors

        module = copy.deepcopy(artifact.module).eval()
        folded = 0
        if config.fold_batchnorm:
            try:
                module, folded = fake_quant.fold_batchnorms(module)
            except Exception as exc:  # torch.fx cannot trace every model
                log.warning("qat: BatchNorm folding skipped (%s: %s)", type(exc).__name__, exc)
        reduce = reduces_range(config.reduce_range, {"activation": "uint8", "weight": "int8"})
        qmax = fake_quant.REDUCED_WEIGHT_QMAX if reduce else fake_quant.WEIGHT_QMAX
        learned = config.activation_ranges == "learned"
        wrapped = fake_quant.wrap_layers(module, learned, set(config.exclude_layers), weight_qmax=qmax)
        if not wrapped:
            raise ValueError("qat: the model has no Conv or Linear layer to quantize")
        unknown = sorted(set(config.exclude_layers) - {name for name, _ in wrapped})
        if unknown:
            raise UserError(
                f"qat.exclude_layers: no Conv/Linear layer named {', '.join(unknown)} "
                f"(layers: {', '.join(name for name, _ in wrapped)})"
            )
        data = context.data
        calibration = data.calibration.head(config.calibration.samples)
        calibrate_ranges(module, wrapped, calibration, config)
        example = next(calibration.batches(2))[0]
        order = fake_quant.calls_in_order(module, wrapped, to_tensors(example))
        by_name = dict(wrapped)
        layers = [(name, by_name[name]) for name in order]

        result = fit(
            module,
            data,
            settings_from(config, context.batch_size),
            seed=context.seed + context.index,
            progress=context.progress,
            task="qat",
        )
        float_module = fake_quant.unwrap_layers(module, wrapped).eval()

        work = context.stage_dir / "work"
        work.mkdir()
        float_path = work / "float.onnx"
        export = context.export(Artifact.from_module(float_module), float_path)
        source = preprocess(float_path, work / "preprocessed.onnx", [])
        overrides, float_nodes, notes = map_layers(load_onnx(source, load_external_data=False), layers)
        names = [i.name for i in context.inputs] or data.input_names
        reader = CalibrationReader(calibration, names, config.calibration.batch_size)
        output = context.stage_dir / MODEL_FILE
        quantize_static(
            str(source),
            str(output),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=reduce,
            calibrate_method=calibration_method(config.calibration.method),  # auto: min/max
            nodes_to_exclude=float_nodes or None,
            extra_options={"TensorQuantOverrides": overrides, "CalibPercentile": config.calibration.percentile},
        )
        kernels = count_kernels(output, work / "optimized.onnx")
        shutil.rmtree(work, ignore_errors=True)
        context.details.update(
            {
                "history": result.history,
                "best_epoch": result.best_epoch,
                "best_val_accuracy_fake_quant": result.best_val,
                "batchnorms_folded": folded,
                "quantized_layers": sum(w.enabled for _, w in wrapped),
                "float_nodes": float_nodes,
                "activation_ranges": config.activation_ranges,
                "learned_ranges_exported": len(overrides),
                "notes": notes,
                "export": export,
                "format": "qdq_auint8_wint8 (per-channel)",
                "reduce_range": reduce,
                "int8_kernels": {k: v for k, v in kernels.items() if k in INT8_KERNELS},
            }
        )
        for note in notes:
            log.warning("qat: %s", note)
        return Artifact.from_onnx(output)
