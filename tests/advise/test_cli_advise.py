"""``compressctl advise`` from the command line: bad input and an unsatisfiable budget."""

from __future__ import annotations

from tests.advise.test_advisor import advise_recipe_path


def test_advise_without_a_limit_is_bad_input(cli, tmp_path):
    result = cli("advise", advise_recipe_path(tmp_path), "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "needs a budget" in result.output


def test_impossible_budget_exits_1_naming_the_limit(cli, tmp_path):
    result = cli(
        "advise",
        advise_recipe_path(tmp_path),
        "--max-size-mb",
        "0.000001",
        "--trials",
        "1",
        "--no-sensitivity",
        "-o",
        tmp_path / "out",
    )
    assert result.exit_code == 1, result.output
    assert "no candidate meets the budget (size <= 1e-06 MB)" in result.output
    assert (tmp_path / "out" / "advise.html").is_file() and not (tmp_path / "out" / "recommended.yaml").exists()


def test_strategy_choices_are_listed_and_a_bad_one_is_bad_input(cli, tmp_path):
    from compressctl.advise.strategies import STRATEGIES

    help_text = cli("advise", "--help").output
    assert "--strategy" in help_text and "nsga2|rl|random" in help_text  # the choices, as click lists them
    assert tuple("nsga2|rl|random".split("|")) == STRATEGIES
    result = cli("advise", advise_recipe_path(tmp_path), "--min-speedup", "2", "--strategy", "annealing")
    assert result.exit_code == 2
    assert "annealing" in result.output
