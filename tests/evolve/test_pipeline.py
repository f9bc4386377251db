"""The ps_then_dfs pipeline: config errors name the stage; a real two-stage run (HF, Ray) hands
the PS stage's best to the DFS stage as model A, keeps each stage's budget and leaderboard, and
running it again resumes instead of repeating anything."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import ray

from evolve.config import ConfigError
from evolve.pipeline import PipelineConfig, check_pipeline, run_pipeline
from fixtures.architectures import ARCHITECTURES, write_family


@pytest.fixture(scope="module")
def family3(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    arch = ARCHITECTURES["llama"]
    arch = replace(arch, overrides={**arch.overrides, "num_hidden_layers": 2})
    base, v0, v1 = write_family(root / "m", arch, n_variants=2, seed=2, noise=0.05)
    from fixtures.synthetic_tasks import write_synthetic_tasks

    return {"base": base, "v0": v0, "v1": v1, "tasks": write_synthetic_tasks(root / "t", base, n_validation=4, n_test=2)}


def pipeline(f, **over) -> PipelineConfig:
    common = {
        "tasks": [{"name": "syn_mc", "metric": "acc"}],
        "evaluation": {"backend": "hf", "include_path": str(f["tasks"]), "batch_size": 8, "report_test": False},
        "resources": {"workers": 1},
    }
    data = {
        "name": "psdfs", "pipeline": "ps_then_dfs",
        "ps": {**common, "models": {"base": str(f["base"]), "sources": [str(f["v0"]), str(f["v1"])]},
               "space": {"merge_method": "task_arithmetic", "search": {"weight": [0.0, 1.0]}},
               "strategy": {"name": "random", "seed": 0}, "budget": {"max_evaluations": 2}},
        "dfs": {**common, "models": {"sources": [str(f["v1"])]},
                "data_flow": {"repeats": 1, "max_path_length": 3},
                "strategy": {"name": "random", "seed": 0}, "budget": {"max_evaluations": 2}},
    }
    data.update(over)
    return PipelineConfig.model_validate(data)


def test_stage_errors_name_the_stage(family3):
    good = pipeline(family3)
    with pytest.raises(ConfigError, match=r"dfs\.models\.base: filled in by the pipeline"):
        pipeline(family3, dfs={**good.dfs, "models": {"base": "x", "sources": ["y"]}}).stage("dfs")
    with pytest.raises(ConfigError, match=r"dfs\.data_flow: required"):
        pipeline(family3, dfs={k: v for k, v in good.dfs.items() if k != "data_flow"}).stage("dfs")
    with pytest.raises(ConfigError, match=r"ps\.budget: Field required"):
        pipeline(family3, ps={k: v for k, v in good.ps.items() if k != "budget"}).stage("ps")
    as_b = pipeline(family3, ps_result="b", dfs={**good.dfs, "models": {"base": str(family3["v1"])}})
    models = as_b.stage("dfs", best="/runs/best").models
    assert (models.base, models.sources) == (str(family3["v1"]), ["/runs/best"])
    assert good.stage("dfs", best="/runs/best").models.base == "/runs/best"
    with pytest.raises(ConfigError, match=r"dfs\.models\.sources: filled in by the pipeline \(ps_result: b"):
        pipeline(family3, ps_result="b").stage("dfs")
    check_pipeline(as_b)
    bad = pipeline(family3, dfs={**good.dfs, "data_flow": {"repeats": 1, "max_path_length": 99}})
    with pytest.raises(ConfigError, match=r"data_flow\.max_path_length: 99 exceeds"):
        check_pipeline(bad)


@pytest.mark.slow
def test_ps_then_dfs_runs_both_stages_and_resumes(family3, tmp_path):
    from evolve.pool import connect
    from evolve.store import Store
    from search_spaces.data_flow import LayerPath
    from search_spaces.recipe import Recipe

    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    config = pipeline(family3)
    connect(None, num_cpus=2)
    try:
        runs = run_pipeline(store, config, progress=False, cache=tmp_path / "cache")
        again = run_pipeline(store, config, progress=False, cache=tmp_path / "cache")  # resume: nothing to do
    finally:
        ray.shutdown()
    assert again == runs and [r.name for r in store.list_runs()] == ["psdfs/ps", "psdfs/dfs"]
    ps_search = store.list_candidates(runs["ps"], kind="search")
    dfs_search = store.list_candidates(runs["dfs"], kind="search")
    # Each stage's own budget: 2 tells. The DFS stage's first ask is A's own path, told the
    # result of A scored as a reference, so it adds no search candidate of its own.
    assert [len(store.list_snapshots(runs[s])) for s in ("ps", "dfs")] == [2, 2]
    assert len(ps_search) == 2 and len(dfs_search) == 1
    a = store.get_run(runs["dfs"]).config["models"]["base"]
    assert Path(a).parent.name == runs["ps"] and (Path(a) / "config.json").is_file()
    assert all(LayerPath.from_recipe(Recipe.from_dict(c.recipe)).model_a == a for c in dfs_search)
    assert len(store.list_evaluations(runs["dfs"])) == 1 + 2  # plus A and B as references


def test_the_cli_runs_pipelines_and_refuses_a_bad_one_in_one_line(tmp_path, capsys):
    from evolve.cli import main

    bad = tmp_path / "pipeline.yaml"
    bad.write_text("name: p\npipeline: ps_then_dfs\nps: {}\n")
    assert main(["pipeline", str(bad), "--store", f"sqlite:///{tmp_path / 'r.db'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}")
