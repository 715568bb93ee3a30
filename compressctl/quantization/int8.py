"""INT8 through ONNX Runtime: pre-processing, opset upgrade, bounded-memory calibration, one candidate.

Memory is bounded twice over. ONNX Runtime's calibrators keep the outputs of
the augmented model for every batch a ``collect_data`` call reads (the
histogram methods keep every activation tensor), so calibration runs strided
(``quantization.calibration``): one batch per call, its ranges or histograms
merged before the next. ONNX Runtime's ``CalibMaxIntermediateOutputs`` is not
used: it drops the collected outputs instead of merging them, and fails with
"No data is collected" when it divides the number of batches. And the batch
itself is kept small for large inputs, since activation memory grows with it.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("compressctl")

QUANT_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
CALIBRATION_INPUT_BUDGET = 4 * 1024 * 1024  # bytes of input per calibration batch (activations are ~1000× that)
PER_CHANNEL_OPSET = 13  # per-channel DequantizeLinear (axis) needs opset 13
#: What a candidate is made with (its score in the report holds them too).
SETTING_KEYS = (
    "mode",
    "format",
    "activation",
    "weight",
    "graph",
    "calibration",
    "reduce_range",
    "bias_correction",
    "smooth",
)


class CalibrationReader:
    """Feeds calibration batches to ``quantize_static``, sliced on demand.

    ``__len__`` and ``set_range`` let ONNX Runtime read it stride by stride.
    """

    def __init__(self, split: Any, names: list[str], batch_size: int) -> None:
        self.split = split
        self.names = names
        self.batch_size = batch_size
        self.count = math.ceil(len(split) / batch_size)
        self.position, self.end = 0, self.count
        self.ranges: dict[tuple[str, str], Path] = {}  # (graph, calibration) → its calibration cache file

    def __len__(self) -> int:
        return self.count

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, min(end_index, self.count)

    def get_next(self) -> dict[str, Any] | None:
        if self.position >= self.end:
            return None
        start = self.position * self.batch_size
        self.position += 1
        window = self.split.rows(slice(start, start + self.batch_size))
        return dict(zip(self.names, window, strict=False))

    def rewind(self) -> None:
        self.position, self.end = 0, self.count


def calibration_batch_size(split: Any, wanted: int) -> int:
    """``wanted``, made smaller where one batch's input would pass the memory budget."""
    per_sample = split.sample_bytes() or 1
    return max(1, min(wanted, CALIBRATION_INPUT_BUDGET // per_sample))


def uses_external_data(path: Path) -> bool:
    from compressctl.onnxio import onnx_files

    return len(onnx_files(path)) > 1


def preprocess(source: Path, target: Path, notes: list[str]) -> Path:
    """ONNX Runtime's pre-processing (shape inference, graph optimisation); falls back, saying so in ``notes``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    external = uses_external_data(source)
    source, target = Path(source).resolve(), Path(target).resolve()
    for skip_symbolic in (False, True):
        try:
            # in the stage's folder: symbolic shape inference dumps its partial model into the working directory
            with contextlib.chdir(target.parent):
                quant_pre_process(
                    str(source),
                    str(target),
                    skip_symbolic_shape=skip_symbolic,
                    save_as_external_data=external,
                    all_tensors_to_one_file=True,
                    external_data_location=target.name + ".data" if external else None,
                )
            if skip_symbolic:
                notes.append("symbolic shape inference failed; pre-processing ran without it")
            return target
        except Exception as exc:
            log.info("quantization pre-processing (skip_symbolic_shape=%s) failed: %s", skip_symbolic, exc)
    notes.append("quantization pre-processing failed; quantizing the model as it is")
    return source


def model_opset(path: Path) -> int:
    from compressctl.onnxio import load_onnx

    model = load_onnx(path, load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgrade_opset(source: Path, target: Path, notes: list[str]) -> Path:
    """The model at opset 13 or later (per-channel quantization needs it); ``source`` when it already is."""
    import onnx
    from onnx import version_converter

    from compressctl.onnxio import load_onnx

    old = model_opset(source)
    if old >= PER_CHANNEL_OPSET:
        return source
    model = load_onnx(source)
    upgraded = version_converter.convert_version(model, PER_CHANNEL_OPSET)
    onnx.save_model(
        upgraded,
        str(target),
        save_as_external_data=uses_external_data(source),
        all_tensors_to_one_file=True,
        location=target.name + ".data",
    )
    notes.append(f"opset {old} upgraded to {PER_CHANNEL_OPSET} for per-channel quantization")
    log.info("quantize: the model's opset %d was upgraded to %d (per-channel weights need it)", old, PER_CHANNEL_OPSET)
    return target


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer warns on the root logger about every tensor it skips (int64 ids, masks)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


# Outputs of contrib ops (a fused Attention, SkipLayerNormalization) have no inferred type; they are float.
FLOAT_DEFAULT = {"DefaultTensorType": 1}  # onnx.TensorProto.FLOAT


def quantize_candidate(
    source: Path,
    target: Path,
    config: Any,
    setting: dict[str, Any],
    reader: CalibrationReader | None,
    float_nodes: list[str] | None = None,
) -> None:
    """Quantize ``source`` as ``setting`` says: mode, format, types, and for static INT8 its calibration
    (``setting["calibration"]``, default the stage's) and bias correction (``setting["bias_correction"]``)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    from compressctl.quantization.calibration import calibration_method, calibration_ranges, parse, plain_calibration

    external = uses_external_data(source)
    nodes_to_exclude = list(config.exclude_nodes) + list(float_nodes or []) + non_float32_nodes(source)
    if config.exclude_op_types:
        from compressctl.onnxio import load_onnx

        model = load_onnx(source, load_external_data=False)
        nodes_to_exclude += [n.name for n in model.graph.node if n.op_type in config.exclude_op_types]
    common: dict[str, Any] = {
        "op_types_to_quantize": config.op_types,
        "per_channel": config.per_channel,
        "reduce_range": setting.get("reduce_range", reduces_range(config.reduce_range, setting)),
        "weight_type": getattr(QuantType, QUANT_TYPES[setting["weight"]]),
        "nodes_to_exclude": nodes_to_exclude or None,
        "use_external_data_format": external,
    }
    with quiet_root_logger():
        if setting.get("mode", config.mode) == "dynamic":
            if setting.get("smooth"):
                from compressctl.quantization.smooth import smooth

                smoothed = target.with_name(target.stem + "-smoothed.onnx")
                smooth(source, smoothed, reader, setting["smooth"])
                source = smoothed
            quantize_dynamic(
                str(source), str(target), extra_options={"MatMulConstBOnly": True, **FLOAT_DEFAULT}, **common
            )
            return
        assert reader is not None
        calibration = setting.get("calibration") or plain_calibration(config)
        extra: dict[str, Any] = dict(FLOAT_DEFAULT)
        cache = None
        if config.smooth_quant is None:
            cache = calibration_ranges(source, reader, calibration, config.op_types, target.parent)
        else:  # SmoothQuant rewrites the graph before ONNX Runtime calibrates it, inside quantize_static
            percentile = parse(calibration)[1]
            extra.update({"SmoothQuant": True, "SmoothQuantAlpha": config.smooth_quant, "CalibStridedMinMax": 1})
            extra.update({"CalibPercentile": percentile} if percentile else {})
            reader.rewind()
        if setting.get("bias_correction"):
            from compressctl.quantization.bias_correction import correct_biases

            corrected = target.with_name(target.stem + "-bias-corrected.onnx")
            correct_biases(
                source, corrected, reader, config, setting["weight"], common["reduce_range"], set(nodes_to_exclude)
            )
            source = corrected
        quantize_static(
            str(source),
            str(target),
            reader if cache is None else None,
            quant_format=QuantFormat.QDQ if setting["format"] == "qdq" else QuantFormat.QOperator,
            activation_type=getattr(QuantType, QUANT_TYPES[setting["activation"]]),
            calibrate_method=calibration_method(calibration),
            extra_options=extra,
            calibration_cache_path=cache,
            **common,
        )


def reduces_range(option: bool | str, setting: dict[str, str]) -> bool:
    """Whether a candidate quantizes weights to 7 bits: ``auto`` does for u8 activations × s8 weights on a CPU
    whose INT8 kernels saturate (x86 without VNNI or AMX)."""
    if option != "auto":
        return bool(option)
    from compressctl.environment import int8_saturates

    return setting.get("activation", "uint8") == "uint8" and setting.get("weight") == "int8" and int8_saturates()


def non_float32_nodes(source: Path) -> list[str]:
    """Nodes with a float16 or float64 input: the quantizer would put an 8-bit QuantizeLinear on it.

    Converters leave such islands (tf2onnx writes an LSTM's reversed sequence in
    float16); a Q/DQ pair there makes an invalid model, so they stay in float.
    """
    import onnx

    from compressctl.onnxio import load_onnx

    model = load_onnx(source, load_external_data=False)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # types stay unknown; nothing to exclude on their account
        return []
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    odd = {onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
    return [n.name for n in model.graph.node if n.name and any(types.get(i) in odd for i in n.input)]


def candidate_settings(config: Any, transformer: bool = False, fused: bool = False) -> list[dict[str, Any]]:
    """The (mode, format, activation, weight, graph) combinations to try.

    ``mode: auto`` tries the static formats and, on transformers, dynamic INT8
    too: there ``quantize_dynamic`` turns fused attention into QAttention, which
    static quantization cannot. When the graph was fused, dynamic INT8 is tried
    on the unfused graph as well (``graph: plain``): on some CPUs QAttention is
    slower than quantized MatMuls around float attention. ``mode: auto`` on a
    transformer also tries dynamic INT8 after SmoothQuant (``smooth``: its
    alpha), on the unfused graph: it evens out the activation outliers that
    per-tensor activation scales cannot cover.
    """
    from compressctl.quantization.calibration import plain_calibration
    from compressctl.quantization.smooth import ALPHA

    found: list[dict[str, Any]] = []
    plain = plain_calibration(config)
    if config.mode in ("static", "auto"):
        formats = ["qdq", "qoperator"] if config.format == "auto" else [config.format]
        acts = ["uint8", "int8"] if config.activation_type == "auto" else [config.activation_type]
        weights = ["int8"] if config.weight_type == "auto" else [config.weight_type]
        for fmt in formats:
            for act in acts:
                for weight in weights:
                    if fmt == "qoperator" and act == "int8":
                        continue  # QOperator kernels with int8 activations are reference code on CPU
                    found.append(
                        {"mode": "static", "format": fmt, "activation": act, "weight": weight, "calibration": plain}
                    )
    if config.mode == "dynamic" or (config.mode == "auto" and transformer):
        weights = ["int8", "uint8"] if config.weight_type == "auto" else [config.weight_type]
        graphs = ["fused", "plain"] if fused else ["fused"]
        found += [
            {"mode": "dynamic", "format": "qoperator", "activation": "uint8", "weight": w, "graph": g}
            for g in graphs
            for w in weights
        ]
        if config.mode == "auto" and "int8" in weights:  # SmoothQuant reads the batches static INT8 calibrates on
            smooth = {"mode": "dynamic", "format": "qoperator", "activation": "uint8", "weight": "int8"}
            found.append({**smooth, "graph": graphs[-1], "smooth": ALPHA})
    return [{"graph": "fused", **s, "reduce_range": reduces_range(config.reduce_range, s)} for s in found]


def candidate_label(setting: dict[str, Any]) -> str:
    if setting["mode"] == "dynamic":
        label = f"dynamic_w{setting['weight']}" + ("_unfused" if setting.get("graph") == "plain" else "")
        return label + ("_smooth" if setting.get("smooth") else "")
    label = f"{setting['format']}_a{setting['activation']}_w{setting['weight']}"
    if setting.get("calibration", "minmax") != "minmax":
        label += f"+{setting['calibration']}"
    return label + ("+bias_correction" if setting.get("bias_correction") else "")


def rename_external_data(path: Path) -> None:
    """Name the weights file ``model.onnx.data`` (the quantizer named it after the candidate)."""
    import onnx

    from compressctl.onnxio import _all_tensors, onnx_files

    target = path.name + ".data"
    old_files = onnx_files(path)[1:]
    if len(old_files) != 1 or old_files[0].name == target:
        return
    model = onnx.load(str(path), load_external_data=False)
    for tensor in _all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = target
    old_files[0].rename(path.parent / target)
    onnx.save_model(model, str(path))


def publish(path: Path, stage_dir: Path, *, move: bool) -> Path:
    """The chosen model as ``stage_dir/model.onnx`` (external data renamed to match)."""
    import shutil

    from compressctl.onnxio import MODEL_FILE, onnx_files

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


def check_smooth_quant(config: Any) -> None:
    if config.smooth_quant is None:
        return
    import importlib.util

    if importlib.util.find_spec("neural_compressor") is None:
        from compressctl.errors import UserError

        raise UserError(
            "quantize.smooth_quant: ONNX Runtime's SmoothQuant needs the neural-compressor package "
            "(pip install neural-compressor)"
        )
