"""Contract suite of `evolve.store.Store`, run on every backend in `STORE_MODES`
(in-memory SQLite, file SQLite, and a real PostgreSQL server; see conftest.py)."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import evolve.store.engine as engine_module
from evolve.store import (
    CandidateKind,
    EvaluationStateError,
    EvaluationStatus,
    FinishedEvaluationError,
    NotFoundError,
    RunStatus,
    SchemaVersionError,
    Store,
    StoreConfigError,
    StoreError,
    Timings,
    default_store_url,
    head_revision,
    recipe_hash_of,
)
from evolve.store.models import Base

INF, NAN = math.inf, math.nan


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def _recipe(i: int) -> dict:
    return {"merge_method": "dare_ties", "models": [{"model": "a", "weight": i / 10}]}


@pytest.fixture
def run(store):
    return store.create_run("demo", {"budget": 8})


def _scored(store, run_id, i, fitness, *, test=None, metrics=None, samples=None):
    cand = store.add_candidate(run_id, [i * 0.1], _recipe(i))
    eid = store.start_evaluation(cand.id, worker="w0", host="h0")
    scores = {} if test is None else {"test": test}
    return cand, store.finish_evaluation(eid, fitness, metrics, samples, scores=scores)


# -- runs -----------------------------------------------------------------------------------


def test_run_round_trip(store):
    config = {"tasks": ["mgsm"], "space": {"layers": 4, "bounds": [-INF, INF]}, "note": None}
    run = store.create_run("ps-search", config, seed=1234)
    assert run.id.startswith("r-") and len(run.id) == 10
    assert (run.name, run.config, run.seed, run.status) == ("ps-search", config, 1234, RunStatus.RUNNING)
    assert run.created_at is not None and run.heartbeat_at is not None
    assert store.get_run(run.id) == run

    other = store.create_run("other")
    assert isinstance(other.seed, int)  # a seed is always drawn and persisted
    assert [r.id for r in store.list_runs()] == [run.id, other.id]

    updated = store.set_run_status(run.id, "INTERRUPTED")
    assert updated.status is RunStatus.INTERRUPTED
    assert [r.id for r in store.list_runs(RunStatus.INTERRUPTED)] == [run.id]
    assert store.set_run_status(run.id, RunStatus.RUNNING).status is RunStatus.RUNNING

    before = store.get_run(run.id).heartbeat_at
    time.sleep(0.01)
    store.heartbeat_run(run.id)
    assert store.get_run(run.id).heartbeat_at > before

    with pytest.raises(NotFoundError):
        store.get_run("r-missing")
    with pytest.raises(NotFoundError):
        store.heartbeat_run("r-missing")
    with pytest.raises(ValueError):
        store.set_run_status(run.id, "PAUSED")
    with pytest.raises(StoreError, match="already exists"):
        store.create_run("again", run_id=run.id)


def test_records_are_frozen_copies(store, run):
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.name = "x"  # type: ignore[misc]
    run.config["budget"] = 99  # a caller's copy; the store is untouched
    assert store.get_run(run.id).config == {"budget": 8}


# -- candidates -----------------------------------------------------------------------------


class _FakeRecipe:
    """Duck-typed like search_spaces.Recipe: to_dict() and a `hash` property."""

    def __init__(self, data: dict, digest: str) -> None:
        self._data, self.hash = data, digest

    def to_dict(self) -> dict:
        return dict(self._data)


def test_candidate_round_trip(store, run):
    genome = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    first = store.add_candidate(run.id, genome, _recipe(1), generation=0, strategy_info={"sigma": 0.16})
    assert first.id.startswith("c-")
    assert first.recipe_hash == recipe_hash_of(_recipe(1))
    child = store.add_candidate(
        run.id,
        [0.1, float("inf")],
        _FakeRecipe(_recipe(2), "abc123"),
        parents=[first.id],
        generation=3,
        strategy_info={"w": 0.25, "split": 7},
    )
    assert child.genome == (0.1, INF)
    assert child.recipe == _recipe(2) and child.recipe_hash == "abc123"
    assert child.parents == (first.id,)
    assert (child.generation, child.strategy_info) == (3, {"w": 0.25, "split": 7})
    assert first.genome == (0.5, -1.25, 3.0)
    assert (first.number, child.number) == (0, 1)

    assert store.get_candidate(child.id) == child
    assert store.find_candidate_by_hash(run.id, "abc123") == child
    assert store.find_candidate_by_hash(run.id, "nope") is None
    assert store.list_candidates(run.id) == [first, child]
    assert store.list_candidates(run.id, generation=3) == [child]

    with pytest.raises(NotFoundError):
        store.get_candidate("c-missing")
    with pytest.raises(NotFoundError, match="parent"):
        store.add_candidate(run.id, [0.0], _recipe(3), parents=["c-missing"])
    with pytest.raises(NotFoundError):
        store.add_candidate("r-missing", [0.0], _recipe(3))


def test_duplicate_recipe_hash_returns_same_candidate(store, run):
    original = store.add_candidate(run.id, [0.1], _recipe(1), generation=0)
    again = store.add_candidate(run.id, [0.9, 0.9], dict(reversed(list(_recipe(1).items()))), generation=5)
    assert again == original  # same recipe, key order aside: the first record, unchanged
    assert len(store.list_candidates(run.id)) == 1

    other_run = store.create_run("other")
    elsewhere = store.add_candidate(other_run.id, [0.1], _recipe(1))
    assert elsewhere.id != original.id and elsewhere.number == 0


# -- evaluations ----------------------------------------------------------------------------


def test_evaluation_round_trip(store, run):
    cand = store.add_candidate(run.id, [0.2], _recipe(1))
    eid = store.start_evaluation(cand.id, worker="gpu-3", host="node-7")
    started = store.get_evaluation(eid)
    assert (started.status, started.attempt, started.worker, started.host) == (
        EvaluationStatus.RUNNING, 1, "gpu-3", "node-7",
    )
    assert started.fitness is None and started.started_at is not None
    assert store.list_evaluations(run.id, EvaluationStatus.RUNNING) == [started]

    metrics = {
        "validation": {"mgsm": {"acc": 0.52, "acc_stderr": 0.03}, "arc": {"acc": 0.6}},
        "test": {"mgsm": {"acc": 0.49, "acc_stderr": NAN}},
    }
    samples = {
        "validation": {"mgsm": [1, 0, 1, 1], "arc": np.array([0.0, 0.5])},
        "test": {"mgsm": [0.0, 1.0]},
    }
    done = store.finish_evaluation(
        eid, 0.56, metrics, samples, {"merge_seconds": 12.5, "eval_seconds": 30.25}, scores={"test": 0.49}
    )
    assert done.status is EvaluationStatus.COMPLETE
    assert done.fitness == 0.56 and done.scores == {"validation": 0.56, "test": 0.49}
    assert done.metrics["validation"] == metrics["validation"]
    assert math.isnan(done.metrics["test"]["mgsm"]["acc_stderr"])
    assert done.timings == Timings(12.5, 30.25)
    assert done.finished_at >= done.started_at
    assert store.get_evaluation(eid).metrics["validation"] == metrics["validation"]
    assert store.get_evaluation(eid).fitness == 0.56

    assert store.get_samples(eid) == {"arc": [0.0, 0.5], "mgsm": [1.0, 0.0, 1.0, 1.0]}
    assert store.get_samples(eid, "test") == {"mgsm": [0.0, 1.0]}
    assert store.list_evaluations(run.id, candidate_id=cand.id)[0].id == eid
    assert store.list_evaluations(run.id, ["FAILED", "STALE"]) == []

    with pytest.raises(NotFoundError):
        store.get_evaluation(10_000)


def test_per_sample_scores_for_an_archive(store, run):
    """~20 candidates x 300 samples x 3 tasks: written and read back whole."""
    rng = np.random.default_rng(0)
    expected = {}
    for i in range(20):
        per_task = {f"task{t}": rng.integers(0, 2, 300).astype(float).tolist() for t in range(3)}
        _, done = _scored(store, run.id, i, float(i), samples={"validation": per_task})
        expected[done.id] = per_task
    assert {eid: store.get_samples(eid) for eid in expected} == expected


@pytest.mark.parametrize("fitness", [INF, -INF, NAN, 0.0, -1e-300, 1.7976931348623157e308])
def test_fitness_round_trips_exactly(store, run, fitness):
    cand, done = _scored(store, run.id, 1, fitness, test=fitness)
    for record in (done, store.get_evaluation(done.id), store.list_evaluations(run.id)[0]):
        assert _same(record.fitness, fitness)
        assert _same(record.scores["validation"], fitness) and _same(record.scores["test"], fitness)


def test_finished_evaluations_are_immutable(store, run):
    cand, done = _scored(store, run.id, 1, 0.5, metrics={"validation": {"t": {"acc": 0.5}}})
    with pytest.raises(FinishedEvaluationError, match="COMPLETE"):
        store.finish_evaluation(done.id, 0.9)
    with pytest.raises(FinishedEvaluationError):
        store.fail_evaluation(done.id, "late failure")
    with pytest.raises(FinishedEvaluationError):
        store.heartbeat_evaluation(done.id)
    assert store.get_evaluation(done.id) == done

    other = store.add_candidate(run.id, [0.3], _recipe(2))
    eid = store.start_evaluation(other.id, "w1")
    failed = store.fail_evaluation(eid, "CUDA out of memory\n" + "x" * 50_000)
    assert failed.status is EvaluationStatus.FAILED
    assert failed.error.endswith("x") and len(failed.error) < 25_000
    with pytest.raises(FinishedEvaluationError, match="FAILED"):
        store.finish_evaluation(eid, 1.0)
    assert store.get_evaluation(eid) == failed


def test_evaluation_life_cycle_rules(store, run):
    cand = store.add_candidate(run.id, [0.1], _recipe(1))
    eid = store.start_evaluation(cand.id, "w0")
    with pytest.raises(EvaluationStateError, match="already being evaluated"):
        store.start_evaluation(cand.id, "w1")
    store.fail_evaluation(eid, "merge failed")

    retry = store.start_evaluation(cand.id, "w1")
    assert store.get_evaluation(retry).attempt == 2
    store.finish_evaluation(retry, 0.7)
    with pytest.raises(EvaluationStateError, match="already scored"):
        store.start_evaluation(cand.id, "w2")

    with pytest.raises(ValueError, match="merge_seconds"):
        store.finish_evaluation(store.start_evaluation(store.add_candidate(run.id, [0.2], _recipe(2)).id, "w"),
                                1.0, timings=Timings(merge_seconds=-1.0))
    with pytest.raises(TypeError, match="metrics"):
        store.finish_evaluation(retry, 1.0, metrics={"validation": 0.5})


def test_stale_evaluations_are_detected_on_the_database_clock(store, run):
    silent = store.add_candidate(run.id, [0.1], _recipe(1))
    alive = store.add_candidate(run.id, [0.2], _recipe(2))
    silent_eid = store.start_evaluation(silent.id, "w-dead")
    alive_eid = store.start_evaluation(alive.id, "w-alive")
    assert store.fail_stale_evaluations(run.id, grace_seconds=1.0) == []
    time.sleep(1.5)
    store.heartbeat_evaluation(alive_eid)  # the live worker beats; the dead one does not
    assert store.fail_stale_evaluations(run.id, grace_seconds=1.0) == [silent.id]
    assert store.fail_stale_evaluations(run.id, grace_seconds=1.0) == []  # already moved

    stale = store.get_evaluation(silent_eid)
    assert stale.status is EvaluationStatus.STALE and "heartbeat" in stale.error
    assert [e.candidate_id for e in store.list_evaluations(run.id, "RUNNING")] == [alive.id]
    # The late worker learns it from its next heartbeat, and cannot record a result.
    with pytest.raises(FinishedEvaluationError, match="STALE"):
        store.heartbeat_evaluation(silent_eid)
    with pytest.raises(FinishedEvaluationError):
        store.finish_evaluation(silent_eid, 1.0)
    # The candidate can be scored again.
    assert store.get_evaluation(store.start_evaluation(silent.id, "w-new")).attempt == 2

    with pytest.raises(ValueError):
        store.fail_stale_evaluations(run.id, 0)


def test_seconds_since_heartbeat_is_on_the_database_clock(store, run):
    assert 0 <= store.seconds_since_heartbeat(run.id) < 60
    time.sleep(0.3)
    before = store.seconds_since_heartbeat(run.id)
    store.heartbeat_run(run.id)
    assert store.seconds_since_heartbeat(run.id) < before
    with pytest.raises(NotFoundError):
        store.seconds_since_heartbeat("r-missing")


def test_candidate_kinds_and_run_errors(store, run):
    ref = store.add_candidate(run.id, [], _recipe(1), kind="reference", label="base")
    searched = store.add_candidate(run.id, [0.5], _recipe(2))
    assert (ref.kind, ref.label) == (CandidateKind.REFERENCE, "base")
    assert (searched.kind, searched.label) == (CandidateKind.SEARCH, None)
    assert [c.id for c in store.list_candidates(run.id, kind="search")] == [searched.id]
    assert [c.id for c in store.list_candidates(run.id, kind=CandidateKind.REFERENCE)] == [ref.id]
    failed = store.set_run_status(run.id, RunStatus.FAILED, error="the first 5 evaluations all failed")
    assert failed.error == "the first 5 evaluations all failed"
    assert store.set_run_status(run.id, RunStatus.RUNNING).error is None  # cleared by the next status
    failed = store.fail_evaluation(store.start_evaluation(searched.id, "w"), "worker_lost: gone", kind="worker_lost")
    assert (failed.error, failed.error_kind) == ("worker_lost: gone", "worker_lost")


# -- leaderboard and snapshots -------------------------------------------------------------


def test_leaderboard_orders_by_split(store, run):
    def metrics(v, t):
        return {"validation": {"mgsm": {"acc": v}}, "test": {"mgsm": {"acc": t}}}

    a, _ = _scored(store, run.id, 1, 0.9, test=0.5, metrics=metrics(0.9, 0.5))
    b, _ = _scored(store, run.id, 2, 0.7, test=0.2, metrics=metrics(0.7, 0.2))
    c, _ = _scored(store, run.id, 3, 0.3, test=0.8, metrics=metrics(0.3, 0.8))
    n, _ = _scored(store, run.id, 4, NAN)  # no test score: absent from the test board
    i, _ = _scored(store, run.id, 5, INF)
    failed = store.add_candidate(run.id, [9.0], _recipe(9))
    store.fail_evaluation(store.start_evaluation(failed.id, "w"), "boom")
    store.start_evaluation(store.add_candidate(run.id, [8.0], _recipe(8)).id, "w")  # RUNNING

    validation = store.leaderboard(run.id)
    assert [e.candidate.id for e in validation] == [i.id, a.id, b.id, c.id, n.id]
    assert [e.rank for e in validation] == [1, 2, 3, 4, 5]
    assert validation[1].metrics == {"mgsm": {"acc": 0.9}} and validation[1].score == 0.9
    assert math.isnan(validation[-1].score)

    test = store.leaderboard(run.id, split="test")
    assert [e.candidate.id for e in test] == [c.id, a.id, b.id]
    assert test[0].metrics == {"mgsm": {"acc": 0.8}} and test[0].split == "test"
    assert test[0].evaluation.fitness == 0.3

    assert [e.candidate.id for e in store.leaderboard(run.id, "test", limit=2)] == [c.id, a.id]
    assert store.leaderboard(store.create_run("empty").id) == []


def test_snapshots_are_ordered(store, run):
    assert store.list_snapshots(run.id) == []
    other = store.create_run("other")
    for step in range(3):
        store.save_snapshot(run.id, {"step": step, "mean": [0.5] * 3, "sigma": 1 / 6})
    store.save_snapshot(other.id, {"step": 100})
    assert [s.sequence for s in store.list_snapshots(run.id)] == [1, 2, 3]
    assert [s.state["step"] for s in store.list_snapshots(run.id)] == [0, 1, 2]
    assert store.list_snapshots(run.id)[-1].state["sigma"] == 1 / 6
    assert [s.sequence for s in store.list_snapshots(other.id)] == [1]
    with pytest.raises(NotFoundError):
        store.save_snapshot("r-missing", {})
    with pytest.raises(TypeError, match="state"):
        store.save_snapshot(run.id, {"optimizer": object()})


# -- concurrency ----------------------------------------------------------------------------

N_PER_WORKER = 12
N_SHARED = 4


def _hammer(store: Store, run_id: str, worker: int, barrier) -> None:
    """One writer: its own recipes, plus recipes that every writer proposes."""
    barrier.wait(timeout=60)
    recipes = [_recipe(1000 * (worker + 1) + i) for i in range(N_PER_WORKER)]
    recipes += [_recipe(-i - 1) for i in range(N_SHARED)]
    for i, recipe in enumerate(recipes):
        cand = store.add_candidate(run_id, [float(i)], recipe, strategy_info={"worker": worker})
        try:
            eid = store.start_evaluation(cand.id, f"w{worker}")
        except EvaluationStateError:
            continue  # another writer is (or was) scoring this shared recipe
        store.heartbeat_evaluation(eid)
        store.finish_evaluation(eid, float(i), samples={"validation": {"t": [1.0, 0.0]}})
        store.save_snapshot(run_id, {"worker": worker, "i": i})
        store.heartbeat_run(run_id)


def _hammer_process(url: str, run_id: str, worker: int, barrier) -> None:
    barrier.wait(timeout=60)
    with Store(url) as store:  # all writers create the fresh schema at the same moment
        if worker == 0:
            store.create_run("shared", run_id=run_id)
        barrier.wait(timeout=60)
        _hammer(store, run_id, worker, barrier)


def _check_no_lost_rows(store: Store, run_id: str, writers: int) -> None:
    candidates = store.list_candidates(run_id)
    assert len(candidates) == writers * N_PER_WORKER + N_SHARED
    assert sorted(c.number for c in candidates) == list(range(len(candidates)))
    assert len({c.recipe_hash for c in candidates}) == len(candidates)
    complete = store.list_evaluations(run_id, EvaluationStatus.COMPLETE)
    assert sorted(e.candidate_id for e in complete) == sorted(c.id for c in candidates)
    assert store.list_evaluations(run_id, ["RUNNING", "FAILED", "STALE"]) == []
    assert all(store.get_samples(e.id) == {"t": [1.0, 0.0]} for e in complete)
    assert [s.sequence for s in store.list_snapshots(run_id)] == list(range(1, len(candidates) + 1))


def test_concurrent_threads_share_one_store(store, run):
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def target(worker: int) -> None:
        try:
            _hammer(store, run.id, worker, barrier)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    _check_no_lost_rows(store, run.id, writers=3)


@pytest.mark.parametrize("store_url", ["sqlite-file", "postgresql"], indirect=True)
def test_concurrent_processes_lose_no_rows(store_url):
    """Two processes (spawned, like Ray workers) open one fresh database at the same time,
    racing to create its schema, then write to the same run concurrently."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    processes = [
        context.Process(target=_hammer_process, args=(store_url, "r-shared", w, barrier))
        for w in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    with Store(store_url) as store:
        assert store.schema_revision() == head_revision()
        _check_no_lost_rows(store, "r-shared", writers=2)


