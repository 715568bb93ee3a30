"""``quantize``: quantization of an ONNX model (INT8 through ``onnxruntime.quantization``,
k-means weight clustering, weight-only int4, fp16).

ONNX Runtime's defaults (QDQ with signed 8-bit activations) are not the fastest
on every CPU; on x86 with VNNI they can be slower than float. So this stage
quantizes a few candidate formats, judges each against float on held-out
samples by a metric that fits the output, times them and the float model
together in one sitting, and keeps the fastest faithful one, float included
(``compressctl.quantization.select``). The report lists every candidate and
why the winner won.

With ``max_accuracy_drop`` an INT8 model that loses too much goes through the
accuracy-aware fallback: its most sensitive nodes return to float one by one
until the drop is within bounds. ``mode: kmeans | int4 | fp16`` are weight
transformations of the ONNX graph (see ``compressctl.quantization``).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from compressctl.artifact import Artifact
from compressctl.errors import UserError
from compressctl.quantization.fallback import run_fallback
from compressctl.quantization.select import FLOAT, choose, no_gain_line
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
    mode: Literal["static", "dynamic", "kmeans", "int4", "fp16"] = Field(
        "static",
        description=(
            "static: INT8 with calibrated activations; dynamic: INT8 with activation ranges at run time; "
            "kmeans: weights clustered to a 2^bits codebook; int4: weight-only 4-bit MatMulNBits; fp16: float16."
        ),
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
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig,
        description="static: calibration method (minmax|entropy|percentile|distribution), samples from the training split.",
    )
    op_types: list[str] | None = Field(None, description="Quantize only these op types (default: all supported).")
    exclude_nodes: list[str] = Field(default_factory=list, description="Node names kept in float.")
    exclude_op_types: list[str] = Field(default_factory=list, description="Op types kept in float.")
    select_batch_size: int | None = Field(
        None, gt=0, description="Batch size the candidates are timed at (default: largest report batch size)."
    )
    select_repeat: int = Field(
        30, gt=0, le=10_000, description="Least rounds of the sitting that times the candidates and float together."
    )
    select_seconds: float = Field(60.0, gt=0, le=3600, description="Time budget of that sitting.")
    fidelity_tolerance: float = Field(
        0.01,
        ge=0,
        le=1,
        description=(
            "A candidate is faithful when its faithfulness is within this of the most faithful (float): top-1 "
            "agreement for class scores, worst-sample cosine for other outputs."
        ),
    )
    prefer: Literal["speed", "size"] = Field(
        "speed", description="speed: the fastest faithful candidate (float when none is faster); size: the smallest."
    )
    preprocess: bool = Field(True, description="static/dynamic: run ONNX Runtime's quantization pre-processing first.")
    faithfulness: Literal["auto", "agreement", "cosine_mean", "cosine_min", "sqnr_db"] = Field(
        "auto",
        description=(
            "How a candidate is compared with float. auto: top-1 agreement for class scores, worst-sample cosine "
            "for anything else (evaluate.output_kind says which the output is)."
        ),
    )
    max_accuracy_drop: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "static/dynamic: largest metric drop (0.01 = 1 pt) on the validation split; when missed, the most "
            "sensitive quantized nodes return to float until it is met."
        ),
    )
    fallback_max_nodes: int = Field(
        32, gt=0, le=10_000, description="Most nodes the accuracy-aware fallback may return to float."
    )
    fallback_op_types: list[str] = Field(
        default_factory=lambda: ["Conv", "ConvTranspose", "Gemm", "MatMul"],
        min_length=1,
        description="Op types whose nodes the fallback ranks by sensitivity.",
    )
    smooth_quant: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="static: SmoothQuant alpha (activation smoothing via ONNX Runtime; needs neural-compressor).",
    )
    bits: int | None = Field(None, ge=2, le=8, description="kmeans only: index bits (2^bits centroids, default 4).")
    min_elements: int = Field(
        2048,
        gt=0,
        description="kmeans: weights with fewer elements stay in float (small first/last layers are the most sensitive).",
    )
    granularity: Literal["tensor", "channel"] | None = Field(
        None, description="kmeans only: one codebook per weight tensor (default) or per output channel (more accurate)."
    )
    block_size: int | None = Field(
        None, ge=16, le=2048, description="int4 only: elements per quantization block (power of two, default 128)."
    )
    symmetric: bool | None = Field(None, description="int4 only: symmetric 4-bit blocks (default: asymmetric).")
    accuracy_level: int | None = Field(
        None, ge=0, le=4, description="int4 only: MatMulNBits accuracy_level (4 = int8 compute, 0 = unset)."
    )
    int4_op_types: list[Literal["MatMul", "Gather"]] | None = Field(
        None, description="int4 only: ops whose constant weights become 4-bit (default: MatMul and Gather)."
    )
    keep_io_types: bool | None = Field(
        None, description="fp16 only: keep float32 model inputs and outputs (default true)."
    )

    @model_validator(mode="after")
    def _options_fit_mode(self) -> QuantizeConfig:
        only = {
            "bits": ("kmeans",),
            "granularity": ("kmeans",),
            "block_size": ("int4",),
            "symmetric": ("int4",),
            "accuracy_level": ("int4",),
            "int4_op_types": ("int4",),
            "keep_io_types": ("fp16",),
            "max_accuracy_drop": ("static", "dynamic"),
            "smooth_quant": ("static",),
        }
        for name, modes in only.items():
            if getattr(self, name) is not None and self.mode not in modes:
                raise ValueError(f"'{name}' applies to mode {' or '.join(modes)}, not to mode {self.mode}")
        if self.block_size is not None and self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two (got {self.block_size})")
        return self


def make_judge(float_path: Path, context: Any, config: QuantizeConfig) -> Any:
    """Faithfulness to ``float_path`` on the held-out validation split."""
    from compressctl.quantization.select import Judge

    val = context.data.val
    return Judge(
        float_path,
        val,
        batch_size=context.batch_size,
        provider=context.provider,
        threads=context.threads,
        declared_kind=context.evaluate.output_kind,
        figure="fidelity" if config.faithfulness == "auto" else config.faithfulness,
        max_samples=context.evaluate.max_samples or len(val),
    )


class QuantizeRunner(Runner):
    type = "quantize"
    config_model = QuantizeConfig
    consumes = "onnx"
    produces = "onnx"
    summary = (
        "Quantization: INT8 static/dynamic via onnxruntime.quantization (format chosen by measurement, "
        "accuracy-aware fallback), k-means weight clustering, weight-only int4, fp16."
    )

    def run(self, artifact: Artifact, config: QuantizeConfig, context: Any) -> Artifact:
        if config.mode in ("kmeans", "int4", "fp16"):
            return self.run_weight_transform(artifact, config, context)
        return self.run_int8(artifact, config, context)

    def run_weight_transform(self, artifact: Artifact, config: QuantizeConfig, context: Any) -> Artifact:
        from compressctl.onnxio import MODEL_FILE, onnx_files
        from compressctl.quantization import weight_only

        source = Path(artifact.path)
        output = context.stage_dir / MODEL_FILE
        details = weight_only.transform_weights(source, output, config)
        size_before = sum(f.stat().st_size for f in onnx_files(source))
        size_after = sum(f.stat().st_size for f in onnx_files(output))
        context.details.update(
            {
                "mode": config.mode,
                **details,
                "size_bytes_before": size_before,
                "size_bytes_after": size_after,
                "size_ratio": size_after / size_before,
                "faithfulness_to_float": {k: v for k, v in make_judge(source, context, config)(output).items()},
            }
        )
        return Artifact.from_onnx(output)

    def run_int8(self, artifact: Artifact, config: QuantizeConfig, context: Any) -> Artifact:
        from compressctl.quantization.int8 import (
            CalibrationReader,
            calibration_batch_size,
            candidate_label,
            candidate_settings,
            preprocess,
            quantize_candidate,
            upgrade_opset,
        )

        check_smooth_quant(config)
        work = context.stage_dir / "work"
        work.mkdir()
        float_path = Path(artifact.path)
        notes: list[str] = []
        source = upgrade_opset(float_path, work / "upgraded.onnx", notes) if config.per_channel else float_path
        if config.preprocess:
            source = preprocess(source, work / "preprocessed.onnx", notes)
        for note in notes:
            log.warning("quantize: %s", note)
        reader = None
        if config.mode == "static":
            calibration = context.data.calibration.head(config.calibration.samples)
            names = [i.name for i in context.inputs] or context.data.input_names
            batch_size = calibration_batch_size(calibration, config.calibration.batch_size)
            reader = CalibrationReader(calibration, names, batch_size)
            context.details.update({"calibration_samples": len(calibration), "calibration_batch_size": batch_size})
        judge = make_judge(float_path, context, config)
        scores: list[dict[str, Any]] = [{"candidate": FLOAT, "path": float_path, **judge(float_path)}]
        for setting in candidate_settings(config):
            label = candidate_label(setting)
            target = work / f"{label}.onnx"
            try:
                quantize_candidate(source, target, config, setting, reader)
                scores.append({"candidate": label, **setting, "path": target, **judge(target)})
            except Exception as exc:
                log.warning("quantization candidate %s failed: %s", label, exc)
                scores.append({"candidate": label, **setting, "error": f"{type(exc).__name__}: {exc}"})
        usable = [s for s in scores if "error" not in s]
        if len(usable) == 1:
            raise RuntimeError("every quantization candidate failed: " + "; ".join(s["error"] for s in scores[1:]))
        batch = config.select_batch_size or max(context.report.batch_sizes)
        candidates, sitting = time_candidates(usable, judge, batch, config, context)
        if config.max_accuracy_drop is None:
            pick, reason = choose(candidates, config.fidelity_tolerance, config.prefer)
        else:
            # The fallback restores accuracy: pick the format by speed, repair it, then check it still beats float.
            pick, reason = choose([c for c in candidates if not c.is_float], 1.0, config.prefer)
            chosen = next(s for s in usable if s["candidate"] == pick.name)
            context.details["fallback"] = run_fallback(
                chosen, source, float_path, config, reader, judge, context.evaluate.metric
            )
            if context.details["fallback"]["float_nodes"]:
                repaired = {**chosen, **judge(chosen["path"])}
                usable = [usable[0], repaired]
                candidates, sitting = time_candidates(usable, judge, batch, config, context)
            else:
                candidates = [candidates[0], pick]
            pick, reason = choose(candidates, 1.0, config.prefer)
        chosen = next(s for s in usable if s["candidate"] == pick.name)
        if pick.is_float:
            reason = no_gain_line(candidates, sitting.key)
            log.warning(reason)
        output = publish(chosen["path"], context.stage_dir, move=not pick.is_float)
        shutil.rmtree(work, ignore_errors=True)
        for score in scores:
            match = next((c for c in candidates if c.name == score["candidate"]), None)
            if match is not None:
                score.update(speedup=match.speedup, speedup_ci=list(match.interval), size_bytes=match.size_bytes)
        context.details.update(
            {
                "mode": config.mode,
                "chosen": chosen["candidate"],
                "kept_float": pick.is_float,
                "output_kind": judge.kind,
                "judged_by": judge.figure if judge.kind != "classes" or judge.figure != "fidelity" else "agreement",
                "selected_at": sitting.key,
                "sitting": sitting.to_dict(),
                "candidates": [{k: v for k, v in s.items() if k != "path"} for s in scores],
                "notes": notes,
                "reason": reason,
            }
        )
        return Artifact.from_onnx(output)


def check_smooth_quant(config: QuantizeConfig) -> None:
    if config.smooth_quant is None:
        return
    import importlib.util

    if importlib.util.find_spec("neural_compressor") is None:
        raise UserError(
            "quantize.smooth_quant: ONNX Runtime's SmoothQuant needs the neural-compressor package "
            "(pip install neural-compressor)"
        )


def time_candidates(usable: list[dict[str, Any]], judge: Any, batch: int, config: QuantizeConfig, context: Any):
    """Float and every candidate timed together in one sitting; returns the candidates and the sitting."""
    from compressctl.measure.latency import batch_feeds
    from compressctl.measure.sitting import Sitting, SittingSettings
    from compressctl.onnxio import onnx_files
    from compressctl.quantization.select import Candidate

    spec = context.report
    settings = SittingSettings(
        warmup=min(spec.warmup, 5),
        min_rounds=config.select_repeat,
        max_rounds=50 * config.select_repeat,
        max_seconds=config.select_seconds,
        target=spec.interval,
        statistic=spec.statistic,
    )
    models = {s["candidate"]: Path(s["path"]) for s in usable}
    sitting = Sitting(models, provider=context.provider, threads=context.threads, settings=settings)
    feeds = {n: batch_feeds(session.get_inputs(), judge.split.inputs, batch) for n, session in sitting.sessions.items()}
    result = sitting.time(feeds, batch)
    del sitting
    candidates = []
    for score in usable:
        name = score["candidate"]
        point, low, high = result.speedups.get(name, (1.0, 1.0, 1.0))
        size = sum(f.stat().st_size for f in onnx_files(Path(score["path"])))
        candidates.append(Candidate(name, score["judged_by"], score["cosine_mean"], point, (low, high), size))
        log.info(
            "candidate %s: %.2f× [%.2f–%.2f] over float at batch %d, %s %.4f",
            name,
            point,
            low,
            high,
            batch,
            judge.figure,
            score["judged_by"],
        )
    return candidates, result


def publish(path: Path, stage_dir: Path, *, move: bool) -> Path:
    """The chosen model as ``stage_dir/model.onnx`` (external data renamed to match)."""
    from compressctl.onnxio import MODEL_FILE, onnx_files
    from compressctl.quantization.int8 import rename_external_data

    output = stage_dir / MODEL_FILE
    files = onnx_files(path)
    for f in files:
        name = MODEL_FILE if f == path else f.name
        if move:
            shutil.move(str(f), str(stage_dir / name))
        else:
            shutil.copyfile(f, stage_dir / name)
    if len(files) > 1:
        rename_external_data(output)
    return output
