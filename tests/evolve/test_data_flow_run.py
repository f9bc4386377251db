"""Data-flow search through the product: pre-flight mistakes in one line (exit 2, nothing
written), every strategy over DFS genomes, and one real run (HF backend, Ray, store) whose best
path exports as a plain model with the path drawn in its card."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
import ray
import yaml

from evolve.cli import main
from fixtures.architectures import ARCHITECTURES, write_family
from search_spaces.data_flow import DataFlowSpace, LayerPath

LAYERS = 3


def _models(root: Path, name: str, **over) -> list[Path]:
    arch = ARCHITECTURES[name]
    arch = replace(arch, overrides={**arch.overrides, "num_hidden_layers": LAYERS, **over})
    return write_family(root, arch, n_variants=1, seed=1, noise=0.05)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dfs_run")
    a, b = _models(root / "llama", "llama")
    (wide,) = _models(root / "wide", "llama", hidden_size=256, intermediate_size=256)[:1]
    (qwen,) = _models(root / "qwen", "qwen3")[:1]
    (deep,) = _models(root / "deep", "llama", num_hidden_layers=LAYERS + 1)[:1]
    from fixtures.synthetic_tasks import write_synthetic_tasks

    tasks = write_synthetic_tasks(root / "tasks", a, n_validation=6, n_test=4)
    return {"a": a, "b": b, "wide": wide, "qwen": qwen, "deep": deep, "tasks": tasks}


def dfs_config(pair, **over) -> dict:
    data = {
        "name": "dfs",
        "models": {"base": str(pair["a"]), "sources": [str(pair["b"])]},
        "data_flow": {"repeats": 2, "scales": "per_slot", "scale_range": [0.5, 2.0], "max_path_length": 6},
        "strategy": {"name": "cma", "seed": 0, "settings": {"popsize": 4}},
        "budget": {"max_evaluations": 5},
        "tasks": [{"name": "syn_gen", "metric": "exact_match"}, {"name": "syn_mc", "metric": "acc", "weight": 0.5}],
        "evaluation": {"backend": "hf", "include_path": str(pair["tasks"]), "batch_size": 8},
        "resources": {"workers": 1},
    }
    data.update(over)
    return data


def run_cli(tmp_path: Path, config: dict, capsys) -> tuple[int, list[str], Path]:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    db = tmp_path / "runs.db"
    code = main(["run", str(path), "--quiet", "--store", f"sqlite:///{db}"])
    return code, capsys.readouterr().err.strip().splitlines(), db


CASES = {
    "architecture": (lambda p: {"models": {"base": str(p["a"]), "sources": [str(p["qwen"])]}},
                     r"models: model B .*architecture Qwen3ForCausalLM differs from model A's LlamaForCausalLM"),
    "hidden size": (lambda p: {"models": {"base": str(p["a"]), "sources": [str(p["wide"])]}},
                    r"models: model B .*hidden size 256 differs from model A's 128"),
    "path bound": (lambda p: {"data_flow": {"repeats": 2, "max_path_length": 99}},
                   r"data_flow\.max_path_length: 99 exceeds the 12 slots plus the two fixed ends"),
    "two sources": (lambda p: {"models": {"base": str(p["a"]), "sources": [str(p["b"]), str(p["qwen"])]}},
                    r"data_flow: searches layer paths over two models"),
    "backend": (lambda p: {"evaluation": {"backend": "analytic"}},
                r"evaluation\.backend: 'analytic' cannot score layer paths"),
    "scale range": (lambda p: {"data_flow": {"scale_range": [1.0, 2.0]}},
                    r"data_flow\.scale_range: \[1\.0, 2\.0\] must satisfy 0 < lower < 1 < upper"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_data_flow_mistakes_are_one_line_and_exit_2(case, pair, tmp_path, capsys):
    over, expected = CASES[case]
    code, err, db = run_cli(tmp_path, dfs_config(pair, **over(pair)), capsys)
    assert code == 2 and len(err) == 1, err
    assert re.search(expected, err[0]), err[0]
    assert not db.exists() and not ray.is_initialized()


def test_models_of_different_depths_make_one_slot_layout(pair):
    from evolve.config import RunConfig
    from evolve.preflight import check_run

    checked = check_run(RunConfig.model_validate(dfs_config(pair, models={"base": str(pair["a"]),
                                                                          "sources": [str(pair["deep"])]})))
    assert (checked.space.num_layers, checked.space.num_layers_b, checked.space.num_slots) == (3, 4, 14)


def test_the_zoo_pair_preflights_before_it_is_built(tmp_path, monkeypatch):
    from evolve.config import load_config
    from evolve.preflight import check_run

    monkeypatch.setenv("EVOLVE_ZOO_DIR", str(tmp_path / "zoo"))
    checked = check_run(load_config(Path(__file__).resolve().parents[2] / "examples" / "zoo_dfs.yaml"))
    assert checked.needs_zoo and (checked.space.num_layers, checked.space.num_layers_b) == (5, 4)
    assert checked.space.model_a.endswith("zoo/dfs-v1/models/reader")
    assert not (tmp_path / "zoo").exists()  # nothing is built before the run starts


@pytest.mark.parametrize("name", ["cma", "random", "m2n2"])
def test_every_strategy_searches_data_flow_genomes(name):
    from evolve.seeds import seed_genomes
    from evolve.strategies.base import Result
    from evolve.strategies.registry import make_strategy

    space = DataFlowSpace("m/a", "m/b", 4, repeats=2, max_path_length=8)
    seeds = seed_genomes(space, "auto")
    assert list(seeds[0]) == list(space.start_genome())  # the paper's start: model A
    assert [space.decode(s) for s in seeds[1:]] == [p.to_recipe() for _, p in space.naive_paths()[1:]]
    settings = {"popsize": 4} if name == "cma" else {"archive_size": 4} if name == "m2n2" else {}
    strategy = make_strategy(name, space.dimension, 0, num_workers=1, seeds=seeds, space=space, **settings)
    lengths = set()
    for i in range(24):
        (cand,) = strategy.ask()
        path = space.decode_path(cand.genome)
        lengths.add(path.length)
        assert path.length <= 8 and path.steps[0].layer == 0 and path.steps[-1].layer == 3
        on_b = [float(s.model == "m/b") for s in path.steps[1:-1]] + [0.0] * (8 - path.length)
        strategy.tell(cand.id, Result(sum(on_b) - 0.1 * path.length, samples={"t": tuple(on_b)}))
    assert len(lengths) > 1  # the indicators move


@pytest.mark.slow
def test_a_data_flow_run_scores_stores_and_exports(pair, tmp_path):
    from evolve import runner
    from evolve.config import RunConfig
    from evolve.pool import connect
    from evolve.preflight import check_run
    from evolve.report import leaderboard_data
    from evolve.store import Store
    from search_spaces.recipe import Recipe
    from transformers import AutoModelForCausalLM
    from workers.export import merge_to_disk

    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    connect(None, num_cpus=2)
    try:
        outcome = runner.start(store, check_run(RunConfig.model_validate(dfs_config(pair))), progress=False)
    finally:
        ray.shutdown()
    # resume's replay re-derives every stored path from its genome, hash for hash
    from evolve.loop import SearchLoop
    from evolve.seeds import seed_genomes
    from evolve.strategies.registry import make_strategy

    checked = check_run(RunConfig.model_validate(store.get_run(outcome.run_id).config))
    replayed = make_strategy("cma", checked.space.dimension, 0, num_workers=1, popsize=4, space=checked.space,
                             seeds=seed_genomes(checked.space, "auto"),
                             task_weights={t.name: t.weight for t in checked.config.tasks})
    assert SearchLoop(store, outcome.run_id, checked.space, replayed, None, 5, None, progress=False).replay() == []
    assert replayed.state()["num_told"] == 5
    board = leaderboard_data(store, outcome.run_id, "validation")
    # The seed (the centre of the box) is model A's own path: it is told A's reference result
    # instead of being scored twice, so 5 tells come from 4 evaluations.
    assert outcome.stats.evaluations == 4 and outcome.stats.failures == 0
    (reference_a,) = [c for c in store.list_candidates(outcome.run_id, kind="reference") if c.label == "base"]
    assert [s.layer for s in LayerPath.from_recipe(Recipe.from_dict(reference_a.recipe)).steps] == list(range(LAYERS))
    told = [snap.state["candidate"] for snap in store.list_snapshots(outcome.run_id)]
    assert told[0] == reference_a.id and len(store.list_candidates(outcome.run_id, kind="search")) == 4
    assert set(board["parents"]) == {"base", "variant_0"}
    best = store.get_candidate(board["candidates"][0]["id"])
    recipe = Recipe.from_dict(best.recipe)
    path = LayerPath.from_recipe(recipe)
    out = merge_to_disk(recipe, tmp_path / "export", progress=False, extra_files={"mergekit.yaml": "x"})
    card = (out / "README.md").read_text()
    assert "## Layer path" in card and f"{path.length - 1:>4}  A:base" in card
    assert LayerPath.from_recipe(Recipe.from_file(out / "evolve_recipe.yaml")) == path
    assert not (out / "mergekit.yaml").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == path.length
    # `evolve export` of the run: the plain model, the path in the card and in recipe.yaml
    from evolve.cli import main

    exported = tmp_path / "cli-export"
    assert main(["export", outcome.run_id, "--out", str(exported), "--quiet",
                 "--store", f"sqlite:///{tmp_path / 'runs.db'}"]) == 0
    assert "## Layer path" in (exported / "README.md").read_text()
    assert LayerPath.from_recipe(Recipe.from_file(exported / "recipe.yaml")) == path
    assert AutoModelForCausalLM.from_pretrained(exported).config.num_hidden_layers == path.length
