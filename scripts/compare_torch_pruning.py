"""Compare compressctl's structured pruning with Torch-Pruning called by hand at the same ratio.

Both start from the same trained model (the ``train`` stage of the recipe, default
recipes/digits-resnet-prune.yaml). compressctl runs the recipe (prune → finetune →
export); the hand-written path calls ``torch_pruning.pruner.BasePruner`` with L1
magnitude importance at the recipe's ratio, the classifier head ignored, then
fine-tunes with the recipe's ``finetune`` settings and seed and exports with the
same exporter. All models are measured in one process on ONNX Runtime:
validation accuracy, MACs, parameters and p50 latency at batch 1 and 32.

Usage:
    .venv/bin/python scripts/compare_torch_pruning.py [--recipe R] [--out DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path


def hand_pruned(trained, recipe, data, out_dir: Path) -> Path:
    import torch
    import torch_pruning as tp

    from compressctl.inputs import example_inputs
    from compressctl.onnxio import export_module
    from compressctl.runners.train import settings_from
    from compressctl.training import fit

    prune = next(s for s in recipe.stages if s.type == "prune")
    finetune_index, finetune = next((i, s) for i, s in enumerate(recipe.stages, 1) if s.type == "finetune")
    model = copy.deepcopy(trained).eval()
    example = example_inputs(recipe.model.inputs, recipe.model.dims, batch=2)
    torch.manual_seed(recipe.seed)
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=prune.amount,
        ignored_layers=[model.fc],
        round_to=prune.round_to,
    )
    pruner.step()
    fit(
        model, data, settings_from(finetune, recipe.data.batch_size), seed=recipe.seed + finetune_index, task="finetune"
    )
    path = out_dir / "torch-pruning-by-hand.onnx"
    export_module(model, recipe.model.inputs, example, path, opset=18)
    return path


def measure(path: Path, data, batch_sizes: list[int], repeat: int) -> dict:
    from compressctl.inputs import session_feeds
    from compressctl.measure.latency import default_threads, make_session, measure_latency
    from compressctl.measure.metrics import accuracy, evaluate_onnx
    from compressctl.measure.size import count_macs, count_params
    from compressctl.onnxio import load_onnx

    threads = default_threads()
    model = load_onnx(path)
    row = {"macs": count_macs(model), "params": count_params(model)[0]}
    row["accuracy"] = accuracy(evaluate_onnx(path, data.val, 256, "CPUExecutionProvider", threads), data.val.labels)
    session = make_session(path, "CPUExecutionProvider", threads)
    for batch in batch_sizes:
        result = measure_latency(
            path, session_feeds(session, batch), provider="CPUExecutionProvider", batch_size=batch,
            threads=threads, warmup=10, repeat=repeat,
        )  # fmt: skip
        row[f"p50@{batch}"] = result.p50_ms
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/digits-resnet-prune.yaml")
    parser.add_argument("--out", default="out/compare-torch-pruning")
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args()

    from compressctl.artifact import load_torch
    from compressctl.data import load_data
    from compressctl.pipeline import apply
    from compressctl.recipe import load_recipe, recipe_dir
    from compressctl.sources import build_torch_model

    recipe = load_recipe(args.recipe)
    out = Path(args.out)
    apply(recipe, out)  # reuses cached stages of an earlier run into the same folder
    base_dir = recipe_dir(recipe)
    data = load_data(recipe.data, recipe.model.inputs, dims=recipe.model.dims, seed=recipe.seed, base_dir=base_dir)
    trained = load_torch(out / "stages" / "01-train", lambda: build_torch_model(recipe.model, base_dir)).module
    by_hand = hand_pruned(trained, recipe, data, out)

    rows = {
        "baseline (trained)": measure(out / "baseline" / "model.onnx", data, [1, 32], args.repeat),
        "compressctl prune + finetune": measure(out / "model.onnx", data, [1, 32], args.repeat),
        "Torch-Pruning by hand + finetune": measure(by_hand, data, [1, 32], args.repeat),
    }
    base = rows["baseline (trained)"]
    print(
        f"{'model':34} {'accuracy':>8} {'MACs':>11} {'MACs x':>7} {'params':>8} {'p50@1 ms':>9} {'p50@32 ms':>10} {'speedup@32':>10}"
    )
    for name, row in rows.items():
        print(
            f"{name:34} {row['accuracy']:8.4f} {row['macs']:11,d} {row['macs'] / base['macs']:7.3f} {row['params']:8,d} "
            f"{row['p50@1']:9.3f} {row['p50@32']:10.3f} {base['p50@32'] / row['p50@32']:9.2f}x"
        )


if __name__ == "__main__":
    main()
