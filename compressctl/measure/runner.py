"""Measures one ONNX model the same way for baseline, stages and final."""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np

from compressctl.errors import StageError
from compressctl.fsutil import atomic_write_text, file_sha256, text_sha256
from compressctl.measure.latency import batch_feeds, default_threads, make_session, measure_latency
from compressctl.measure.metrics import evaluate_outputs, predict
from compressctl.measure.size import count_macs, count_params, size_on_disk, zipped_size
from compressctl.onnxio import load_onnx

log = logging.getLogger("compressctl")


class Measurer:
    def __init__(self, run: Any) -> None:
        self.run = run
        self.spec = run.recipe.report
        self.threads = self.spec.threads or default_threads()
        self.reference: np.ndarray | None = None
        self.baseline_path: Path | None = None
        self.baseline_digest = ""
        self._metric_fn: Any = None

    def metric_fn(self) -> Any:
        evaluate = self.run.recipe.evaluate
        if evaluate.metric == "factory" and self._metric_fn is None:
            from compressctl.sources import import_callable

            self._metric_fn = import_callable(evaluate.factory, self.run.base_dir, "evaluate.factory")
        return self._metric_fn

    def measure(self, name: str, path: Path, *, is_baseline: bool = False) -> dict[str, Any]:
        self.run.progress("measure", name=name)
        key = self.cache_key(path, is_baseline)
        if is_baseline:
            self.baseline_path, self.reference = Path(path), None
        cached = self.cached(key)
        if cached is not None:
            log.info("measuring %s: unchanged model and settings, reusing the measurement", name)
            entry = dict(cached, name=name, path=str(path), measurement_cached=True)
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
        data = self.run.data
        split = data.val.head(self.run.recipe.evaluate.max_samples)
        provider = self.run.providers[0]
        try:
            session = make_session(path, provider, self.threads)
            outputs = predict(session, split, self.run.recipe.data.batch_size)
        except Exception as exc:
            raise StageError(name, f"ONNX Runtime could not run the model: {type(exc).__name__}: {exc}") from exc
        if is_baseline:
            self.reference = outputs
        elif self.reference is None and self.baseline_path is not None:
            self.reference = predict(
                make_session(self.baseline_path, provider, self.threads), split, self.run.recipe.data.batch_size
            )
        entry["metrics"] = evaluate_outputs(
            outputs, split.labels, self.reference, self.run.recipe.evaluate.metric, self.metric_fn()
        )
        entry["latency"] = self.latency(path, session, split)
        self.store(key, entry)
        entry["measurement_cached"] = False
        self.run.measured.append(entry)
        return entry

    # -- measurement cache: a rerun over unchanged models and settings reuses the figures ----------
    def cache_key(self, path: Path, is_baseline: bool) -> str:
        from compressctl.onnxio import onnx_files
        from compressctl.report.build import cpu_name

        digest = text_sha256("\n".join(file_sha256(f) for f in onnx_files(Path(path))))
        if is_baseline:
            self.baseline_digest = digest
        recipe = self.run.recipe
        payload = {
            "model": digest,
            # Metrics such as fidelity are relative to the baseline's outputs.
            "baseline": self.baseline_digest,
            "report": self.spec.model_dump(mode="json"),
            "providers": self.run.providers,
            "threads": self.threads,
            "data": recipe.data.model_dump(mode="json"),
            "source": self.run.source_key(),  # hashes npz data files and checkpoints too
            "evaluate": recipe.evaluate.model_dump(mode="json"),
            "seed": recipe.seed,
            "versions": self.run.versions,
            "machine": [platform.node(), cpu_name()],
        }
        return text_sha256(json.dumps(payload, sort_keys=True, default=str))

    def _cache_path(self, key: str) -> Path:
        return Path(self.run.output_dir) / "measurements" / f"{key}.json"

    def cached(self, key: str) -> dict[str, Any] | None:
        path = self._cache_path(key)
        if self.run.force or self.run.recipe.evaluate.metric == "factory" or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def store(self, key: str, entry: dict[str, Any]) -> None:
        record = {k: v for k, v in entry.items() if k not in ("name", "path")}
        atomic_write_text(self._cache_path(key), json.dumps(record, default=str))

    def latency(self, path: Path, session: Any, split: Any) -> list[dict[str, Any]]:
        results = []
        pool = split.inputs
        for provider in self.run.providers:
            for batch in self.spec.batch_sizes:
                feeds = batch_feeds(session.get_inputs(), pool, batch)
                self.run.progress("latency", provider=provider, batch_size=batch)
                result = measure_latency(
                    path,
                    feeds,
                    provider=provider,
                    batch_size=batch,
                    threads=self.threads,
                    warmup=self.spec.warmup,
                    repeat=self.spec.repeat,
                    max_seconds=self.spec.max_seconds,
                )
                if result.fallback:
                    log.warning("%s was requested but ONNX Runtime ran %s for %s", provider, result.provider, path)
                results.append(result.to_dict())
        return results
