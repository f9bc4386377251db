"""What is scored must be what is exported (issue 12, item 3), end to end on vLLM.

A short search over a tied-embedding family (tiny random Llama, ``tie_word_embeddings: true``)
runs through the product path: pre-flight (`check_run`), `runner.start` with its Ray worker
actor, whose vLLM engine scores every candidate by in-place swaps. The best candidate is
exported with ``evolve export`` and re-scored from disk on a fresh engine (a linear weight-1
recipe on the export, the run's own settings and tasks as pre-flight gave them to the workers).
It must reproduce the stored per-sample results and fitness exactly: float32, the same batches,
so a swapped engine that computes with a stale output head (the bug) shows up as other greedy
tokens, choices or log-likelihoods here. With the head rebuild disabled, ``syn_mc`` differs.

The tasks come from `write_synthetic_tasks`, anchored on the base model's greedy output; they
use the fixture tokenizer's words ``w4``..``w127`` (`tests.fixtures.architectures.VOCAB`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ENGINE = {"enforce_eager": True, "kv_cache_memory_bytes": 64 << 20}


IN_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


@pytest.fixture(scope="module")
def own_ray():
    """A local Ray of this module's own, whose workers run vLLM's engine core in the actor's
    process (`IN_PROCESS`): the same engine, worker and in-place swaps, without spawning and
    importing a second process per engine, which on 2 shared cores is most of the test's time.
    An earlier test's cluster is shut down first, so `runner.start` joins this one
    (`evolve.pool.connect` keeps an initialised Ray)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": IN_PROCESS})
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def in_process_vllm(monkeypatch):
    """The fresh engine in this process too; undo what that changes (as test_swap_correctness)."""
    import torch

    pytest.importorskip("vllm")
    import vllm.envs as envs

    set_num_threads = torch.set_num_threads  # vLLM's CPU worker replaces it with a no-op
    for name, value in IN_PROCESS.items():
        monkeypatch.setenv(name, value)
    envs.disable_envs_cache()
    try:
        yield
    finally:
        torch.set_num_threads = set_num_threads
        monkeypatch.undo()
        envs.disable_envs_cache()


def run_config(paths: list[Path], tasks: Path) -> dict:
    base, x, y = (str(p) for p in paths)
    return {
        "name": "scored-is-exported",
        "models": {"base": base, "sources": [x, y]},
        "space": {"merge_method": "ties", "layer_groups": 1,
                  "search": {"weight": [0.2, 1.0], "density": [0.3, 0.9]}},
        "strategy": {"name": "random", "seed": 0},
        "budget": {"max_evaluations": 3},
        "tasks": [{"name": "syn_gen", "metric": "exact_match"}, {"name": "syn_mc", "metric": "acc", "weight": 0.5},
                  {"name": "syn_ppl", "metric": "word_perplexity", "weight": -0.001}],
        "evaluation": {"backend": "vllm", "include_path": str(tasks), "dtype": "float32", "seed": 0,
                       "batch_size": 8, "report_test": False, "engine_kwargs": ENGINE},
        "resources": {"workers": 1},
    }


def test_rescoring_the_export_from_disk_gives_the_stored_results(own_ray, in_process_vllm, tmp_path):
    from evolve import runner
    from evolve.cli import main
    from evolve.config import RunConfig
    from evolve.preflight import check_run
    from evolve.export import RECIPE_FILE
    from evolve.store import CandidateKind, EvaluationStatus, Store
    from search_spaces.recipe import Recipe
    from tests.fixtures.architectures import ARCHITECTURES, write_family
    from tests.fixtures.synthetic_tasks import write_synthetic_tasks
    from workers.scoring import EvalSettings, Score, Scorer, TaskSpec

    arch = ARCHITECTURES["llama-tied"]
    assert arch.tied
    paths = write_family(tmp_path / "fam", arch)
    tasks = write_synthetic_tasks(tmp_path / "tasks", paths[0], n_validation=8, n_test=2)
    checked = check_run(RunConfig.model_validate(run_config(paths, tasks)))
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = runner.start(Store(url), checked, progress=False).run_id

    out = tmp_path / "best"
    assert main(["export", run_id, "--out", str(out), "--quiet", "--store", url]) == 0
    store = Store(url)
    exported = Recipe.from_file(out / RECIPE_FILE)
    candidate = store.find_candidate_by_hash(run_id, exported.hash)
    assert candidate is not None and candidate.kind == CandidateKind.SEARCH  # a merge, not a source model
    (stored,) = store.list_evaluations(run_id, EvaluationStatus.COMPLETE, candidate_id=candidate.id)
    want = store.get_samples(stored.id, "validation")
    assert set(want) == {"syn_gen", "syn_mc", "syn_ppl"}

    settings = EvalSettings.from_dict(checked.scoring.settings)
    assert settings.backend == "vllm"
    specs = [TaskSpec.from_dict(t) for t in checked.scoring.tasks]
    from_disk = Recipe.from_dict({"merge_method": "linear", "models": [
        {"model": str(out), "parameters": {"weight": 1.0}}]})
    with Scorer.create([str(out)], settings) as scorer:
        got = scorer.score(from_disk, specs)
    assert isinstance(got, Score), got
    validation = [t for t in got.tasks if t.split == "validation"]
    got_samples = {t.name: list(t.samples) for t in validation}
    # Greedy tokens and choices exactly; per-document log-likelihoods (perplexity) to float32
    # rounding, which any stale weight would exceed by far.
    assert {k: v for k, v in got_samples.items() if k != "syn_ppl"} == {k: v for k, v in want.items() if k != "syn_ppl"}
    assert got_samples["syn_ppl"] == pytest.approx(want["syn_ppl"], rel=1e-5)
    assert sum(t.weight * t.value for t in validation) == pytest.approx(stored.fitness, rel=1e-6)
