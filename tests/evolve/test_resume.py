"""Resume, on the path production uses: `SearchLoop.replay` over the store, after a real kill -9.

- every kind of strategy is rebuilt exactly from what the loop recorded (asks and tells in
  the order they happened, out of order across two workers);
- a driver killed with SIGKILL is resumed with nothing lost or repeated, with the analytic
  scorer and with the real `CandidateScorer` (HF backend, lm-eval) on the embedded zoo;
- a run whose driver is alive cannot be resumed by a second driver, except with --force.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from evolve.config import RunConfig
from evolve.loop import SearchLoop
from evolve.pool import WorkerPool
from evolve.preflight import check_run
from evolve.runner import reference_recipes, worker_spec
from evolve.store import Store
from evolve.store.records import EvaluationStatus, RunStatus
from evolve.strategies.registry import make_strategy
from tests.fixtures.run_configs import config_dict

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name, settings", [("cma", {"popsize": 4}), ("random", {}), ("m2n2", {"archive_size": 4}),
                                            ("pareto", {"population": 4}), ("TwoPointsDE", {})])
def test_replay_rebuilds_the_strategy_exactly(local_ray, family, tmp_path, name, settings):
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    data = config_dict(family, strategy={"name": name, "seed": 7, "settings": settings},
                       budget={"max_evaluations": 12})
    checked = check_run(RunConfig.model_validate(data))
    run = store.create_run("replay", data, seed=7)

    def strategy():
        return make_strategy(name, checked.space.dimension, 7, num_workers=2, **settings)

    original = strategy()
    pool = WorkerPool(2, worker_spec(checked))
    SearchLoop(store, run.id, checked.space, original, pool, 12, None, progress=False,
               references=reference_recipes(checked.space)).run()
    pool.shutdown()

    replayed = strategy()
    pending = SearchLoop(store, run.id, checked.space, replayed, None, 12, None, progress=False).replay()
    assert pending == []
    assert replayed.state() == original.state()
    assert [c.genome for c in replayed.ask(3)] == [c.genome for c in original.ask(3)]


def _complete(db) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("select count(*) from evaluations where status='COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # the driver has not created the schema yet
        return 0


def kill_and_resume(config: dict, tmp_path, *, kill_after: int, total: int) -> None:
    """Start the real CLI, SIGKILL it (and its local Ray) mid-run, resume; check nothing is lost."""
    db = tmp_path / "runs.db"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = dict(os.environ, EVOLVE_STORE=f"sqlite:///{db}")
    driver = subprocess.Popen([sys.executable, "-m", "evolve.cli", "run", str(cfg), "--quiet"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and (not db.exists() or _complete(db) < kill_after) and driver.poll() is None:
        time.sleep(0.2)
    assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its local Ray cluster
    driver.wait()
    before = Store(f"sqlite:///{db}")
    (run,) = before.list_runs()
    finished_before = {e.id: e for e in before.list_evaluations(run.id) if e.status == EvaluationStatus.COMPLETE}
    assert kill_after <= len(finished_before) < total

    # Its heartbeat is fresh: a second driver must not take the run over by accident.
    refused = subprocess.run([sys.executable, "-m", "evolve.cli", "resume", run.id, "--quiet"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "is still driven" in refused.stderr and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    proc = subprocess.run([sys.executable, "-m", "evolve.cli", "resume", run.id, "--force", "--quiet"], env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = Store(f"sqlite:///{db}")
    evaluations = after.list_evaluations(run.id)
    complete = [e for e in evaluations if e.status == EvaluationStatus.COMPLETE]
    # Nothing finished is lost or changed, nothing is scored twice, the budget is met exactly.
    assert all(finished_before[i] == e for e in complete if (i := e.id) in finished_before)
    assert set(finished_before) <= {e.id for e in complete}
    assert len({e.candidate_id for e in complete}) == len(complete) == total
    assert after.get_run(run.id).status == RunStatus.FINISHED


def test_resume_after_sigkill_of_the_driver_loses_and_repeats_nothing(family, tmp_path):
    config = config_dict(family, budget={"max_evaluations": 24}, evaluation={"engine_kwargs": {"delay": 0.3}})
    kill_and_resume(config, tmp_path, kill_after=10, total=24 + 3)


def test_resume_with_the_real_scorer_on_the_zoo(tmp_path):
    """kill -9 mid-run with HF + lm-eval workers on the embedded zoo (built once, cached)."""
    config = {
        "name": "zoo-resume",
        "models": {"base": "zoo:base", "sources": ["zoo:arith", "zoo:cipher"]},
        "space": {"merge_method": "task_arithmetic", "search": {"weight": [0.0, 1.0]}},
        "strategy": {"name": "cma", "seed": 1, "settings": {"popsize": 4}},
        "budget": {"max_evaluations": 10},
        "tasks": [{"name": "zoo_target", "metric": "exact_match", "limit": 16}],
        "evaluation": {"backend": "hf", "batch_size": 16, "report_test": False},
        "resources": {"workers": 1},
    }
    kill_and_resume(config, tmp_path, kill_after=3 + 3, total=10 + 3)  # three references first


def test_resume_refuses_a_live_driver_and_names_the_grace_period(family, tmp_path, capsys):
    from evolve.cli import main
    from evolve.heartbeat import GRACE_SECONDS

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    run = Store(url).create_run("live", config_dict(family))  # RUNNING, heartbeat now
    assert main(["resume", run.id, "--store", url, "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"run {run.id} is still driven" in line and f"after {GRACE_SECONDS:.0f} s" in line and "--force" in line


def test_resume_refuses_a_run_the_code_no_longer_reproduces_before_ray_starts(local_ray, family, tmp_path,
                                                                              capsys, monkeypatch):
    """A stored run whose asks the strategy no longer makes (here: its seed changed in the store,
    as a change of code or of the config would) is refused in one line, exit 2, by the replay,
    before any worker starts (`connect` fails the test if reached)."""
    from evolve import runner
    from evolve.cli import main

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    config = config_dict(family, budget={"max_evaluations": 8})
    outcome = runner.start(Store(url), check_run(RunConfig.model_validate(config)), progress=False)
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.execute("UPDATE runs SET status = ?, config = json_set(config, '$.strategy.seed', 99) WHERE id = ?",
                   (RunStatus.INTERRUPTED.value, outcome.run_id))

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the replay refused the run")

    monkeypatch.setattr(runner, "connect", no_ray)
    capsys.readouterr()
    assert main(["resume", outcome.run_id, "--store", url, "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"resume of run {outcome.run_id}: the strategy no longer reproduces candidate" in line
    assert "was the code or the config changed" in line
