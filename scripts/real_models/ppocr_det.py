"""PP-OCRv4's text detector (dense prediction), converted from PaddlePaddle.

Opset 12, weights in Constant nodes, dynamic N×H×W (the recipe fixes 480×480).
Ships in the wheel ``rapidocr-onnxruntime`` 1.4.4 (Apache-2.0). Data: photo
crops with text drawn on them, normalised with ImageNet's mean and std.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NAME = "ppocr-det"
KIND = "text detector (dense) · PaddlePaddle → ONNX · opset 12 · dynamic H×W at 480×480"
WHEEL = ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SIZE = 480
SAMPLES = 125  # 100 for calibration after the validation split
BATCH = 4

RECIPE_NAME = "ppocr-det-int8"


def model(cache: Path) -> Path:
    from corpus import wheel_file

    return wheel_file(*WHEEL, cache)


def images(count: int, seed: int) -> np.ndarray:
    from images import photo_crops, to_nchw

    return to_nchw(photo_crops(count, SIZE, seed=seed, text=True), *IMAGENET)


def prepare(folder: Path, cache: Path) -> Path:
    from images import write_npz

    data = write_npz(folder / "ppocr-det-images.npz", "x", images(SAMPLES, seed=0))
    from corpus import onnx_recipe

    recipe = folder / f"{RECIPE_NAME}.yaml"
    recipe.write_text(
        onnx_recipe(
            RECIPE_NAME, model(cache), "x", f"3, {SIZE}, {SIZE}", data, data_batch=8, metric="fidelity", batch=BATCH
        )
    )
    return recipe


def held_out(cache: Path) -> dict[str, np.ndarray]:
    return {"x": images(32, seed=100)}
