"""``quantize``: quantization of an ONNX model (INT8 through ``onnxruntime.quantization``,
k-means weight clustering, weight-only int4, fp16).

ONNX Runtime's defaults (QDQ with signed 8-bit activations) are not the fastest
on every CPU; on x86 with VNNI they can be slower than float. With ``auto``
settings this stage quantizes a few candidate formats, times each on the
recipe's first provider, checks each against the float model on calibration
data, and keeps the fastest one that is as faithful as the best. The report
lists every candidate and why the winner won.

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
    select_repeat: int = Field(30, gt=0, le=10_000, description="Timed runs per candidate.")
    fidelity_tolerance: float = Field(
        0.01, ge=0, le=1, description="A faster candidate may agree with float this much less than the best."
    )
    preprocess: bool = Field(True, description="static/dynamic: run ONNX Runtime's quantization pre-processing first.")
    faithfulness: Literal["fidelity", "cosine_mean", "cosine_min"] = Field(
        "fidelity",
        description=(
            "How a quantized model is compared with float when there are no labels: top-1 agreement "
            "(classifiers) or cosine similarity of the outputs (embeddings)."
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
                str(source),
                str(target),
                skip_symbolic_shape=skip_symbolic,
                save_as_external_data=external,
                all_tensors_to_one_file=True,
                external_data_location=target.name + ".data" if external else None,
            )
            return target
        except Exception as exc:
            log.info("quantization pre-processing (skip_symbolic_shape=%s) failed: %s", skip_symbolic, exc)
            remove_symbolic_debug_dump()
    return source


def remove_symbolic_debug_dump() -> None:
    """ONNX Runtime's symbolic shape inference dumps its partial model into the working directory on failure."""
    import time

    from compressctl.onnxio import onnx_files

    dump = Path.cwd() / "sym_shape_infer_temp.onnx"
    if not dump.is_file() or time.time() - dump.stat().st_mtime > 60:
        return
    try:
        files = onnx_files(dump)
    except Exception:
        files = [dump]
    for f in files:
        f.unlink(missing_ok=True)