# -- schema, URLs, errors -------------------------------------------------------------------


def test_models_match_the_migrated_schema(store):
    with store._engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diffs == []
    assert store.schema_revision() == head_revision() == "0003_fidelity"


def _set_revision(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


@pytest.mark.parametrize("store_url", ["sqlite-file", "postgresql"], indirect=True)
def test_schema_mismatch_errors_name_the_fix(store_url, monkeypatch):
    with Store(store_url) as store:
        store.create_run("kept")

    # An older schema (this code's head is newer): the error names the upgrade command.
    monkeypatch.setattr(engine_module, "head_revision", lambda: "0002_future")
    with pytest.raises(SchemaVersionError) as old:
        Store(store_url)
    message = str(old.value)
    assert f"{head_revision()} is older than 0002_future" in message
    assert "python -m evolve.store upgrade" in message and engine_module.UPGRADE_COMMAND in message
    assert isinstance(old.value, ValueError)  # a UserError: the CLI prints one line
    monkeypatch.undo()

    # A schema written by a newer version of the code.
    _set_revision(store_url, "9999_from_the_future")
    with pytest.raises(SchemaVersionError, match="newer version"):
        Store(store_url)
    with pytest.raises(SchemaVersionError, match="newer version"):
        Store(store_url, upgrade=True)
    _set_revision(store_url, head_revision())
    with Store(store_url) as store:
        assert [r.name for r in store.list_runs()] == ["kept"]


def test_migration_0002_moves_references_out_of_strategy_info(tmp_path):
    from alembic import command

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        command.upgrade(engine_module.alembic_config(connection), "0001_initial")
        connection.execute(sa.text(
            "INSERT INTO runs (id, name, config, status, seed, created_at, updated_at) "
            "VALUES ('r-old', 'old', '{}', 'FINISHED', 0, '2026-11-01', '2026-11-01')"))
        for cid, number, info in (("c-ref", 0, '{"reference": "base"}'), ("c-s", 1, '{"strategy_id": "0"}')):
            connection.execute(sa.text(
                "INSERT INTO candidates (id, run_id, number, generation, genome, recipe, recipe_hash, parents, "
                "strategy_info, created_at) VALUES (:id, 'r-old', :n, 0, '[]', '{}', :id, '[]', :info, '2026-11-01')"),
                {"id": cid, "n": number, "info": info})
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="older than"):
        Store(url)
    with Store(url, upgrade=True) as store:
        ref, searched = store.list_candidates("r-old")
        assert (ref.kind, ref.label, ref.strategy_info) == (CandidateKind.REFERENCE, "base", {})
        assert (searched.kind, searched.label, searched.strategy_info) == (CandidateKind.SEARCH, None,
                                                                          {"strategy_id": "0"})
        assert store.get_run("r-old").error is None


