"""The runner registry with fake entry points: duplicates, broken plugins, never half-loaded."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Literal

import pytest

import compressctl.registry as registry_module
from compressctl.errors import EXIT_BAD_INPUT, EXIT_OK, UserError
from compressctl.registry import ENTRY_POINT_GROUP, Registry
from compressctl.runners.base import Runner, StageConfig
from compressctl.runners.train import TrainRunner


class ImpostorTrain(TrainRunner):
    """Claims the built-in `train` stage type."""


class AcmeConfig(StageConfig):
    type: Literal["acme"] = "acme"


class AcmeRunner(Runner):
    type = "acme"
    config_model = AcmeConfig
    consumes = "torch"
    produces = "torch"
    summary = "An example plugin."

    def run(self, artifact, config, context):
        return artifact


class OtherAcmeRunner(AcmeRunner):
    """A second plugin that claims `acme`."""


NOT_A_RUNNER = object()


def plugin(name: str, target: str) -> EntryPoint:
    return EntryPoint(name=name, value=target, group=ENTRY_POINT_GROUP)


@pytest.fixture
def installed(monkeypatch):
    """Replace the installed entry points (and the registry, so it loads them afresh)."""
    fresh = Registry()
    monkeypatch.setattr(registry_module, "registry", fresh)

    def install(*points: EntryPoint) -> Registry:
        monkeypatch.setattr(
            registry_module, "entry_points", lambda group: [p for p in points if group == ENTRY_POINT_GROUP]
        )
        return fresh

    return install


def test_entry_point_colliding_with_a_built_in_names_both_classes(installed) -> None:
    registry = installed(plugin("train", "tests.test_registry:ImpostorTrain"))
    with pytest.raises(UserError) as caught:
        registry.names()
    assert str(caught.value) == (
        "two runners claim stage type 'train': compressctl.runners.train:TrainRunner and "
        "tests.test_registry:ImpostorTrain (entry point train)"
    )


def test_a_failed_load_commits_nothing_and_fails_again(installed) -> None:
    registry = installed(
        plugin("acme", "tests.test_registry:AcmeRunner"), plugin("train", "tests.test_registry:ImpostorTrain")
    )
    with pytest.raises(UserError):
        registry.all()
    assert registry._runners == {} and registry.broken == {}  # not half-loaded
    with pytest.raises(UserError, match="two runners claim stage type 'train'"):
        registry.get("acme")  # every later use says so too, instead of running on a partial registry
    installed(plugin("acme", "tests.test_registry:AcmeRunner"))  # the duplicate uninstalled
    assert registry.get("acme") is AcmeRunner and registry.get("train") is TrainRunner


@pytest.mark.parametrize("command", [["runners"], ["runners", "--json"], ["schema"]])
def test_duplicate_plugins_exit_2_with_one_line(installed, cli, command: list[str]) -> None:
    installed(plugin("acme", "tests.test_registry:AcmeRunner"), plugin("acme2", "tests.test_registry:OtherAcmeRunner"))
    result = cli(*command)
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: two runners claim stage type 'acme': tests.test_registry:AcmeRunner (entry point acme) and "
        "tests.test_registry:OtherAcmeRunner (entry point acme2)"
    ]


def test_broken_plugins_are_reported_and_the_rest_still_list(installed, cli) -> None:
    installed(
        plugin("acme", "tests.test_registry:AcmeRunner"),
        plugin("gone", "acme_not_installed:Runner"),
        plugin("odd", "tests.test_registry:NOT_A_RUNNER"),
    )
    result = cli("runners")
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout == ""
    assert "acme  (torch → torch)  An example plugin." in result.stderr
    assert "train  (torch → torch)" in result.stderr and "quantize  (onnx → onnx)" in result.stderr
    assert "gone  (plugin failed to load: acme_not_installed:Runner: ModuleNotFoundError" in result.stderr
    assert "odd  (plugin failed to load: tests.test_registry:NOT_A_RUNNER is not a compressctl Runner subclass)" in (
        result.stderr
    )
