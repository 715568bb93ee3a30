"""Cache keys and the stage cache: an unchanged stage is reused, never run again.

One key scheme for everything the pipeline caches: ``cache_key(**parts)`` is
the SHA-256 of the parts as canonical JSON. A stage's key chains the key of
its input (the source model's key for the first stage) with its own type,
config, runner and the library versions, so changing one stage reruns it and
everything after it. The exported baseline is keyed by its input's key and the
digests of the files that hold it, never by loading the model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compressctl.artifact import Artifact, load_torch, save_torch
from compressctl.errors import StageError
from compressctl.fsutil import atomic_write_text, file_sha256, text_sha256
from compressctl.plan import PlannedStage
from compressctl.registry import registry

log = logging.getLogger("compressctl")

STAGE_RECORD = "stage.json"


def cache_key(**parts: Any) -> str:
    """The key of a cached thing: SHA-256 of its parts as canonical JSON."""
    return text_sha256(json.dumps(parts, sort_keys=True, default=str))


def source_key(recipe: Any, base_dir: Path, versions: dict[str, str]) -> str:
    """The source model's key: the model and data sections, the seed, versions and the files they name."""
    from compressctl.sources import resolve_path

    model = recipe.model
    files: list[str] = []
    for name in ("checkpoint", "onnx"):
        value = getattr(model, name)
        if value:
            path = resolve_path(value, base_dir)
            if path.is_file():
                files.append(file_sha256(path))
                if name == "onnx":
                    files.extend(_external_data_digests(path))
    data_source = recipe.data.source
    if hasattr(data_source, "npz"):
        path = resolve_path(data_source.npz, base_dir)
        if path.is_file():
            files.append(file_sha256(path))
    return cache_key(
        model=model.model_dump(mode="json"),
        data=recipe.data.model_dump(mode="json"),
        seed=recipe.seed,
        versions=versions,
        files=files,
    )


def _external_data_digests(path: Path) -> list[str]:
    from compressctl.onnxio import onnx_files

    try:
        return [file_sha256(f) for f in onnx_files(path)[1:]]
    except Exception:  # an unreadable model is reported when it is loaded, not here
        return []


def stage_key(input_key: str, stage: PlannedStage, versions: dict[str, str], seed: int) -> str:
    return cache_key(
        input=input_key,
        type=stage.type,
        config=stage.config.model_dump(mode="json"),
        runner=registry.origin(stage.type),
        versions=versions,
        seed=seed,
    )


def baseline_key(input_key: str, input_files: dict[str, str], export_config: Any) -> str:
    """The exported baseline's key: its input's key, the digests of the files holding it, the export settings.

    The file digests matter when a stage ran again under an unchanged key
    (its cache was corrupt): training need not give the same weights twice.
    """
    return cache_key(input=input_key, files=input_files, export=export_config.model_dump(mode="json"))


def load_stage_model(folder: Path, build_source: Callable[[], Any]) -> Artifact:
    """Rebuild a cached torch stage: a fresh source model, the recorded edits replayed, the saved weights."""
    return load_torch(folder, build_source, registry.replay_edit)


class StageCache:
    """Stage outputs under ``<output>/stages/NN-type/``, each with a ``stage.json`` record of its key and files."""

    def __init__(self, root: Path, force: bool = False) -> None:
        self.root = Path(root)
        self.force = force

    def folder(self, stage: PlannedStage) -> Path:
        return self.root / stage.name

    def load(self, stage: PlannedStage, key: str) -> tuple[Artifact | None, dict[str, Any]] | None:
        """The cached output and its record, or None to run the stage.

        A cached torch stage comes back as ``None`` with its record: it is
        loaded (``load_stage_model``) only when a later step needs the module.
        """
        folder = self.folder(stage)
        record_path = folder / STAGE_RECORD
        if self.force or not record_path.is_file():
            return None
        try:
            record = json.loads(record_path.read_text())
            if record.get("key") != key:
                return None
            for rel, digest in record["files"].items():
                if file_sha256(folder / rel) != digest:
                    log.warning("cache of %s is corrupt (%s changed); running it again", stage.name, rel)
                    return None
            artifact = Artifact.from_onnx(folder / record["model"]) if record["kind"] == "onnx" else None
        except Exception as exc:  # an unreadable cache entry is recomputed, never trusted
            log.warning("cache of %s is unusable (%s); running it again", stage.name, exc)
            return None
        return artifact, record

    def save(
        self, stage: PlannedStage, key: str, artifact: Artifact, folder: Path, details: dict, seconds: float
    ) -> dict[str, Any]:
        """Write the stage's model files and its record into ``folder``; returns the record."""
        from compressctl.onnxio import onnx_files

        files: list[Path] = []
        record: dict[str, Any] = {
            "key": key,
            "type": stage.type,
            "kind": artifact.kind,
            "seconds": seconds,
            "details": details,
        }
        if artifact.kind == "torch":
            files += save_torch(artifact, folder)
            if (folder / "model.onnx").is_file():
                files += onnx_files(folder / "model.onnx")
        else:
            path = Path(artifact.path)
            if path.parent.resolve() != folder.resolve():
                raise StageError(stage.name, f"runner wrote its model outside its stage folder ({path})")
            files += onnx_files(path)
            record["model"] = path.name
        record["files"] = {str(f.relative_to(folder)): file_sha256(f) for f in files}
        atomic_write_text(folder / STAGE_RECORD, json.dumps(record, indent=2, default=str))
        return record
