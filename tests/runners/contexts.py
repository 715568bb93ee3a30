"""A real ``StageContext`` for calling a runner directly, outside a pipeline run."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from compressctl.pipeline import build_source_artifact
from compressctl.recipe.models import EvaluateSpec, ReportSpec
from compressctl.runners.base import StageContext
from compressctl.runners.export import ExportConfig, export_and_check


def stage_context(
    inputs: list[Any], data: Any, stage_dir: Path, *, index: int = 2, seed: int = 0, **changes: Any
) -> StageContext:
    """A context on CPU with the recipe defaults; ``changes`` replace any field (``batch_size``, ``dims``…)."""
    dims = changes.pop("dims", {})

    def export(artifact: Any, path: Path, config: Any = None) -> dict[str, Any]:
        return export_and_check(artifact.module, path, config or ExportConfig(), inputs, dims, data)

    fields: dict[str, Any] = {
        "index": index,
        "name": f"{index:02d}-test",
        "stage_dir": stage_dir,
        "seed": seed,
        "data": data,
        "inputs": list(inputs),
        "dims": dims,
        "batch_size": 64,
        "evaluate": EvaluateSpec(),
        "report": ReportSpec(),
        "provider": "CPUExecutionProvider",
        "threads": 1,
        "export": export,
        "build_model": functools.partial(build_source_artifact, base_dir=stage_dir, seed=seed),
    }
    fields.update(changes)
    return StageContext(**fields)
