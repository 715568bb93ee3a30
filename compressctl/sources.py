"""Model sources: ``factory:`` callables, checkpoints and ONNX files.

``factory:`` runs user code by design (like pytest runs conftest.py); the
recipe's folder and the working directory are importable so a ``my_models.py``
beside the recipe just works. Checkpoints are *data*: ``.pt``/``.pth`` load
with ``weights_only=True``, ``.safetensors`` through safetensors.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from compressctl.errors import UserError


def import_callable(target: str, base_dir: Path, what: str) -> Any:
    module_name, _, attr_path = target.partition(":")
    for folder in (str(base_dir), str(Path.cwd())):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UserError(f"{what}: cannot import module '{module_name}' ({exc})") from None
    except Exception as exc:
        raise UserError(f"{what}: importing '{module_name}' failed: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{what}: module '{module_name}' has no attribute '{attr_path}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"{what}: '{target}' is not callable")
    return obj


def call_factory(target: str, kwargs: dict[str, Any], base_dir: Path, what: str) -> Any:
    fn = import_callable(target, base_dir, what)
    try:
        return fn(**kwargs)
    except TypeError as exc:
        raise UserError(f"{what}: calling {target}(**kwargs) failed: {exc}") from None
    except Exception as exc:
        raise UserError(f"{what}: {target} raised {type(exc).__name__}: {exc}") from None


def resolve_path(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def load_state_dict(path: Path) -> dict[str, Any]:
    """Read a state_dict without running code: weights_only pickle or safetensors."""
    if not path.is_file():
        raise UserError(f"model.checkpoint: no such file {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise UserError(f"model.checkpoint: {path} is not a valid safetensors file ({exc})") from None
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"model.checkpoint: {path} was refused: it holds Python objects that would run code "
            f"when loaded ({str(exc).splitlines()[0][:160]}). Save only the weights instead: "
            "torch.save(model.state_dict(), 'model.pt') or safetensors.torch.save_file"
        ) from None
    except Exception as exc:
        raise UserError(
            f"model.checkpoint: {path} is not a readable checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"model.checkpoint: {path} does not hold a state_dict (got {type(state).__name__})")
    return state


def build_torch_model(source: Any, base_dir: Path, seed: int = 0) -> Any:
    """Build the source model (factory + optional checkpoint), in eval mode.

    The factory runs under a fixed torch seed, so a model trained from scratch
    starts from the same weights on every run with the same recipe seed.
    """
    import torch

    torch.manual_seed(seed)
    model = call_factory(source.factory, source.kwargs, base_dir, what="model.factory")
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"model.factory: {source.factory} returned {type(model).__name__}, not a torch.nn.Module")
    if source.checkpoint:
        state = load_state_dict(resolve_path(source.checkpoint, base_dir))
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0:3]
            raise UserError(f"model.checkpoint does not match the model: {' '.join(first)[:400]}") from None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"model: weight '{name}' contains NaN or Inf values")
    return model.eval()
