"""A cached torch stage, rebuilt on a rerun, gives the outputs the stage gave when it ran.

The first run exports every torch stage straight from the runner's output
(``stages/NN-type/model.onnx``). The rerun removes only the export's cache, so
the pipeline must rebuild the torch stage the way it always does on a cached
rerun (a fresh source model, the recorded edits replayed, the weights loaded
from safetensors) and export it again. Both exports then run on real digits
images in ONNX Runtime and must agree.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from compressctl.data import load_data
from compressctl.recipe.models import DataSpec, InputSpec


def digits_images() -> np.ndarray:
    data = load_data(DataSpec(source="digits"), [InputSpec(name="x", shape=["batch", 1, 8, 8])], seed=0)
    return data.val.inputs[0]


def onnx_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def rerun_replays_the_stage(cli: Any, recipe: Path, out: Path, stage: str, export: str) -> dict[str, Any]:
    """Rerun with ``export``'s cache removed; the final model must match ``stage``'s own first-run export."""
    original = out / "stages" / stage / "model.onnx"
    assert original.is_file()
    shutil.rmtree(out / "stages" / export)
    result = cli("apply", recipe, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    cached = {s["name"]: s["cached"] for s in report["stages"]}
    # every stage but the export came from its cache; the export ran again on the rebuilt torch stage
    assert not cached.pop(export) and cached[stage] and all(cached.values())
    images = digits_images()
    replayed, expected = onnx_outputs(out / "model.onnx", images), onnx_outputs(original, images)
    assert replayed.shape == expected.shape == (len(images), 10)
    np.testing.assert_allclose(replayed, expected, rtol=1e-5, atol=1e-5)
    return report
