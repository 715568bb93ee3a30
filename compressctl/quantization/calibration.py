"""Activation ranges from calibration data: computed once per graph and method, reused by every candidate.

ONNX Runtime's calibrators run here rather than inside ``quantize_static``,
which then reads their result from its calibration cache. That way one
calibration serves every format and every fallback step, one histogram
serves both percentiles, and entropy calibration gets enough bins to choose
from: through ``quantize_static`` it keeps ONNX Runtime's 128, with which the
KL search has a single candidate threshold, the full range.

Memory and time stay bounded. Calibration reads one batch per collect, its
ranges or histograms merged before the next (see ``quantization.int8``). The
histogram methods make every activation of a batch a graph output, so they
read smaller batches and fewer samples (``HISTOGRAM_SAMPLES``, fewer for large
inputs): each sample costs a histogram update of every activation tensor.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from compressctl.recipe.models import Strict

log = logging.getLogger("compressctl")

PLAIN = "minmax"  # what candidates calibrate with first in ``method: auto``
PERCENTILES = (99.99, 99.999)
AUTO_TRIES = (*(f"percentile{p:g}" for p in PERCENTILES), "entropy")  # tried when the plain candidate is not faithful
HISTOGRAM_INPUT_BUDGET = 1024 * 1024  # bytes of input per histogram batch: every activation of it is kept at once
HISTOGRAM_SAMPLES = 64  # at most, and as many as HISTOGRAM_INPUT_TOTAL bytes of input (at least 8)
HISTOGRAM_INPUT_TOTAL = 32 * 1024 * 1024  # every sample updates a histogram of every activation tensor
ENTROPY_BINS = 512  # KL search over 128 quantized bins tries (512 - 128) / 2 thresholds per tensor


class CalibrationConfig(Strict):
    method: Literal["auto", "minmax", "entropy", "percentile", "distribution"] = Field(
        "auto",
        description=(
            "How activation ranges are chosen from calibration data. auto: minmax, and where the fastest static "
            "candidate is not faithful, percentile 99.99 and 99.999 and entropy too, the most faithful kept "
            "(qat: minmax)."
        ),
    )
    samples: int = Field(256, gt=0, le=100_000, description="Calibration samples (from the training split).")
    percentile: float = Field(99.999, gt=90, le=100, description="percentile method: the percentile kept.")
    batch_size: int = Field(32, gt=0, le=4096, description="Samples per calibration batch.")


def plain_calibration(config: Any) -> str:
    """The calibration the stage's candidates use first (``minmax`` in ``method: auto``)."""
    method = config.calibration.method
    if method == "auto":
        return PLAIN
    return f"percentile{config.calibration.percentile:g}" if method == "percentile" else method


def parse(calibration: str) -> tuple[str, float | None]:
    """``percentile99.99`` → ``("percentile", 99.99)``; other names have no percentile."""
    value = calibration.removeprefix("percentile")
    if value != calibration:
        return "percentile", float(value) if value else None
    return calibration, None


def calibration_method(name: str) -> Any:
    """ONNX Runtime's ``CalibrationMethod`` for a calibration name (``auto`` calibrates with min/max)."""
    from onnxruntime.quantization import CalibrationMethod

    method = parse(name)[0]
    return {
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "distribution": CalibrationMethod.Distribution,
    }.get(method, CalibrationMethod.MinMax)


def histogram_batch_size(split: Any, wanted: int) -> int:
    return max(1, min(wanted, HISTOGRAM_INPUT_BUDGET // (split.sample_bytes() or 1)))


def calibration_ranges(source: Path, reader: Any, calibration: str, op_types: list[str] | None, folder: Path) -> Path:
    """The calibration cache file (``quantize_static``'s ``calibration_cache_path``) of ``source``.

    Computed on first use and kept in ``reader.ranges`` for the next candidate
    of the same graph.
    """
    key = (str(source), calibration)
    found = reader.ranges.get(key)
    if found is not None and found.is_file():
        return found
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    from compressctl.onnxio import onnx_files

    method, percentile = parse(calibration)
    feed = reader
    options: dict[str, Any] = {}
    if method != PLAIN:
        count = HISTOGRAM_INPUT_TOTAL // (reader.split.sample_bytes() or 1)
        samples = reader.split.head(max(8, min(HISTOGRAM_SAMPLES, count)))
        feed = type(reader)(samples, reader.names, histogram_batch_size(samples, reader.batch_size))
    if method == "entropy":
        options = {"num_bins": ENTROPY_BINS}
    elif method == "percentile":
        options = {"percentile": percentile}
    with tempfile.TemporaryDirectory(dir=folder) as scratch, contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(
            Path(source),
            op_types or default_op_types(),
            augmented_model_path=str(Path(scratch) / "augmented.onnx"),
            calibrate_method=calibration_method(method),
            use_external_data_format=len(onnx_files(Path(source))) > 1,
            extra_options=options,
        )
        for start in range(len(feed)):  # one batch per collect: memory does not grow with samples
            feed.set_range(start, start + 1)
            calibrator.collect_data(feed)
        feed.rewind()
        # One histogram gives every percentile: the others are cached too.
        wanted = [percentile] + [p for p in PERCENTILES if p != percentile] if method == "percentile" else [None]
        for value in wanted:
            if value is not None:
                calibrator.collector.percentile = value
            name = calibration if value in (None, percentile) else f"percentile{value:g}"
            target = unique_file(folder, "calibration-", ".json")
            save_tensors_data(calibrator.compute_data(), target)
            reader.ranges[(str(source), name)] = target
        del calibrator
    log.info("quantize: %s calibration of %s from %d samples", calibration, Path(source).name, len(feed.split))
    return reader.ranges[key]


def unique_file(folder: Path, prefix: str, suffix: str) -> Path:
    """A new file's path in ``folder`` (readers of different data may share a folder)."""
    handle, name = tempfile.mkstemp(suffix, prefix, dir=folder)
    os.close(handle)
    return Path(name)


def default_op_types() -> list[str]:
    """The op types ``quantize_static`` quantizes (and calibrates) when none are given."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
