"""``quantize``: quantization of an ONNX model (INT8 through ``onnxruntime.quantization``,
k-means weight clustering, weight-only int4, fp16).

ONNX Runtime's defaults (QDQ with signed 8-bit activations) are not the fastest on every CPU;
on x86 with VNNI they can be slower than float. So this stage quantizes a few candidate formats,
judges each against float on held-out samples by a metric that fits the output, times them and
the float model together in one sitting, and keeps the fastest faithful one, float included
(``compressctl.quantization.select``); the report lists every candidate and why the winner won.

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
from compressctl.fusion import fuse_encoder, looks_transformer
from compressctl.quantization.calibration import CalibrationConfig
from compressctl.quantization.fallback import run_fallback
from compressctl.quantization.select import (
    FLOAT,
    FUSED_FLOAT,
    choose,
    is_quantized,
    judged_by,
    no_gain_line,
    repairable,
    retimed_after_repair,
    time_candidates,
)
from compressctl.runners.base import Runner, StageConfig, searched

log = logging.getLogger("compressctl")

# search tags: static-INT8-only options; the fallback; float nodes (the search's, or the fallback's); modes
# that act on MatMuls with constant weights (searched only for models that have them)
INT8, FALLBACK = {"when": {"mode": ["static"]}}, {"when": {"mode": ["static", "dynamic"]}}
NODES = {"when": {"mode": ["static", "dynamic"], "max_accuracy_drop": [None]}}
MATMUL_MODES = {"dynamic": "MatMul", "int4": "MatMul"}


class QuantizeConfig(StageConfig):
    type: Literal["quantize"] = "quantize"
    mode: Literal["auto", "static", "dynamic", "kmeans", "int4", "fp16"] = Field(
        "auto",
        description=(
            "auto: static INT8 candidates, plus dynamic ones on transformers, chosen by measurement; "
            "static: INT8 with calibrated activations; dynamic: INT8 with activation ranges at run time; "
            "kmeans: weights clustered to a 2^bits codebook; int4: weight-only 4-bit MatMulNBits; fp16: float16."
        ),
        json_schema_extra=searched(choices=["static", "kmeans", "dynamic", "int4"], optional=True, needs=MATMUL_MODES),
    )
    format: Literal["auto", "qdq", "qoperator"] = Field(
        "auto", description="ONNX quantization format; auto picks the fastest measured on the provider."
    )
    activation_type: Literal["auto", "uint8", "int8"] = Field(
        "auto", description="static only: activation type; auto picks by measurement."
    )
    weight_type: Literal["auto", "int8", "uint8"] = Field("auto", description="Weight type; auto picks by measurement.")
    per_channel: bool = Field(
        True,
        description="Per-output-channel weight scales.",
        json_schema_extra=searched(choices=[True, False], models="onnx", **INT8),
    )
    reduce_range: bool | Literal["auto"] = Field(
        "auto", description="7-bit weights. auto: for u8×s8 on x86 without VNNI/AMX, whose kernels saturate."
    )
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig,
        description="static: calibration method (auto|minmax|entropy|percentile|distribution), samples from the training split.",
        json_schema_extra=searched(choices=["minmax", "entropy", "percentile"], models="onnx", **INT8),  # the method
    )
    op_types: list[str] | None = Field(None, description="Quantize only these op types (default: all supported).")
    exclude_nodes: list[str] = Field(
        default_factory=list, description="Node names kept in float.", json_schema_extra=searched(per="node", **NODES)
    )
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
    preprocess: bool = Field(True, description="INT8: run ONNX Runtime's quantization pre-processing first.")
    fuse: Literal["auto", "never"] = Field(
        "auto",
        description=(
            "INT8: auto fuses transformer encoders first (Attention, SkipLayerNormalization… see the optimize "
            "stage), and the fused float model becomes a candidate too; never quantizes the graph as it is."
        ),
    )
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
        json_schema_extra=searched(choices=[None, 0.003, 0.001], **FALLBACK),
    )
    repair: Literal["auto", "never"] = Field(
        "auto",
        description=(
            "INT8 without max_accuracy_drop: when the fastest quantized candidate is faster than float but not "
            "faithful, its most sensitive nodes return to float until it is within fidelity_tolerance (auto), "
            "then it is timed against float again; never keeps the choice among the candidates as they are."
        ),
    )
    bias_correction: Literal["auto", "never"] = Field(
        "auto",
        description=(
            "static: where the fastest static candidate is not faithful, try it with biases corrected for the "
            "weights' rounding error (Nagel et al. 2019), kept only where more faithful."
        ),
    )
    recover_seconds: float = Field(
        240.0, gt=0, le=86_400, description="Time budget of the other calibrations and bias correction tried."
    )
    fallback_seconds: float = Field(
        180.0, gt=0, le=86_400, description="Time budget of the fallback's search (ranking and steps)."
    )
    fallback_max_nodes: int = Field(
        32, gt=0, le=10_000, description="Most nodes the accuracy-aware fallback may return to float."
    )
    fallback_op_types: list[str] = Field(
        default_factory=lambda: ["Conv", "ConvTranspose", "Gemm", "MatMul", "Attention"],
        min_length=1,
        description="Op types whose nodes the fallback ranks by sensitivity.",
    )
    smooth_quant: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="static: SmoothQuant alpha (activation smoothing via ONNX Runtime; needs neural-compressor).",
    )
    bits: int | None = Field(
        None,
        ge=2,
        le=8,
        description="kmeans only: index bits (2^bits centroids, default 4).",
        json_schema_extra=searched(choices=[4, 8], when={"mode": ["kmeans"]}),
    )
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
            "max_accuracy_drop": ("auto", "static", "dynamic"),
            "smooth_quant": ("auto", "static"),
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
        from compressctl.quantization.candidates import build, failures, recover, within_drop, within_tolerance
        from compressctl.quantization.int8 import (
            CalibrationReader,
            calibration_batch_size,
            candidate_settings,
            check_smooth_quant,
            preprocess,
            publish,
            upgrade_opset,
        )

        check_smooth_quant(config)
        work = context.stage_dir / "work"
        work.mkdir()
        float_path = Path(artifact.path)
        notes: list[str] = []
        source = upgrade_opset(float_path, work / "upgraded.onnx", notes) if config.per_channel else float_path
        plain = source  # dynamic INT8 is also tried on the graph as it came: QAttention is not always faster
        fusion = fuse_encoder(source, work) if config.fuse == "auto" else None
        if fusion is not None:
            source = fusion.path
            context.details["fusion"] = fusion.to_dict()
            if fusion.warning():
                notes.append(fusion.warning())
        if config.preprocess:
            source = preprocess(source, work / "preprocessed.onnx", notes)
            plain = preprocess(plain, work / "preprocessed-plain.onnx", []) if fusion is not None else source
        graphs = {"fused": source, "plain": plain if fusion is not None else source}
        for note in notes:
            log.warning("quantize: %s", note)
        transformer = fusion is not None or looks_transformer(source)
        settings = candidate_settings(config, transformer=transformer, fused=fusion is not None)
        reader = None
        if any(s["mode"] == "static" for s in settings):
            calibration = context.data.calibration.head(config.calibration.samples)
            names = [i.name for i in context.inputs] or context.data.input_names
            batch_size = calibration_batch_size(calibration, config.calibration.batch_size)
            reader = CalibrationReader(calibration, names, batch_size)
            context.details.update({"calibration_samples": len(calibration), "calibration_batch_size": batch_size})
        judge = make_judge(float_path, context, config)
        scores: list[dict[str, Any]] = [{"candidate": FLOAT, "path": float_path, **judge(float_path)}]
        if fusion is not None:
            scores.append({"candidate": FUSED_FLOAT, "path": fusion.path, **judge(fusion.path)})
        scores += [build(graphs[s["graph"]], work, config, s, reader, judge) for s in settings]
        usable = [s for s in scores if "error" not in s]
        if not any(is_quantized(s) for s in usable):
            reason = "quantize: every INT8 candidate failed; keeping the float model (" + failures(scores) + ")"
            log.warning(reason)
            shutil.rmtree(work, ignore_errors=True)
            context.details.update(
                {"mode": config.mode, "chosen": FLOAT, "kept_float": True, "reason": reason, "notes": notes}
            )
            context.details["candidates"] = [{k: v for k, v in s.items() if k != "path"} for s in scores]
            return Artifact.from_onnx(publish(float_path, context.stage_dir, move=False))
        batch = config.select_batch_size or max(context.report.batch_sizes)
        provider = context.provider
        candidates, sitting = time_candidates(usable, judge, batch, config, provider, context.report)
        figures = {c.name: c for c in candidates}
        if config.max_accuracy_drop is None:
            faithful = within_tolerance(candidates, config.fidelity_tolerance)
        else:
            faithful = within_drop(judge, context.evaluate.metric, float_path, config.max_accuracy_drop)
        variants, candidates = recover(usable, candidates, graphs, config, reader, judge, work, faithful)
        scores += variants
        usable += [v for v in variants if "error" not in v]
        figures.update({c.name: c for c in candidates})
        if config.max_accuracy_drop is None:
            pick, reason = choose(candidates, config.fidelity_tolerance, config.prefer)
            broken = repairable(candidates, pick, config.fidelity_tolerance) if config.repair == "auto" else None
            if broken is not None:
                chosen = next(s for s in usable if s["candidate"] == broken.name)
                context.details["fallback"] = run_fallback(
                    chosen,
                    graphs[chosen["graph"]],
                    float_path,
                    config,
                    reader,
                    judge,
                    "fidelity",
                    config.fidelity_tolerance,
                )
                if context.details["fallback"]["met"]:
                    usable = retimed_after_repair(usable, pick.name, {**chosen, **judge(chosen["path"])})
                    candidates, sitting = time_candidates(usable, judge, batch, config, provider, context.report)
                    figures.update({c.name: c for c in candidates})
                    pick, reason = choose(candidates, config.fidelity_tolerance, config.prefer)
        else:
            # The fallback restores accuracy: pick the format by speed, repair it, then check it still beats float.
            fastest, _ = choose([c for c in candidates if c.is_quantized], 1.0, config.prefer)
            chosen = next(s for s in usable if s["candidate"] == fastest.name)
            context.details["fallback"] = run_fallback(
                chosen, graphs[chosen["graph"]], float_path, config, reader, judge, context.evaluate.metric
            )
            returned = len(context.details["fallback"]["float_nodes"])
            if returned:
                repaired = {**chosen, **judge(chosen["path"])}
                usable = [usable[0], repaired]
                candidates, sitting = time_candidates(usable, judge, batch, config, provider, context.report)
                figures.update({c.name: c for c in candidates})
            else:
                candidates = [candidates[0], fastest]
            pick, _ = choose(candidates, 1.0, config.prefer)
            reason = (
                f"{fastest.name}: the fastest format; {returned} node(s) returned to float to keep the drop "
                f"within {config.max_accuracy_drop:g}"
            )
        chosen = next(s for s in usable if s["candidate"] == pick.name)
        if not pick.is_quantized:
            reason = no_gain_line(candidates, sitting.key, kept=pick.name)
            log.warning(reason)
        output = publish(chosen["path"], context.stage_dir, move=not pick.is_float)
        shutil.rmtree(work, ignore_errors=True)
        for score in scores:
            match = figures.get(score["candidate"])
            if match is not None:
                score.update(speedup=match.speedup, speedup_ci=list(match.interval), size_bytes=match.size_bytes)
        context.details.update(
            {
                "mode": config.mode,
                "chosen": chosen["candidate"],
                "kept_float": not pick.is_quantized,
                "output_kind": judge.kind,
                "judged_by": judged_by(judge),
                "selected_at": sitting.key,
                "sitting": sitting.to_dict(),
                "candidates": [{k: v for k, v in s.items() if k != "path"} for s in scores],
                "notes": notes,
                "reason": reason,
            }
        )
        return Artifact.from_onnx(output)
