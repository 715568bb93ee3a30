"""What flows between stages: a torch module or an ONNX file.

Torch artifacts are persisted without pickle: the weights go to safetensors and
the structure is recorded as the list of *edits* applied to the source model
(pruned shapes, replaced layers, a different student factory), so a cached
stage is rebuilt by replaying them on a fresh source model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: ``replay(module, edit) -> module``: rebuilds one recorded structural edit (see ``Registry.replay_edit``).
ReplayFn = Callable[[Any, dict[str, Any]], Any]


@dataclass
class Artifact:
    kind: Literal["torch", "onnx"]
    module: Any = None  # torch.nn.Module for kind == "torch"
    path: Path | None = None  # model.onnx for kind == "onnx"
    edits: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_module(cls, module: Any, edits: list[dict[str, Any]] | None = None) -> Artifact:
        return cls("torch", module=module, edits=list(edits or []))

    @classmethod
    def from_onnx(cls, path: Path) -> Artifact:
        return cls("onnx", path=Path(path))

    def with_module(self, module: Any, edit: dict[str, Any] | None = None) -> Artifact:
        """A new torch artifact; ``edit`` records a structural change for replay."""
        edits = self.edits + ([edit] if edit else [])
        return Artifact.from_module(module, edits)


_SIMPLE = (int, float, bool, str)


def _module_attributes(module: Any) -> dict[str, Any]:
    """Shape-defining attributes (in_channels, num_heads, normalized_shape, …)."""
    attrs = {}
    for key, value in vars(module).items():
        if key.startswith("__") or key in ("training",):
            continue
        if isinstance(value, _SIMPLE) or (isinstance(value, tuple) and all(isinstance(v, _SIMPLE) for v in value)):
            attrs[key] = list(value) if isinstance(value, tuple) else value
    return attrs


def save_torch(artifact: Artifact, folder: Path) -> list[Path]:
    """Write ``weights.safetensors`` and ``structure.json``; returns the files written."""
    from safetensors.torch import save_file

    from compressctl.fsutil import atomic_write_text

    module = artifact.module
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    weights = folder / "weights.safetensors"
    tmp = weights.with_suffix(".tmp")
    save_file(state, str(tmp))
    tmp.replace(weights)
    structure = {
        "edits": artifact.edits,
        "attributes": {name: _module_attributes(m) for name, m in module.named_modules()},
        "tuple_attributes": {
            name: [k for k, v in vars(m).items() if isinstance(v, tuple)] for name, m in module.named_modules()
        },
    }
    structure_path = folder / "structure.json"
    atomic_write_text(structure_path, json.dumps(structure, default=str))
    return [weights, structure_path]


def load_torch(folder: Path, build_source: Callable[[], Any], replay: ReplayFn | None = None) -> Artifact:
    """Rebuild a saved torch artifact: fresh source model → replay edits → load weights.

    ``replay`` rebuilds the recorded edits (the pipeline passes ``registry.replay_edit``);
    a model saved without edits needs none.
    """
    from safetensors.torch import load_file

    structure = json.loads((folder / "structure.json").read_text())
    module = build_source()
    for edit in structure["edits"]:
        if replay is None:
            raise ValueError(f"{folder} records the structural edit '{edit['op']}' but no replay was given")
        module = replay(module, edit)
    modules = dict(module.named_modules())
    for name, attrs in structure["attributes"].items():
        target = modules.get(name)
        if target is None:
            continue
        tuples = set(structure.get("tuple_attributes", {}).get(name, []))
        for key, value in attrs.items():
            if hasattr(target, key) and key not in ("training",):
                setattr(target, key, tuple(value) if key in tuples else value)
    state = load_file(str(folder / "weights.safetensors"))
    own = module.state_dict()
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape:
            _resize(module, key, tensor)
    module.load_state_dict(state)
    return Artifact.from_module(module.eval(), structure["edits"])


def _resize(module: Any, key: str, tensor: Any) -> None:
    """Replace a parameter or buffer with an empty one of the saved shape."""
    import torch

    *path, leaf = key.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    current = getattr(owner, leaf)
    if isinstance(current, torch.nn.Parameter):
        setattr(owner, leaf, torch.nn.Parameter(torch.empty_like(tensor), requires_grad=current.requires_grad))
    else:
        owner._buffers[leaf] = torch.empty_like(tensor)
