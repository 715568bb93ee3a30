"""``compressctl bench MODEL.onnx``: latency and size of any ONNX model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from compressctl.cli.common import DEBUG, handle_errors, stderr_console


def bench(
    model: Path = typer.Argument(..., help="ONNX model file."),
    provider: list[str] = typer.Option([], "--provider", help="Execution provider (repeatable; default CPU)."),
    batch_size: list[int] = typer.Option(
        [], "--batch-size", "-b", help="Batch size for dynamic batch axes (repeatable)."
    ),
    warmup: int = typer.Option(10, help="Warm-up runs."),
    repeat: int = typer.Option(100, help="Timed runs."),
    threads: int | None = typer.Option(None, help="Intra-op threads (default: CPUs available)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON to stdout."),
    debug: bool = DEBUG,
) -> None:
    """Measure latency percentiles, size, params and MACs of an ONNX model on random inputs."""
    with handle_errors(debug):
        from compressctl.benchmark import bench_onnx

        result = bench_onnx(
            model,
            providers=provider or ["CPUExecutionProvider"],
            batch_sizes=batch_size or [1],
            warmup=warmup,
            repeat=repeat,
            threads=threads,
        )
        if json_out:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
            return
        from rich.table import Table

        from compressctl.report.tables import human_bytes, human_count

        console = stderr_console()
        console.print(
            f"{model}: {human_bytes(result['size_bytes'])} on disk, {human_bytes(result['compressed_size_bytes'])} zipped, "
            f"{human_count(result['params'])} params, {human_count(result['macs'])} MACs per sample"
        )
        table = Table()
        for column in ("provider", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "items/s", "runs"):
            table.add_column(column, justify="right")
        for item in result["latency"]:
            ran = item["provider"] + (" (fallback)" if item["fallback"] else "")
            table.add_row(
                ran,
                str(item["batch_size"]),
                *(f"{item[k]:.3f}" for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms")),
                f"{item['throughput_per_s']:.1f}",
                str(item["runs"]),
            )
        console.print(table)
