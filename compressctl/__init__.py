"""compressctl: compress neural networks from YAML recipes, measured on ONNX Runtime.

The public API is small and importing it stays light: torch and onnxruntime
load only when a stage or a measurement needs them.
"""

from __future__ import annotations

from typing import Any

from compressctl.environment import __version__

__all__ = [
    "Artifact",
    "Runner",
    "StageConfig",
    "StageContext",
    "__version__",
    "apply",
    "load_recipe",
    "register_runner",
    "searched",
]


def __getattr__(name: str) -> Any:
    if name == "Artifact":
        from compressctl.artifact import Artifact

        return Artifact
    if name in ("Runner", "StageConfig", "StageContext", "searched"):
        from compressctl.runners import base

        return getattr(base, name)
    if name == "load_recipe":
        from compressctl.recipe import load_recipe

        return load_recipe
    if name == "apply":
        from compressctl.pipeline import apply

        return apply
    if name == "register_runner":
        from compressctl.registry import register_runner

        return register_runner
    raise AttributeError(f"module 'compressctl' has no attribute '{name}'")
