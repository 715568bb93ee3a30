"""Cheap, real measurements of one candidate: prune a copy → short fine-tune → export → INT8 → measure.

The workbench holds what every candidate shares (the trained baseline module,
its ONNX export, the data, the timing batch, calibration batches), so a proxy
evaluation costs two fine-tuning epochs, one export, one quantization and a few
dozen timed runs on the user's execution provider.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("compressctl")

FAST_INT8 = {"format": "qdq", "activation": "uint8", "weight": "int8"}  # the fast format on x86 CPUs
PROXY_WARMUP = 3
PROXY_REPEAT = 20


@dataclass
class ProxyContext:
    """What the prune runner's helpers read from a stage context, for in-process proxies."""

    data: Any
    recipe: Any
    seed: int
    index: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def progress(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Workbench:
    recipe: Any
    data: Any
    folder: Path
    provider: str
    threads: int
    batch_size: int  # the gate batch: latency objectives and speedups are read here
    module: Any = None  # the trained torch baseline (None for an ONNX-only model)
    baseline_path: Path | None = None
    feeds: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    proxy_epochs: int = 2
    finetune_lr: float = 0.002
    round_to: int | None = 8
    export_options: dict[str, Any] = field(default_factory=dict)  # opset / dynamo of the recipe's export stage

    @property
    def metric(self) -> str:
        metric = self.recipe.evaluate.metric
        return metric if metric in ("accuracy", "top5") and self.data.has_labels else "fidelity"

    def example(self) -> tuple[Any, ...]:
        from compressctl.sources import example_inputs

        return example_inputs(self.recipe.model.inputs, self.recipe.model.dims, batch=2)

    # -- measuring ------------------------------------------------------------------
    def score(self, path: Path, warmup: int = PROXY_WARMUP, repeat: int = PROXY_REPEAT) -> dict[str, Any]:
        """Metric on the validation split, p50 at the gate batch, size on disk."""
        from compressctl.measure.latency import make_session, summarize, time_session
        from compressctl.measure.metrics import evaluate_outputs, predict
        from compressctl.measure.size import size_on_disk

        session = make_session(path, self.provider, self.threads)
        outputs = predict(session, self.data.val, self.recipe.data.batch_size)
        reference = self.baseline.get("outputs")
        metrics = evaluate_outputs(outputs, self.data.val.labels, reference if reference is not None else outputs, "")
        times = time_session(session, self.feeds, warmup=warmup, repeat=repeat, max_seconds=20)
        figures = {
            "metric": float(metrics[self.metric]),
            "p50_ms": summarize(times, self.batch_size)["p50_ms"],
            "size_bytes": size_on_disk(path),
        }
        if not self.baseline:
            figures["outputs"] = outputs
        return figures

    def measure_baseline(self, path: Path) -> dict[str, Any]:
        from compressctl.measure.latency import batch_feeds, make_session

        session = make_session(path, self.provider, self.threads)
        self.feeds = batch_feeds(session.get_inputs(), self.data.val.inputs, self.batch_size)
        self.baseline_path = path
        self.baseline = {}
        self.baseline = self.score(path, repeat=PROXY_REPEAT * 2)
        return self.baseline

    def relative(self, figures: dict[str, Any]) -> dict[str, Any]:
        """Add speedup and accuracy drop against the baseline measured in this process."""
        return dict(
            figures,
            speedup=self.baseline["p50_ms"] / figures["p50_ms"],
            accuracy_drop=self.baseline["metric"] - figures["metric"],
        )

    # -- building candidates ----------------------------------------------------------
    def prune_config(self, candidate: dict[str, Any], epochs: int) -> Any:
        from compressctl.runners.prune import PruneConfig

        return PruneConfig(
            type="prune",
            method="structured",
            amount=0.0,
            importance=candidate.get("importance", "l1"),
            layer_amounts=candidate["layer_amounts"],
            round_to=self.round_to,
            schedule={"epochs": epochs, "lr": self.finetune_lr},
        )

    def proxy_gap(self, candidate: dict[str, Any], full_epochs: int, folder: Path) -> float:
        """How much more metric full fine-tuning recovers than the short proxy fine-tuning, for ``candidate``.

        Proxies are judged against ``max_accuracy_drop`` plus this gap: the search
        then explores what full fine-tuning makes feasible, and the finalists'
        real runs are judged against the user's limit itself.
        """
        folder.mkdir(parents=True, exist_ok=True)
        proxy = self.score(self.export(self.pruned_module(candidate), folder / "proxy.onnx"), repeat=1)
        full = self.score(self.export(self.pruned_module(candidate, full_epochs), folder / "full.onnx"), repeat=1)
        gap = max(0.0, full["metric"] - proxy["metric"])
        log.info(
            "advise: proxy fine-tuning (%d epochs) gives %.4f, %d epochs give %.4f: proxies get %.4f more accuracy drop",
            self.proxy_epochs,
            proxy["metric"],
            full_epochs,
            full["metric"],
            gap,
        )
        return gap

    def pruned_module(self, candidate: dict[str, Any], epochs: int | None = None) -> Any:
        import torch

        from compressctl.runners.prune import prune_structured

        module = copy.deepcopy(self.module).eval()
        torch.manual_seed(self.recipe.seed)
        context = ProxyContext(self.data, self.recipe, self.recipe.seed)
        epochs = self.proxy_epochs if epochs is None else epochs
        prune_structured(module, self.prune_config(candidate, epochs), context, self.example())
        return module.eval()

    def export(self, module: Any, path: Path) -> Path:
        from compressctl.onnxio import export_module

        export_module(module, list(self.recipe.model.inputs), self.example(), path, **self.export_options)
        return path

    def quantize(self, source: Path, folder: Path, float_nodes: list[str] | None = None, **options: Any) -> Path:
        """Static INT8 (QDQ, u8 activations, s8 per-channel weights) through the quantize runner's helpers."""
        from compressctl.runners.quantize import CalibrationReader, QuantizeConfig, preprocess, quantize_candidate

        config = QuantizeConfig(
            type="quantize",
            mode="static",
            per_channel=options.get("per_channel", True),
            calibration={"method": options.get("calibration", "minmax"), "samples": options.get("samples", 256)},
        )
        prepared = preprocess(source, folder / "prepared.onnx")
        calibration = self.data.calibration.head(config.calibration.samples)
        reader = CalibrationReader(calibration, self.data.input_names, self.recipe.data.batch_size)
        target = folder / "int8.onnx"
        quantize_candidate(prepared, target, config, FAST_INT8, reader, float_nodes)
        return target

    def evaluate(self, candidate: dict[str, Any], folder: Path) -> dict[str, Any]:
        """Proxy figures of ``candidate`` (``layer_amounts`` / ``importance`` / ``quantize``)."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        figures: dict[str, Any] = {}
        if candidate.get("layer_amounts") and any(v > 0 for v in candidate["layer_amounts"].values()):
            float_path = self.export(self.pruned_module(candidate), folder / "pruned.onnx")
            figures["float"] = self.relative(self.score(float_path))
        else:
            assert self.baseline_path is not None
            float_path = self.baseline_path
            figures["float"] = self.relative(dict(self.baseline))
            figures["float"].pop("outputs", None)
        final_path = float_path
        if candidate.get("quantize"):
            options = {k: candidate[k] for k in ("per_channel", "calibration") if k in candidate}
            final_path = self.quantize(float_path, folder, **options)
        final = self.relative(self.score(final_path)) if final_path != float_path else dict(figures["float"])
        final["params_path"] = str(final_path)
        figures.update(final)
        return figures
