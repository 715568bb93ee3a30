"""Data sources and splits: digits, random, npz, factory; bad data is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compressctl.data import load_data
from compressctl.errors import UserError
from compressctl.recipe.models import DataSpec, InputSpec

IMAGE = [InputSpec(name="x", shape=["batch", 1, 8, 8])]


def test_digits_split_is_deterministic_and_disjoint() -> None:
    a = load_data(DataSpec(source="digits"), IMAGE, seed=3)
    b = load_data(DataSpec(source="digits"), IMAGE, seed=3)
    c = load_data(DataSpec(source="digits"), IMAGE, seed=4)
    assert len(a.train) + len(a.val) == 1797
    assert np.array_equal(a.val.inputs[0], b.val.inputs[0])
    assert not np.array_equal(a.val.inputs[0], c.val.inputs[0])
    train_rows = {r.tobytes() for r in a.train.inputs[0]}
    assert all(r.tobytes() in train_rows for r in a.calibration.inputs[0])  # calibration ⊂ train
    assert a.num_classes == 10 and a.train.inputs[0].dtype == np.float32


def test_digits_resized_to_the_model_input() -> None:
    data = load_data(DataSpec(source="digits", image_size=32), [InputSpec(name="x", shape=["batch", 1, 32, 32])])
    assert data.train.inputs[0].shape[1:] == (1, 32, 32)


def test_digits_size_mismatch() -> None:
    with pytest.raises(UserError, match="data.image_size is 16 but model.inputs\\[0\\] expects 32"):
        load_data(DataSpec(source="digits", image_size=16), [InputSpec(name="x", shape=["batch", 1, 32, 32])])


def test_random_data_follows_inputs() -> None:
    inputs = [InputSpec(name="ids", shape=["batch", "seq"], dtype="int64", range=(0, 50))]
    data = load_data(DataSpec(source="random", samples=40), inputs, dims={"seq": 7})
    assert data.train.inputs[0].shape[1:] == (7,) and data.train.inputs[0].dtype == np.int64
    assert data.train.inputs[0].max() < 50


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_with_labels(tmp_path: Path) -> None:
    write_npz(tmp_path / "d.npz", x=np.random.rand(50, 1, 8, 8).astype(np.float32), labels=np.arange(50) % 3)
    data = load_data(DataSpec(source={"npz": "d.npz"}), IMAGE, base_dir=tmp_path)
    assert data.num_classes == 3 and data.has_labels


def test_npz_without_labels(tmp_path: Path) -> None:
    write_npz(tmp_path / "d.npz", x=np.random.rand(20, 1, 8, 8).astype(np.float32))
    data = load_data(DataSpec(source={"npz": "d.npz"}), IMAGE, base_dir=tmp_path)
    assert not data.has_labels and data.num_classes is None


@pytest.mark.parametrize(
    "arrays,fragment",
    [
        ({"y": np.zeros((4, 1, 8, 8), np.float32)}, "has no array 'x'"),
        ({"x": np.zeros((4, 1, 9, 9), np.float32)}, "has shape [4, 1, 9, 9], model.inputs says ['batch', 1, 8, 8]"),
        ({"x": np.zeros((0, 1, 8, 8), np.float32)}, "the data set is empty"),
        ({"x": np.full((4, 1, 8, 8), np.nan, np.float32)}, "contains NaN or Inf"),
        ({"x": np.zeros((4, 1, 8, 8), np.float32), "labels": np.array([0, 1, -1, 2])}, "labels must be ≥ 0"),
        ({"x": np.zeros((4, 1, 8, 8), np.float32), "labels": np.array([0, 1])}, "2 labels for 4 samples"),
        (
            {"x": np.zeros((4, 1, 8, 8), np.float32), "labels": np.array([0.5, 1, 2, 3])},
            "labels must be a 1-D integer array",
        ),
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict, fragment: str) -> None:
    write_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError) as info:
        load_data(DataSpec(source={"npz": "d.npz"}), IMAGE, base_dir=tmp_path)
    assert fragment in str(info.value)


def test_corrupt_npz(tmp_path: Path) -> None:
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="is not a readable .npz file"):
        load_data(DataSpec(source={"npz": "d.npz"}), IMAGE, base_dir=tmp_path)


def test_npz_classes_are_counted_from_its_labels(tmp_path: Path) -> None:
    """The largest label + 1, not the number of distinct labels, and from every split, not the training one."""
    in_validation_only = False
    for position in range(4):
        labels = np.array([0, 1, 2, 2])
        labels[position] = 6
        write_npz(tmp_path / "d.npz", x=np.zeros((4, 1, 8, 8), np.float32), labels=labels)
        data = load_data(DataSpec(source={"npz": "d.npz"}), IMAGE, base_dir=tmp_path)
        assert data.num_classes == 7
        in_validation_only |= 6 not in data.train.labels
    assert in_validation_only  # one placement leaves label 6 out of the training split


def test_dataset_factory(tmp_path: Path) -> None:
    (tmp_path / "my_data.py").write_text(
        "import torch\n"
        "class Squares(torch.utils.data.Dataset):\n"
        "    def __init__(self, n):\n        self.n = n\n"
        "    def __len__(self):\n        return self.n\n"
        "    def __getitem__(self, i):\n        return torch.full((1, 8, 8), float(i)), i % 2\n"
        "def build(n=30):\n    return Squares(n)\n"
    )
    data = load_data(DataSpec(source={"factory": "my_data:build", "kwargs": {"n": 30}}), IMAGE, base_dir=tmp_path)
    assert len(data.train) + len(data.val) == 30 and data.num_classes == 2


def test_batches_cover_every_sample_once() -> None:
    """Every (image, label) pair of the split comes out exactly once: nothing lost, repeated or mispaired."""
    data = load_data(DataSpec(source="digits"), IMAGE)
    samples = sorted(zip((r.tobytes() for r in data.train.inputs[0]), data.train.labels.tolist(), strict=True))
    for shuffle in (False, True):
        seen = [
            (row.tobytes(), int(label))
            for inputs, labels in data.train.batches(64, shuffle=shuffle, seed=1)
            for row, label in zip(inputs[0], labels, strict=True)
        ]
        assert sorted(seen) == samples


def test_shuffled_batch_order_follows_the_seed() -> None:
    data = load_data(DataSpec(source="digits"), IMAGE)

    def order(seed: int, shuffle: bool = True) -> list[bytes]:
        return [row.tobytes() for inputs, _ in data.train.batches(64, shuffle=shuffle, seed=seed) for row in inputs[0]]

    assert order(1) == order(1) and order(1) != order(2)
    assert order(1, shuffle=False) == [row.tobytes() for row in data.train.inputs[0]]
