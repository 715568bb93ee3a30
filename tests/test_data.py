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


# -- inputs batched on their own axis, and constants ---------------------------------------------------------------

STREAM = [
    InputSpec(name="x", shape=["batch", 3]),
    InputSpec(name="state", shape=[2, "batch", 4]),
    InputSpec(name="sr", shape=[], dtype="int64", value=16000),
]


def numbered(count: int) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``state`` whose sample ``i`` is filled with ``i``, so a mispaired sample shows."""
    x = np.repeat(np.arange(count, dtype=np.float32)[:, None], 3, axis=1)
    state = np.broadcast_to(np.arange(count, dtype=np.float32)[None, :, None], (2, count, 4)).copy()
    return x, state


def assert_paired(inputs: list[np.ndarray], count: int) -> None:
    x, state, sr = inputs
    assert x.shape == (count, 3) and state.shape == (2, count, 4) and sr.shape == () and int(sr) == 16000
    assert np.array_equal(state[0, :, 0], x[:, 0]) and np.array_equal(state[1, :, 3], x[:, 0])


def test_the_batch_axis_is_the_dim_named_batch_and_a_value_is_a_constant() -> None:
    assert [s.batch_axis for s in STREAM] == [0, 1, None]
    assert InputSpec(name="n", shape=["n", 3]).batch_axis == 0  # no dim named batch: the first axis, as before
    assert InputSpec(name="k", shape=[], dtype="int64").batch_axis is None


def test_a_state_batched_on_axis_1_splits_batches_and_tiles_on_that_axis(tmp_path: Path) -> None:
    x, state = numbered(40)
    write_npz(tmp_path / "d.npz", x=x, state=state)  # no 'sr': the recipe's value is used
    data = load_data(DataSpec(source={"npz": "d.npz"}), STREAM, base_dir=tmp_path)
    assert len(data.train) + len(data.val) == 40 and data.train.axes == [0, 1, None]
    assert_paired(data.train.inputs, len(data.train))
    assert_paired(data.val.inputs, len(data.val))
    sizes = []
    for inputs, _ in data.train.batches(7, shuffle=True, seed=1):
        sizes.append(len(inputs[0]))
        assert_paired(inputs, len(inputs[0]))
    assert sum(sizes) == len(data.train)
    tiled = data.val.tiled(len(data.val) + 3)
    assert_paired(tiled, len(data.val) + 3)
    assert data.val.sample_bytes() == 3 * 4 + 2 * 4 * 4


def test_calibration_batches_slice_the_state_on_its_batch_axis() -> None:
    from compressctl.data import Split
    from compressctl.quantization.int8 import CalibrationReader

    x, state = numbered(10)
    split = Split([x, state, np.array(16000, np.int64)], None, [0, 1, None])
    reader = CalibrationReader(split, ["x", "state", "sr"], 4)
    feeds = []
    while (feed := reader.get_next()) is not None:
        feeds.append(feed)
    assert [len(f["x"]) for f in feeds] == [4, 4, 2]
    for feed in feeds:
        assert_paired([feed["x"], feed["state"], feed["sr"]], len(feed["x"]))


def test_a_factory_sample_may_leave_out_the_constant(tmp_path: Path) -> None:
    (tmp_path / "streams.py").write_text(
        "import numpy as np\n"
        "class Chunks:\n"
        "    def __len__(self):\n        return 12\n"
        "    def __getitem__(self, i):\n"
        "        return (np.full(3, i, np.float32), np.full((2, 4), i, np.float32)), None\n"
        "def build():\n    return Chunks()\n"
    )
    data = load_data(DataSpec(source={"factory": "streams:build"}), STREAM, base_dir=tmp_path)
    assert_paired(data.train.inputs, len(data.train))


def test_a_state_with_the_wrong_sample_count_names_its_axis(tmp_path: Path) -> None:
    x, _ = numbered(10)
    write_npz(tmp_path / "d.npz", x=x, state=np.zeros((2, 9, 4), np.float32))
    with pytest.raises(UserError, match="'state' has 9 samples \\(axis 1\\), expected 10"):
        load_data(DataSpec(source={"npz": "d.npz"}), STREAM, base_dir=tmp_path)
