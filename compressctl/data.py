"""Data sources: built-in digits and random data, user .npz files and Dataset factories.

Everything is loaded into numpy arrays with a deterministic, seeded split into
train / validation / calibration. Calibration samples are drawn from the
training split, never from validation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compressctl.errors import UserError
from compressctl.inputs import NP_DTYPES, constant, random_inputs
from compressctl.recipe.models import DataSpec, FactorySource, InputSpec, NpzSource

Axis = int | None  # where an input stacks its samples; None: a constant, fed as it is


@dataclass
class Split:
    """Samples of one split: one array per model input and labels.

    Each input stacks its samples on its own batch axis (``axes``, default 0:
    a recurrent state ``[2, batch, 128]`` stacks them on 1); an input whose
    axis is None is a constant (a sample rate) that every batch carries whole.
    """

    inputs: list[np.ndarray]
    labels: np.ndarray | None
    axes: list[Axis] | None = None

    def __post_init__(self) -> None:
        if self.axes is None:
            self.axes = [0] * len(self.inputs)

    def __len__(self) -> int:
        return next((int(a.shape[ax]) for a, ax in self.columns() if ax is not None), 0)

    def columns(self) -> list[tuple[np.ndarray, Axis]]:
        return list(zip(self.inputs, self.axes or [], strict=True))

    def rows(self, index: np.ndarray | slice) -> list[np.ndarray]:
        """Every input at the samples ``index`` picks (on its batch axis); constants whole."""
        picked = []
        for array, axis in self.columns():
            if axis is None:
                picked.append(array)
            elif isinstance(index, slice):
                picked.append(array[(slice(None),) * axis + (index,)])
            else:
                picked.append(np.take(array, index, axis=axis))
        return picked

    def take(self, indices: np.ndarray) -> Split:
        labels = None if self.labels is None else self.labels[indices]
        return Split(self.rows(indices), labels, self.axes)

    def head(self, count: int | None) -> Split:
        if count is None or count >= len(self):
            return self
        return self.take(np.arange(count))

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[tuple[list[np.ndarray], np.ndarray | None]]:
        """Yield ``(inputs, labels)`` batches; shuffled deterministically from ``seed``."""
        order = np.arange(len(self))
        if shuffle:
            order = np.random.default_rng(seed).permutation(len(self))
        for start in range(0, len(self), batch_size):
            idx = order[start : start + batch_size]
            labels = None if self.labels is None else self.labels[idx]
            yield self.rows(idx), labels

    def tiled(self, batch_size: int) -> list[np.ndarray]:
        """One batch of exactly ``batch_size`` samples, repeating the split's samples when it has fewer."""
        index = np.arange(batch_size) % max(1, len(self))
        return [a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in self.rows(index)]  # keeps 0-d

    def sample_bytes(self) -> int:
        """Bytes of input one sample adds to a batch."""
        return sum(a.nbytes // max(1, a.shape[ax]) for a, ax in self.columns() if ax is not None)


@dataclass
class DataBundle:
    train: Split
    val: Split
    calibration: Split
    input_names: list[str]
    num_classes: int | None

    @property
    def has_labels(self) -> bool:
        return self.train.labels is not None


def _digits(spec: DataSpec, inputs: list[InputSpec]) -> tuple[list[np.ndarray], np.ndarray, int]:
    from sklearn.datasets import load_digits

    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise UserError("data 'digits' needs one image input shaped [batch, 1, H, W]")
    shape = inputs[0].shape
    if shape[1] not in (1, "channels"):
        raise UserError(f"data 'digits' has 1 channel, but model.inputs[0].shape[1] is {shape[1]}")
    size = spec.image_size or (shape[2] if isinstance(shape[2], int) else 8)
    if isinstance(shape[2], int) and shape[2] != size:
        raise UserError(f"data.image_size is {size} but model.inputs[0] expects {shape[2]}×{shape[3]} images")
    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None]
    if size != 8:
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            images = F.interpolate(
                torch.from_numpy(images), size=(size, size), mode="bilinear", align_corners=False
            ).numpy()
    images = ((images - 0.5) / 0.5).astype(NP_DTYPES[inputs[0].dtype])
    return [images], digits.target.astype(np.int64), 10


