"""Pre-flight through the real CLI: each mistake is one line, exit code 2, before Ray starts,
and nothing is written (the store's database file is never even created)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import ray
import yaml

from evolve.cli import main


@pytest.fixture(scope="module")
def tasks_dir(family, tmp_path_factory) -> Path:
    from tests.fixtures.synthetic_tasks import write_synthetic_tasks

    return write_synthetic_tasks(tmp_path_factory.mktemp("preflight_tasks"), family[0], n_validation=6, n_test=4)


def good_config(family, tasks_dir) -> dict:
    return {
        "name": "preflight",
        "models": {"base": str(family[0]), "sources": [str(family[1]), str(family[2])]},
        "space": {"merge_method": "task_arithmetic", "layer_groups": 3, "search": {"weight": [0.0, 1.0]}},
        "strategy": {"name": "cma", "seed": 0, "settings": {"popsize": 4}},
        "budget": {"max_evaluations": 4},
        "tasks": [{"name": "syn_gen", "metric": "exact_match"}, {"name": "syn_mc", "metric": "acc", "weight": 0.5}],
        "evaluation": {"backend": "hf", "include_path": str(tasks_dir)},
    }


def run_cli(tmp_path: Path, config: dict | str, *extra: str, capsys) -> tuple[int, list[str], Path]:
    path = tmp_path / "run.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
    db = tmp_path / "runs.db"
    code = main(["run", str(path), "--quiet", "--store", f"sqlite:///{db}", *extra])
    return code, capsys.readouterr().err.strip().splitlines(), db


def edit(config: dict, dotted: str, value) -> dict:
    keys = dotted.split(".")
    node = config
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(keys[-1]) if isinstance(node, list) else keys[-1]] = value
    return config


CASES = {
    # field changed -> (new value, what the one line must say)
    "strategy typo": ("strategy.name", "cmaa", r"strategy\.name: .*unknown optimizer 'cmaa'; did you mean 'cma'"),
    "strategy setting": ("strategy.settings", {"popsiz": 4}, r"strategy\.settings: .*unknown setting 'popsiz'"),
    "strategy setting value": ("strategy", {"name": "m2n2", "settings": {"split_on": "kind"}},
                               r":\d+: strategy\.settings\.split_on: must be 'block' or 'group', got 'kind'$"),
    "missing model": ("models.sources.1", "/nowhere/model", r"models\.sources\.1: '/nowhere/model' is not a model"),
    "density above 1": ("space.search", {"weight": [0, 1], "density": [0.2, 1.5]}, r"space\.search\.density: \[0\.2, 1\.5\] must lie inside \(0, 1\]"),
    "unknown zoo model": ("models.base", "zoo:bass", r"models\.base: 'zoo:bass' names no zoo model \(did you mean 'base'"),
    "merge method": ("space.merge_method", "tiez", r"space\.merge_method: unknown merge method 'tiez' \(did you mean 'ties'"),
    "searched parameter": ("space.search", {"wieght": [0, 1]},
                           r"space\.search\.wieght: 'wieght' is not a parameter of task_arithmetic"),
    "unknown task": ("tasks.0.name", "syn_genn", r"tasks\.0\.name: no lm-eval task named 'syn_genn'"),
    "metric": ("tasks.1.metric", "exact_match", r"tasks\.1\.metric: task 'syn_mc' reports no 'exact_match' \(it reports acc"),
    "layer groups": ("space.layer_groups", 4, r"space\.layer_groups: 4 groups, but base has 3 layers"),
    # a filter that selects no tensor would add coordinates that change nothing, in a healthy-looking run
    "kind typo": ("space.kinds", ["self_atn", "mlp"], r"space\.kinds\.0: 'self_atn': it matches no tensor of "),
    "kind shadowed": ("space.kinds", ["attn", "self_attn"],
                      r"space\.kinds\.1: 'self_attn': every tensor it matches is taken by 'attn' first"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mistakes_are_refused_in_one_line_before_anything_runs(case, family, tasks_dir, tmp_path, capsys):
    field, value, expected = CASES[case]
    config = edit(good_config(family, tasks_dir), field, value)
    code, err, db = run_cli(tmp_path, config, capsys=capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {tmp_path / 'run.yaml'}:"), err[0]  # file:line
    assert re.search(expected, err[0]), err[0]
    assert not db.exists()  # no run row: not even a database
    assert not ray.is_initialized()


@pytest.mark.parametrize("kinds, expected", [
    (["self_atn", "mlp"], r"space\.kinds\.0: 'self_atn': it matches no tensor of zoo:base"),
    (["attn", "self_attn"], r"space\.kinds\.1: 'self_attn': every tensor it matches is taken by 'attn' first"),
])
def test_kinds_are_checked_against_the_zoo_before_it_is_built(kinds, expected, tmp_path, capsys, monkeypatch):
    """A first run on the zoo (nothing built yet) gets the same one line: the catalog knows the
    zoo's tensor names without building it, and builds nothing."""
    monkeypatch.setenv("EVOLVE_ZOO_DIR", str(tmp_path / "zoo"))
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "zoo_kind.yaml").read_text())
    code, err, db = run_cli(tmp_path, edit(config, "space.kinds", kinds), capsys=capsys)
    assert code == 2 and len(err) == 1 and re.search(expected, err[0]), err
    assert not db.exists() and not (tmp_path / "zoo").exists()


