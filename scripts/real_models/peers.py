"""Peers side by side on the corpus: one sitting per model, faithfulness on held-out inputs.

For each corpus model (after ``run.py`` has written compressctl's result):

* float — the model as shipped (MiniLM: as compressctl's export wrote it);
* ``ort-default`` — ONNX Runtime's defaults: ``quantize_dynamic`` for
  transformers, ``quantize_static`` (QDQ, int8 activations, per-tensor) otherwise;
* ``ort-tuned`` — tuned by hand as ONNX Runtime's docs advise: pre-processed,
  QDQ with uint8 activations and per-channel int8 weights (transformers:
  ``quantize_dynamic`` per-channel on the optimizer's fused graph);
* ``nncf`` — ``nncf.quantize`` with its defaults (``pip install -e '.[peers]'``);
* ``compressctl`` — ``compressctl apply`` with the recipe's defaults.

Every model is judged against float on inputs no recipe saw (output cosine,
worst and mean), timed in one sitting with float at the recipe's batch size,
and each peer's quantization runs in a child process under ``/usr/bin/time -v``
for its peak RSS.

    .venv/bin/python scripts/real_models/peers.py [--folder out/real-models] [--only yolo ppocr_det]
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import ENTRIES, ROOT  # noqa: E402

CALIBRATION_SAMPLES = 64


def transformer(path: Path) -> bool:
    from compressctl.onnxgraph import is_transformer
    from compressctl.onnxio import load_onnx

    return is_transformer(load_onnx(path, load_external_data=False))


def pool(arrays: Any, specs: list[Any]) -> Any:
    """Arrays by input name as a ``data.Split``: each batched on its input's own axis, constants from the recipe."""
    from compressctl.data import Split
    from compressctl.inputs import constant

    columns = [constant(s) if s.value is not None else arrays[s.name] for s in specs]
    return Split(columns, None, [s.batch_axis for s in specs])


def recipe_inputs(recipe: Path) -> tuple[list[Any], Path]:
    """The recipe's ``model.inputs`` and its data file."""
    from compressctl.recipe import load_recipe

    loaded = load_recipe(recipe)
    return list(loaded.model.inputs), Path(loaded.data.source.npz)


def calibration(recipe: Path) -> list[dict[str, np.ndarray]]:
    """The data file's first samples, one feed each (views, not copies: the peak RSS is the peer's)."""
    specs, npz = recipe_inputs(recipe)
    samples = pool(np.load(npz), specs)
    names = [s.name for s in specs]
    return [
        dict(zip(names, samples.rows(slice(i, i + 1)), strict=True))
        for i in range(min(CALIBRATION_SAMPLES, len(samples)))
    ]