def _npz(source: NpzSource, inputs: list[InputSpec], base_dir: Path) -> tuple[list[np.ndarray], np.ndarray | None]:
    path = (base_dir / source.npz) if not Path(source.npz).is_absolute() else Path(source.npz)
    if not path.is_file():
        raise UserError(f"data.source.npz: no such file {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as exc:
        raise UserError(f"data.source.npz: {path} is not a readable .npz file ({type(exc).__name__}: {exc})") from None
    loaded = []
    for spec in inputs:
        if spec.value is not None:
            loaded.append(constant(spec))
        elif spec.name in arrays:
            loaded.append(arrays[spec.name])
        else:
            raise UserError(f"data.source.npz: {path} has no array '{spec.name}' (has: {', '.join(arrays)})")
    return loaded, arrays.get("labels")


def _factory(
    source: FactorySource, inputs: list[InputSpec], base_dir: Path
) -> tuple[list[np.ndarray], np.ndarray | None]:
    from compressctl.sources import call_factory

    dataset = call_factory(source.factory, source.kwargs, base_dir, what="data.source.factory")
    try:
        count = len(dataset)
    except TypeError:
        raise UserError(f"data.source.factory: {source.factory} must return a map-style Dataset with len()") from None
    columns: list[list[np.ndarray]] | None = None
    labels: list[Any] = []
    for i in range(count):
        item = dataset[i]
        sample, label = item if isinstance(item, (tuple, list)) and len(item) == 2 else (item, None)
        if isinstance(sample, dict):
            sample = list(sample.values())
        if not isinstance(sample, (tuple, list)):
            sample = [sample]
        arrays = [np.asarray(s.numpy() if hasattr(s, "numpy") else s) for s in sample]
        if columns is None:
            columns = [[] for _ in arrays]
        for column, array in zip(columns, arrays, strict=False):
            column.append(array)
        labels.append(None if label is None else int(label))
    if not columns:
        raise UserError(f"data.source.factory: {source.factory} returned an empty dataset")
    has_labels = all(label is not None for label in labels)
    return _stack(columns, inputs), np.asarray(labels, dtype=np.int64) if has_labels else None


def _stack(columns: list[list[np.ndarray]], inputs: list[InputSpec]) -> list[np.ndarray]:
    """Per-sample arrays stacked on each input's batch axis; constants from the recipe or the first sample.

    A sample may leave out the inputs whose ``value`` the recipe gives.
    """
    given = [s for s in inputs if s.value is None] if len(columns) != len(inputs) else inputs
    if len(columns) != len(given):
        return [np.stack(c) for c in columns]  # _check names the mismatch
    by_name = {}
    for spec, column in zip(given, columns, strict=True):
        axis = spec.batch_axis
        by_name[spec.name] = column[0] if axis is None else np.stack(column, axis=axis)
    return [constant(s) if s.value is not None else by_name[s.name] for s in inputs]


def _check(
    arrays: list[np.ndarray], labels: np.ndarray | None, inputs: list[InputSpec], where: str
) -> list[np.ndarray]:
    if len(arrays) != len(inputs):
        raise UserError(f"{where}: gives {len(arrays)} inputs per sample, the model has {len(inputs)}")
    if inputs and all(s.batch_axis is None for s in inputs):
        raise UserError(f"{where}: every model input is a constant; at least one must hold samples")
    count = None
    checked = []
    for array, spec in zip(arrays, inputs, strict=True):
        axis = spec.batch_axis
        if array.ndim != len(spec.shape):
            raise UserError(f"{where}: '{spec.name}' has shape {list(array.shape)}, model.inputs says {spec.shape}")
        if axis is not None:
            count = array.shape[axis] if count is None else count
            if array.shape[axis] != count:
                raise UserError(
                    f"{where}: '{spec.name}' has {array.shape[axis]} samples (axis {axis}), expected {count}"
                )
        for i, dim in enumerate(spec.shape):
            if i != axis and isinstance(dim, int) and array.shape[i] != dim:
                raise UserError(f"{where}: '{spec.name}' has shape {list(array.shape)}, model.inputs says {spec.shape}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise UserError(f"{where}: '{spec.name}' contains NaN or Inf values")
        checked.append(array.astype(NP_DTYPES[spec.dtype], copy=False))
    count = count or 0
    if count == 0:
        raise UserError(f"{where}: the data set is empty")
    if labels is not None:
        if labels.shape[0] != count:
            raise UserError(f"{where}: {labels.shape[0]} labels for {count} samples")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise UserError(
                f"{where}: labels must be a 1-D integer array (got {labels.dtype}, shape {list(labels.shape)})"
            )
        if labels.min() < 0:
            raise UserError(f"{where}: labels must be ≥ 0 (found {int(labels.min())})")
    return checked


def load_data(
    spec: DataSpec,
    inputs: list[InputSpec],
    *,
    dims: dict[str, int] | None = None,
    seed: int = 0,
    base_dir: Path | None = None,
) -> DataBundle:
    """Load the recipe's data and split it deterministically from ``seed``."""
    base_dir = base_dir or Path.cwd()
    dims = dims or {}
    num_classes: int | None = None
    source = spec.source
    if source == "digits":
        arrays, labels, num_classes = _digits(spec, inputs)
        where = "data.source digits"
    elif source == "random":
        rng = np.random.default_rng(seed)
        arrays = random_inputs(inputs, spec.samples, dims, rng)
        labels = rng.integers(0, spec.num_classes, spec.samples).astype(np.int64)
        num_classes = spec.num_classes
        where = "data.source random"
    elif isinstance(source, NpzSource):
        arrays, labels = _npz(source, inputs, base_dir)
        where = f"data.source.npz {source.npz}"
    else:
        arrays, labels = _factory(source, inputs, base_dir)
        where = f"data.source.factory {source.factory}"
    arrays = _check(arrays, labels, inputs, where)
    if labels is not None:
        labels = labels.astype(np.int64)
        if num_classes is None:
            num_classes = int(labels.max()) + 1
        elif labels.max() >= num_classes:
            raise UserError(f"{where}: label {int(labels.max())} is out of range for {num_classes} classes")
    full = Split(arrays, labels, [i.batch_axis for i in inputs])
    order = np.random.default_rng(seed).permutation(len(full))
    n_val = max(1, round(len(full) * spec.val_fraction))
    if len(full) - n_val < 1:
        raise UserError(f"{where}: {len(full)} samples are too few to split into train and validation")
    val = full.take(np.sort(order[:n_val]))
    train = full.take(np.sort(order[n_val:]))
    del full, arrays  # large data sets: hold each sample once more at most, never three times
    calib_order = np.random.default_rng(seed + 1).permutation(len(train))
    count = min(spec.calibration_samples, len(train))
    calibration = train if count == len(train) else train.take(np.sort(calib_order[:count]))
    return DataBundle(train, val, calibration, [i.name for i in inputs], num_classes)