@pytest.mark.parametrize("field, value, expected", [
    ("space.kinds", ["self_atn", "mlp"], r"space\.kinds\.0: 'self_atn': it matches no tensor of /"),
    ("space.layer_groups", 4, r"space\.layer_groups: 4 groups, but base has 3 layers"),
])
def test_a_local_base_is_checked_while_zoo_sources_are_unbuilt(field, value, expected, family, tasks_dir, tmp_path,
                                                               capsys, monkeypatch):
    """Sources from the zoo, not built yet, over a base of the user's own: the base's depth and
    tensor names come from its checkpoint, before anything is built."""
    monkeypatch.setenv("EVOLVE_ZOO_DIR", str(tmp_path / "zoo"))
    config = edit(good_config(family, tasks_dir), "models.sources", ["zoo:kind_reader", "zoo:kind_adder"])
    code, err, db = run_cli(tmp_path, edit(config, field, value), capsys=capsys)
    assert code == 2 and len(err) == 1 and re.search(expected, err[0]), err
    assert not db.exists() and not (tmp_path / "zoo").exists()


def test_a_truncated_checkpoint_is_refused_before_any_worker_reads_it(family, tasks_dir, tmp_path, capsys):
    """An interrupted download or copy: the header is whole, the tensor bytes are not."""
    import shutil
    import struct

    broken = tmp_path / "broken"
    shutil.copytree(family[1], broken)
    shard = next(broken.glob("*.safetensors"))
    data = shard.read_bytes()
    shard.write_bytes(data[: 8 + struct.unpack("<Q", data[:8])[0] + 100])
    code, err, db = run_cli(tmp_path, edit(good_config(family, tasks_dir), "models.sources.0", str(broken)),
                            capsys=capsys)
    assert code == 2 and len(err) == 1, err
    assert re.search(rf"models: {re.escape(str(shard))}: .*truncated: its header describes \d+ bytes, the file "
                     r"has \d+", err[0]), err[0]
    assert not db.exists() and not ray.is_initialized()


def test_an_unknown_field_names_its_line(family, tasks_dir, tmp_path, capsys):
    text = yaml.safe_dump(good_config(family, tasks_dir), sort_keys=False) + "resorces: {workers: 2}\n"
    code, err, db = run_cli(tmp_path, text, capsys=capsys)
    line = len(text.splitlines())  # the last line
    assert code == 2 and err == [f"error: {tmp_path / 'run.yaml'}:{line}: resorces: unknown field"]
    assert not db.exists()


