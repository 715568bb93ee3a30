"""Plans the stage order, runs the runners, caches stage outputs, measures models.

A run is: load the source model → for each stage, reuse its cached output when
its key (input key + stage config + versions) is unchanged, else run it into a
temporary folder and rename that into place → measure the baseline, every
compressing stage and the final model → write the report.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from compressctl import __version__
from compressctl.artifact import Artifact, load_torch, save_torch
from compressctl.errors import CompressctlError, StageError, UserError
from compressctl.fsutil import atomic_write_text, file_sha256, text_sha256
from compressctl.recipe import recipe_dir
from compressctl.registry import registry
from compressctl.runners.base import Runner, StageConfig

log = logging.getLogger("compressctl")

STAGE_RECORD = "stage.json"
ProgressFn = Callable[..., None]


def _noop_progress(*args: Any, **kwargs: Any) -> None:
    return None


def library_versions() -> dict[str, str]:
    versions = {"compressctl": __version__}
    for name in ("torch", "onnx", "onnxruntime", "numpy", "torch-pruning"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions


@dataclass
class PlannedStage:
    index: int  # 1-based position in the plan
    type: str
    config: StageConfig
    runner: Runner
    input_kind: str
    output_kind: str
    auto: bool = False  # inserted by the planner, not named in the recipe
    recipe_index: int | None = None

    @property
    def name(self) -> str:
        return f"{self.index:02d}-{self.type}"


def plan_stages(recipe: Any) -> list[PlannedStage]:
    """Resolve runners and check the order; insert ``export`` where torch turns into ONNX."""
    export_runner = registry.get("export")
    kind = "onnx" if recipe.model.onnx else "torch"
    planned: list[PlannedStage] = []
    previous_onnx_stage: str | None = None

    def add(runner_cls: type[Runner], config: StageConfig, auto: bool, recipe_index: int | None) -> None:
        nonlocal kind
        runner = runner_cls()
        out_kind = runner.output_kind(kind)
        planned.append(
            PlannedStage(len(planned) + 1, runner_cls.type, config, runner, kind, out_kind, auto, recipe_index)
        )
        kind = out_kind

    for i, config in enumerate(recipe.stages):
        runner_cls = registry.get(config.type)
        if runner_cls.consumes == "torch" and kind == "onnx":
            if recipe.model.onnx and previous_onnx_stage is None:
                raise UserError(
                    f"stages[{i}] ({config.type}) needs a torch model, but the model is the ONNX file "
                    f"{recipe.model.onnx}; use model.factory for torch-level stages"
                )
            raise UserError(
                f"stages[{i}] ({config.type}) is a torch-level stage and cannot follow the ONNX-level "
                f"stage {previous_onnx_stage}; move it before the export"
            )
        if runner_cls.consumes == "onnx" and kind == "torch":
            add(export_runner, export_runner.config_model(type="export"), True, None)
        add(runner_cls, config, False, i)
        if kind == "onnx":
            previous_onnx_stage = f"stages[{i}] ({config.type})"
    if kind == "torch":
        add(export_runner, export_runner.config_model(type="export"), True, None)
    return planned


@dataclass
class StageContext:
    """What a runner may use: its folder, seed, data, baseline, and helpers."""

    index: int
    name: str
    stage_dir: Path
    seed: int
    run: Run
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def recipe(self) -> Any:
        return self.run.recipe

    @property
    def data(self) -> Any:
        return self.run.data

    @property
    def baseline(self) -> Artifact | None:
        return self.run.baseline_artifact

    @property
    def inputs(self) -> list[Any]:
        return self.run.inputs

    @property
    def dims(self) -> dict[str, int]:
        return self.run.recipe.model.dims

    @property
    def base_dir(self) -> Path:
        return self.run.base_dir

    @property
    def log(self) -> logging.Logger:
        return log

    def progress(self, *args: Any, **kwargs: Any) -> None:
        self.run.progress(*args, **kwargs)

    def build_model(self, source: Any) -> Artifact:
        """Build another model from a recipe model source (a teacher, a student)."""
        return self.run.build_source_artifact(source)

    def export(self, artifact: Artifact, path: Path, config: Any = None) -> dict[str, Any]:
        return self.run.export_artifact(artifact, path, config)


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
        self.progress = progress or _noop_progress
        self.base_dir = recipe_dir(recipe)
        self.inputs = list(recipe.model.inputs)
        self._data: Any = None
        self.baseline_artifact: Artifact | None = None
        self.versions = library_versions()
        self.stage_records: list[dict[str, Any]] = []
        self.measured: list[dict[str, Any]] = []
        self.measurer: Any = None

    # -- data and sources --------------------------------------------------------
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
        from compressctl.sources import build_torch_model, resolve_path

        if getattr(source, "onnx", None):
            path = resolve_path(source.onnx, self.base_dir)
            if not path.is_file():
                raise UserError(f"model.onnx: no such file {path}")
            check_onnx_file(path, "model.onnx")
            return Artifact.from_onnx(path)
        return Artifact.from_module(build_torch_model(source, self.base_dir, self.recipe.seed))

    def source_key(self) -> str:
        from compressctl.sources import resolve_path

        model = self.recipe.model
        parts = [
            model.model_dump_json(),
            self.recipe.data.model_dump_json(),
            str(self.recipe.seed),
            json.dumps(self.versions),
        ]
        for name in ("checkpoint", "onnx"):
            value = getattr(model, name)
            if value:
                path = resolve_path(value, self.base_dir)
                if path.is_file():
                    parts.append(file_sha256(path))
                    if name == "onnx":
                        from compressctl.onnxio import onnx_files

                        try:
                            parts.extend(file_sha256(f) for f in onnx_files(path)[1:])
                        except Exception:
                            pass
        data_source = self.recipe.data.source
        if hasattr(data_source, "npz"):
            path = resolve_path(data_source.npz, self.base_dir)
            if path.is_file():
                parts.append(file_sha256(path))
        return text_sha256("\n".join(parts))

    # -- export ---------------------------------------------------------------------
    def export_config(self) -> Any:
        for stage in self.recipe.stages:
            if stage.type == "export":
                return stage
        return registry.get("export").config_model(type="export")

    def export_artifact(self, artifact: Artifact, path: Path, config: Any = None) -> dict[str, Any]:
        """Export a torch artifact to ``path`` (checked); returns what the check found."""
        from compressctl.runners.export import export_and_check

        return export_and_check(artifact.module, path, config or self.export_config(), self)

    # -- stage caching -------------------------------------------------------------------
    def _stage_key(self, previous_key: str, stage: PlannedStage) -> str:
        payload = json.dumps(
            {
                "input": previous_key,
                "type": stage.type,
                "config": stage.config.model_dump(mode="json"),
                "runner": registry.origin(stage.type),
                "versions": self.versions,
                "seed": self.recipe.seed,
            },
            sort_keys=True,
        )
        return text_sha256(payload)

    def _load_cached(
        self, stage: PlannedStage, key: str, source_builder: Callable[[], Any]
    ) -> tuple[Artifact | None, dict] | None:
        folder = self.output_dir / "stages" / stage.name
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
            if record["kind"] == "onnx":
                artifact = Artifact.from_onnx(folder / record["model"])
            else:
                artifact = None  # a cached torch stage is loaded only when a later step needs it (execute)
        except Exception as exc:  # an unreadable cache entry is recomputed, never trusted
            log.warning("cache of %s is unusable (%s); running it again", stage.name, exc)
            return None
        return artifact, record

    def _save_stage(
        self, stage: PlannedStage, key: str, artifact: Artifact, folder: Path, details: dict, seconds: float
    ) -> dict:
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
                from compressctl.onnxio import onnx_files

                files += onnx_files(folder / "model.onnx")
        else:
            from compressctl.onnxio import onnx_files

            path = Path(artifact.path)
            if path.parent.resolve() != folder.resolve():
                raise StageError(stage.name, f"runner wrote its model outside its stage folder ({path})")
            files += onnx_files(path)
            record["model"] = path.name
        record["files"] = {str(f.relative_to(folder)): file_sha256(f) for f in files}
        atomic_write_text(folder / STAGE_RECORD, json.dumps(record, indent=2, default=str))
        return record

    def _run_stage(self, stage: PlannedStage, artifact: Artifact, key: str, measured: bool) -> tuple[Artifact, dict]:
        final_dir = self.output_dir / "stages" / stage.name
        tmp_dir = self.output_dir / "stages" / f".{stage.name}.tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        context = StageContext(stage.index, stage.name, tmp_dir, self.recipe.seed, self)
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
        record = self._save_stage(stage, key, result, tmp_dir, context.details, seconds)
        shutil.rmtree(final_dir, ignore_errors=True)
        tmp_dir.rename(final_dir)
        if result.kind == "onnx":
            result = Artifact.from_onnx(final_dir / Path(result.path).name)
        return result, record

    # -- the run ------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        from compressctl.measure.latency import check_providers
        from compressctl.measure.runner import Measurer

        check_providers(self.providers)
        from compressctl.report.build import check_gate_target

        check_gate_target(self.recipe, self.providers)
        if not self.recipe.stages:
            log.warning("the recipe has no stages: measuring the model as it is (measure-only run)")
        plan = plan_stages(self.recipe)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.measurer = Measurer(self)
        baseline_at = next((i for i, s in enumerate(plan) if s.runner.compresses), len(plan))
        started = time.perf_counter()

        source_cache: dict[str, Any] = {}

        def build_source_module() -> Any:
            if "module" not in source_cache:
                source_cache["module"] = self.build_source_artifact(self.recipe.model).module
            import copy

            return copy.deepcopy(source_cache["module"])

        key = self.source_key()
        # The source model is built lazily: a fully cached run never needs it.
        artifact: Artifact | None = None
        # A cached torch stage followed by cached stages is never loaded: no torch import, no rebuild.
        deferred: Callable[[], Artifact] | None = None

        def current() -> Artifact:
            nonlocal artifact, deferred
            if artifact is None:
                artifact = deferred() if deferred else self._source(build_source_module)
                deferred = None
            return artifact

        self.progress("plan", stages=[s.name for s in plan])
        last_measured: dict[str, Any] | None = None
        try:
            for position, stage in enumerate(plan):
                stage_key = self._stage_key(key, stage)
                cached = self._load_cached(stage, stage_key, build_source_module)
                if position == baseline_at:
                    artifact = current()
                    self.baseline_artifact = artifact
                    last_measured = self._measure_baseline(artifact, plan, position)
                if cached is not None:
                    artifact, record = cached
                    deferred = None
                    if artifact is None:
                        deferred = functools.partial(
                            load_torch, self.output_dir / "stages" / stage.name, build_source_module
                        )
                    status = "cached"
                    log.info("stage %s: unchanged, reusing %s", stage.name, self.output_dir / "stages" / stage.name)
                    self.progress("stage", name=stage.name, status="cached")
                else:
                    artifact = current()
                    log.info("stage %s: running", stage.name)
                    self.progress("stage", name=stage.name, status="running")
                    try:
                        measured = position >= baseline_at and self._is_measurable(stage)
                        artifact, record = self._run_stage(stage, artifact, stage_key, measured)
                    except BaseException:
                        self.stage_records.append(self._stage_entry(stage, "failed", 0.0, False, {}))
                        raise
                    status = "done"
                    self.progress("stage", name=stage.name, status="done", seconds=record["seconds"])
                self.stage_records.append(
                    self._stage_entry(
                        stage, status, record.get("seconds", 0.0), status == "cached", record.get("details", {})
                    )
                )
                key = stage_key
                if position >= baseline_at and self._is_measurable(stage):
                    last_measured = self.measurer.measure(stage.name, self._measure_path(stage, artifact))
            artifact = current()  # the source when there are no stages
            if baseline_at == len(plan):
                last_measured = self._measure_baseline(artifact, plan, len(plan))
            final_path = self._publish_final(artifact, plan)
            assert last_measured is not None
            timed = list(self.measured)
            self.measurer.sit(timed)
            final = dict(last_measured, name="final", path=str(final_path), source=last_measured["name"])
            self.measured.append(final)
        finally:
            self.total_seconds = time.perf_counter() - started
        from compressctl.report.build import build_report

        return build_report(self)

    def _source(self, build: Callable[[], Any]) -> Artifact:
        if self.recipe.model.onnx:
            return self.build_source_artifact(self.recipe.model)
        return Artifact.from_module(build())

    def _stage_entry(self, stage: PlannedStage, status: str, seconds: float, cached: bool, details: dict) -> dict:
        return {
            "index": stage.index,
            "name": stage.name,
            "type": stage.type,
            "auto": stage.auto,
            "seconds": round(seconds, 3),
            "status": status,
            "cached": cached,
            "config": stage.config.model_dump(mode="json"),
            "details": details,
        }

    @staticmethod
    def _is_measurable(stage: PlannedStage) -> bool:
        # An export does not change the model: its output was already measured
        # as the torch stage before it (or as the baseline).
        return stage.runner.compresses and stage.type != "export"

    def _measure_path(self, stage: PlannedStage, artifact: Artifact | None) -> Path:
        folder = self.output_dir / "stages" / stage.name
        if artifact is not None and artifact.kind == "onnx":
            return Path(artifact.path)
        return folder / "model.onnx"

    def _measure_baseline(self, artifact: Artifact, plan: list[PlannedStage], position: int) -> dict[str, Any]:
        if artifact.kind == "onnx":
            path = Path(artifact.path)
        else:
            path = self.output_dir / "baseline" / "model.onnx"
            key_path = self.output_dir / "baseline" / "key.txt"
            digest = self._module_digest(artifact.module)
            if not (path.is_file() and key_path.is_file() and key_path.read_text() == digest and not self.force):
                shutil.rmtree(path.parent, ignore_errors=True)
                tmp = self.output_dir / ".baseline.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                self.export_artifact(artifact, tmp / "model.onnx")
                atomic_write_text(tmp / "key.txt", digest)
                tmp.rename(path.parent)
        return self.measurer.measure("baseline", path, is_baseline=True)

    def _module_digest(self, module: Any) -> str:
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(self.export_config().model_dump_json().encode())
        digest.update(json.dumps(self.versions).encode())
        return digest.hexdigest()

    def _publish_final(self, artifact: Artifact, plan: list[PlannedStage]) -> Path:
        from compressctl.onnxio import onnx_files

        if artifact.kind != "onnx":
            raise StageError("final", "the pipeline did not end in an ONNX model")
        target = self.output_dir / "model.onnx"
        for f in onnx_files(Path(artifact.path)):
            tmp = self.output_dir / f".{f.name}.tmp"
            shutil.copyfile(f, tmp)
            tmp.replace(self.output_dir / f.name)
        return target


def check_onnx_file(path: Path, what: str) -> None:
    """A readable, valid ONNX model that ONNX Runtime can load, else a UserError."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{what}: {path} is not a valid ONNX model ({first})") from None


def default_output_dir(recipe: Any) -> Path:
    if recipe.output:
        path = Path(recipe.output)
        return path if path.is_absolute() else Path.cwd() / path
    return Path.cwd() / "out" / recipe.name


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
    _check_output_dir(out)
    with OutputLock(out, wait=wait):
        handler = _file_log(out / "run.log")
        try:
            run = Run(recipe, out, providers=providers, force=force, progress=progress)
            try:
                report = run.execute()
            except StageError:
                _write_partial(run)
                raise
            write_reports(report, out)
            return report
        finally:
            log.removeHandler(handler)
            handler.close()


def _write_partial(run: Run) -> None:
    """Keep what finished: a report of the stages and models measured before a failure."""
    from compressctl.report.build import build_report
    from compressctl.report.write import write_reports

    try:
        write_reports(build_report(run, failed=True), run.output_dir)
    except Exception:  # the failure being reported matters more than this report
        log.debug("could not write the partial report", exc_info=True)


def _check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output folder {out} exists and is a file")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"output folder {out}: {probe} is a file")
    import os

    if not os.access(probe, os.W_OK):
        raise UserError(f"output folder {out} is not writable")


def _file_log(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)
    return handler
