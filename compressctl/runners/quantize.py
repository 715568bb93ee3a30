"""``quantize``: INT8 quantization of an ONNX model through ``onnxruntime.quantization``.

ONNX Runtime's defaults (QDQ with signed 8-bit activations) are not the fastest
on every CPU; on x86 with VNNI they can be slower than float. With ``auto``
settings this stage quantizes a few candidate formats, times each on the
recipe's first provider, checks each against the float model on calibration
data, and keeps the fastest one that is as faithful as the best. The report
lists every candidate and why the winner won.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from compressctl.artifact import Artifact
from compressctl.recipe.models import Strict
from compressctl.runners.base import Runner, StageConfig

log = logging.getLogger("compressctl")


class CalibrationConfig(Strict):
    method: Literal["minmax", "entropy", "percentile", "distribution"] = Field(
        "minmax", description="How activation ranges are chosen from calibration data."
    )
    samples: int = Field(256, gt=0, le=100_000, description="Calibration samples (from the training split).")
    percentile: float = Field(99.999, gt=90, le=100, description="percentile method: the percentile kept.")
    batch_size: int = Field(32, gt=0, le=4096, description="Samples per calibration batch.")


class QuantizeConfig(StageConfig):
    type: Literal["quantize"] = "quantize"
    mode: Literal["static", "dynamic"] = Field(
        "static", description="static: calibrated activations; dynamic: activation ranges at run time."
    )
    format: Literal["auto", "qdq", "qoperator"] = Field(
        "auto", description="ONNX quantization format; auto picks the fastest measured on the provider."
    )
    activation_type: Literal["auto", "uint8", "int8"] = Field(
        "auto", description="static only: activation type; auto picks by measurement."
    )
    weight_type: Literal["auto", "int8", "uint8"] = Field("auto", description="Weight type; auto picks by measurement.")
    per_channel: bool = Field(True, description="Per-output-channel weight scales.")
    reduce_range: bool = Field(False, description="7-bit weights (for CPUs without VNNI, avoids saturation).")
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    op_types: list[str] | None = Field(None, description="Quantize only these op types (default: all supported).")
    exclude_nodes: list[str] = Field(default_factory=list, description="Node names kept in float.")
    exclude_op_types: list[str] = Field(default_factory=list, description="Op types kept in float.")
    select_batch_size: int | None = Field(
        None, gt=0, description="Batch size the candidates are timed at (default: largest report batch size)."
    )
    select_repeat: int = Field(30, gt=0, le=10_000, description="Timed runs per candidate.")
    fidelity_tolerance: float = Field(
        0.01, ge=0, le=1, description="A faster candidate may agree with float this much less than the best."
    )
    preprocess: bool = Field(True, description="Run ONNX Runtime's quantization pre-processing first.")


QUANT_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}


def candidate_settings(config: QuantizeConfig) -> list[dict[str, str]]:
    """The (format, activation, weight) combinations to try."""
    if config.mode == "dynamic":
        weights = ["int8", "uint8"] if config.weight_type == "auto" else [config.weight_type]
        return [{"format": "qoperator", "activation": "uint8", "weight": w} for w in weights]
    formats = ["qdq", "qoperator"] if config.format == "auto" else [config.format]
    acts = ["uint8", "int8"] if config.activation_type == "auto" else [config.activation_type]
    weights = ["int8"] if config.weight_type == "auto" else [config.weight_type]
    found = []
    for fmt in formats:
        for act in acts:
            for weight in weights:
                if fmt == "qoperator" and act == "int8":
                    continue  # QOperator kernels with int8 activations are reference code on CPU
                found.append({"format": fmt, "activation": act, "weight": weight})
    return found


class CalibrationReader:
    """Feeds calibration batches to ``quantize_static``."""

    def __init__(self, split: Any, names: list[str], batch_size: int) -> None:
        self.batches = [dict(zip(names, inputs, strict=False)) for inputs, _ in split.batches(batch_size)]
        self.position = 0

    def get_next(self) -> dict[str, Any] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def uses_external_data(path: Path) -> bool:
    from compressctl.onnxio import onnx_files

    return len(onnx_files(path)) > 1


def preprocess(source: Path, target: Path) -> Path:
    """ONNX Runtime's pre-processing (shape inference, graph optimisation); falls back to the input."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    external = uses_external_data(source)
    for skip_symbolic in (False, True):
        try:
            quant_pre_process(
                str(source), str(target), skip_symbolic_shape=skip_symbolic,
                save_as_external_data=external, all_tensors_to_one_file=True,
                external_data_location=target.name + ".data" if external else None,
            )
            return target
        except Exception as exc:
            log.info("quantization pre-processing (skip_symbolic_shape=%s) failed: %s", skip_symbolic, exc)
    return source


