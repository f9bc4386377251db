import pytest

from evolve.cli import main
from evolve.config import ConfigError, load_config, resolve_store_url

GOOD = """\
name: t
models:
  base: /m/base
  sources: [/m/a, /m/b]
space:
  merge_method: ties
  layer_groups: 4
  search:
    weight: [0.0, 1.0]
    density: [0.2, 1.0]
strategy: {name: cma, seed: 1}
budget: {max_evaluations: 10}
tasks:
  - {name: zoo_target, weight: 1.0, limit: 20}
"""


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_good_config_loads_with_defaults(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.space.layer_groups == 4 and config.strategy.seed == 1
    assert config.evaluation.backend == "hf" and config.resources.workers == 1


@pytest.mark.parametrize("old, new, expected", [
    ("layer_groups: 4", "layer_groups: 0", "run.yaml:7: space.layer_groups: Input should be greater than or equal to 1"),
    ("budget: {max_evaluations: 10}", "budget: {}", "run.yaml:12: budget: give max_evaluations, max_minutes and/or max_samples"),
    ("budget: {max_evaluations: 10}", "budget: {max_samples: 0}",
     "run.yaml:12: budget.max_samples: Input should be greater than or equal to 1"),
    ("  - {name: zoo_target, weight: 1.0, limit: 20}", "  - {name: zoo_target, wieght: 1.0}",
     "run.yaml:14: tasks.0.wieght: unknown field"),
    ("strategy: {name: cma, seed: 1}", "strategy: {name: cma, seed: -1}", "run.yaml:11: strategy.seed"),
    ("strategy: {name: cma, seed: 1}", "strategy: {name: cma, seeds: atuo}",
     "run.yaml:11: strategy.seeds: must be auto, none or a list of recipes (mappings), got 'atuo'"),
    ("strategy: {name: cma, seed: 1}", "strategy: {name: cma, seeds: [auto]}",
     "run.yaml:11: strategy.seeds: must be auto, none or a list of recipes (mappings), got ['auto']"),
])
def test_errors_name_field_and_line(tmp_path, old, new, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, GOOD.replace(old, new)))
    assert str(info.value).startswith(str(tmp_path / expected.split(":")[0]))
    assert expected.split(":", 1)[1] in str(info.value)


@pytest.mark.parametrize("budget", [
    {"max_evaluations": 10}, {"max_minutes": 5}, {"max_samples": 500}, {"max_evaluations": 10, "max_samples": 500},
    {"max_minutes": 5, "max_samples": 500}, {"max_evaluations": 10, "max_minutes": 5, "max_samples": 500},
])
def test_any_combination_of_budget_limits_is_accepted(tmp_path, budget):
    import json

    config = load_config(write(tmp_path, GOOD.replace("budget: {max_evaluations: 10}", f"budget: {json.dumps(budget)}")))
    assert config.budget.model_dump(exclude_none=True) == budget


def test_cli_run_with_bad_config_exits_2_with_one_line(tmp_path, capsys):
    code = main(["run", str(write(tmp_path, GOOD.replace("name: cma", "name: [cma]"))), "--store", "sqlite://"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "strategy.name" in err and "run.yaml:11" in err


def test_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"run.yaml:\d+: malformed YAML"):
        load_config(write(tmp_path, GOOD + "tasks: [\n"))


def test_store_url_precedence(monkeypatch, tmp_path):
    config = load_config(write(tmp_path, GOOD + "store: sqlite:///from-config.db\n"))
    monkeypatch.delenv("EVOLVE_STORE", raising=False)
    assert resolve_store_url(None, None) == "sqlite:///runs/evolve.db"
    assert resolve_store_url(None, config) == "sqlite:///from-config.db"
    monkeypatch.setenv("EVOLVE_STORE", "sqlite:///env.db")
    assert resolve_store_url(None, config) == "sqlite:///env.db"
    assert resolve_store_url("sqlite:///cli.db", config) == "sqlite:///cli.db"
