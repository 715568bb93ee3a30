"""One registry of stage runners: built-ins first, then the entry point group.

Third-party packages add runners through the ``compressctl.runners`` entry
point group; each entry point names a ``Runner`` subclass. Entry points are
loaded once, on first use. A duplicate stage type is an error naming both
classes; a plugin that fails to import is reported and only fatal when a
recipe uses it.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

from compressctl.errors import UserError
from compressctl.runners.base import Runner

ENTRY_POINT_GROUP = "compressctl.runners"

BUILTIN_RUNNERS = (
    "compressctl.runners.train:TrainRunner",
    "compressctl.runners.train:FinetuneRunner",
    "compressctl.runners.prune:PruneRunner",
    "compressctl.runners.distill:DistillRunner",
    "compressctl.runners.lowrank:LowRankRunner",
    "compressctl.runners.qat:QatRunner",
    "compressctl.runners.export:ExportRunner",
    "compressctl.runners.optimize:OptimizeRunner",
    "compressctl.runners.quantize:QuantizeRunner",
)

log = logging.getLogger(__name__)


class Registry:
    def __init__(self) -> None:
        self._runners: dict[str, type[Runner]] = {}
        self._origins: dict[str, str] = {}
        self.broken: dict[str, str] = {}
        self._loaded = False

    def register(self, runner: type[Runner], origin: str | None = None) -> None:
        """Add a runner class; a second class for the same ``type`` is an error."""
        _add(self._runners, self._origins, runner, origin)

    def unregister(self, name: str) -> None:
        self._runners.pop(name, None)
        self._origins.pop(name, None)

    def _load(self) -> None:
        """Built-ins, then entry points, into new dicts committed only when all of them fit.

        A duplicate stage type raises (and raises again on the next use): the
        registry is never left half-loaded.
        """
        if self._loaded:
            return
        runners, origins, broken = dict(self._runners), dict(self._origins), {}
        for target in BUILTIN_RUNNERS:
            module_name, _, attr = target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name == module_name:
                    continue  # built-in not present in this build
                raise
            _add(runners, origins, getattr(module, attr), target)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                runner = ep.load()
            except Exception as exc:  # a broken plugin must not break the tool
                broken[ep.name] = f"{ep.value}: {type(exc).__name__}: {exc}"
                log.warning("runner plugin %s failed to load: %s", ep.name, exc)
                continue
            if not (isinstance(runner, type) and issubclass(runner, Runner)):
                broken[ep.name] = f"{ep.value} is not a compressctl Runner subclass"
                log.warning("runner plugin %s failed to load: %s", ep.name, broken[ep.name])
                continue
            _add(runners, origins, runner, f"{ep.value} (entry point {ep.name})")
        self._runners, self._origins, self.broken = runners, origins, broken
        self._loaded = True

    def get(self, name: str) -> type[Runner]:
        self._load()
        if name in self._runners:
            return self._runners[name]
        if name in self.broken:
            raise UserError(f"stage type '{name}' comes from a plugin that failed to load: {self.broken[name]}")
        raise UserError(f"unknown stage type '{name}' (known: {', '.join(sorted(self._runners))})")

    def names(self) -> list[str]:
        self._load()
        return list(self._runners)

    def all(self) -> dict[str, type[Runner]]:
        self._load()
        return dict(self._runners)

    def origin(self, name: str) -> str:
        self._load()
        return self._origins[name]

    def replay_edit(self, module: Any, edit: dict[str, Any]) -> Any:
        """Replay one structural edit recorded in a saved torch artifact, with its runner's ``edit_replays``."""
        self._load()
        owner = next((r for r in self._runners.values() if edit["op"] in r.edit_replays), None)
        if owner is None:
            raise ValueError(f"unknown structural edit '{edit['op']}' (no registered runner replays it)")
        return owner.edit_replays[edit["op"]](module, edit)


def _add(runners: dict[str, type[Runner]], origins: dict[str, str], runner: type[Runner], origin: str | None) -> None:
    name = runner.type
    origin = origin or f"{runner.__module__}.{runner.__qualname__}"
    if name in runners and runners[name] is not runner:
        raise UserError(f"two runners claim stage type '{name}': {origins[name]} and {origin}")
    for op in runner.edit_replays:
        owner = next((n for n, r in runners.items() if n != name and op in r.edit_replays), None)
        if owner is not None:
            raise UserError(f"two runners replay the edit '{op}': {origins[owner]} and {origin}")
    runners[name] = runner
    origins[name] = origin


registry = Registry()


def register_runner(runner: type[Runner]) -> type[Runner]:
    """Class decorator for runners defined in user code or tests."""
    registry.register(runner)
    return runner