def quantize_candidate(
    source: Path, target: Path, config: QuantizeConfig, setting: dict[str, str], reader: CalibrationReader | None
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    external = uses_external_data(source)
    nodes_to_exclude = list(config.exclude_nodes)
    if config.exclude_op_types:
        from compressctl.onnxio import load_onnx

        model = load_onnx(source, load_external_data=False)
        nodes_to_exclude += [n.name for n in model.graph.node if n.op_type in config.exclude_op_types]
    weight_type = getattr(QuantType, QUANT_TYPES[setting["weight"]])
    common: dict[str, Any] = {
        "op_types_to_quantize": config.op_types,
        "per_channel": config.per_channel,
        "reduce_range": config.reduce_range,
        "weight_type": weight_type,
        "nodes_to_exclude": nodes_to_exclude or None,
        "use_external_data_format": external,
    }
    if config.mode == "dynamic":
        quantize_dynamic(str(source), str(target), extra_options={"MatMulConstBOnly": True}, **common)
        return
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "distribution": CalibrationMethod.Distribution,
    }
    extra = {"CalibPercentile": config.calibration.percentile}
    assert reader is not None
    reader.rewind()
    quantize_static(
        str(source),
        str(target),
        reader,
        quant_format=QuantFormat.QDQ if setting["format"] == "qdq" else QuantFormat.QOperator,
        activation_type=getattr(QuantType, QUANT_TYPES[setting["activation"]]),
        calibrate_method=methods[config.calibration.method],
        extra_options=extra,
        **common,
    )


def score_candidate(path: Path, feeds: dict[str, Any], check: Any, reference: Any, context: Any, config: QuantizeConfig) -> dict[str, float]:
    """p50 latency at the selection batch and agreement with float on calibration data."""
    from compressctl.measure.latency import default_threads, make_session, summarize, time_session
    from compressctl.measure.metrics import agreement, predict

    threads = context.recipe.report.threads or default_threads()
    provider = context.run.providers[0]
    session = make_session(path, provider, threads)
    times = time_session(session, feeds, warmup=5, repeat=config.select_repeat, max_seconds=20)
    outputs = predict(session, check, context.recipe.data.batch_size)
    stats = summarize(times, next(iter(feeds.values())).shape[0])
    return {"p50_ms": stats["p50_ms"], **agreement(outputs, reference)}


def select(scores: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """The fastest candidate whose fidelity is within ``tolerance`` of the most faithful."""
    best_fidelity = max(s["fidelity"] for s in scores)
    eligible = [s for s in scores if s["fidelity"] >= best_fidelity - tolerance]
    return min(eligible, key=lambda s: s["p50_ms"])


class QuantizeRunner(Runner):
    type = "quantize"
    config_model = QuantizeConfig
    consumes = "onnx"
    produces = "onnx"
    summary = "INT8 quantization (static or dynamic) via onnxruntime.quantization; format chosen by measurement."

    def run(self, artifact: Artifact, config: QuantizeConfig, context: Any) -> Artifact:
        from compressctl.measure.latency import batch_feeds, default_threads, make_session
        from compressctl.measure.metrics import predict
        from compressctl.onnxio import MODEL_FILE, onnx_files

        work = context.stage_dir / "work"
        work.mkdir()
        source = Path(artifact.path)
        if config.preprocess:
            source = preprocess(source, work / "preprocessed.onnx")
        data = context.data
        names = [i.name for i in context.inputs] or data.input_names
        reader = None
        if config.mode == "static":
            calibration = data.calibration.head(config.calibration.samples)
            reader = CalibrationReader(calibration, names, config.calibration.batch_size)
            context.details["calibration_samples"] = len(calibration)
        check = data.calibration.head(256)
        threads = context.recipe.report.threads or default_threads()
        float_session = make_session(Path(artifact.path), context.run.providers[0], threads)
        reference = predict(float_session, check, context.recipe.data.batch_size)
        batch = config.select_batch_size or max(context.recipe.report.batch_sizes)
        feeds = batch_feeds(float_session.get_inputs(), check.inputs, batch)
        del float_session

        settings = candidate_settings(config)
        scores = []
        for setting in settings:
            label = f"{setting['format']}_a{setting['activation']}_w{setting['weight']}"
            target = work / f"{label}.onnx"
            try:
                quantize_candidate(source, target, config, setting, reader)
                score = score_candidate(target, feeds, check, reference, context, config)
            except Exception as exc:
                log.warning("quantization candidate %s failed: %s", label, exc)
                scores.append({"candidate": label, **setting, "error": f"{type(exc).__name__}: {exc}"})
                continue
            scores.append({"candidate": label, **setting, **score, "path": target})
            log.info("candidate %s: p50 %.3f ms at batch %d, fidelity %.4f", label, score["p50_ms"], batch, score["fidelity"])
        usable = [s for s in scores if "error" not in s]
        if not usable:
            raise RuntimeError("every quantization candidate failed: " + "; ".join(s["error"] for s in scores))
        chosen = select(usable, config.fidelity_tolerance) if len(usable) > 1 else usable[0]
        output = context.stage_dir / MODEL_FILE
        files = onnx_files(chosen["path"])
        for f in files:
            name = MODEL_FILE if f == chosen["path"] else f.name
            shutil.move(str(f), str(context.stage_dir / name))
        shutil.rmtree(work, ignore_errors=True)
        context.details.update(
            {
                "mode": config.mode,
                "chosen": chosen["candidate"],
                "selected_at": f"{context.run.providers[0]}@{batch}",
                "candidates": [{k: v for k, v in s.items() if k != "path"} for s in scores],
                "reason": (
                    f"fastest of {len(usable)} measured candidates within {config.fidelity_tolerance:g} "
                    "fidelity of the most faithful"
                    if len(usable) > 1
                    else "only candidate"
                ),
            }
        )
        return Artifact.from_onnx(output)
