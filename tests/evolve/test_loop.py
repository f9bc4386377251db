"""The steady-state loop on a real local Ray cluster, with the model-free analytic scorer.

Assertions are about behaviour, never speed, and never about the order in which jittered
results arrive: where an assertion needs an order, the run has one worker.
"""

import json
import os
import signal

import pytest
import ray

from evolve import runner
from evolve.config import RunConfig
from evolve.preflight import check_run
from evolve.store import Store
from evolve.store.records import CandidateKind, EvaluationStatus, RunStatus
from tests.fixtures.run_configs import config_dict

pytestmark = pytest.mark.slow


def start(store: Store, data: dict):
    return runner.start(store, check_run(RunConfig.model_validate(data)), progress=False)


def test_search_fills_the_budget_and_records_everything(local_ray, family, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    outcome = start(store, config_dict(family))
    evaluations = store.list_evaluations(outcome.run_id)
    searched = store.list_candidates(outcome.run_id, kind="search")
    references = store.list_candidates(outcome.run_id, kind="reference")
    assert len(searched) == 18 and outcome.stats.evaluations == 18
    assert sorted(c.label for c in references) == ["base", "variant_0", "variant_1"]
    assert all(c.strategy_info.get("strategy_id") is not None for c in searched)
    assert all(e.status == EvaluationStatus.COMPLETE for e in evaluations)
    assert len(evaluations) == 18 + 3  # plus base and both sources scored as references
    assert store.get_run(outcome.run_id).status == RunStatus.FINISHED
    assert {e.worker for e in evaluations} == {"worker-0", "worker-1"}  # both workers were used
    stats = outcome.stats
    assert 0 < stats.busy_seconds <= stats.wall_seconds * stats.workers  # accounting, not speed


def test_cma_improves_on_its_first_generation(local_ray, family, tmp_path):
    """One worker: results arrive in ask order, so the seeded run is the same on every machine.
    No seeds, so the first 6 candidates are CMA's first generation (popsize 6), not seeds
    whose centroid may already be near the optimum."""
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    outcome = start(store, config_dict(family, resources={"workers": 1}, evaluation={"engine_kwargs": {}},
                                       strategy={"seeds": "none"}))
    number = {c.id: c.number for c in store.list_candidates(outcome.run_id, kind="search")}
    ordered = sorted((number[e.candidate_id], e.fitness) for e in store.list_evaluations(outcome.run_id)
                     if e.candidate_id in number)
    assert max(f for _, f in ordered[6:]) > max(f for _, f in ordered[:6])


def test_a_killed_worker_actor_is_replaced_and_its_candidate_retried(local_ray, family, tmp_path):
    from evolve.loop import SearchLoop
    from evolve.pool import WorkerPool, WorkerSpec
    from evolve.strategies.registry import make_strategy

    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    config = RunConfig.model_validate(config_dict(family, budget={"max_evaluations": 8}))
    run = store.create_run("kill", config.model_dump(mode="json"), seed=0)
    space = check_run(config).space
    pool = WorkerPool(2, WorkerSpec(runner.ANALYTIC_FACTORY, {"delay": 1.0}))
    victim_pid = ray.get(pool.actors[0].pid.remote())
    loop = SearchLoop(store, run.id, space, make_strategy("random", space.dimension, 0), pool, 8, None, progress=False)

    killer = __import__("threading").Timer(1.5, lambda: os.kill(victim_pid, signal.SIGKILL))
    killer.start()
    stats = loop.run()
    killer.join()
    pool.shutdown()
    evaluations = store.list_evaluations(run.id)
    lost = [e for e in evaluations if e.status == EvaluationStatus.FAILED]
    assert len(lost) == 1 and lost[0].error_kind == "worker_lost" and lost[0].error.startswith("worker_lost: ")
    retried = [e for e in evaluations if e.candidate_id == lost[0].candidate_id and e.attempt == 2]
    assert retried and retried[0].status == EvaluationStatus.COMPLETE
    assert stats.retries == 1 and stats.evaluations == 8


def test_leaderboard_runs_and_export_read_back_from_the_store(local_ray, family, tmp_path, capsys):
    import json

    from evolve.cli import main
    from search_spaces.recipe import Recipe

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = start(Store(url), config_dict(family, budget={"max_evaluations": 8})).run_id
    capsys.readouterr()
    assert main(["leaderboard", run_id, "--split", "test", "--format", "json", "--store", url]) == 0
    board = json.loads(capsys.readouterr().out)
    assert board["split"] == "test" and board["ranked_by"] == "validation fitness"
    assert [c["rank"] for c in board["candidates"]] == list(range(1, 9))
    fitness = [c["fitness"] for c in board["candidates"]]
    assert fitness == sorted(fitness, reverse=True)
    assert set(board["parents"]) == {"base", "variant_0", "variant_1"}
    assert all(set(c) >= {"id", "fitness", "score", "metrics", "parents"} for c in board["candidates"])

    assert main(["runs", "--format", "json", "--store", url]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == run_id and row["status"] == "FINISHED" and row["best_validation"] == fitness[0]

    out = tmp_path / "best"
    assert main(["export", run_id, "--out", str(out), "--quiet", "--store", url]) == 0
    best = Store(url).get_candidate(board["candidates"][0]["id"])
    assert Recipe.from_file(out / "evolve_recipe.yaml").hash == best.recipe_hash
    assert "slices" in (out / "mergekit.yaml").read_text()  # per-layer groups as mergekit slices
    card = (out / "README.md").read_text()
    assert best.id in card and "analytic" in card
    assert main(["leaderboard", "r-nope", "--store", url]) == 2


@pytest.mark.parametrize("report_test, split", [(True, "test"), (False, "validation")])
def test_the_leaderboard_a_run_ends_with_is_on_a_split_it_scored(report_test, split, local_ray, family, tmp_path,
                                                                 capsys):
    """A run that never scores the test split must not end on a table of dashes."""
    import yaml

    from evolve.cli import main

    data = config_dict(family, budget={"max_evaluations": 2})
    data["evaluation"] = {**data.get("evaluation", {}), "report_test": report_test}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--store", f"sqlite:///{tmp_path / 'runs.db'}", "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"· {split} split ·" in out, out


def test_a_linear_search_merges_its_sources_and_keeps_the_base_as_a_reference(local_ray, family, tmp_path):
    """linear merges no base: the run's base is a scored reference, and each candidate a weighted
    sum of the sources (merged too, the base would need a weight the space does not search)."""
    import yaml

    from evolve.cli import main

    data = config_dict(family, space={"merge_method": "linear", "layer_groups": 2, "search": {"weight": [0.1, 1.0]}},
                       budget={"max_evaluations": 4})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main(["run", str(path), "--store", url, "--quiet"]) == 0
    store = Store(url)
    (run,) = store.list_runs()
    searched = store.list_candidates(run.id, kind=CandidateKind.SEARCH)
    assert len(searched) >= 4
    for cand in searched:
        assert "base_model" not in cand.recipe
        assert [m["model"] for m in cand.recipe["models"]] == [str(family[1]), str(family[2])]
    references = store.list_candidates(run.id, kind=CandidateKind.REFERENCE)
    assert family[0].name in {r.label for r in references}


# -- failing fast -----------------------------------------------------------------------------------
def failing_config(family, tmp_path, **overrides):
    import yaml

    data = config_dict(family, **{"budget": {"max_evaluations": 60},
                                  "evaluation": {"engine_kwargs": {"fail_rate": 1.0}}, **overrides})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_run_whose_evaluations_all_fail_stops_failed_after_the_first_five(local_ray, family, tmp_path, capsys):
    from evolve.cli import main

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main(["run", str(failing_config(family, tmp_path)), "--store", url, "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "FAILED: the first 5 evaluations all failed" in err[0] and "injected failure" in err[0]
    store = Store(url)
    (run,) = store.list_runs()
    assert run.status == RunStatus.FAILED and "the first 5 evaluations all failed" in run.error
    evaluations = store.list_evaluations(run.id)
    assert not any(e.status == EvaluationStatus.COMPLETE for e in evaluations)
    assert 5 <= len(evaluations) <= 5 + 2  # the five, and at most one in flight per worker (abandoned)
    # its leaderboard is no empty table of a run that looks fine: it says FAILED, and why
    assert main(["leaderboard", run.id, "--store", url]) == 0
    board = " ".join(capsys.readouterr().out.split())
    assert f"run {run.id} · FAILED ·" in board and "the run FAILED: the first 5 evaluations all failed" in board
    assert main(["leaderboard", run.id, "--store", url, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "FAILED" and "the first 5 evaluations all failed" in data["error"]
    assert all(e.status == EvaluationStatus.FAILED for e in evaluations)
    assert {e.error_kind for e in evaluations} <= {"merge_error", "abandoned"}
    assert sum(e.error_kind == "merge_error" for e in evaluations) == 5

    assert main(["resume", run.id, "--store", url, "--quiet"]) == 2  # says why it stopped
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"run {run.id} FAILED: the first 5 evaluations all failed" in err[0]
    assert "--force" in err[0]


def test_all_failed_never_exits_zero_even_with_fail_fast_off(local_ray, family, tmp_path, capsys):
    from evolve.cli import main

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    config = failing_config(family, tmp_path, budget={"max_evaluations": 3},
                            fail_fast={"first": 0, "max_failure_rate": 1.0})
    assert main(["run", str(config), "--store", url, "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no evaluation succeeded (3 failed)" in err[0]
    assert Store(url).list_runs()[0].status == RunStatus.FAILED


def _outcome(ok: bool, error: str = "merge_error: boom"):
    from workers.outcome import EvalOutcome, OutcomeStatus

    if ok:
        return EvalOutcome(OutcomeStatus.OK, fitness=1.0)
    kind, message = error.split(": ", 1)
    return EvalOutcome.failed(kind, message)


def test_fail_fast_rules():
    from evolve.config import FailFastConfig
    from evolve.loop import FailFast, RunFailed

    watch = FailFast(FailFastConfig(first=3, window=4, max_failure_rate=0.5))
    watch.record(_outcome(False))
    watch.record(_outcome(True))  # one success among the first three: the first rule never fires
    watch.record(_outcome(False, "oom: a"))
    with pytest.raises(RunFailed, match=r"3 of the last 4 evaluations failed \(more than 50%\); "
                                        r"most common error \(1x\): merge_error: boom"):
        watch.record(_outcome(False, "oom: b"))

    first = FailFast(FailFastConfig(first=2, window=20, max_failure_rate=1.0))
    first.record(_outcome(False))
    with pytest.raises(RunFailed, match=r"the first 2 evaluations all failed; most common error \(2x\)"):
        first.record(_outcome(False))
    off = FailFast(FailFastConfig(first=0, window=2, max_failure_rate=1.0))
    for _ in range(10):
        off.record(_outcome(False))  # both rules off: only the end-of-run check remains


def test_the_progress_line_says_when_there_is_no_full_result_yet():
    from evolve.loop import LoopStats

    stats = LoopStats()
    assert stats.progress_line() == "searching · no full result yet"
    stats.failures = 3
    assert stats.progress_line() == "searching · no full result yet · 3 failed"
    stats.best_fitness = 0.75
    assert stats.progress_line() == "searching · best 0.750 · 3 failed"
