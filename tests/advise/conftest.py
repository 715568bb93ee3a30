"""What the advise tests share: a trained baseline in a workbench, once per test module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One folder for every run of a module: the baseline's train stage is trained once and reused."""
    from compressctl.advise.advisor import prepare
    from compressctl.recipe import load_recipe
    from tests.advise.test_advisor import advise_recipe_path

    folder = tmp_path_factory.mktemp("advise")
    recipe = load_recipe(advise_recipe_path(folder))
    bench, _report = prepare(recipe, folder / "out", ["CPUExecutionProvider"])
    return folder, recipe, bench
