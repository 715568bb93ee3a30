"""Measures the models of a run: size and metrics one by one, latency together in one sitting.

Size, parameters, MACs and metrics do not depend on when they are taken, so
each model is measured as soon as it exists (and cached by its digest).
Latency does: every model's latency comes from one sitting at the end of the
run, where the baseline, every measured stage and the final model alternate
run by run (see ``measure.sitting``). The measurement cache keeps whole
sittings, never figures from different times mixed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from compressctl.environment import machine_key
from compressctl.errors import StageError
from compressctl.fsutil import atomic_write_text, file_sha256, text_sha256
from compressctl.measure.latency import batch_feeds, default_threads, make_session
from compressctl.measure.metrics import evaluate_outputs, judged_metric, output_kind, predict
from compressctl.measure.size import count_macs, count_params, size_on_disk, zipped_size
from compressctl.onnxio import load_onnx

log = logging.getLogger("compressctl")


def sitting_settings(spec: Any, confidence: float | None = None) -> Any:
    """The sitting settings a recipe's ``report`` (and ``gates.confidence``) ask for."""
    from compressctl.measure.sitting import SittingSettings

    return SittingSettings(
        warmup=spec.warmup,
        min_rounds=spec.repeat,
        max_rounds=max(spec.repeat, 50 * spec.repeat),
        max_seconds=spec.max_seconds,
        target=spec.interval,
        confidence=confidence or 0.95,
        statistic=spec.statistic,
    )


