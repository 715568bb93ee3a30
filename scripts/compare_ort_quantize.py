"""compressctl's static INT8 vs ONNX Runtime's `quantize_static` with default settings.

Both quantize the same FP32 model (the baseline of recipes/digits-resnet-int8.yaml)
with the same calibration samples; accuracy, size and latency are measured in
one process, interleaved, with the same thread count, warm-up and repeats.

    .venv/bin/python scripts/compare_ort_quantize.py [--recipe R] [--repeat 100]

Prints a Markdown table (pasted into the README).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "digits-resnet-int8.yaml"))
    parser.add_argument("--output", default=str(ROOT / "out" / "compare-ort-quantize"))
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved measurement rounds (median of p50s).")
    args = parser.parse_args()

    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from compressctl.measure.latency import batch_feeds, default_threads, make_session, measure_latency
    from compressctl.measure.metrics import accuracy, predict
    from compressctl.measure.size import size_on_disk
    from compressctl.pipeline import apply
    from compressctl.quantization.int8 import CalibrationReader
    from compressctl.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    out = Path(args.output)
    report = apply(recipe, out / "compressctl")
    baseline = Path(report["models"][0]["path"])
    ours = out / "compressctl" / "model.onnx"

    from compressctl.data import load_data

    data = load_data(recipe.data, list(recipe.model.inputs), dims=recipe.model.dims, seed=recipe.seed)
    quantize_stage = next(s for s in recipe.stages if s.type == "quantize")
    calibration = data.calibration.head(quantize_stage.calibration.samples)
    names = [i.name for i in recipe.model.inputs]

    ort_default = out / "ort_quantize_static_defaults.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(baseline), str(pre))  # as ONNX Runtime's docs recommend
        quantize_static(str(pre), str(ort_default), CalibrationReader(calibration, names, 32))

    models = {"FP32 (baseline)": baseline, "ORT quantize_static, defaults": ort_default, "compressctl quantize": ours}
    threads = recipe.report.threads or default_threads()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    p50s: dict[tuple[str, int], list[float]] = {(m, b): [] for m in models for b in batches}
    for round_index in range(args.rounds):
        order = list(models.items()) if round_index % 2 == 0 else list(reversed(models.items()))
        for label, path in order:
            session = make_session(path, "CPUExecutionProvider", threads)
            for batch in batches:
                feeds = batch_feeds(session.get_inputs(), data.val.inputs, batch)
                result = measure_latency(
                    path,
                    feeds,
                    provider="CPUExecutionProvider",
                    batch_size=batch,
                    threads=threads,
                    warmup=10,
                    repeat=args.repeat,
                )
                p50s[(label, batch)].append(result.p50_ms)

    rows = []
    base_p50 = {b: statistics.median(p50s[("FP32 (baseline)", b)]) for b in batches}
    base_acc = None
    for label, path in models.items():
        session = make_session(path, "CPUExecutionProvider", threads)
        acc = accuracy(predict(session, data.val, 256), data.val.labels)
        base_acc = acc if base_acc is None else base_acc
        row = {"system": label, "accuracy": acc, "drop_pt": (base_acc - acc) * 100, "size_bytes": size_on_disk(path)}
        for b in batches:
            p50 = statistics.median(p50s[(label, b)])
            row[f"p50_ms@{b}"] = p50
            row[f"speedup@{b}"] = base_p50[b] / p50
        rows.append(row)

    chosen = report["stages"][-1]["details"].get("chosen")
    print(
        f"\nCPUExecutionProvider, {threads} threads, median of {args.rounds} interleaved p50s "
        f"({args.repeat} runs after 10 warm-up each); compressctl chose `{chosen}`; "
        f"{len(data.val)} validation images.\n"
    )
    header = (
        ["system", "accuracy", "drop (pt)", "size"]
        + [f"p50 ms b{b}" for b in batches]
        + [f"speedup b{b}" for b in batches]
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [r["system"], f"{r['accuracy']:.4f}", f"{r['drop_pt']:+.2f}", f"{r['size_bytes'] / 1024:.0f} KB"]
        cells += [f"{r[f'p50_ms@{b}']:.3f}" for b in batches] + [f"{r[f'speedup@{b}']:.2f}×" for b in batches]
        print("| " + " | ".join(cells) + " |")
    (out / "comparison.json").write_text(json.dumps(rows, indent=2))
    ort_row, our_row = rows[1], rows[2]
    verdict = our_row["accuracy"] >= ort_row["accuracy"] and all(
        our_row[f"p50_ms@{b}"] <= ort_row[f"p50_ms@{b}"] for b in batches
    )
    print(f"\ncompressctl at least as accurate and at least as fast as ORT defaults: {'yes' if verdict else 'NO'}")


if __name__ == "__main__":
    main()
