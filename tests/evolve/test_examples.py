"""Every shipped example config passes pre-flight as it is, before any zoo is built."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_passes_preflight(path, tmp_path, monkeypatch):
    from evolve.config import load_config
    from evolve.pipeline import check_pipeline, load_pipeline
    from evolve.preflight import check_run

    monkeypatch.setenv("EVOLVE_ZOO_DIR", str(tmp_path / "zoo"))
    if "pipeline" in yaml.safe_load(path.read_text()):
        check_pipeline(load_pipeline(path))
    else:
        check_run(load_config(path))
    assert not (tmp_path / "zoo").exists()  # pre-flight builds nothing


def test_there_are_examples():
    assert {"zoo_demo", "zoo_dfs", "zoo_ps_dfs"} <= {p.stem for p in EXAMPLES}
