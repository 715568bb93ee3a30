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

RECIPE = """version: 1
name: ppocr-det-int8
model:
  onnx: {model}
  inputs:
    - {{name: x, shape: [batch, 3, {size}, {size}], dtype: float32}}
data:
  source: {{npz: {data}}}
  batch_size: 8
evaluate:
  metric: fidelity
stages:
  - {{type: quantize}}
report:
  batch_sizes: [{batch}]
"""


def model(cache: Path) -> Path:
    from corpus import wheel_file

    return wheel_file(*WHEEL, cache)


def images(count: int, seed: int) -> np.ndarray:
    from images import photo_crops, to_nchw

    return to_nchw(photo_crops(count, SIZE, seed=seed, text=True), *IMAGENET)


def prepare(folder: Path, cache: Path) -> Path:
    from images import write_npz

    data = write_npz(folder / "ppocr-det-images.npz", "x", images(SAMPLES, seed=0))
    recipe = folder / "ppocr-det-int8.yaml"
    recipe.write_text(RECIPE.format(model=model(cache), data=data, size=SIZE, batch=BATCH))
    return recipe


def held_out(cache: Path) -> dict[str, np.ndarray]:
    return {"x": images(32, seed=100)}