def test_a_missing_backend_is_refused(family, tasks_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    config = edit(good_config(family, tasks_dir), "evaluation.backend", "vllm")
    code, err, db = run_cli(tmp_path, config, capsys=capsys)
    assert code == 2 and len(err) == 1 and "evaluation.backend: 'vllm' needs the 'vllm' package" in err[0]
    assert not db.exists()


def test_an_include_path_is_required_without_zoo_models(family, tasks_dir, tmp_path, capsys):
    config = good_config(family, tasks_dir)
    del config["evaluation"]["include_path"]
    code, err, db = run_cli(tmp_path, config, capsys=capsys)
    assert code == 2 and len(err) == 1 and "evaluation.include_path: required" in err[0]


def test_an_unreachable_ray_address_is_refused_before_ray_starts(family, tasks_dir, tmp_path, capsys):
    code, err, db = run_cli(tmp_path, good_config(family, tasks_dir), "--address", "127.0.0.1:1", capsys=capsys)
    assert code == 2 and len(err) == 1, err
    assert "resources.address: no Ray cluster answers at 127.0.0.1:1" in err[0]
    assert not db.exists() and not ray.is_initialized()


def test_a_silent_ray_address_gives_up_within_15_seconds(monkeypatch):
    """A host that never answers (a firewall drops the packets): the wait is bounded, not Ray's minutes."""
    import socket

    from evolve.pool import ClusterUnreachableError, check_reachable

    waited = []

    def silent(address, timeout=None):
        waited.append(timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", silent)
    with pytest.raises(ClusterUnreachableError, match=r"no Ray cluster answers at ray://10\.1\.2\.3:10001"):
        check_reachable("ray://10.1.2.3:10001")
    assert waited and 0 < waited[0] <= 15


def test_an_unreachable_database_is_one_line_and_bounded(family, tasks_dir, tmp_path, capsys):
    from evolve.store.engine import CONNECT_TIMEOUT_SECONDS

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(good_config(family, tasks_dir)))
    code = main(["run", str(path), "--quiet", "--store", "postgresql+psycopg://evolve@127.0.0.1:1/evolve"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: store postgresql+psycopg://evolve@127.0.0.1:1/evolve: cannot connect")
    assert "Connection refused" in err[0] and not ray.is_initialized()
    assert 0 < CONNECT_TIMEOUT_SECONDS <= 15  # what a server that never answers costs (libpq's connect_timeout)


def test_a_good_config_passes_and_resolves_what_the_workers_need(family, tasks_dir):
    from evolve.config import RunConfig
    from evolve.preflight import check_run

    checked = check_run(RunConfig.model_validate(good_config(family, tasks_dir)))
    assert not checked.needs_zoo and checked.space.dimension == 3 * 2
    settings, tasks = checked.scoring.settings, checked.scoring.tasks
    assert settings["include_path"] == [str(tasks_dir)] and settings["backend"] == "hf"
    # Validation tasks, then the same on the test split (report_test), built once here.
    assert [(t["name"], t["split"]) for t in tasks] == [("syn_gen", "validation"), ("syn_mc", "validation"),
                                                         ("syn_gen", "test"), ("syn_mc", "test")]


@pytest.mark.parametrize(("max_evaluations", "seeds"), [(40, 10), (39, 4)])
def test_the_run_strategy_gets_the_per_kind_seeds_only_within_a_quarter_of_the_budget(family, tasks_dir,
                                                                                       max_evaluations, seeds):
    """2 models x 3 kind slots: 6 per-kind seeds on top of 4, which need max_evaluations >= 40."""
    from evolve.config import RunConfig
    from evolve.preflight import build_strategy, check_run

    data = good_config(family, tasks_dir)
    data["space"] = {**data["space"], "layer_groups": 1, "kinds": ["self_attn", "mlp"]}
    data["budget"] = {"max_evaluations": max_evaluations}
    checked = check_run(RunConfig.model_validate(data))
    assert len(build_strategy(checked.config, checked.space).seeds) == seeds


def test_evaluation_config_and_settings_share_one_schema():
    """Every EvaluationConfig field reaches EvalSettings (or is the driver's own): they cannot drift."""
    from dataclasses import fields

    from evolve.config import EvaluationConfig
    from workers.scoring import EvalSettings

    driver_only = {"report_test"}  # decides which TaskSpecs exist, not how they are evaluated
    worker_only = {"system_instruction", "fewshot_as_multiturn", "bootstrap_iters", "cache_size"}
    assert set(EvaluationConfig.model_fields) - driver_only == {f.name for f in fields(EvalSettings)} - worker_only


def test_gpus_per_worker_maps_onto_a_tensor_parallel_vllm_engine(family, tasks_dir):
    from evolve.config import RunConfig
    from evolve.preflight import engine_kwargs

    def config(gpus, **engine):
        data = good_config(family, tasks_dir)
        data["evaluation"].update(backend="vllm", engine_kwargs=engine)
        data["resources"] = {"gpus_per_worker": gpus}
        return RunConfig.model_validate(data)

    fail = lambda loc, message: ValueError(f"{'.'.join(map(str, loc))}: {message}")  # noqa: E731
    assert engine_kwargs(config(1), fail) == {}
    assert engine_kwargs(config(4, enforce_eager=True), fail) == {
        "enforce_eager": True, "tensor_parallel_size": 4, "distributed_executor_backend": "mp"}
    with pytest.raises(ValueError, match="tensor_parallel_size: 2, but resources.gpus_per_worker is 4"):
        engine_kwargs(config(4, tensor_parallel_size=2), fail)
    with pytest.raises(ValueError, match="whole number of GPUs"):
        engine_kwargs(config(1.5), fail)
