"""Benchmark ONNX files: size and latency, several models timed together in one sitting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compressctl.errors import UserError


def describe(path: Path, dims: dict[str, int] | None = None) -> dict[str, Any]:
    """Size, parameters and MACs of one ONNX file (a UserError when it is not one)."""
    from compressctl.measure.size import count_macs, count_params, size_on_disk, zipped_size
    from compressctl.onnxio import load_onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        model = load_onnx(path)
    except Exception as exc:
        raise UserError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})") from None
    params, nonzero = count_params(model)
    return {
        "path": str(path),
        "size_bytes": size_on_disk(path),
        "compressed_size_bytes": zipped_size(path),
        "params": params,
        "nonzero_params": nonzero,
        "macs": count_macs(model, dims),
    }


def unique_names(paths: list[Path]) -> list[str]:
    """Short, distinct names for ``paths`` (the file name, with parent folders added where two clash)."""
    names = [p.name for p in paths]
    depth = 1
    while len(set(names)) < len(names) and depth < 8:
        depth += 1
        names = ["/".join(p.parts[-depth:]) for p in paths]
    return [f"{i}:{n}" for i, n in enumerate(names)] if len(set(names)) < len(names) else names


def bench_onnx(
    paths: list[Path] | Path,
    *,
    providers: list[str],
    batch_sizes: list[int],
    settings: Any = None,
    threads: int | None = None,
    dims: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Time ``paths`` together, per provider × batch size; speedups are over the first model."""
    from compressctl.inputs import session_feeds
    from compressctl.measure.latency import check_providers, default_threads
    from compressctl.measure.sitting import time_together

    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    check_providers(providers)
    models = [describe(p, dims) for p in paths]
    names = unique_names(paths)
    threads = threads or default_threads()
    sittings = []
    for provider in providers:
        try:
            sittings += time_together(
                dict(zip(names, paths, strict=True)),
                lambda name, session, batch: session_feeds(session, batch, dims),
                provider=provider,
                batch_sizes=batch_sizes,
                threads=threads,
                settings=settings,
            )
        except UserError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise UserError(f"ONNX Runtime cannot run the models on {provider}: {first}") from None
    for name, model in zip(names, models, strict=True):
        model["name"] = name
        model["latency"] = [{k: v for k, v in s.latency_entry(name).items() if k != "samples_ms"} for s in sittings]
        model["speedup"] = {s.key: (s.speedups[name][0] if name in s.speedups else 1.0) for s in sittings}
        model["speedup_ci"] = {
            s.key: (list(s.speedups[name][1:]) if name in s.speedups else [1.0, 1.0]) for s in sittings
        }
    return {
        "threads": threads,
        "reference": names[0],
        "models": models,
        "sittings": [s.to_dict() for s in sittings],
    }
