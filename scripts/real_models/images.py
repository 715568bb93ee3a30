"""Real photographs without a download: crops of scikit-learn's two bundled photos.

Crops are taken at random positions and scales, resized, and flipped, so a few
hundred distinct images come out of two photographs. ``text=True`` draws
lines of words onto each crop with Pillow (input for a text detector).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = "invoice total amount date order number shipping address quantity price tax customer".split()


def photo_crops(count: int, size: int, *, seed: int = 0, text: bool = False) -> np.ndarray:
    """``count`` RGB images, uint8, shaped [count, size, size, 3]."""
    from PIL import Image, ImageDraw
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(p) for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = photo.size
        side = int(rng.uniform(0.35, 1.0) * min(width, height))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        crop = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        if text:
            draw = ImageDraw.Draw(crop)
            for _ in range(int(rng.integers(3, 9))):
                words = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 6))))
                y = int(rng.integers(0, size - 12))
                x = int(rng.integers(0, size // 3))
                shade = int(rng.choice([0, 255]))
                draw.text((x, y), words, fill=(shade, shade, shade))
        out[i] = np.asarray(crop)
    return out


def to_nchw(images: np.ndarray, mean: tuple[float, ...] = (0.0, 0.0, 0.0), std: tuple[float, ...] = (1.0, 1.0, 1.0)):
    """uint8 NHWC → float32 NCHW in [0, 1], then normalised by ``mean`` and ``std``."""
    x = images.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def write_npz(path: Path, name: str, array: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{name: array})
    return path


def text_strips(count: int, height: int, width: int, *, seed: int = 0, flip_half: bool = False):
    """Lines of words drawn over photo crops, ``[count, height, width, 3]`` uint8, and 0/1 labels.

    With ``flip_half`` every other strip is turned 180° and labelled 1 (a text-direction task).
    """
    from PIL import Image, ImageDraw

    backgrounds = photo_crops(count, max(height, width), seed=seed)
    rng = np.random.default_rng(seed + 1)
    out = np.empty((count, height, width, 3), dtype=np.uint8)
    labels = np.zeros(count, dtype=np.int64)
    for i in range(count):
        strip = Image.fromarray(backgrounds[i]).resize((width, height), Image.BILINEAR)
        strip = Image.blend(strip, Image.new("RGB", strip.size, (255, 255, 255)), 0.6)
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 4))))
        ImageDraw.Draw(strip).text((int(rng.integers(2, 12)), height // 3), words, fill=(0, 0, 0))
        if flip_half and i % 2:
            strip = strip.rotate(180)
            labels[i] = 1
        out[i] = np.asarray(strip)
    return out, labels


def digit_strips(count: int, height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """Grey numbers (0–999) drawn black on white, ``[count, height, width]`` float32 in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=int(height * 0.7))
    out = np.empty((count, height, width), dtype=np.float32)
    for i in range(count):
        image = Image.new("L", (width, height), 255)
        ImageDraw.Draw(image).text((1, height // 8), str(int(rng.integers(0, 1000))), fill=0, font=font)
        out[i] = np.asarray(image, dtype=np.float32) / 255.0
    return out