def test_tables_without_alembic_version_are_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'foreign.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE runs (id TEXT)"))
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="alembic_version"):
        Store(url)


def test_upgrade_command_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli' / 'evolve.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "evolve.store", "upgrade", url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert head_revision() in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "evolve.store", "current", "mysql://x/y"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_driver_errors_are_wrapped(store, run):
    # Drop a table behind the store's back: the driver error surfaces as a StoreError.
    with store._engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE strategy_snapshots"))
    with pytest.raises(StoreError) as caught:
        store.save_snapshot(run.id, {"a": 1})
    assert isinstance(caught.value.__cause__, sa.exc.SQLAlchemyError)
    assert store.get_run(run.id) == run  # the store still works after the rollback


def test_urls(tmp_path, monkeypatch):
    monkeypatch.delenv("EVOLVE_STORE", raising=False)
    assert default_store_url() == "sqlite:///runs/evolve.db"
    monkeypatch.setenv("EVOLVE_STORE", "postgresql+psycopg://u:secret@db/evolve")
    assert default_store_url() == "postgresql+psycopg://u:secret@db/evolve"

    with pytest.raises(StoreConfigError, match="not a database URL"):
        Store("runs/evolve.db")
    with pytest.raises(StoreConfigError, match="unsupported database"):
        Store("mysql://u:secret@db/evolve")
    with pytest.raises(StoreConfigError) as caught:
        Store("mysql://u:secret@db/evolve")
    assert "secret" not in str(caught.value)

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EVOLVE_STORE")
    with Store() as store:  # the default: a file under ./runs, parent created
        assert store.url == "sqlite:///runs/evolve.db"
    assert (tmp_path / "runs" / "evolve.db").exists()


def test_store_does_not_import_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import evolve.store\n"
        "s = evolve.store.Store('sqlite://'); s.create_run('x'); s.close()\n"
        "assert 'torch' not in {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
