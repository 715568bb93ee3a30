"""A report dict fixed by hand: three models, two batch sizes, gates and stages; no timestamps, no versions.

The golden files beside these tests are rendered from it, so it must not change from run to run.
"""

from __future__ import annotations

import copy
from typing import Any


def _latency(batch: int, p50: float, samples: list[float]) -> dict[str, Any]:
    return {
        "provider": "CPUExecutionProvider",
        "requested_provider": "CPUExecutionProvider",
        "batch_size": batch,
        "p50_ms": p50,
        "p90_ms": round(p50 * 1.2, 3),
        "p99_ms": round(p50 * 1.5, 3),
        "mean_ms": round(p50 * 1.1, 3),
        "std_ms": round(p50 * 0.1, 3),
        "throughput_per_s": round(1000 * batch / p50, 1),
        "runs": len(samples),
        "samples_ms": samples,
    }


def _model(name: str, size: int, zipped: int, params: int, nonzero: int, macs: int, accuracy: float, p50: float):
    return {
        "name": name,
        "path": f"out/fixed/{name}.onnx",
        "size_bytes": size,
        "compressed_size_bytes": zipped,
        "params": params,
        "nonzero_params": nonzero,
        "macs": macs,
        "metrics": {"accuracy": accuracy},
        "latency": [
            _latency(1, p50, [p50, round(p50 * 1.05, 3), round(p50 * 0.98, 3), round(p50 * 1.4, 3)]),
            _latency(4, round(p50 * 3, 3), [round(p50 * 3, 3), round(p50 * 3.1, 3), round(p50 * 2.9, 3)]),
        ],
    }


RECIPE: dict[str, Any] = {
    "version": 1,
    "name": "fixed-report",
    "seed": 0,
    "model": {"factory": "compressctl.zoo:digits_cnn", "kwargs": {"width": 16}},
    "evaluate": {"metric": "accuracy"},
    "stages": [{"type": "export", "opset": 18}, {"type": "quantize", "mode": "static"}],
    "report": {"providers": ["CPUExecutionProvider"], "batch_sizes": [1, 4]},
}

SITTINGS = [
    {
        "at": "CPUExecutionProvider@1",
        "reference": "baseline",
        "speedup": {"01-quantize": 1.8, "final": 1.8},
        "speedup_ci": {"01-quantize": [1.7, 1.9], "final": [1.7, 1.9]},
    },
    {
        "at": "CPUExecutionProvider@4",
        "reference": "baseline",
        "speedup": {"01-quantize": 2.1, "final": 2.1},
        "speedup_ci": {"01-quantize": [2.1, 2.1], "final": [2.1, 2.1]},
    },
]

REPORT: dict[str, Any] = {
    "schema_version": 1,
    "status": "ok",
    "recipe": RECIPE,
    "environment": {
        "python": "3.x",
        "torch": "T",
        "onnxruntime": "O",
        "onnx": "X",
        "cpu": "a fixed CPU",
        "providers_available": ["CPUExecutionProvider"],
    },
    "measurement": {"threads": 2, "warmup": 10, "repeat": 100, "sittings": SITTINGS},
    "models": [
        _model("baseline", 80_000, 74_000, 19_000, 19_000, 1_200_000, 0.9611, 0.5),
        _model("01-quantize", 24_000, 20_500, 19_000, 18_200, 1_200_000, 0.9583, 0.278),
        _model("final", 24_000, 20_500, 19_000, 18_200, 1_200_000, 0.9583, 0.278),
    ],
    "summary": {
        "metric": "accuracy",
        "size_ratio": 0.3,
        "macs_ratio": 1.0,
        "accuracy_drop": 0.0028,
        "final_metric": 0.9583,
        "speedup": {"CPUExecutionProvider@1": 1.8, "CPUExecutionProvider@4": 2.1},
        "gate_at": "CPUExecutionProvider@1",
    },
    "gates": [
        {"name": "max_accuracy_drop", "limit": 0.01, "value": 0.0028, "passed": True},
        {"name": "min_speedup", "limit": 1.75, "value": 1.8, "passed": True, "interval": [1.7, 1.9], "uncertain": True},
    ],
    "passed": True,
    "stages": [
        {"index": 0, "type": "export", "seconds": 1.25, "status": "done", "cached": False, "auto": True},
        {"index": 1, "type": "quantize", "seconds": 3.5, "status": "done", "cached": True},
    ],
    "seconds": 6.75,
}


def fixed_report() -> dict[str, Any]:
    return copy.deepcopy(REPORT)
