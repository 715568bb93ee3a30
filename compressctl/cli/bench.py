"""``compressctl bench A.onnx [B.onnx …]``: latency and size of ONNX models, timed together."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from compressctl.cli.common import DEBUG, handle_errors, stderr_console


def bench(
    models: list[Path] = typer.Argument(..., help="ONNX model files; speedups are over the first."),
    provider: list[str] = typer.Option([], "--provider", help="Execution provider (repeatable; default CPU)."),
    batch_size: list[int] = typer.Option(
        [], "--batch-size", "-b", min=1, max=65536, help="Batch size for dynamic batch axes (repeatable)."
    ),
    warmup: int = typer.Option(10, min=0, max=10_000, help="Warm-up runs of each model."),
    repeat: int = typer.Option(100, min=1, max=100_000, help="Least timed rounds (each runs every model once)."),
    max_seconds: float = typer.Option(60.0, min=0.1, max=86_400, help="Time budget of one sitting."),
    interval: float = typer.Option(
        0.03, min=0.001, max=1.0, help="Repeat until each speedup's 95 % interval is within ± this fraction."
    ),
    threads: int | None = typer.Option(None, min=1, max=1024, help="Intra-op threads (default: CPUs available)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON to stdout."),
    debug: bool = DEBUG,
) -> None:
    """Time ONNX models together (run-by-run alternation, spinning off) on generated inputs.

    Prints latency percentiles, size, params and MACs of each model, and each
    model's speedup over the first with its 95 % interval.
    """
    with handle_errors(debug):
        from compressctl.benchmark import bench_onnx
        from compressctl.measure.sitting import SittingSettings

        settings = SittingSettings(
            warmup=warmup, min_rounds=repeat, max_rounds=50 * repeat, max_seconds=max_seconds, target=interval
        )
        result = bench_onnx(
            models,
            providers=provider or ["CPUExecutionProvider"],
            batch_sizes=batch_size or [1],
            settings=settings,
            threads=threads,
        )
        if json_out:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
            return
        print_bench(result)


def print_bench(result: dict) -> None:
    from rich.table import Table

    from compressctl.report.tables import format_speedup, human_bytes, human_count

    console = stderr_console()
    for model in result["models"]:
        console.print(
            f"{model['name']}: {human_bytes(model['size_bytes'])} on disk, "
            f"{human_bytes(model['compressed_size_bytes'])} zipped, {human_count(model['params'])} params, "
            f"{human_count(model['macs'])} MACs per sample"
        )
    header = ["model", "provider", "batch", "p10 ms", "p50 ms", "p90 ms", "items/s", "runs", "speedup [95 %]"]
    rows = []
    for model in result["models"]:
        for item in model["latency"]:
            key = f"{item['requested_provider']}@{item['batch_size']}"
            ran = item["provider"].replace("ExecutionProvider", "") + (" (fallback)" if item["fallback"] else "")
            rows.append(
                [
                    model["name"],
                    ran,
                    str(item["batch_size"]),
                    *(f"{item[k]:.3f}" for k in ("p10_ms", "p50_ms", "p90_ms")),
                    f"{item['throughput_per_s']:.1f}",
                    str(item["runs"]),
                    format_speedup(model["speedup"][key], model["speedup_ci"][key]),
                ]
            )
    if console.is_terminal:
        table = Table()
        for column in header:
            table.add_column(column, justify="left" if column == "model" else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:  # logs and CI: plain text that never wraps
        from compressctl.report.write import markdown_table

        console.print(markdown_table(header, rows), soft_wrap=True)
    for sitting in result["sittings"]:
        console.print(
            f"sitting {sitting['at']}: {sitting['rounds']} rounds in {sitting['seconds']:.1f} s, "
            f"{sitting['order']}, spinning {'on' if sitting['spinning'] else 'off'}, "
            f"estimate {sitting['statistic']}, noise CV {sitting['noise_cv']:.2f}, stopped by {sitting['stopped_by']}",
            soft_wrap=True,
        )
