"""Cheap, real measurements of one candidate: its torch stages with a short fine-tune → export → quantize → measure.

The workbench holds what every candidate shares (the trained baseline module,
its ONNX export, the data, the timing batch, calibration batches) and runs a
candidate's own stages (``recipes.torch_stages``: slimming, low-rank, prune,
fine-tune) through their runners, with only ``proxy_epochs`` of recovery
fine-tuning. Stages that do not depend on the pruning ratios (the slimming
fine-tune, a low-rank factorisation of the baseline) are computed once and
shared by every candidate that starts with them. So a proxy evaluation costs
about two fine-tuning epochs, one export, one quantization and a few dozen
timed runs on the user's execution provider.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compressctl.runners.base import StageContext

log = logging.getLogger("compressctl")

FAST_INT8 = {"format": "qdq", "activation": "uint8", "weight": "int8"}  # the fast format on x86 CPUs
DYNAMIC_INT8 = {"mode": "dynamic", "format": "qoperator", "activation": "uint8", "weight": "int8"}
SMALL_BN_SCALE = 0.05  # |gamma| below this: a channel network slimming has all but switched off


def bn_scales(module: Any) -> dict[str, float]:
    """Median ``|gamma|`` of the BatchNorm layers and the share under ``SMALL_BN_SCALE`` (slimming drives unneeded ones there)."""
    import torch
    from torch import nn

    found = [m.weight.detach().abs() for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not found:
        return {"median": 0.0, "small_share": 0.0}
    scales = torch.cat(found)
    return {
        "median": round(float(scales.median()), 4),
        "small_share": round(float((scales < SMALL_BN_SCALE).float().mean()), 4),
    }


def lowrank_summary(details: dict[str, Any]) -> dict[str, Any]:
    """What the lowrank runner did: layers replaced, their MACs before and after, and why others were skipped."""
    return {
        "decomposed": sorted(details.get("layers", {})),
        "macs_before": details.get("macs_before", 0),
        "macs_after": details.get("macs_after", 0),
        "skipped": {name: info["reason"] for name, info in details.get("skipped", {}).items()},
    }


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
    full_build_seconds: float | None = None  # a candidate's torch stages with full fine-tuning (``proxy_gap``)
    round_to: int | None = 8
    export_options: dict[str, Any] = field(default_factory=dict)  # opset / dynamo of the recipe's export stage
    first_index: int = 1  # pipeline index of the first compression stage (stage seeds are seed + index)
    shared: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)  # stage prefixes → (artifact, details)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for builder processes (``advise.trials``): the recipe goes as data, since its model class
        is built at run time from the registered runners; ``__setstate__`` validates it again there."""
        state = dict(self.__dict__)
        source = getattr(self.recipe, "_source_path", None)
        state["recipe"] = (self.recipe.model_dump(mode="json", exclude_unset=True), source)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from compressctl.recipe.loader import validate_data

        data, source = state["recipe"]
        recipe = validate_data(data, str(source or "recipe"))
        recipe._source_path = source
        self.__dict__.update(state, recipe=recipe)

    @property
    def metric(self) -> str:
        metric = self.recipe.evaluate.metric
        return metric if metric in ("accuracy", "top5") and self.data.has_labels else "fidelity"

    def example(self) -> tuple[Any, ...]:
        from compressctl.inputs import example_inputs

        return example_inputs(self.recipe.model.inputs, self.recipe.model.dims, batch=2)

    # -- measuring ------------------------------------------------------------------
    def score(self, path: Path) -> dict[str, Any]:
        """Metric on the validation split and size on disk (latency: ``advise.timing``, in a sitting)."""
        from compressctl.measure.latency import make_session
        from compressctl.measure.metrics import evaluate_outputs, predict
        from compressctl.measure.size import size_on_disk

        session = make_session(path, self.provider, self.threads)
        outputs = predict(session, self.data.val, self.recipe.data.batch_size)
        reference = self.baseline.get("outputs")
        metrics = evaluate_outputs(outputs, self.data.val.labels, reference if reference is not None else outputs, "")
        figures = {"metric": float(metrics[self.metric]), "size_bytes": size_on_disk(path)}
        if not self.baseline:
            figures["outputs"] = outputs
        return figures

    def quick_metric(self, path: Path) -> float:
        return self.score(path)["metric"]

    def measure_baseline(self, path: Path) -> dict[str, Any]:
        """The baseline's metric, size, MACs, and its latency from a sitting of its own."""
        from compressctl.advise.timing import BASELINE, sit_with_baseline, timed
        from compressctl.measure.latency import batch_feeds, make_session

        session = make_session(path, self.provider, self.threads)
        self.feeds = batch_feeds(session.get_inputs(), self.data.val, self.batch_size)
        self.baseline_path = path
        self.baseline = {}
        self.baseline = self.score(path)
        self.baseline["macs"] = self.macs(path)
        self.baseline.update(timed(sit_with_baseline(self, {}), BASELINE), accuracy_drop=0.0)
        return self.baseline

    def macs(self, path: Path) -> int:
        from compressctl.measure.size import count_macs
        from compressctl.onnxio import load_onnx

        return count_macs(load_onnx(path, load_external_data=False), self.recipe.model.dims)

    def relative(self, figures: dict[str, Any]) -> dict[str, Any]:
        """Add the accuracy drop against the baseline (speedups come from the sitting: ``advise.timing``)."""
        return dict(figures, accuracy_drop=self.baseline["metric"] - figures["metric"])

    # -- building candidates ----------------------------------------------------------
    def proxy_gap(self, candidate: dict[str, Any], full_epochs: int, folder: Path) -> float:
        """How much more metric full fine-tuning recovers than the short proxy fine-tuning, for ``candidate``.

        Proxies are judged against ``max_accuracy_drop`` plus this gap: the search
        then explores what full fine-tuning makes feasible, and the finalists'
        real runs are judged against the user's limit itself.
        """
        folder.mkdir(parents=True, exist_ok=True)
        proxy = self.quick_metric(self.export(self.compressed_module(candidate)[0], folder / "proxy.onnx"))
        started = time.perf_counter()
        full = self.quick_metric(self.export(self.compressed_module(candidate, full_epochs)[0], folder / "full.onnx"))
        self.full_build_seconds = max(self.full_build_seconds or 0.0, time.perf_counter() - started)
        gap = max(0.0, full - proxy)
        log.info(
            "advise: proxy fine-tuning (%d epochs) gives %.4f, %d epochs give %.4f: proxies get %.4f more accuracy drop",
            self.proxy_epochs,
            proxy,
            full_epochs,
            full,
            gap,
        )
        return gap

    def compressed_module(self, candidate: dict[str, Any], epochs: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Run the candidate's torch stages on the baseline; returns the module and each stage's details.

        The stages are the recommended recipe's own (``recipes.torch_stages``),
        with ``epochs`` (default ``proxy_epochs``) of recovery fine-tuning.
        """
        from compressctl.advise.recipes import torch_stages
        from compressctl.artifact import Artifact

        epochs = self.proxy_epochs if epochs is None else epochs
        stages = torch_stages(self.recipe, candidate, self.round_to, finetune_epochs=epochs)
        artifact = Artifact.from_module(self.module)
        details: dict[str, Any] = {}
        for position, stage in enumerate(stages):
            label = "slimming" if stage.get("sparsity_regularization") else stage["type"]
            # stages before pruning do not depend on the ratios: candidates share them
            key = json.dumps(stages[: position + 1], sort_keys=True)
            shareable = all(s["type"] != "prune" for s in stages[: position + 1]) and position < len(stages) - 1
            if shareable and key in self.shared:
                artifact, details[label] = self.shared[key]
                continue
            artifact, details[label] = self.run_stage(stage, artifact, self.first_index + position)
            if shareable:
                self.shared[key] = (artifact, details[label])
        return artifact.module.eval(), {k: v for k, v in details.items() if v}

    def stage_context(self, stage_type: str, index: int) -> StageContext:
        """A stage context for an in-process proxy stage (torch stages: they write no files)."""
        from compressctl.artifact import Artifact
        from compressctl.pipeline import build_source_artifact
        from compressctl.recipe import recipe_dir
        from compressctl.runners.base import StageContext

        recipe = self.recipe
        return StageContext(
            baseline=Artifact.from_module(self.module) if self.module is not None else None,
            index=index,
            name=f"{index:02d}-{stage_type}",
            stage_dir=self.folder,
            seed=recipe.seed,
            data=self.data,
            inputs=list(recipe.model.inputs),
            dims=recipe.model.dims,
            batch_size=recipe.data.batch_size,
            evaluate=recipe.evaluate,
            report=recipe.report,
            provider=self.provider,
            threads=self.threads,
            export=self.export_stage_model,
            build_model=lambda source: build_source_artifact(source, recipe_dir(recipe), recipe.seed),
        )

    def export_stage_model(self, artifact: Any, path: Path, config: Any = None) -> dict[str, Any]:
        """``StageContext.export`` for proxies: the recipe's export options, without the output check."""
        self.export(artifact.module, path)
        return {}

    def run_stage(self, stage: dict[str, Any], artifact: Any, index: int) -> tuple[Any, dict[str, Any]]:
        import torch

        from compressctl.registry import registry

        runner = registry.get(stage["type"])()
        config = runner.config_model(**stage)
        context = self.stage_context(stage["type"], index)
        torch.manual_seed(self.recipe.seed + index)
        result = runner.run(artifact, config, context)
        details: dict[str, Any] = {}
        if stage["type"] == "lowrank":
            details = lowrank_summary(context.details)
        if stage.get("sparsity_regularization"):
            details = {"bn_scales_before": bn_scales(artifact.module), "bn_scales_after": bn_scales(result.module)}
        return result, details

    def export(self, module: Any, path: Path) -> Path:
        from compressctl.onnxio import export_module

        export_module(module, list(self.recipe.model.inputs), self.example(), path, **self.export_options)
        return path

    # -- quantizing ------------------------------------------------------------------------
    def int8_config(self, options: dict[str, Any], mode: str = "static") -> Any:
        """Static INT8 as advise proposes it, or dynamic INT8 as the recipe's dynamic quantize stage has it."""
        from compressctl.advise.recipes import DEFAULT_DYNAMIC, int8_template
        from compressctl.runners.quantize import QuantizeConfig

        float_nodes = list(options.get("float_nodes") or [])
        if mode != "static":  # the stage recipes.quantize_stage writes, without its fallback (the proxy's own)
            stage = {
                k: v for k, v in int8_template(self.recipe, mode, DEFAULT_DYNAMIC).items() if k != "max_accuracy_drop"
            }
            stage["exclude_nodes"] = sorted(set(stage.get("exclude_nodes", [])) | set(float_nodes))
            return QuantizeConfig(**dict(stage, per_channel=options.get("per_channel", stage.get("per_channel", True))))
        return QuantizeConfig(
            type="quantize",
            mode="static",
            per_channel=options.get("per_channel", True),
            calibration={"method": options.get("calibration", "minmax"), "samples": options.get("samples", 256)},
            exclude_nodes=float_nodes,
        )

    def int8_quantizer(
        self, source: Path, folder: Path, mode: str = "static", **options: Any
    ) -> tuple[Callable[[list[str]], Path], Path]:
        """``quantize(float_nodes) -> path`` for INT8 of ``source``: static (QDQ, u8 activations, s8 weights,
        calibrated) or dynamic (QOperator, activation ranges at run time).

        Returns it with the pre-processed model, whose node names ``float_nodes`` refer to.
        """
        from compressctl.quantization.int8 import CalibrationReader, preprocess, quantize_candidate

        config = self.int8_config(options, mode)
        prepared = preprocess(source, folder / "prepared.onnx", [])
        reader = None
        if mode == "static":
            calibration = self.data.calibration.head(config.calibration.samples)
            reader = CalibrationReader(calibration, self.data.input_names, self.recipe.data.batch_size)
        setting = FAST_INT8 if mode == "static" else DYNAMIC_INT8
        made: list[Path] = []

        def quantize(float_nodes: list[str]) -> Path:
            target = folder / ("int8.onnx" if not made else f"int8-{len(made)}.onnx")
            quantize_candidate(prepared, target, config, setting, reader, float_nodes or None)
            made.append(target)
            return target

        return quantize, prepared

    def quantize(
        self, source: Path, folder: Path, float_nodes: list[str] | None = None, mode: str = "static", **options: Any
    ) -> Path:
        """INT8 (static or dynamic) through the quantize runner's helpers, ``float_nodes`` left in float."""
        quantize, _prepared = self.int8_quantizer(source, folder, mode, **options)
        return quantize(list(float_nodes or []))

    def quantize_with_fallback(
        self, source: Path, folder: Path, float_metric: float, max_drop: float, mode: str = "static", **options: Any
    ) -> tuple[Path, dict[str, Any]]:
        """INT8, then the quantize stage's accuracy-aware fallback: sensitive nodes back to float until the drop is met."""
        from compressctl.quantization.fallback import accuracy_aware_fallback, fallback_nodes

        quantize, prepared = self.int8_quantizer(source, folder, mode, **options)
        quantized = quantize([])
        quantized_metric = self.quick_metric(quantized)
        config = self.int8_config(options, mode)
        result = accuracy_aware_fallback(
            fallback_nodes(prepared, config),
            quantize,
            self.quick_metric,
            float_metric=float_metric,
            quantized=quantized,
            quantized_metric=quantized_metric,
            max_drop=max_drop,
            max_nodes=config.fallback_max_nodes,
        )
        return result.path, {
            "max_accuracy_drop": max_drop,
            "int8_drop": round(float_metric - quantized_metric, 6),
            "float_nodes": len(result.float_nodes),
            "met": result.met,
        }

    def rewrite_weights(self, source: Path, folder: Path, stage: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        """k-means clustering or weight-only int4 as the quantize ``stage`` says, through the runner's helpers;
        ``changed``: the weights clustered or nodes made 4-bit (``source`` when none qualifies)."""
        from compressctl.quantization.weight_only import transform_weights
        from compressctl.runners.quantize import QuantizeConfig

        config = QuantizeConfig(**stage)
        target = folder / f"{config.mode}{config.bits or ''}.onnx"
        try:
            details = transform_weights(source, target, config)
        except ValueError as exc:  # no weight large enough to cluster, or no MatMul with a constant weight
            return source, {"changed": 0, "reason": str(exc)}
        return target, {
            "changed": len(details.get("clustered", [])) or sum(details.get("quantized_nodes", {}).values())
        }

    # -- one candidate -----------------------------------------------------------------------
    def evaluate(self, candidate: dict[str, Any], folder: Path) -> dict[str, Any]:
        """Proxy figures of ``candidate``, built and timed in this process (see ``build`` and ``advise.timing``)."""
        from compressctl.advise.timing import time_proxy

        return time_proxy(self, self.build(candidate, folder))

    def build(self, candidate: dict[str, Any], folder: Path) -> dict[str, Any]:
        """Build ``candidate``'s proxy and take what does not depend on when it is measured (see ``recipes``
        for its keys): metric, size, MACs; its latency is left to the measuring process (``advise.timing``).

        ``float`` holds the figures before quantization; ``stages`` what the torch
        stages did (layers low-rank replaced or skipped, BatchNorm scales slimmed);
        ``fallback`` what the accuracy-aware fallback returned to float; ``kmeans``
        or ``int4`` how many weights were rewritten (``changed``); ``float_path`` and ``params_path`` the
        float and final models; ``trained_by`` the process that built it.
        """
        from compressctl.advise.recipes import quantization, quantize_stage, torch_stages
        from compressctl.advise.timing import process_id

        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        figures: dict[str, Any] = {}
        if self.module is not None and torch_stages(self.recipe, candidate, self.round_to):
            module, figures["stages"] = self.compressed_module(candidate)
            float_path = self.export(module, folder / "compressed.onnx")
            figures["float"] = self.relative(self.score(float_path))
            figures["float"]["macs"] = self.macs(float_path)
        else:
            assert self.baseline_path is not None
            float_path = self.baseline_path
            kept = ("metric", "size_bytes", "macs", "accuracy_drop")
            figures["float"] = {k: v for k, v in self.baseline.items() if k in kept}
        mode = quantization(candidate)
        options = {k: candidate[k] for k in ("per_channel", "calibration", "float_nodes") if k in candidate}
        int8_mode = {"int8": "static", "dynamic": "dynamic"}.get(mode)
        if int8_mode and candidate.get("float_fallback") is not None:
            final_path, figures["fallback"] = self.quantize_with_fallback(
                float_path, folder, figures["float"]["metric"], candidate["float_fallback"], int8_mode, **options
            )
        elif int8_mode:
            final_path = self.quantize(float_path, folder, mode=int8_mode, **options)
        elif mode in ("kmeans", "int4"):
            stage = quantize_stage(self.recipe, candidate)
            final_path, figures[mode] = self.rewrite_weights(float_path, folder, stage)
        else:
            final_path = float_path
        final = self.relative(self.score(final_path)) if final_path != float_path else dict(figures["float"])
        figures.update(final, float_path=str(float_path), params_path=str(final_path), trained_by=process_id())
        figures["quantization"] = mode
        return figures
