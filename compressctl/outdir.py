"""The run's output folder: where it is, that it is usable, the run log, and publishing models into it.

Layout: ``model.onnx`` (the final model), ``baseline/``, ``stages/NN-type/``,
``measurements/``, ``run.log`` and the reports. Folders are built under a
temporary name and renamed into place, so an interrupted run leaves no
half-written folder under a real name.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("compressctl")

RUN_LOG = "run.log"


def default_output_dir(recipe: Any) -> Path:
    """The recipe's ``output`` (relative to the working folder), else ``out/<name>``."""
    if recipe.output:
        path = Path(recipe.output)
        return path if path.is_absolute() else Path.cwd() / path
    return Path.cwd() / "out" / recipe.name


def check_output_dir(out: Path) -> None:
    """A UserError unless ``out`` is, or can be made, a writable folder."""
    from compressctl.errors import UserError

    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {out} exists and is a file")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"output folder {out}: {probe} is a file")
    if not os.access(probe, os.W_OK):
        raise UserError(f"output folder {out} is not writable")


@contextmanager
def run_log(out: Path) -> Iterator[Path]:
    """Append the compressctl log (INFO and up, DEBUG included) to ``out/run.log`` while the block runs."""
    path = out / RUN_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield path
    finally:
        log.removeHandler(handler)
        handler.close()


def fresh_dir(path: Path) -> Path:
    """An empty folder at ``path`` (whatever was there is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def move_into_place(tmp: Path, final: Path) -> None:
    """Replace the folder ``final`` with the finished folder ``tmp``."""
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def publish_model(model: Path, out: Path) -> Path:
    """Copy an ONNX model (and its external data files) into ``out``; returns ``out/model.onnx``."""
    from compressctl.onnxio import onnx_files

    for f in onnx_files(model):
        tmp = out / f".{f.name}.tmp"
        shutil.copyfile(f, tmp)
        tmp.replace(out / f.name)
    return out / "model.onnx"