class Measurer:
    def __init__(self, run: Any) -> None:
        self.run = run
        self.spec = run.recipe.report
        self.threads = self.spec.threads or default_threads()
        self.reference: np.ndarray | None = None
        self.baseline_path: Path | None = None
        self.baseline_digest = ""
        self.digests: dict[str, str] = {}
        self.model_digest = ""
        self.kind: str | None = None
        self.sittings: list[Any] = []
        self.sitting_cached = False
        self._metric_fn: Any = None

    def metric_fn(self) -> Any:
        evaluate = self.run.recipe.evaluate
        if evaluate.metric == "factory" and self._metric_fn is None:
            from compressctl.sources import import_callable

            self._metric_fn = import_callable(evaluate.factory, self.run.base_dir, "evaluate.factory")
        return self._metric_fn

    @property
    def metric(self) -> str:
        """The metric the run is judged by (never top-1 agreement on a non-classifier)."""
        return judged_metric(self.run.recipe.evaluate.metric, self.kind or "classes", self.run.data.has_labels)

    def measure(self, name: str, path: Path, *, is_baseline: bool = False) -> dict[str, Any]:
        """Size, parameters, MACs and metrics of one model; its latency comes from the sitting."""
        self.run.progress("measure", name=name)
        key = self.cache_key(path, is_baseline)
        self.digests[name] = self.model_digest
        if is_baseline:
            self.baseline_path, self.reference = Path(path), None
        cached = self.cached(key)
        if cached is not None and (self.kind or cached.get("output_kind")):
            log.info("measuring %s: unchanged model and settings, reusing the measurement", name)
            self.kind = self.kind or cached.get("output_kind")
            entry = dict(cached, name=name, path=str(path), latency=[], measurement_cached=True)
            self.run.measured.append(entry)
            return entry
        log.info("measuring %s (%s)", name, path)
        model = load_onnx(path)
        params, nonzero = count_params(model)
        entry: dict[str, Any] = {
            "name": name,
            "path": str(path),
            "size_bytes": size_on_disk(path),
            "compressed_size_bytes": zipped_size(path),
            "params": params,
            "nonzero_params": nonzero,
            "macs": count_macs(model, self.run.recipe.model.dims),
        }
        del model
        split = self.split()
        provider = self.run.providers[0]
        try:
            session = make_session(path, provider, self.threads)
            outputs = predict(session, split, self.run.recipe.data.batch_size)
        except Exception as exc:
            from compressctl.memory import is_out_of_memory, out_of_memory_message

            if is_out_of_memory(exc):
                raise StageError(name, out_of_memory_message()) from None
            raise StageError(name, f"ONNX Runtime could not run the model: {type(exc).__name__}: {exc}") from exc
        if is_baseline:
            self.reference = outputs
        elif self.reference is None and self.baseline_path is not None:
            self.reference = predict(
                make_session(self.baseline_path, provider, self.threads), split, self.run.recipe.data.batch_size
            )
        if self.kind is None:
            declared = self.run.recipe.evaluate.output_kind
            self.kind = output_kind(self.reference, split.labels, session.get_outputs()[0].name, declared)
            self._say_metric()
        entry["output_kind"] = self.kind
        entry["metrics"] = evaluate_outputs(
            outputs, split.labels, self.reference, self.run.recipe.evaluate.metric, self.metric_fn(), self.kind
        )
        entry["latency"] = []
        self.store(key, entry)
        entry["measurement_cached"] = False
        self.run.measured.append(entry)
        return entry

    def split(self) -> Any:
        return self.run.data.val.head(self.run.recipe.evaluate.max_samples)

    def _say_metric(self) -> None:
        asked = self.run.recipe.evaluate.metric
        if self.metric != asked:
            log.warning(
                "evaluate.metric is %s, but the output is %s%s: judging by fidelity (%s) instead",
                asked,
                self.kind,
                "" if self.run.data.has_labels else " without labels",
                "top-1 agreement with float" if self.kind == "classes" else "worst-sample cosine to float",
            )

    # -- the sitting: every model's latency, timed together ----------------------------------------
    def sit(self, entries: list[dict[str, Any]]) -> None:
        """Time ``entries`` (baseline first) together on every provider × batch size; fill their latency."""
        from compressctl.measure.sitting import SittingResult, time_together

        # A stage that kept its input (quantize keeping float) wrote the same file: time it once, share the figures.
        twins: dict[str, str] = {}
        first_by_digest: dict[str, str] = {}
        for e in entries:
            digest = self.digests.get(e["name"]) or e["path"]
            twins[e["name"]] = first_by_digest.setdefault(digest, e["name"])
        models = {e["name"]: Path(e["path"]) for e in entries if twins[e["name"]] == e["name"]}
        settings = sitting_settings(self.spec, self.run.recipe.gates.confidence)
        key = self.sitting_key(entries, settings)
        records = None if self.run.force else self._read_json(self._cache_path(f"sitting-{key}"))
        if records is not None:
            log.info("latency: the models and settings are unchanged, reusing their sitting")
            self.sittings = [SittingResult.from_record(r) for r in records]
            self.sitting_cached = True
        else:
            pool = self.split()
            self.sittings = []
            for provider in self.run.providers:
                self.run.progress("latency", provider=provider, batch_size=max(self.spec.batch_sizes))
                log.info("latency: %d models in one sitting on %s", len(models), provider)

                def feeds(name: str, session: Any, batch: int) -> dict[str, np.ndarray]:
                    return batch_feeds(session.get_inputs(), pool, batch)

                try:
                    self.sittings += time_together(
                        models,
                        feeds,
                        provider=provider,
                        batch_sizes=list(self.spec.batch_sizes),
                        threads=self.threads,
                        settings=settings,
                    )
                except Exception as exc:
                    from compressctl.memory import is_out_of_memory, out_of_memory_message

                    why = out_of_memory_message() if is_out_of_memory(exc) else f"{type(exc).__name__}: {exc}"
                    raise StageError("latency", why) from None
            atomic_write_text(
                self._cache_path(f"sitting-{key}"), json.dumps([s.to_record() for s in self.sittings], default=str)
            )
        for sitting in self.sittings:
            for name, first in twins.items():
                if name != first:
                    sitting.speedups[name] = (1.0, 1.0, 1.0) if first == sitting.reference else sitting.speedups[first]
            if sitting.stopped_by != "interval":
                log.warning(
                    "latency at %s: the sitting stopped on its %s after %d rounds, before every interval was within "
                    "±%.0f %%",
                    sitting.key,
                    sitting.stopped_by,
                    sitting.rounds,
                    settings.target * 100,
                )
            for entry in entries:
                item = sitting.latency_entry(twins[entry["name"]])
                if twins[entry["name"]] != entry["name"]:
                    item = dict(item, same_file_as=twins[entry["name"]])
                if item["fallback"]:
                    log.warning(
                        "%s was requested but ONNX Runtime ran %s for %s",
                        sitting.provider,
                        item["provider"],
                        entry["path"],
                    )
                entry["latency"].append(item)

    def sitting_key(self, entries: list[dict[str, Any]], settings: Any) -> str:
        payload = {
            "models": [[e["name"], self.digests.get(e["name"], e["path"])] for e in entries],
            "settings": settings.to_dict(),
            "report": self.spec.model_dump(mode="json"),
            "providers": self.run.providers,
            "threads": self.threads,
            "data": self.run.recipe.data.model_dump(mode="json"),
            "source": self.run.source_key(),
            "versions": self.run.versions,
            "machine": machine_key(),
        }
        return text_sha256(json.dumps(payload, sort_keys=True, default=str))

    # -- measurement cache: a rerun over unchanged models and settings reuses the figures ----------
    def cache_key(self, path: Path, is_baseline: bool) -> str:
        from compressctl.onnxio import onnx_files

        digest = text_sha256("\n".join(file_sha256(f) for f in onnx_files(Path(path))))
        self.model_digest = digest
        if is_baseline:
            self.baseline_digest = digest
        recipe = self.run.recipe
        payload = {
            "model": digest,
            # Metrics such as fidelity are relative to the baseline's outputs.
            "baseline": self.baseline_digest,
            "providers": self.run.providers,
            "data": recipe.data.model_dump(mode="json"),
            "source": self.run.source_key(),  # hashes npz data files and checkpoints too
            "evaluate": recipe.evaluate.model_dump(mode="json"),
            "seed": recipe.seed,
            "versions": self.run.versions,
            "machine": machine_key(),
        }
        return text_sha256(json.dumps(payload, sort_keys=True, default=str))

    def _cache_path(self, key: str) -> Path:
        return Path(self.run.output_dir) / "measurements" / f"{key}.json"

    def _read_json(self, path: Path) -> Any:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def cached(self, key: str) -> dict[str, Any] | None:
        if self.run.force or self.run.recipe.evaluate.metric == "factory":
            return None
        return self._read_json(self._cache_path(key))

    def store(self, key: str, entry: dict[str, Any]) -> None:
        record = {k: v for k, v in entry.items() if k not in ("name", "path", "latency")}
        atomic_write_text(self._cache_path(key), json.dumps(record, default=str))
