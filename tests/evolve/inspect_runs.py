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
