"""The steady-state loop on a real local Ray cluster, with the model-free analytic scorer."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import ray
import yaml

from evolve import runner
from evolve.config import RunConfig
from evolve.store import Store
from evolve.store.records import EvaluationStatus, RunStatus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    from evolve.pool import connect

    connect(None, num_cpus=2)  # joins the cluster an earlier test (the demo) may have started
    yield
    ray.shutdown()


def config_dict(family, **overrides) -> dict:
    data = {
        "name": "loop-test",
        "models": {"base": str(family[0]), "sources": [str(family[1]), str(family[2])]},
        "space": {"merge_method": "task_arithmetic", "layer_groups": 2, "search": {"weight": [0.0, 1.0]}},
        "strategy": {"name": "cma", "seed": 3, "settings": {"popsize": 6}},
        "budget": {"max_evaluations": 18},
        "tasks": [{"name": "analytic", "metric": "score"}],
        "evaluation": {"backend": "analytic", "engine_kwargs": {"delay": 0.05, "delay_jitter": 0.1}},
        "resources": {"workers": 2},
    }
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return data


def test_search_fills_the_budget_and_records_everything(local_ray, family, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    outcome = runner.start(store, RunConfig.model_validate(config_dict(family)), progress=False)
    evaluations = store.list_evaluations(outcome.run_id)
    searched = [c for c in store.list_candidates(outcome.run_id) if "reference" not in c.strategy_info]
    assert len(searched) == 18 and outcome.stats.evaluations == 18
    assert all(e.status == EvaluationStatus.COMPLETE for e in evaluations)
    assert len(evaluations) == 18 + 3  # plus base and both sources scored as references
    assert store.get_run(outcome.run_id).status == RunStatus.FINISHED
    # CMA-ES improves on its first generation's best.
    by_number = {c.id: c.number for c in searched}
    ordered = sorted((by_number[e.candidate_id], e.fitness) for e in evaluations if e.candidate_id in by_number)
    assert max(f for _, f in ordered[6:]) > max(f for _, f in ordered[:6])
    assert outcome.stats.busy_fraction > 0.6


def test_a_killed_worker_actor_is_replaced_and_its_candidate_retried(local_ray, family, tmp_path):
    from evolve.loop import SearchLoop
    from evolve.pool import WorkerPool, WorkerSpec
    from evolve.strategies.registry import make_strategy

    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    config = RunConfig.model_validate(config_dict(family, budget={"max_evaluations": 8}))
    run = store.create_run("kill", config.model_dump(mode="json"), seed=0)
    space = runner.build_space(config, seed=0)
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
    assert len(lost) == 1 and lost[0].error.startswith("worker lost")
    retried = [e for e in evaluations if e.candidate_id == lost[0].candidate_id and e.attempt == 2]
    assert retried and retried[0].status == EvaluationStatus.COMPLETE
    assert stats.retries == 1 and stats.evaluations == 8


def _complete(db) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("select count(*) from evaluations where status='COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # the driver has not created the schema yet
        return 0


def test_resume_after_sigkill_of_the_driver_loses_and_repeats_nothing(family, tmp_path):
    db = tmp_path / "runs.db"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(config_dict(family, budget={"max_evaluations": 24},
                                              evaluation={"engine_kwargs": {"delay": 0.3}})))
    env = dict(os.environ, EVOLVE_STORE=f"sqlite:///{db}")
    driver = subprocess.Popen([sys.executable, "-m", "evolve.cli", "run", str(cfg), "--quiet"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not db.exists() or _complete(db) < 10):
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray cluster
    driver.wait()
    before = Store(f"sqlite:///{db}")
    (run,) = before.list_runs()
    finished_before = {e.id: e for e in before.list_evaluations(run.id) if e.status == EvaluationStatus.COMPLETE}
    assert 10 <= len(finished_before) < 24 + 3

    proc = subprocess.run([sys.executable, "-m", "evolve.cli", "resume", run.id, "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = Store(f"sqlite:///{db}")
    evaluations = after.list_evaluations(run.id)
    complete = [e for e in evaluations if e.status == EvaluationStatus.COMPLETE]
    # Nothing finished is lost or changed, nothing is scored twice, the budget is met exactly.
    assert all(finished_before[i] == e for e in complete if (i := e.id) in finished_before)
    assert set(finished_before) <= {e.id for e in complete}
    assert len({e.candidate_id for e in complete}) == len(complete) == 24 + 3
    assert after.get_run(run.id).status == RunStatus.FINISHED


def test_leaderboard_runs_and_export_read_back_from_the_store(local_ray, family, tmp_path, capsys):
    import json

    from evolve.cli import main
    from search_spaces.recipe import Recipe

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run_id = runner.start(Store(url), RunConfig.model_validate(config_dict(family, budget={"max_evaluations": 8})),
                          progress=False).run_id
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