def quantize_candidate(
    source: Path,
    target: Path,
    config: QuantizeConfig,
    setting: dict[str, str],
    reader: CalibrationReader | None,
    float_nodes: list[str] | None = None,
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    external = uses_external_data(source)
    nodes_to_exclude = list(config.exclude_nodes) + list(float_nodes or [])
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
    extra: dict[str, Any] = {"CalibPercentile": config.calibration.percentile}
    if config.smooth_quant is not None:
        extra.update({"SmoothQuant": True, "SmoothQuantAlpha": config.smooth_quant})
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


def score_candidate(
    path: Path, feeds: dict[str, Any], check: Any, reference: Any, context: Any, config: QuantizeConfig
) -> dict[str, float]:
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


SPEED_TIE = 0.10  # candidates within 10 % of the fastest count as equally fast


def select(scores: list[dict[str, Any]], tolerance: float, key: str = "fidelity") -> dict[str, Any]:
    """The fastest candidate whose fidelity is within ``tolerance`` of the most faithful.

    Candidates within ``SPEED_TIE`` of the fastest are a tie, broken by the
    candidate order, so timing noise does not flip the choice between runs.
    """
    best_fidelity = max(s[key] for s in scores)
    eligible = [s for s in scores if s[key] >= best_fidelity - tolerance]
    fastest = min(s["p50_ms"] for s in eligible)
    return next(s for s in eligible if s["p50_ms"] <= fastest * (1 + SPEED_TIE))


def rename_external_data(path: Path) -> None:
    """Name the weights file ``model.onnx.data`` (the quantizer named it after the candidate)."""
    import onnx

    from compressctl.onnxio import onnx_files

    target = path.name + ".data"
    old_files = onnx_files(path)[1:]
    if len(old_files) != 1 or old_files[0].name == target:
        return
    from compressctl.onnxio import _all_tensors

    model = onnx.load(str(path), load_external_data=False)
    for tensor in _all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = target
    old_files[0].rename(path.parent / target)
    onnx.save_model(model, str(path))


def validation_evaluator(context: Any, float_path: Path, config: QuantizeConfig) -> tuple[Any, str]:
    """A function ``path -> metric`` on the validation split, and the metric's name.

    The metric is accuracy (or top-5) with labels, else top-1 agreement with
    the float model.
    """
    from compressctl.measure.latency import default_threads, make_session
    from compressctl.measure.metrics import accuracy, agreement, predict, top_k

    split = context.data.val.head(context.recipe.evaluate.max_samples)
    batch_size = context.recipe.data.batch_size
    threads = context.recipe.report.threads or default_threads()
    provider = context.run.providers[0]
    metric = context.recipe.evaluate.metric
    if split.labels is None or metric not in ("accuracy", "top5"):
        metric = config.faithfulness
    reference = predict(make_session(float_path, provider, threads), split, batch_size)

    def evaluate(path: Path) -> float:
        outputs = predict(make_session(path, provider, threads), split, batch_size)
        if metric == "accuracy":
            return accuracy(outputs, split.labels)
        if metric == "top5":
            return top_k(outputs, split.labels, 5)
        return agreement(outputs, reference)[config.faithfulness]

    return evaluate, metric


def fallback_nodes(source: Path, config: QuantizeConfig) -> list[str]:
    """Named nodes the quantizer would quantize and the fallback may return to float."""
    from compressctl.onnxio import load_onnx

    model = load_onnx(source, load_external_data=False)
    allowed = set(config.fallback_op_types) & set(config.op_types or config.fallback_op_types)
    excluded = set(config.exclude_nodes)
    return [
        n.name
        for n in model.graph.node
        if n.name and n.op_type in allowed and n.op_type not in config.exclude_op_types and n.name not in excluded
    ]


def run_fallback(
    chosen: dict[str, Any], source: Path, float_path: Path, config: QuantizeConfig, reader: Any, context: Any
) -> dict[str, Any]:
    """Apply the accuracy-aware fallback to the chosen candidate; returns the details for the report."""
    from compressctl.quantization.fallback import accuracy_aware_fallback

    evaluate, metric = validation_evaluator(context, float_path, config)
    float_metric = evaluate(float_path)
    quantized_metric = evaluate(chosen["path"])
    setting = {k: chosen[k] for k in ("format", "activation", "weight")}
    work = Path(chosen["path"]).parent
    made: list[Path] = []

    def quantize(float_nodes: list[str]) -> Path:
        target = work / f"fallback_{len(made)}.onnx"
        quantize_candidate(source, target, config, setting, reader, float_nodes)
        made.append(target)
        return target

    result = accuracy_aware_fallback(
        fallback_nodes(source, config),
        quantize,
        evaluate,
        float_metric=float_metric,
        quantized=Path(chosen["path"]),
        quantized_metric=quantized_metric,
        max_drop=float(config.max_accuracy_drop or 0.0),
        max_nodes=config.fallback_max_nodes,
    )
    if not result.met:
        log.warning(
            "accuracy-aware fallback: drop %.4f still exceeds %.4f with %d nodes in float",
            float_metric - result.metric,
            config.max_accuracy_drop,
            len(result.float_nodes),
        )
    chosen["path"] = result.path
    return {
        "metric": metric,
        "max_accuracy_drop": config.max_accuracy_drop,
        "float_metric": float_metric,
        "quantized_metric": quantized_metric,
        "final_metric": result.metric,
        "final_drop": float_metric - result.metric,
        "met": result.met,
        "float_nodes": result.float_nodes,
        "ranking": [{k: v for k, v in r.items() if k != "position"} for r in result.ranking],
        "steps": result.steps,
    }


def transform_weights(source: Path, target: Path, config: QuantizeConfig, context: Any) -> dict[str, Any]:
    """kmeans | int4 | fp16: rewrite the ONNX graph's weights; returns details for the report."""
    from compressctl.onnxio import load_onnx
    from compressctl.quantization import weight_only

    model = load_onnx(source)
    excluded = set(config.exclude_nodes) | {n.name for n in model.graph.node if n.op_type in config.exclude_op_types}
    details: dict[str, Any] = {}
    if config.mode == "kmeans":
        from compressctl.quantization.kmeans import DEFAULT_OP_TYPES, cluster_model

        bits = config.bits or 4
        op_types = tuple(config.op_types or DEFAULT_OP_TYPES)
        granularity = config.granularity or "tensor"
        model, tensors = cluster_model(
            model,
            bits,
            op_types=op_types,
            exclude_nodes=excluded,
            min_elements=config.min_elements,
            granularity=granularity,
        )
        if not tensors:
            raise ValueError(f"no weight of {', '.join(op_types)} nodes has {config.min_elements}+ elements to cluster")
        details.update(
            {
                "bits": bits,
                "centroids": 2**bits,
                "granularity": granularity,
                "clustered": tensors,
                "index_storage": "uint8, two 4-bit indices per byte" if bits <= 4 else "uint8",
            }
        )
    elif config.mode == "int4":
        op_types = tuple(config.int4_op_types or ["MatMul", "Gather"])
        model, found = weight_only.quantize_int4(
            model,
            block_size=config.block_size or 128,
            symmetric=bool(config.symmetric),
            accuracy_level=config.accuracy_level or None,
            op_types=op_types,
            nodes_to_exclude=sorted(excluded),
        )
        if not found["quantized_nodes"]:
            raise ValueError(f"no {' or '.join(op_types)} node with a constant weight was quantized to int4")
        details.update({"block_size": config.block_size or 128, "symmetric": bool(config.symmetric), **found})
    else:
        keep = True if config.keep_io_types is None else config.keep_io_types
        model = weight_only.convert_fp16(
            model,
            keep_io_types=keep,
            op_block_list=config.exclude_op_types or None,
            node_block_list=sorted(excluded) or None,
        )
        details["keep_io_types"] = keep
    weight_only.save(model, target, external=uses_external_data(source))
    return details


def score_against_float(path: Path, float_path: Path, context: Any) -> dict[str, float]:
    """Agreement of a transformed model with its float input on calibration samples."""
    from compressctl.measure.latency import default_threads, make_session
    from compressctl.measure.metrics import agreement, predict

    check = context.data.calibration.head(256)
    threads = context.recipe.report.threads or default_threads()
    provider = context.run.providers[0]
    batch_size = context.recipe.data.batch_size
    reference = predict(make_session(float_path, provider, threads), check, batch_size)
    return agreement(predict(make_session(path, provider, threads), check, batch_size), reference)


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

        source = Path(artifact.path)
        output = context.stage_dir / MODEL_FILE
        details = transform_weights(source, output, config, context)
        size_before = sum(f.stat().st_size for f in onnx_files(source))
        size_after = sum(f.stat().st_size for f in onnx_files(output))
        context.details.update(
            {
                "mode": config.mode,
                **details,
                "size_bytes_before": size_before,
                "size_bytes_after": size_after,
                "size_ratio": size_after / size_before,
                "agreement_with_float": score_against_float(output, source, context),
            }
        )
        return Artifact.from_onnx(output)

    def run_int8(self, artifact: Artifact, config: QuantizeConfig, context: Any) -> Artifact:
        from compressctl.measure.latency import batch_feeds, default_threads, make_session

        if config.smooth_quant is not None:
            import importlib.util

            if importlib.util.find_spec("neural_compressor") is None:
                raise UserError(
                    "quantize.smooth_quant: ONNX Runtime's SmoothQuant needs the neural-compressor package "
                    "(pip install neural-compressor)"
                )
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
            log.info(
                "candidate %s: p50 %.3f ms at batch %d, fidelity %.4f", label, score["p50_ms"], batch, score["fidelity"]
            )
        usable = [s for s in scores if "error" not in s]
        if not usable:
            raise RuntimeError("every quantization candidate failed: " + "; ".join(s["error"] for s in scores))
        chosen = select(usable, config.fidelity_tolerance, config.faithfulness) if len(usable) > 1 else usable[0]
        if config.max_accuracy_drop is not None:
            context.details["fallback"] = run_fallback(chosen, source, Path(artifact.path), config, reader, context)
        output = context.stage_dir / MODEL_FILE
        files = onnx_files(chosen["path"])
        for f in files:
            name = MODEL_FILE if f == chosen["path"] else f.name
            shutil.move(str(f), str(context.stage_dir / name))
        if len(files) > 1:
            rename_external_data(output)
        shutil.rmtree(work, ignore_errors=True)
        context.details.update(
            {
                "mode": config.mode,
                "chosen": chosen["candidate"],
                "selected_at": f"{context.run.providers[0]}@{batch}",
                "candidates": [{k: v for k, v in s.items() if k != "path"} for s in scores],
                "reason": (
                    f"fastest of {len(usable)} measured candidates within {config.fidelity_tolerance:g} "
                    f"{config.faithfulness} of the most faithful"
                    if len(usable) > 1
                    else "only candidate"
                ),
            }
        )
        return Artifact.from_onnx(output)
