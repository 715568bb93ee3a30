"""Per-layer sensitivity: what pruning or INT8 costs each layer in accuracy, and its share of latency.

* pruning: one layer (with the channels Torch-Pruning couples to it) loses a
  fraction of its output channels, no fine-tuning, accuracy on the validation split;
* quantization: only this layer in INT8 (the rest float), accuracy drop;
* latency share: ONNX Runtime's profiler on the float model at the gate batch.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

log = logging.getLogger("compressctl")

PRUNE_RATIOS = (0.25, 0.5, 0.75)
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")


def prunable_layers(module: Any, example: tuple[Any, ...]) -> list[str]:
    """Conv and Linear layers that structured pruning may shrink (the classifier head is kept)."""
    from torch import nn

    from compressctl.pruning.structured import head_layers

    head = set(head_layers(module, example))
    return [
        name
        for name, child in module.named_modules()
        if isinstance(child, (nn.modules.conv._ConvNd, nn.Linear)) and name not in head
    ]


def prune_sensitivity(bench: Any, ratios: tuple[float, ...] = PRUNE_RATIOS) -> dict[str, dict[str, float]]:
    """``{layer: {ratio: accuracy drop}}`` for one-shot pruning without fine-tuning."""
    from compressctl.pruning.structured import build_pruner, linear_schedule
    from compressctl.training import evaluate_torch

    example = bench.example()
    base = evaluate_torch(bench.module.eval(), bench.data.val, 256)
    table: dict[str, dict[str, float]] = {}
    for layer in prunable_layers(bench.module, example):
        table[layer] = {}
        for ratio in ratios:
            module = copy.deepcopy(bench.module).eval()
            pruner, _ = build_pruner(
                module,
                example,
                amount=0.0,
                importance="l1",
                global_ranking=False,
                layer_amounts={layer: ratio},
                ignore=[],
                keep_head=True,
                round_to=None,
                max_layer_amount=0.95,
                steps=1,
                schedule=linear_schedule,
            )
            pruner.step()
            table[layer][f"{ratio:g}"] = round(base - evaluate_torch(module.eval(), bench.data.val, 256), 4)
    return table


def node_layers(path: Path) -> dict[str, str]:
    """ONNX node name → a readable layer name (its weight's name, e.g. ``layer2.conv1``)."""
    from compressctl.onnxio import load_onnx

    model = load_onnx(path, load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS:
            weights = [name for name in node.input[1:] if name in initializers]
            label = weights[0] if weights else node.name
            for suffix in (".weight", "_weight"):
                label = label.removesuffix(suffix)
            found[node.name] = label.removeprefix("p_") if label.startswith("p_") else label
    return found


FUSED_FOLLOWERS = ("BatchNormalization", "Relu", "Clip", "Add", "Sigmoid", "Mul", "HardSigmoid")


def fused_names(path: Path) -> dict[str, str]:
    """Names ONNX Runtime may give a layer's kernel after fusing Conv+BN+ReLU(+Add): node and output names."""
    from compressctl.onnxio import load_onnx

    model = load_onnx(path, load_external_data=False)
    layers = node_layers(path)
    consumers: dict[str, list] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    found = {}
    for node in model.graph.node:
        if node.name not in layers:
            continue
        current = node
        for _ in range(4):
            found[current.name] = layers[node.name]
            found.update({out: layers[node.name] for out in current.output})
            following = consumers.get(current.output[0], [])
            if len(following) != 1 or following[0].op_type not in FUSED_FOLLOWERS:
                break
            current = following[0]
    return found


def quantization_sensitivity(bench: Any, path: Path, folder: Path) -> dict[str, float]:
    """``{layer: accuracy drop}`` when only that layer runs in INT8 (QDQ)."""
    layers = node_layers(path)
    drops = {}
    for node, label in layers.items():
        work = folder / "quant" / node.replace("/", "_")
        work.mkdir(parents=True, exist_ok=True)
        others = [n for n in layers if n != node]
        quantized = bench.quantize(path, work, float_nodes=others, samples=128)
        drops[label] = round(bench.baseline["metric"] - bench.quick_metric(quantized), 4)
        shutil.rmtree(work, ignore_errors=True)
    return drops


def latency_share(bench: Any, path: Path, folder: Path, runs: int = 10) -> dict[str, float]:
    """``{layer or op type: share of the node time}`` from ONNX Runtime's profiler (sums to 1)."""
    from compressctl.measure.latency import make_session

    session = make_session(path, bench.provider, bench.threads, profile_prefix=str(folder / "profile"))
    for _ in range(runs):
        session.run(None, bench.feeds)
    profile = Path(session.end_profiling())
    layers = fused_names(path)
    times: dict[str, float] = defaultdict(float)
    for event in json.loads(profile.read_text()):
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        node = event["name"].removesuffix("_kernel_time").removesuffix("_nchwc")
        op = event.get("args", {}).get("op_name", "other")
        # graph optimisation fuses Conv+BN+ReLU; the fused node keeps the Conv's name
        times[layers.get(node, f"other {op}")] += float(event.get("dur", 0))
    profile.unlink(missing_ok=True)
    total = sum(times.values()) or 1.0
    return {name: round(t / total, 4) for name, t in sorted(times.items(), key=lambda kv: -kv[1])}


def analyse(bench: Any, folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"prune": {}, "quantize": {}, "latency_share": {}}
    assert bench.baseline_path is not None
    result["latency_share"] = latency_share(bench, bench.baseline_path, folder)
    result["quantize"] = quantization_sensitivity(bench, bench.baseline_path, folder)
    if bench.module is not None:
        result["prune"] = prune_sensitivity(bench)
    return result
