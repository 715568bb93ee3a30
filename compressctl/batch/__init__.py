"""Runs a model zoo: many recipes, each isolated in its own process, summarised in one index.

``discover`` finds the recipes, ``process`` runs one of them as a subprocess and writes the zoo
summary, ``executors`` runs them all (a local pool, or Ray) — ``run_batch`` is the entry point.
"""

from compressctl.batch.discover import RECIPE_SUFFIXES, ZooEntry, discover, recipe_name
from compressctl.batch.executors import OnResult, ray_tasks_in_flight, run_batch, run_local, run_ray
from compressctl.batch.process import (
    STATUS_BY_EXIT,
    BatchResult,
    RecipeResult,
    apply_command,
    child_env,
    kill_running,
    run_recipe,
    summary_rows,
    write_summary,
)
from compressctl.report.index import index_table, render_index_markdown

__all__ = [
    "RECIPE_SUFFIXES",
    "STATUS_BY_EXIT",
    "BatchResult",
    "OnResult",
    "RecipeResult",
    "ZooEntry",
    "apply_command",
    "child_env",
    "discover",
    "index_table",
    "kill_running",
    "ray_tasks_in_flight",
    "recipe_name",
    "render_index_markdown",
    "run_batch",
    "run_local",
    "run_ray",
    "run_recipe",
    "summary_rows",
    "write_summary",
]
