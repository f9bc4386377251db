"""A real small run for the inspection tests: M2N2 (so merges have parents) on the synthetic family,
scored by the analytic backend through the real runner, Ray and a SQLite file store."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.run_configs import config_dict


def m2n2_config(family, **overrides) -> dict:
    data = {"name": "inspect", "strategy": {"name": "m2n2", "seed": 1, "settings": {"archive_size": 4}},
            "budget": {"max_evaluations": 12}, "evaluation": {"engine_kwargs": {"delay": 0.02}}, **overrides}
    return config_dict(family, **data)


def make_run(family, db: Path, **overrides) -> tuple[str, str]:
    """Run a search into ``db``; returns (store URL, run id)."""
    from evolve import runner
    from evolve.config import RunConfig
    from evolve.pool import connect
    from evolve.preflight import check_run
    from evolve.store import Store

    connect(None, num_cpus=2)
    url = f"sqlite:///{db}"
    with Store(url) as store:
        outcome = runner.start(store, check_run(RunConfig.model_validate(m2n2_config(family, **overrides))),
                               progress=False)
    return url, outcome.run_id


_MEMO: dict[str, tuple[str, str]] = {}


def shared_run(family, tmp_path_factory) -> tuple[str, str]:
    """One M2N2 analytic run per test session, shared by the CLI and dashboard tests."""
    if "m2n2" not in _MEMO:
        _MEMO["m2n2"] = make_run(family, tmp_path_factory.mktemp("inspect") / "runs.db")
    return _MEMO["m2n2"]


ZOO_CONFIG = {
    "name": "zoo-export",
    "models": {"base": "zoo:base", "sources": ["zoo:arith", "zoo:cipher"]},
    "space": {"merge_method": "task_arithmetic", "layer_groups": 2, "search": {"weight": [0.0, 1.0]}},
    "strategy": {"name": "cma", "seed": 1, "settings": {"popsize": 4}},
    "budget": {"max_evaluations": 2},
    "tasks": [{"name": "zoo_target", "metric": "exact_match", "limit": 8},
              {"name": "zoo_arith", "metric": "exact_match", "weight": 0.5, "limit": 8}],
    "evaluation": {"backend": "hf", "batch_size": 8, "report_test": True},
    "resources": {"workers": 1},
}


def zoo_run(db: Path) -> tuple[str, str]:
    """A real HF + lm-eval run on the embedded zoo (built once and cached): (store URL, run id)."""
    from evolve import runner
    from evolve.config import RunConfig
    from evolve.pool import connect
    from evolve.preflight import check_run
    from evolve.store import Store

    connect(None, num_cpus=2)
    url = f"sqlite:///{db}"
    with Store(url) as store:
        outcome = runner.start(store, check_run(RunConfig.model_validate(ZOO_CONFIG)), progress=False)
    return url, outcome.run_id
