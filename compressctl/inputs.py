"""Generated model inputs: random data, export examples and benchmark feeds, from one generator.

Every dynamic dimension a recipe's ``dims`` (or ``bench --dim``) does not name
becomes ``batch`` on the first axis and :data:`DEFAULT_DIM` elsewhere, whether
the inputs are described by the recipe (``model.inputs``) or by an ONNX Runtime
session, so a model is traced, trained on random data and timed at one size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compressctl.errors import UserError

#: Size of a dynamic dimension nobody named (a sequence length, an image side).
DEFAULT_DIM = 8

NP_DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
}
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


def resolve_shape(shape: list[Any], batch: int, dims: dict[str, int]) -> list[int]:
    """Concrete shape: fixed sizes stay, named dims come from ``dims``, else ``batch`` first and DEFAULT_DIM after."""
    resolved = []
    for i, dim in enumerate(shape):
        if isinstance(dim, int) and dim > 0:
            resolved.append(dim)
        elif str(dim) in dims:
            resolved.append(dims[str(dim)])
        elif i == 0 or dim == "batch":
            resolved.append(batch)
        else:
            resolved.append(DEFAULT_DIM)
    return resolved


def random_array(
    shape: list[int], dtype: Any, value_range: tuple[float, float] | None, rng: np.random.Generator
) -> np.ndarray:
    """Floats ~ N(0, 1) (uniform in ``value_range`` when given), integers in [0, 100), booleans all True."""
    if np.issubdtype(dtype, np.floating):
        low, high = value_range or (None, None)
        values = rng.standard_normal(shape) if low is None else rng.uniform(low, high, shape)
        return values.astype(dtype)
    if dtype is np.bool_:
        return np.ones(shape, dtype=np.bool_)
    low, high = value_range or (0, 100)
    return rng.integers(int(low), int(high), shape).astype(dtype)


def constant(spec: Any) -> np.ndarray:
    """A constant input's ``value`` (``model.inputs``) as the array fed with every batch."""
    return np.asarray(spec.value, dtype=NP_DTYPES[spec.dtype])


def random_inputs(inputs: list[Any], batch: int, dims: dict[str, int], rng: np.random.Generator) -> list[np.ndarray]:
    """One array per recipe input (``model.inputs``), drawn from ``rng`` in input order; constants as given."""
    return [
        constant(spec)
        if spec.value is not None
        else np.asarray(random_array(resolve_shape(spec.shape, batch, dims), NP_DTYPES[spec.dtype], spec.range, rng))
        for spec in inputs
    ]


def example_inputs(inputs: list[Any], dims: dict[str, int], batch: int = 2) -> tuple[Any, ...]:
    """Deterministic example tensors for export and tracing."""
    import torch

    arrays = random_inputs(inputs, batch, dims, np.random.default_rng(0))
    return tuple(torch.from_numpy(a) for a in arrays)


def session_feeds(session: Any, batch_size: int, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs for every input of ``session``: the same values for every model with the same inputs."""
    rng = np.random.default_rng(0)
    feeds = {}
    for meta in session.get_inputs():
        dtype = ORT_TYPES.get(meta.type)
        if dtype is None:
            raise UserError(f"input '{meta.name}' has type {meta.type}, which bench cannot generate")
        feeds[meta.name] = random_array(resolve_shape(list(meta.shape), batch_size, dims or {}), dtype, None, rng)
    return feeds
