"""Runs a recipe: the stages through their runners, cached, then the measurements and the report.

A run is: plan the stages (``plan``) → for each stage, reuse its cached output
when its key is unchanged (``cache``), else run it into a temporary folder and
rename that into place (``outdir``) → measure the baseline, every compressing
stage and the final model → build the report. Models are built or loaded only
when a step needs them: a rerun with nothing changed rebuilds nothing.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compressctl.artifact import Artifact
from compressctl.cache import StageCache, baseline_key, load_stage_model, source_key, stage_key
from compressctl.environment import library_versions
from compressctl.errors import CompressctlError, StageError, UserError
from compressctl.fsutil import atomic_write_text
from compressctl.outdir import (
    check_output_dir,
    default_output_dir,
    fresh_dir,
    move_into_place,
    publish_model,
    run_log,
)
from compressctl.plan import PlannedStage, baseline_position, export_config, plan_stages
from compressctl.recipe import recipe_dir
from compressctl.runners.base import ProgressFn, StageContext, no_progress

__all__ = ["Run", "apply", "build_source_artifact", "check_onnx_file", "default_output_dir", "plan_stages"]

log = logging.getLogger("compressctl")


class LazyModel:
    """The model between two stages, built or loaded the first time a step needs it."""

    def __init__(self, load: Callable[[], Artifact]) -> None:
        self._load = load
        self._artifact: Artifact | None = None

    @classmethod
    def of(cls, artifact: Artifact) -> LazyModel:
        model = cls(lambda: artifact)
        model._artifact = artifact
        return model

    def get(self) -> Artifact:
        if self._artifact is None:
            self._artifact = self._load()
        return self._artifact


def build_source_artifact(source: Any, base_dir: Path, seed: int) -> Artifact:
    """Build a recipe model source: an ONNX file (checked) or a torch factory with its checkpoint."""
    from compressctl.sources import build_torch_model, resolve_path

    if getattr(source, "onnx", None):
        path = resolve_path(source.onnx, base_dir)
        if not path.is_file():
            raise UserError(f"model.onnx: no such file {path}")
        check_onnx_file(path, "model.onnx")
        return Artifact.from_onnx(path)
    return Artifact.from_module(build_torch_model(source, base_dir, seed))


class Run:
    """One execution of a recipe into one output folder."""

    def __init__(
        self,
        recipe: Any,
        output_dir: Path,
        *,
        providers: list[str] | None = None,
        force: bool = False,
        progress: ProgressFn | None = None,
    ) -> None:
        self.recipe = recipe
        self.output_dir = Path(output_dir)
        self.providers = providers or list(recipe.report.providers)
        self.force = force
        self.progress = progress or no_progress
        self.base_dir = recipe_dir(recipe)
        self.inputs = list(recipe.model.inputs)
        self.versions = library_versions()
        self.cache = StageCache(self.output_dir / "stages", force=force)
        self.stage_records: list[dict[str, Any]] = []
        self.measured: list[dict[str, Any]] = []
        self.measurer: Any = None
        self._data: Any = None
        self._source_built: Any = None  # the recipe's torch model, built once; stages get copies
        self._baseline: LazyModel | None = None

    # -- what stages use ---------------------------------------------------------------
    @property
    def data(self) -> Any:
        if self._data is None:
            from compressctl.data import load_data

            self._data = load_data(
                self.recipe.data,
                self.inputs,
                dims=self.recipe.model.dims,
                seed=self.recipe.seed,
                base_dir=self.base_dir,
            )
        return self._data

    def build_source_artifact(self, source: Any) -> Artifact:
        return build_source_artifact(source, self.base_dir, self.recipe.seed)

    def source_key(self) -> str:
        return source_key(self.recipe, self.base_dir, self.versions)

    def export_config(self) -> Any:
        return export_config(self.recipe)

    def export_artifact(self, artifact: Artifact, path: Path, config: Any = None) -> dict[str, Any]:
        """Export a torch artifact to ``path`` (checked); returns what the check found."""
        from compressctl.runners.export import export_and_check

        config = config or self.export_config()
        return export_and_check(artifact.module, path, config, self.inputs, self.recipe.model.dims, self.data)

    def stage_context(self, stage: PlannedStage, folder: Path) -> StageContext:
        from compressctl.measure.latency import default_threads

        recipe = self.recipe
        return StageContext(
            index=stage.index,
            name=stage.name,
            stage_dir=folder,
            seed=recipe.seed,
            data=self.data,
            inputs=self.inputs,
            dims=recipe.model.dims,
            batch_size=recipe.data.batch_size,
            evaluate=recipe.evaluate,
            report=recipe.report,
            provider=self.providers[0],
            threads=recipe.report.threads or default_threads(),
            export=self.export_artifact,
            build_model=self.build_source_artifact,
            baseline=self._baseline.get() if self._baseline else None,
            progress=self.progress,
        )

    def _source_module(self) -> Any:
        """A fresh copy of the recipe's torch model (built once per run)."""
        if self._source_built is None:
            self._source_built = self.build_source_artifact(self.recipe.model).module
        return copy.deepcopy(self._source_built)

    def _source(self) -> Artifact:
        if self.recipe.model.onnx:
            return self.build_source_artifact(self.recipe.model)
        return Artifact.from_module(self._source_module())

    # -- one stage ------------------------------------------------------------------------
    def _run_stage(self, stage: PlannedStage, artifact: Artifact, key: str, measured: bool) -> tuple[Artifact, dict]:
        final_dir = self.cache.folder(stage)
        tmp_dir = fresh_dir(final_dir.parent / f".{stage.name}.tmp")
        context = self.stage_context(stage, tmp_dir)
        started = time.perf_counter()
        try:
            result = stage.runner.run(artifact, stage.config, context)
            if measured and result.kind == "torch" and result.module is not None:
                # Each torch stage is exported too, so it can be measured and inspected.
                context.details.setdefault("export", self.export_artifact(result, tmp_dir / "model.onnx"))
        except CompressctlError:
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            from compressctl.memory import is_out_of_memory, out_of_memory_message

            log.debug("stage %s failed", stage.name, exc_info=True)
            if is_out_of_memory(exc):
                raise StageError(stage.name, out_of_memory_message()) from None
            raise StageError(stage.name, f"{type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - started
        record = self.cache.save(stage, key, result, tmp_dir, context.details, seconds)
        move_into_place(tmp_dir, final_dir)
        if result.kind == "onnx":
            result = Artifact.from_onnx(final_dir / Path(result.path).name)
        return result, record

    # -- the run ----------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        from compressctl.measure.latency import check_providers
        from compressctl.measure.runner import Measurer
        from compressctl.report.build import build_report, check_gate_target

        check_providers(self.providers)
        check_gate_target(self.recipe, self.providers)
        if not self.recipe.stages:
            log.warning("the recipe has no stages: measuring the model as it is (measure-only run)")
        plan = plan_stages(self.recipe)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.measurer = Measurer(self)
        baseline_at = baseline_position(plan)
        started = time.perf_counter()
        # The source model is built lazily: a fully cached run never needs it.
        current = LazyModel(self._source)
        key = self.source_key()
        input_files: dict[str, str] = {}  # digests of the files holding the current model (none: the source)
        self.progress("plan", stages=[s.name for s in plan])
        last_measured: dict[str, Any] | None = None
        try:
            for position, stage in enumerate(plan):
                if position == baseline_at:
                    self._baseline = current
                    last_measured = self._measure_baseline(stage.input_kind, key, input_files)
                measured = position >= baseline_at and stage.measured
                artifact, record = self._stage(stage, current, key, measured)
                current = LazyModel.of(artifact) if artifact is not None else self._cached_torch(stage)
                key, input_files = record["key"], record.get("files", {})
                if measured:
                    last_measured = self.measurer.measure(stage.name, self._measure_path(stage, artifact))
            if baseline_at == len(plan):
                self._baseline = current
                last_measured = self._measure_baseline(current.get().kind, key, input_files)
            final_path = self._publish_final(current.get())
            assert last_measured is not None
            self.measurer.sit(list(self.measured))
            final = dict(last_measured, name="final", path=str(final_path), source=last_measured["name"])
            self.measured.append(final)
        finally:
            self.total_seconds = time.perf_counter() - started
        return build_report(self)

    def _stage(
        self, stage: PlannedStage, current: LazyModel, input_key: str, measured: bool
    ) -> tuple[Artifact | None, dict[str, Any]]:
        """Reuse or run one stage; a cached torch stage comes back as None (loaded when needed)."""
        key = stage_key(input_key, stage, self.versions, self.recipe.seed)
        cached = self.cache.load(stage, key)
        if cached is not None:
            artifact, record = cached
            log.info("stage %s: unchanged, reusing %s", stage.name, self.cache.folder(stage))
            self.progress("stage", name=stage.name, status="cached")
            self.stage_records.append(self._stage_entry(stage, "cached", record))
            return artifact, record
        log.info("stage %s: running", stage.name)
        self.progress("stage", name=stage.name, status="running")
        try:
            artifact, record = self._run_stage(stage, current.get(), key, measured)
        except BaseException:
            self.stage_records.append(self._stage_entry(stage, "failed", {}))
            raise
        self.progress("stage", name=stage.name, status="done", seconds=record["seconds"])
        self.stage_records.append(self._stage_entry(stage, "done", record))
        return artifact, record

    def _cached_torch(self, stage: PlannedStage) -> LazyModel:
        return LazyModel(functools.partial(load_stage_model, self.cache.folder(stage), self._source_module))

    def _stage_entry(self, stage: PlannedStage, status: str, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "index": stage.index,
            "name": stage.name,
            "type": stage.type,
            "auto": stage.auto,
            "seconds": round(record.get("seconds", 0.0), 3),
            "status": status,
            "cached": status == "cached",
            "config": stage.config.model_dump(mode="json"),
            "details": record.get("details", {}),
        }

    def _measure_path(self, stage: PlannedStage, artifact: Artifact | None) -> Path:
        if artifact is not None and artifact.kind == "onnx":
            return Path(artifact.path)
        return self.cache.folder(stage) / "model.onnx"

    def _measure_baseline(self, kind: str, input_key: str, input_files: dict[str, str]) -> dict[str, Any]:
        """Measure the model entering the first compressing stage; a torch one is exported once per key."""
        assert self._baseline is not None
        if kind == "onnx":
            path = Path(self._baseline.get().path)
            return self.measurer.measure("baseline", path, is_baseline=True)
        folder = self.output_dir / "baseline"
        path, key_path = folder / "model.onnx", folder / "key.txt"
        key = baseline_key(input_key, input_files, self.export_config())
        if self.force or not (path.is_file() and key_path.is_file() and key_path.read_text() == key):
            tmp = fresh_dir(self.output_dir / ".baseline.tmp")
            self.export_artifact(self._baseline.get(), tmp / "model.onnx")
            atomic_write_text(tmp / "key.txt", key)
            move_into_place(tmp, folder)
        return self.measurer.measure("baseline", path, is_baseline=True)

    def _publish_final(self, artifact: Artifact) -> Path:
        if artifact.kind != "onnx":
            raise StageError("final", "the pipeline did not end in an ONNX model")
        return publish_model(Path(artifact.path), self.output_dir)


def check_onnx_file(path: Path, what: str) -> None:
    """A readable, valid ONNX model that ONNX Runtime can load, else a UserError."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{what}: {path} is not a valid ONNX model ({first})") from None


def apply(
    recipe: Any,
    output_dir: str | Path | None = None,
    *,
    providers: list[str] | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    wait: float = 0.0,
) -> dict[str, Any]:
    """Run a recipe; returns the report (also written to ``output_dir/report.json``)."""
    from compressctl.lock import OutputLock
    from compressctl.report.write import write_reports

    if isinstance(recipe, (str, Path)):
        from compressctl.recipe import load_recipe

        recipe = load_recipe(recipe)
    out = Path(output_dir) if output_dir else default_output_dir(recipe)
    check_output_dir(out)
    with OutputLock(out, wait=wait), run_log(out):
        run = Run(recipe, out, providers=providers, force=force, progress=progress)
        try:
            report = run.execute()
        except StageError:
            _write_partial(run)
            raise
        write_reports(report, out)
        return report


def _write_partial(run: Run) -> None:
    """Keep what finished: a report of the stages and models measured before a failure."""
    from compressctl.report.build import build_report
    from compressctl.report.write import write_reports

    try:
        write_reports(build_report(run, failed=True), run.output_dir)
    except Exception:  # the failure being reported matters more than this report
        log.debug("could not write the partial report", exc_info=True)
