"""ONNX export from torch, saving with external data, and the export check.

Export goes through ``torch.onnx.export`` (the dynamo exporter by default,
falling back to the TorchScript exporter when dynamo cannot trace a model);
the result is checked with ``onnx.checker`` and by comparing ONNX Runtime's
outputs with torch's on real inputs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from compressctl.errors import StageError

log = logging.getLogger(__name__)

EXTERNAL_DATA_THRESHOLD = 1_500_000_000  # bytes of weights; protobuf's hard limit is 2 GiB
MODEL_FILE = "model.onnx"


def onnx_files(path: Path) -> list[Path]:
    """The model file and every external-data file it references."""
    import onnx

    files = [Path(path)]
    model = onnx.load(str(path), load_external_data=False)
    seen: set[str] = set()
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in seen:
                    seen.add(entry.value)
                    files.append(Path(path).parent / entry.value)
    return files


def _all_tensors(model: Any) -> list[Any]:
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
    return tensors


def save_onnx(model: Any, path: Path, external: bool | None = None) -> None:
    """Save a ModelProto, its weights in ``<name>.data`` beside it when ``external``.

    ``external=None`` moves them out only where protobuf's 2 GB limit needs it.
    """
    import onnx

    path = Path(path)
    if external is None:
        external = sum(t.ByteSize() for t in model.graph.initializer) > EXTERNAL_DATA_THRESHOLD
    if not external:
        onnx.save_model(model, str(path))
        return
    data_name = path.name + ".data"
    (path.parent / data_name).unlink(missing_ok=True)
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=1024,
    )


def load_onnx(path: Path, load_external_data: bool = True) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=load_external_data)


def _dynamic_spec(inputs: list[Any]) -> tuple[dict[str, dict[int, str]], tuple[dict[int, Any], ...]]:
    import torch

    axes: dict[str, dict[int, str]] = {}
    dims: dict[str, Any] = {}
    shapes = []
    for spec in inputs:
        named = {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
        axes[spec.name] = named
        shapes.append({i: dims.setdefault(d, torch.export.Dim(d, min=1, max=1 << 20)) for i, d in named.items()})
    return axes, tuple(shapes)


def export_module(
    module: Any,
    inputs: list[Any],
    example: tuple[Any, ...],
    path: Path,
    *,
    opset: int = 18,
    dynamo: bool | str = True,
    external_data: bool | None = None,
) -> str:
    """Export ``module`` to ``path``; returns the exporter that succeeded.

    ``dynamo="auto"``: the dynamo exporter, except for transformers, which the
    TorchScript exporter writes the way ONNX Runtime's transformer optimizer
    can fuse (Attention, SkipLayerNormalization; see ``compressctl.fusion``).
    ``external_data``: weights in ``<name>.data`` beside the model (None: only above 1.5 GB).
    """
    if dynamo == "auto":
        exporter = export_module(module, inputs, example, path, opset=opset, dynamo=True, external_data=external_data)
        if exporter == "dynamo" and _is_transformer(Path(path)):
            try:
                return export_module(
                    module, inputs, example, path, opset=opset, dynamo=False, external_data=external_data
                )
            except Exception as exc:
                log.info("TorchScript export of the transformer failed (%s); re-exporting with dynamo", exc)
                return export_module(
                    module, inputs, example, path, opset=opset, dynamo=True, external_data=external_data
                )
        return exporter
    import onnx
    import torch

    path = Path(path)
    # The exporter warns about every torchvision op it cannot find; that is noise here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    axes, dynamic_shapes = _dynamic_spec(inputs)
    names = [spec.name for spec in inputs]
    large = sum(p.numel() * p.element_size() for p in module.state_dict().values()) > EXTERNAL_DATA_THRESHOLD
    if external_data is not None:
        large = external_data
    module = module.eval()
    errors = []
    for use_dynamo in [True, False] if dynamo else [False]:
        try:
            with warnings.catch_warnings(), torch.no_grad(), stdout_to_stderr():
                warnings.simplefilter("ignore")
                if use_dynamo:
                    program = torch.onnx.export(
                        module,
                        example,
                        None,
                        input_names=names,
                        output_names=None,
                        opset_version=opset,
                        dynamo=True,
                        dynamic_shapes=dynamic_shapes,
                        verbose=False,
                    )
                    program.save(str(path), external_data=large)
                else:
                    torch.onnx.export(
                        module,
                        example,
                        str(path),
                        input_names=names,
                        opset_version=opset,
                        dynamo=False,
                        dynamic_axes=axes,
                        do_constant_folding=True,
                    )
                    if large:  # the TorchScript exporter wrote one file: move the weights out
                        save_onnx(onnx.load(str(path)), path, external=True)
            return "dynamo" if use_dynamo else "torchscript"
        except Exception as exc:  # try the other exporter, then give up with both reasons
            errors.append(
                f"{'dynamo' if use_dynamo else 'torchscript'} exporter: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            )
            log.warning(
                "ONNX export failed with the %s exporter: %s", "dynamo" if use_dynamo else "torchscript", errors[-1]
            )
    raise StageError("export", "torch.onnx.export failed; " + " | ".join(errors))


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send what native code prints to stdout to stderr instead (the TorchScript exporter prints its graph
    when it fails), so stdout carries only compressctl's machine output (``--json``)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _is_transformer(path: Path) -> bool:
    from compressctl.onnxgraph import is_transformer

    return is_transformer(load_onnx(path, load_external_data=False))


def check_export(
    module: Any, path: Path, feeds: list[np.ndarray], names: list[str], *, rtol: float, atol: float
) -> float:
    """onnx.checker plus ONNX Runtime vs torch on real inputs; returns the max abs difference."""
    import onnx
    import torch

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise StageError("export", f"onnx.checker rejected the exported model: {exc}") from None
    with torch.no_grad():
        expected = first_tensor(module.eval()(*[torch.from_numpy(f) for f in feeds])).float().numpy()
    from compressctl.measure.latency import make_session

    session = make_session(path)
    got = session.run(None, dict(zip([i.name for i in session.get_inputs()], feeds, strict=False)))[0]
    got = np.asarray(got, dtype=np.float32)
    if got.shape != expected.shape:
        raise StageError("export", f"ONNX output shape {list(got.shape)} differs from torch {list(expected.shape)}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not np.allclose(got, expected, rtol=rtol, atol=atol):
        raise StageError(
            "export",
            f"ONNX Runtime outputs differ from torch outputs (max abs diff {diff:.3g}, rtol {rtol}, atol {atol})",
        )
    return diff


def first_tensor(output: Any) -> Any:
    """The main output of a model: a tensor, ``.logits``, or the first of a tuple/dict."""
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict):
        return next(iter(output.values()))
    if isinstance(output, (tuple, list)):
        return first_tensor(output[0])
    return output
