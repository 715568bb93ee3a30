"""PP-OCR's text-direction classifier (upright or turned 180°), converted from PaddlePaddle.

Opset 11, dynamic H×W (the recipe fixes 48×192, what RapidOCR feeds it), two
classes. Ships in the wheel ``rapidocr-onnxruntime`` 1.4.4 (Apache-2.0).
Data: lines of words drawn over photo crops, every other one turned 180°.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NAME = "ppocr-cls"
KIND = "text-direction classifier · PaddlePaddle → ONNX · opset 11 · dynamic H×W at 48×192"
WHEEL = ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
HEIGHT, WIDTH = 48, 192
SAMPLES = 640
BATCH = 32

RECIPE_NAME = "ppocr-cls-int8"


def model(cache: Path) -> Path:
    from corpus import wheel_file

    return wheel_file(*WHEEL, cache)


def strips(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from images import text_strips, to_nchw

    pixels, labels = text_strips(count, HEIGHT, WIDTH, seed=seed, flip_half=True)
    return to_nchw(pixels, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), labels


def prepare(folder: Path, cache: Path) -> Path:
    x, labels = strips(SAMPLES, seed=0)
    data = folder / "ppocr-cls-strips.npz"
    np.savez(data, x=x, labels=labels)
    from corpus import onnx_recipe

    recipe = folder / f"{RECIPE_NAME}.yaml"
    recipe.write_text(
        onnx_recipe(
            RECIPE_NAME, model(cache), "x", f"3, {HEIGHT}, {WIDTH}", data, data_batch=64, metric="accuracy", batch=BATCH
        )
    )
    return recipe


def held_out(cache: Path) -> dict[str, np.ndarray]:
    return {"x": strips(128, seed=100)[0]}
