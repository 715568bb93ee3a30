"""Generated inputs: recipe inputs and ONNX Runtime session inputs get the same sizes and the same values."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from compressctl.errors import UserError
from compressctl.inputs import DEFAULT_DIM, example_inputs, random_inputs, session_feeds
from compressctl.recipe.models import InputSpec


def fake_session(*inputs: tuple[str, list, str]) -> SimpleNamespace:
    """What ``session_feeds`` reads of an ``onnxruntime.InferenceSession``: its inputs' name, shape and type."""
    metas = [SimpleNamespace(name=n, shape=shape, type=t) for n, shape, t in inputs]
    return SimpleNamespace(get_inputs=lambda: metas)


def test_unnamed_dynamic_dims_get_one_default_size_everywhere() -> None:
    spec = InputSpec(name="ids", shape=["batch", "seq"], dtype="int64")
    (recipe_array,) = random_inputs([spec], 3, {}, np.random.default_rng(0))
    feeds = session_feeds(fake_session(("ids", ["batch", "seq"], "tensor(int64)")), 3)
    assert recipe_array.shape == feeds["ids"].shape == (3, DEFAULT_DIM)
    np.testing.assert_array_equal(recipe_array, feeds["ids"])  # the same generator, the same values
    (example,) = example_inputs([spec], {}, batch=3)
    np.testing.assert_array_equal(example.numpy(), recipe_array)
    # a dimension ONNX Runtime knows no name for is sized like a named one nobody set
    unnamed = session_feeds(fake_session(("x", [None, 4, None], "tensor(float)")), 2)
    assert unnamed["x"].shape == (2, 4, DEFAULT_DIM) and unnamed["x"].dtype == np.float32


def test_dims_name_sizes_and_ranges_bound_values() -> None:
    spec = InputSpec(name="ids", shape=["batch", "seq"], dtype="int32", range=(5, 9))
    (array,) = random_inputs([spec], 2, {"seq": 11}, np.random.default_rng(0))
    assert array.shape == (2, 11) and array.dtype == np.int32 and 5 <= array.min() and array.max() < 9
    feeds = session_feeds(fake_session(("ids", ["batch", "seq"], "tensor(int32)")), 4, {"seq": 11, "batch": 6})
    assert feeds["ids"].shape == (6, 11)
    mask = session_feeds(fake_session(("mask", ["batch", 3], "tensor(bool)")), 2)["mask"]
    assert mask.shape == (2, 3) and mask.all()


def test_a_session_input_of_an_unknown_type_is_a_user_error() -> None:
    with pytest.raises(UserError, match="input 'x' has type tensor\\(string\\)"):
        session_feeds(fake_session(("x", [1], "tensor(string)")), 1)