def make_peer(peer: str, source: Path, target: Path, recipe: Path) -> None:
    """Write ``peer``'s quantized model (runs in a child process, for its peak RSS)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    samples = calibration(recipe)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    encoder = transformer(source)
    if peer == "ort-default":
        if encoder:
            quantize_dynamic(str(source), str(target))
        else:
            quantize_static(str(source), str(target), Reader())
    elif peer == "ort-tuned":
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = target.with_name(target.stem + "-pre.onnx")
        if encoder:
            from compressctl.fusion import fuse

            fuse(source, prepared)
            quantize_dynamic(str(prepared), str(target), per_channel=True, extra_options={"DefaultTensorType": 1})
        else:
            try:
                quant_pre_process(str(source), str(prepared))
            except Exception:
                quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            import onnx

            model = onnx.load(str(prepared))
            if next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 13:
                # per-channel DequantizeLinear needs opset 13: a hand tuner upgrades first
                onnx.save(onnx.version_converter.convert_version(model, 13), str(prepared))
            quantize_static(
                str(prepared),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
    elif peer == "nncf":
        import nncf
        import onnx

        model = onnx.load(str(source))
        dataset = nncf.Dataset(samples)
        preset = nncf.ModelType.TRANSFORMER if encoder else None
        quantized = nncf.quantize(model, dataset, model_type=preset, subset_size=len(samples))
        onnx.save(quantized, str(target))
    else:
        raise ValueError(peer)


def peak_rss_gb(log: str) -> float:
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log)
    return int(found.group(1)) / 1024**2 if found else float("nan")


def build(peer: str, source: Path, target: Path, recipe: Path) -> tuple[bool, float, str]:
    args = [sys.executable, __file__, "--make", peer, str(source), str(target), str(recipe)]
    # in the peer's folder: ONNX Runtime's symbolic shape inference dumps into the working directory
    done = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True, cwd=target.parent)
    error = "" if done.returncode == 0 else done.stderr.strip().splitlines()[-25:]
    reason = next((line for line in error if "Error" in line), error[-1] if error else "")
    return done.returncode == 0 and target.is_file(), peak_rss_gb(done.stderr), str(reason)[:160]


def outputs(path: Path, samples: Any, batch: int) -> list[np.ndarray]:
    """Every output of ``path`` over ``samples``, each with its samples on axis 0."""
    from compressctl.measure.latency import make_session
    from compressctl.measure.metrics import predict_all

    return predict_all(make_session(path), samples, batch)


def side_by_side(name: str, folder: Path, cache: Path) -> list[dict[str, Any]]:
    from compressctl.measure.latency import batch_feeds
    from compressctl.measure.metrics import faithfulness
    from compressctl.measure.sitting import SittingSettings, time_together
    from compressctl.onnxio import onnx_files

    entry = importlib.import_module(name)
    recipe = folder / f"{entry.RECIPE_NAME}.yaml"
    out = folder / recipe.stem
    report = json.loads((out / "report.json").read_text())
    baseline = Path(next(m["path"] for m in report["models"] if m["name"] == "baseline"))
    corpus = {r["model"]: r for r in json.loads((folder / "corpus.json").read_text())}
    work = folder / "peers" / recipe.stem
    work.mkdir(parents=True, exist_ok=True)
    models = {"float": baseline}
    rows: dict[str, dict[str, Any]] = {"float": {"peer": "float", "peak_rss_gb": None}}
    for peer in ("ort-default", "ort-tuned", "nncf"):
        target = work / f"{peer}.onnx"
        made, peak, reason = build(peer, baseline, target, recipe)
        rows[peer] = {"peer": peer, "peak_rss_gb": peak}
        if made:
            models[peer] = target
        else:
            rows[peer]["error"] = reason
            print(f"{entry.NAME} {peer}: failed: {reason}", file=sys.stderr)
    models["compressctl"] = out / "model.onnx"
    rows["compressctl"] = {"peer": "compressctl", "peak_rss_gb": corpus.get(entry.NAME, {}).get("peak_rss_gb")}

    samples = pool(entry.held_out(cache), recipe_inputs(recipe)[0])
    batch = entry.BATCH
    reference = outputs(baseline, samples, batch)
    for peer, path in list(models.items()):
        # Every output is judged (a state as well as a probability); the worst decides, as in compressctl.
        try:
            produced = outputs(path, samples, batch)
        except Exception as exc:  # a peer that writes an invalid model is a row that says so, not a crash
            rows[peer]["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
            del models[peer]
            continue
        each = [faithfulness(o, r) for o, r in zip(produced, reference, strict=True)]
        rows[peer].update(
            cosine_min=min(e["cosine_min"] for e in each), cosine_mean=min(e["cosine_mean"] for e in each)
        )
        rows[peer]["size_mb"] = sum(f.stat().st_size for f in onnx_files(path)) / 1e6
    settings = SittingSettings(warmup=5, min_rounds=30, max_rounds=3000, max_seconds=240)
    (sitting,) = time_together(
        models,
        lambda _, session, size: batch_feeds(session.get_inputs(), samples, size),
        provider="CPUExecutionProvider",
        batch_sizes=[batch],
        settings=settings,
    )
    for peer in models:
        point, low, high = sitting.speedups.get(peer, (1.0, 1.0, 1.0))
        rows[peer].update(speedup=point, speedup_ci=[low, high], at=sitting.key)
    return [dict(r, model=entry.NAME) for r in rows.values()]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | peer | speedup | worst cos | mean cos | size | peak RSS |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "speedup" not in r:
            lines.append(f"| {r['model']} | {r['peer']} | failed: {r.get('error', '')} | | | | |")
            continue
        low, high = r["speedup_ci"]
        rss = f"{r['peak_rss_gb']:.2f} GB" if r.get("peak_rss_gb") else "–"
        lines.append(
            f"| {r['model']} | {r['peer']} | {r['speedup']:.2f}× [{low:.2f}–{high:.2f}] @{r['at'].split('@')[1]} "
            f"| {r['cosine_min']:.4f} | {r['cosine_mean']:.4f} | {r['size_mb']:.1f} MB | {rss} |"
        )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--make":
        make_peer(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "out" / "real-models")
    parser.add_argument("--only", nargs="*", choices=ENTRIES, help="entries to compare (default: all)")
    args = parser.parse_args()
    folder = args.folder.resolve()
    rows: list[dict[str, Any]] = []
    for name in args.only or ENTRIES:
        rows += side_by_side(name, folder, folder / "cache")
        print(markdown(rows[-5:]), file=sys.stderr, flush=True)
    (folder / "peers.json").write_text(json.dumps(rows, indent=2, default=str))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
