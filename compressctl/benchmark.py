"""Benchmark any ONNX file: the measurement `apply` uses, on generated inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compressctl.errors import UserError

ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


def generated_feeds(session: Any, batch_size: int, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    dims = dims or {}
    feeds = {}
    for meta in session.get_inputs():
        shape = []
        for i, dim in enumerate(meta.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            else:
                shape.append(dims.get(str(dim), batch_size if i == 0 else 16))
        dtype = ORT_TYPES.get(meta.type)
        if dtype is None:
            raise UserError(f"input '{meta.name}' has type {meta.type}, which bench cannot generate")
        if np.issubdtype(dtype, np.floating):
            feeds[meta.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[meta.name] = np.ones(shape, dtype=dtype)
        else:
            feeds[meta.name] = rng.integers(0, 100, shape).astype(dtype)
    return feeds


def bench_onnx(
    path: Path,
    *,
    providers: list[str],
    batch_sizes: list[int],
    warmup: int = 10,
    repeat: int = 100,
    threads: int | None = None,
    dims: dict[str, int] | None = None,
) -> dict[str, Any]:
    from compressctl.measure.latency import check_providers, default_threads, make_session, measure_latency
    from compressctl.measure.size import count_macs, count_params, size_on_disk, zipped_size
    from compressctl.onnxio import load_onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    check_providers(providers)
    try:
        model = load_onnx(path)
    except Exception as exc:
        raise UserError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    params, nonzero = count_params(model)
    threads = threads or default_threads()
    try:
        session = make_session(path, "CPUExecutionProvider", threads)
    except Exception as exc:
        raise UserError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:300]})") from None
    latency = []
    for provider in providers:
        for batch in batch_sizes:
            feeds = generated_feeds(session, batch, dims)
            latency.append(
                measure_latency(
                    path, feeds, provider=provider, batch_size=batch, threads=threads, warmup=warmup, repeat=repeat
                ).to_dict(with_samples=False)
            )
    return {
        "path": str(path),
        "size_bytes": size_on_disk(path),
        "compressed_size_bytes": zipped_size(path),
        "params": params,
        "nonzero_params": nonzero,
        "macs": count_macs(model, dims),
        "threads": threads,
        "latency": latency,
    }
