"""Multi-fidelity runs (``fidelity:``): candidates scored low first, the promising ones in full.

Through the real runner, Ray and a SQLite store, with the analytic backend at two fidelities
(`workers.analytic_fidelity`), plus the pre-flight of a real lm-eval run on synthetic tasks.
"""

from __future__ import annotations

import json
import math
import os
from functools import partial
from pathlib import Path

import pytest
import yaml

from evolve import runner
from evolve.config import RunConfig
from evolve.fidelity import promotes
from evolve.preflight import check_run
from evolve.store import Fidelity, Store
from evolve.store.records import EvaluationStatus, RunStatus
from search_spaces.recipe import Recipe
from tests.fixtures.run_configs import config_dict
from workers.analytic_fidelity import AnalyticFidelityScorer
from workers.outcome import EvalOutcome, EvalRequest, OutcomeStatus

pytestmark = pytest.mark.slow

FIDELITY = {"low_limit": 5, "promote_fraction": 0.25}


def fidelity_config(family, **overrides) -> dict:
    return config_dict(family, fidelity=FIDELITY, **{"budget": {"max_evaluations": 24}, **overrides})


@pytest.fixture(scope="module")
def finished(local_ray, family, tmp_path_factory):
    """One multi-fidelity run, shared by the read-only checks below."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fidelity') / 'runs.db'}"
    outcome = runner.start(Store(url), check_run(RunConfig.model_validate(fidelity_config(family))), progress=False)
    return url, outcome


def test_promoted_candidates_have_a_low_and_a_full_row_the_others_only_low(finished):
    url, outcome = finished
    store = Store(url)
    run_id = outcome.run_id
    rows = store.list_evaluations(run_id, fidelity=None)
    assert all(e.status == EvaluationStatus.COMPLETE for e in rows)
    searched = {c.id for c in store.list_candidates(run_id, kind="search")}
    references = {c.id for c in store.list_candidates(run_id, kind="reference")}
    at = {cid: sorted(e.fidelity for e in rows if e.candidate_id == cid) for cid in searched | references}
    assert all(at[c] == [Fidelity.FULL] for c in references)  # parents are scored in full only
    assert all(at[c] in ([Fidelity.LOW], [Fidelity.FULL, Fidelity.LOW]) for c in searched)
    promoted = {c for c in searched if Fidelity.FULL in at[c]}
    # How many are promoted depends on the order results finish in (a run that improves
    # promotes more); the exact rule is checked below. Some must be left at the low rung.
    assert 0 < len(promoted) == outcome.stats.promoted < len(searched)
    # Low rows come first; the cost of each row is what it scored (5 questions low, 20 full).
    for e in rows:
        assert e.samples_scored == (5 if e.fidelity == Fidelity.LOW else 20)
        if e.fidelity == Fidelity.FULL and e.candidate_id in searched:
            low = next(x for x in rows if x.candidate_id == e.candidate_id and x.fidelity == Fidelity.LOW)
            assert low.id < e.id and low.finished_at <= e.started_at
    assert outcome.stats.samples_scored == sum(e.samples_scored for e in rows)
    assert outcome.stats.best_fitness == max(e.fitness for e in rows if e.fidelity == Fidelity.FULL
                                             and e.candidate_id in searched)


def test_the_strategy_is_told_once_per_candidate_at_its_best_fidelity(finished):
    url, outcome = finished
    store = Store(url)
    tells = [s.state for s in store.list_snapshots(outcome.run_id)]
    assert len(tells) == 24 and len({t["strategy_id"] for t in tells}) == 24
    rows = store.list_evaluations(outcome.run_id, fidelity=None)
    full = {e.candidate_id for e in rows if e.fidelity == Fidelity.FULL}
    assert all(t["fidelity"] == ("full" if t["candidate"] in full else "low") for t in tells)


def test_promotion_follows_the_top_fraction_of_the_low_results_so_far(finished):
    """Replayed in finish order (the order the loop decided in, one decision at a time): what
    a low result had to beat is the best full result so far, the source models' included,
    plus the average optimism of the low results promoted before it."""
    url, outcome = finished
    store = Store(url)
    searched = {c.id for c in store.list_candidates(outcome.run_id, kind="search")}
    rows = store.list_evaluations(outcome.run_id, fidelity=None)
    full = {e.candidate_id for e in rows if e.fidelity == Fidelity.FULL}
    seen: dict[str, float] = {}  # candidate -> its low result
    gaps: list[float] = []  # low - full of each promoted candidate, once its full result is in
    best_full = -math.inf
    for e in sorted(rows, key=lambda e: (e.finished_at, e.id)):
        if e.fidelity == Fidelity.FULL:
            best_full = max(best_full, e.fitness)
            if e.candidate_id in seen:
                gaps.append(seen[e.candidate_id] - e.fitness)
            continue
        assert e.candidate_id in searched
        optimism = max(0.0, sum(gaps) / len(gaps)) if gaps else 0.0
        promoted = promotes(e.fitness, list(seen.values()), best_full, FIDELITY["promote_fraction"], optimism)
        seen[e.candidate_id] = e.fitness
        assert (e.candidate_id in full) == promoted
    assert gaps and best_full > -math.inf


def test_the_promotion_rule_by_hand():
    """Top fraction of the low results so far, a tie going to the earlier one, or above the
    best full result so far by more than the promoted lows' optimism."""
    assert promotes(0.5, [], -math.inf, 0.25)  # the first is in its own top quarter
    # 4 earlier lows, 5 in all: ceil(0.25 * 5) = 2, so one result ahead (or tied) is allowed
    assert promotes(0.7, [0.9, 0.1, 0.2, 0.3], best_full=0.95, fraction=0.25)
    assert not promotes(0.7, [0.9, 0.7, 0.2, 0.3], best_full=0.95, fraction=0.25)  # the tie counts ahead
    assert not promotes(0.5, [0.9, 0.8, 0.2, 0.3], best_full=0.95, fraction=0.25)
    # saturated: every low tied at the top, the best full below it; only the second clause promotes
    assert promotes(1.0, [1.0, 1.0, 1.0, 1.0], best_full=0.98, fraction=0.25)
    assert not promotes(1.0, [1.0, 1.0, 1.0, 1.0], best_full=1.0, fraction=0.25)
    # promoted lows came out 0.15 above their full results: a low must clear the best by as much
    assert not promotes(0.875, [0.9, 0.9, 0.9, 0.9], best_full=0.8, fraction=0.25, optimism=0.15)
    assert promotes(1.0, [0.9, 0.9, 0.9, 0.9], best_full=0.8, fraction=0.25, optimism=0.15)
    assert promotes(0.875, [0.9, 0.9, 0.9, 0.9], best_full=0.8, fraction=0.25, optimism=0.05)


def test_leaderboards_runs_and_export_rank_full_fidelity_results_only(finished, capsys):
    from evolve.cli import main
    from evolve.export import _pick

    url, outcome = finished
    store = Store(url)
    full = {e.candidate_id for e in store.list_evaluations(outcome.run_id)}  # the default: full rows only
    low_only = {e.candidate_id for e in store.list_evaluations(outcome.run_id, fidelity="low")} - full
    assert low_only
    capsys.readouterr()
    assert main(["leaderboard", outcome.run_id, "--format", "json", "--store", url]) == 0
    board = json.loads(capsys.readouterr().out)
    ranked = [c["id"] for c in board["candidates"]]
    assert ranked and set(ranked) <= full and not set(ranked) & low_only
    assert len(ranked) == outcome.stats.promoted  # parents rank apart, in "parents"
    lows = sorted(store.list_evaluations(outcome.run_id, fidelity="low"), key=lambda e: (e.finished_at, e.id))
    best_low = max(lows, key=lambda e: e.fitness)  # the first to reach the best low score
    assert best_low.candidate_id in full  # the best low result so far is always promoted
    assert main(["runs", "--format", "json", "--store", url]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["best_fitness"] == board["candidates"][0]["fitness"] == outcome.stats.best_fitness
    assert _pick(store, outcome.run_id, None) == ranked[0]
    assert main(["show", low_only.pop(), "--format", "json", "--store", url]) == 0


def test_status_and_runs_count_every_told_candidate_and_rank_full_results(finished):
    """The budget counts candidates told (low-only ones included); the best is a full result."""
    from evolve.report import run_row, status_data

    url, outcome = finished
    store = Store(url)
    told = {e.candidate_id for e in store.list_evaluations(outcome.run_id, fidelity=None)}
    told &= {c.id for c in store.list_candidates(outcome.run_id, kind="search")}
    status = status_data(store, outcome.run_id)
    assert status["evaluations_done"] == len(told) == 24 > outcome.stats.promoted
    assert status["best"]["fitness"] == outcome.stats.best_fitness
    assert run_row(store, store.get_run(outcome.run_id))["budget_used"] == 24


def test_replay_rebuilds_the_strategy_exactly(local_ray, family, tmp_path):
    from evolve.loop import SearchLoop
    from evolve.pool import WorkerPool
    from evolve.preflight import build_strategy

    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    checked = check_run(RunConfig.model_validate(fidelity_config(family, budget={"max_evaluations": 16})))
    config = checked.config
    run = store.create_run("replay", config.model_dump(mode="json"), seed=3)
    original = build_strategy(config, checked.space)
    pool = WorkerPool(2, runner.worker_spec(checked))
    stats = SearchLoop(store, run.id, checked.space, original, pool, 16, None, progress=False,
                       references=runner.reference_recipes(checked.space), fidelity=config.fidelity).run()
    pool.shutdown()
    assert stats.promoted > 0
    replayed = build_strategy(config, checked.space)
    loop = SearchLoop(store, run.id, checked.space, replayed, None, 16, None, progress=False, fidelity=config.fidelity)
    assert loop.replay() == []
    assert replayed.state() == original.state()
    assert [c.genome for c in replayed.ask(3)] == [c.genome for c in original.ask(3)]
    assert (loop.stats.promoted, loop.stats.best_fitness, loop.stats.samples_scored) == (
        stats.promoted, stats.best_fitness, stats.samples_scored)


def _complete(db) -> int:
    import sqlite3

    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("select count(*) from evaluations where status='COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # the driver has not created the schema yet
        return 0


def test_a_run_killed_mid_way_resumes_and_loses_or_repeats_nothing(family, tmp_path):
    """kill -9 of the real CLI (and its Ray) mid-run, then resume: every finished row is kept,
    nothing is scored twice at one fidelity, every candidate is told once, and the store replays."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from evolve.loop import SearchLoop
    from evolve.preflight import build_strategy

    config = fidelity_config(family, evaluation={"engine_kwargs": {"delay": 0.3}})
    db, path = tmp_path / "runs.db", tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, EVOLVE_STORE=f"sqlite:///{db}")
    driver = subprocess.Popen([sys.executable, "-m", "evolve.cli", "run", str(path), "--quiet"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and _complete(db) < 12 and driver.poll() is None:
        time.sleep(0.2)
    assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = Store(f"sqlite:///{db}")
    (run,) = before.list_runs()
    finished_before = {e.id: e for e in before.list_evaluations(run.id, fidelity=None)
                       if e.status == EvaluationStatus.COMPLETE}
    assert len(finished_before) >= 12 and len(before.list_snapshots(run.id)) < 24

    proc = subprocess.run([sys.executable, "-m", "evolve.cli", "resume", run.id, "--force", "--quiet"], env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = Store(f"sqlite:///{db}")
    assert after.get_run(run.id).status == RunStatus.FINISHED
    complete = [e for e in after.list_evaluations(run.id, fidelity=None) if e.status == EvaluationStatus.COMPLETE]
    assert all(finished_before[e.id] == e for e in complete if e.id in finished_before)
    assert set(finished_before) <= {e.id for e in complete}
    assert len({(e.candidate_id, e.fidelity) for e in complete}) == len(complete)
    tells = [s.state for s in after.list_snapshots(run.id)]
    assert len(tells) == len({t["strategy_id"] for t in tells}) == 24
    searched = {c.id for c in after.list_candidates(run.id, kind="search")}
    assert searched <= {t["candidate"] for t in tells}  # no candidate left untold (a promotion lost)
    checked = check_run(RunConfig.model_validate(config))
    replayed = build_strategy(checked.config, checked.space)
    assert SearchLoop(after, run.id, checked.space, replayed, None, 24, None, progress=False,
                      fidelity=checked.config.fidelity).replay() == []
    assert replayed.num_told == 24


# -- the sample budget ------------------------------------------------------------------------------
REFERENCES = 3 * 20  # base and both sources, scored once in full: 20 questions each
LOW, FULL = FIDELITY["low_limit"], 20


def samples_config(family, max_samples: int, **overrides) -> dict:
    """A multi-fidelity run whose only limit is ``max_samples``."""
    return config_dict(family, fidelity=FIDELITY, budget={"max_evaluations": None, "max_samples": max_samples},
                       **overrides)


class Killed(Exception):
    """The driver dies (as with kill -9) right after the strategy is told, before the tell is saved."""


class DyingStore(Store):
    """A store whose driver dies at the first tell ``dies_at(store, run_id, tell)`` picks; that
    tell, lost with it, is kept as ``lost_tell``."""

    def __init__(self, url: str, dies_at) -> None:
        super().__init__(url)
        self.dies_at = dies_at
        self.lost_tell: dict | None = None

    def save_snapshot(self, run_id, state):
        if self.lost_tell is None and self.dies_at(self, run_id, state):
            self.lost_tell = dict(state)
            raise Killed
        return super().save_snapshot(run_id, state)


def test_a_sample_budget_stops_within_it_and_counts_every_evaluation(local_ray, family, tmp_path, monkeypatch):
    """References, low and full rows all count; asks and promotions stop when the next one would
    not fit, so the run ends within the budget, less than one low evaluation short of it."""
    import io

    from rich.console import Console

    from evolve import report
    from evolve.report import print_runs, run_row, status_data, status_renderable

    budget = REFERENCES + 200
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    outcome = runner.start(store, check_run(RunConfig.model_validate(samples_config(family, budget))), progress=False)
    rows = store.list_evaluations(outcome.run_id, fidelity=None)
    assert all(e.status == EvaluationStatus.COMPLETE for e in rows)
    assert all(e.samples_scored == (LOW if e.fidelity == Fidelity.LOW else FULL) for e in rows)
    used = sum(e.samples_scored for e in rows)
    assert budget - LOW < used <= budget
    assert outcome.stats.samples_scored == used and outcome.stats.promoted > 0
    searched = {c.id for c in store.list_candidates(outcome.run_id, kind="search")}
    tells = [s.state for s in store.list_snapshots(outcome.run_id)]
    assert sorted(t["candidate"] for t in tells) == sorted(searched)  # each told once, none lost
    status, row = status_data(store, outcome.run_id), run_row(store, store.get_run(outcome.run_id))
    assert (status["samples_used"], status["samples_budget"]) == (row["samples_used"], row["samples_budget"]) == (
        used, budget)
    assert f"{used}/{budget} samples" in status_renderable(status).title
    monkeypatch.setattr(report, "console", Console(file=io.StringIO(), width=200))
    print_runs(store)
    assert f"{used}/{budget} samples" in report.console.file.getvalue()


def test_a_run_on_a_sample_budget_resumes_counting_the_samples_already_scored(local_ray, family, tmp_path):
    """The driver dies mid-run with evaluations in flight; resume counts what the store holds,
    re-dispatches what was in flight (its stale rows scored nothing), and still ends within budget."""
    from evolve.loop import SearchLoop
    from evolve.preflight import build_strategy

    budget = REFERENCES + 300
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    checked = check_run(RunConfig.model_validate(samples_config(family, budget)))
    dying = DyingStore(url, lambda store, run_id, state: state["told"] == 8)
    with pytest.raises(Killed):
        runner.start(dying, checked, progress=False)
    store = Store(url)
    (run,) = store.list_runs()
    before = store.list_evaluations(run.id, fidelity=None)
    assert any(e.status == EvaluationStatus.RUNNING for e in before)  # in flight when it died
    assert REFERENCES < sum(e.samples_scored or 0 for e in before) < budget - FULL  # what resume must count
    outcome = runner.resume(store, run.id, force=True, progress=False)
    rows = store.list_evaluations(run.id, fidelity=None)
    assert any(e.status == EvaluationStatus.STALE for e in rows) and len(rows) > len(before)
    complete = [e for e in rows if e.status == EvaluationStatus.COMPLETE]
    assert len({(e.candidate_id, e.fidelity) for e in complete}) == len(complete)  # nothing scored twice
    used = sum(e.samples_scored or 0 for e in rows)
    assert budget - LOW < used <= budget and outcome.stats.samples_scored == used
    # The lost tell is told again as the dead driver told it: a low result is not promoted anew.
    (again,) = [s.state for s in store.list_snapshots(run.id) if s.state["candidate"] == dying.lost_tell["candidate"]]
    assert again["fidelity"] == dying.lost_tell["fidelity"]
    assert {e.fidelity for e in rows if e.candidate_id == again["candidate"]} <= {Fidelity(again["fidelity"]), Fidelity.LOW}
    replayed = SearchLoop(store, run.id, checked.space, build_strategy(checked.config, checked.space), None, None,
                          None, progress=False, fidelity=checked.config.fidelity)
    assert replayed.replay() == [] and replayed.stats.samples_scored == used


# -- a full evaluation that fails after a successful low one -----------------------------------------
class FullFails:
    """The analytic scorer at two fidelities, where the first merge scored in full fails (a
    failed outcome), the second kills its worker on every attempt (lost), and the rest succeed.
    Source models (linear recipes) always succeed. A ledger file keeps the order across workers."""

    def __init__(self, low_limit: int, ledger: str) -> None:
        self.scorer = AnalyticFidelityScorer(low_limit)
        self.ledger = Path(ledger)

    def evaluate(self, request: Recipe | EvalRequest) -> EvalOutcome:
        request = EvalRequest.of(request)
        if request.fidelity == Fidelity.FULL and request.recipe.merge_method != "linear":
            seen = self.ledger.read_text().split() if self.ledger.exists() else []
            if request.recipe.hash not in seen:
                self.ledger.write_text("\n".join([*seen, request.recipe.hash]))
                seen.append(request.recipe.hash)
            order = seen.index(request.recipe.hash)
            if order == 0:
                return EvalOutcome.failed("oom", "out of memory at full fidelity")
            if order == 1:
                os._exit(1)
        return self.scorer.evaluate(request)


def full_fails_loop(family, store: Store, ledger: Path, pool: bool = True):
    """A one-worker loop (results in ask order), half the low results promoted, one retry."""
    from evolve.loop import SearchLoop
    from evolve.pool import WorkerPool, WorkerSpec
    from evolve.preflight import build_strategy

    config = config_dict(family, fidelity={"low_limit": LOW, "promote_fraction": 0.5},
                         budget={"max_evaluations": 14}, resources={"workers": 1, "max_retries": 1})
    checked = check_run(RunConfig.model_validate(config))
    if not store.list_runs():
        store.create_run("full-fails", checked.config.model_dump(mode="json"), seed=3)
    (run,) = store.list_runs()
    strategy = build_strategy(checked.config, checked.space)
    spec = WorkerSpec("tests.evolve.test_fidelity:FullFails", {"low_limit": LOW, "ledger": str(ledger)})
    workers = WorkerPool(1, spec) if pool else None
    return SearchLoop(store, run.id, checked.space, strategy, workers, 14, None, max_retries=1, progress=False,
                      references=runner.reference_recipes(checked.space), fidelity=checked.config.fidelity)


def by_candidate(store: Store, run_id: str) -> dict[str, dict[Fidelity, list]]:
    out: dict[str, dict[Fidelity, list]] = {}
    for e in store.list_evaluations(run_id, fidelity=None):
        out.setdefault(e.candidate_id, {}).setdefault(e.fidelity, []).append(e)
    return out


def test_a_failed_full_evaluation_is_told_the_low_result(local_ray, family, tmp_path):
    """A promoted candidate whose full evaluation fails (a failed outcome, or lost on every
    retry) is told its low result; the full row stays FAILED, never ranks, and replays the same."""
    from evolve.report import leaderboard_data

    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    loop = full_fails_loop(family, store, tmp_path / "ledger")
    told = []
    tell = loop.strategy.tell
    loop.strategy.tell = lambda cid, result: (told.append(result), tell(cid, result))[1]
    stats = loop.run()
    loop.pool.shutdown()
    run_id = loop.run_id
    rows = by_candidate(store, run_id)
    tells = [s.state for s in store.list_snapshots(run_id)]
    assert len(tells) == len(told) == 14
    fates = set()
    for tell_state, result in zip(tells, told, strict=True):
        row = rows[tell_state["candidate"]]
        (low,) = row[Fidelity.LOW]
        full = row.get(Fidelity.FULL, [])
        if any(e.status == EvaluationStatus.COMPLETE for e in full):
            fates.add("ok")
            assert (tell_state["fidelity"], result.fitness) == ("full", full[-1].fitness)
            continue
        if full:  # promoted, and its full evaluation failed: told the low result, as a success
            kinds = {e.error_kind for e in full}
            fates.add("lost" if kinds == {"worker_lost"} else "failed")
            assert all(e.status == EvaluationStatus.FAILED for e in full)
            assert len(full) == (2 if kinds == {"worker_lost"} else 1)  # a lost one is retried once
        assert (tell_state["fidelity"], result.failed, result.fitness) == ("low", False, low.fitness)
    assert fates == {"ok", "failed", "lost"}
    assert stats.evaluations == 14 and stats.failures >= 2
    ranked = {c["id"] for c in leaderboard_data(store, run_id)["candidates"]}
    assert ranked == {t["candidate"] for t in tells if t["fidelity"] == "full"}  # full results only
    replayed = full_fails_loop(family, store, tmp_path / "ledger", pool=False)
    assert replayed.replay() == []
    assert replayed.strategy.state() == loop.strategy.state()


# -- what a low result must beat: the source models, and the low rung's optimism ---------------------
class LuckyLows:
    """The analytic scorer at two fidelities, where every low result is its full one plus
    ``bias`` plus a luck of up to ±0.05 (drawn from the full result, so the same in every test
    session, whatever the models' paths), and the source models (linear recipes) score
    ``reference``."""

    def __init__(self, low_limit: int, bias: float, reference: float) -> None:
        self.scorer = AnalyticFidelityScorer(low_limit)
        self.bias, self.reference = bias, reference

    def evaluate(self, request: Recipe | EvalRequest) -> EvalOutcome:
        request = EvalRequest.of(request)
        outcome = self.scorer.evaluate(request)  # its samples at this fidelity
        full = self.scorer.full.evaluate(request.recipe).fitness
        if request.recipe.merge_method == "linear":
            fitness = self.reference
        elif request.fidelity == Fidelity.LOW:
            fitness = full + self.bias + 0.1 * ((full * 1e4) % 1 - 0.5)
        else:
            return outcome
        return EvalOutcome(OutcomeStatus.OK, fitness=fitness, scores={"validation": fitness}, samples=outcome.samples,
                           metrics={"validation": {"analytic": {"score": fitness}}})


def test_a_low_result_must_beat_the_source_models_and_the_optimism_of_earlier_promotions(local_ray, family, tmp_path):
    """One worker (decisions in ask order). The promotions follow `promotes` with the best full
    result including the source models' and the measured optimism; the same run's low results
    would have been promoted differently with either left out, so this fails if the loop drops
    one."""
    from evolve.loop import SearchLoop
    from evolve.pool import WorkerPool, WorkerSpec
    from evolve.preflight import build_strategy

    config = config_dict(family, fidelity={"low_limit": LOW, "promote_fraction": 0.1}, budget={"max_evaluations": 30},
                         resources={"workers": 1}, strategy={"seeds": "none"})  # no seeds: the source models first
    checked = check_run(RunConfig.model_validate(config))
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    run_id = store.create_run("lucky-lows", checked.config.model_dump(mode="json"), seed=3).id
    # The source models out-score the first merges (not the later ones), and the lows are 0.05
    # above their full results, give or take a luck of ±0.05.
    spec = WorkerSpec("tests.evolve.test_fidelity:LuckyLows", {"low_limit": LOW, "bias": 0.05, "reference": 0.95})
    loop = SearchLoop(store, run_id, checked.space, build_strategy(checked.config, checked.space), WorkerPool(1, spec),
                      30, None, progress=False, references=runner.reference_recipes(checked.space),
                      fidelity=checked.config.fidelity)
    stats = loop.run()
    loop.pool.shutdown()
    rows = sorted(store.list_evaluations(run_id, fidelity=None), key=lambda e: (e.finished_at, e.id))
    searched = {c.id for c in store.list_candidates(run_id, kind="search")}
    promoted = {e.candidate_id for e in rows if e.fidelity == Fidelity.FULL and e.candidate_id in searched}
    lows: dict[str, float] = {}
    gaps: list[float] = []
    best = {"search": -math.inf, "reference": -math.inf}
    differs = {"without the references": 0, "without the optimism": 0}
    for e in rows:
        if e.fidelity == Fidelity.FULL:
            kind = "search" if e.candidate_id in searched else "reference"
            best[kind] = max(best[kind], e.fitness)
            if kind == "search":
                gaps.append(lows[e.candidate_id] - e.fitness)
            continue
        optimism = max(0.0, sum(gaps) / len(gaps)) if gaps else 0.0
        rule = partial(promotes, e.fitness, list(lows.values()), fraction=0.1)
        decided = rule(best_full=max(best.values()), optimism=optimism)
        assert (e.candidate_id in promoted) == decided
        differs["without the references"] += rule(best_full=best["search"], optimism=optimism) != decided
        differs["without the optimism"] += rule(best_full=max(best.values())) != decided
        lows[e.candidate_id] = e.fitness
    assert best["reference"] == 0.95 and gaps and all(0 <= g <= 0.1 + 1e-9 for g in gaps)  # the bias, give or take the luck
    assert all(differs.values()), differs
    assert stats.promoted == len(promoted) > 0


def test_a_driver_dying_before_it_saved_a_failed_full_tell_tells_the_low_result_on_resume(
        local_ray, family, tmp_path):
    """The tell of a failed full evaluation is lost with the driver: replay finds the candidate
    finished but untold, and tells it what the live loop did, its low result."""

    def failed_full(store: Store, run_id: str, state: dict) -> bool:
        full = by_candidate(store, run_id).get(state["candidate"], {}).get(Fidelity.FULL, [])
        return any(e.error_kind == "oom" for e in full)

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    dying = DyingStore(url, failed_full)
    loop = full_fails_loop(family, dying, tmp_path / "ledger")
    with pytest.raises(Killed):
        loop.run()
    loop.pool.shutdown()
    assert dying.lost_tell["fidelity"] == "low"  # what the live loop told
    store = Store(url)
    saved = len(store.list_snapshots(loop.run_id))
    replayed = full_fails_loop(family, store, tmp_path / "ledger", pool=False)
    assert replayed.replay() == []  # the one worker had nothing else in flight
    (late,) = [s.state for s in store.list_snapshots(loop.run_id)][saved:]
    assert late == dying.lost_tell
    # The dead driver had already dispatched its next ask, never stored: replay asks it again.
    again = replayed.strategy.ask(loop.strategy.num_asked - replayed.strategy.num_asked)
    assert [c.genome for c in again] == [loop.strategy.candidate(c.id).genome for c in again]
    assert replayed.strategy.state() == loop.strategy.state()  # told as the dead driver had


# -- the config and pre-flight ----------------------------------------------------------------------
@pytest.mark.parametrize("fidelity, expected", [
    ({"low_limit": 0}, r"fidelity\.low_limit: Input should be greater than or equal to 1"),
    ({"low_limit": 4, "promote_fraction": 1.5}, r"fidelity\.promote_fraction: Input should be less than or equal to 1"),
    ({"low_limit": 4, "promote": 0.5}, r"fidelity\.promote: unknown field"),
    ({"promote_fraction": 0.5}, r"fidelity\.low_limit: Field required"),
    ({"low_limit": 20}, r"fidelity\.low_limit: 20 is not below the analytic scorer's 20 questions"),
])
def test_fidelity_mistakes_are_one_line(family, tmp_path, capsys, fidelity, expected):
    import re

    from evolve.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config_dict(family, fidelity=fidelity)))
    assert main(["run", str(path), "--quiet", "--store", f"sqlite:///{tmp_path / 'runs.db'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}:"), err
    assert re.search(expected, err[0]), err[0]
    assert not (tmp_path / "runs.db").exists()


@pytest.mark.parametrize("fidelity, max_samples, expected", [
    (FIDELITY, REFERENCES + LOW - 1, r"budget\.max_samples: 64 samples do not pay for the 3 source models scored once "
                                     r"beside the search \(3 x 20\) and one candidate \(5\): give at least 65"),
    (None, REFERENCES + FULL - 1, r"budget\.max_samples: 79 samples .* and one candidate \(20\): give at least 80"),
])
def test_a_sample_budget_below_the_references_and_one_candidate_is_one_line(
        family, tmp_path, capsys, fidelity, max_samples, expected):
    import re

    from evolve.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config_dict(family, fidelity=fidelity, budget={"max_samples": max_samples})))
    assert main(["run", str(path), "--quiet", "--store", f"sqlite:///{tmp_path / 'runs.db'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}:"), err
    assert re.search(expected, err[0]), err[0]
    assert not (tmp_path / "runs.db").exists()
    check_run(RunConfig.model_validate(config_dict(family, fidelity=fidelity, budget={"max_samples": max_samples + 1})))


def test_m2n2_is_refused_with_fidelity(family, tmp_path):
    from search_spaces.errors import UserError

    config = config_dict(family, fidelity=FIDELITY, strategy={"name": "m2n2", "settings": {}})
    with pytest.raises(UserError, match=r"^fidelity: m2n2 competes on per-sample scores"):
        check_run(RunConfig.model_validate(config))


@pytest.fixture(scope="module")
def tasks_dir(family, tmp_path_factory):
    from tests.fixtures.synthetic_tasks import write_synthetic_tasks

    return write_synthetic_tasks(tmp_path_factory.mktemp("fidelity_tasks"), family[0], n_validation=12, n_test=4)


def lm_eval_config(family, tasks_dir, **fidelity) -> dict:
    return {"name": "fidelity", "models": {"base": str(family[0]), "sources": [str(family[1]), str(family[2])]},
            "space": {"merge_method": "task_arithmetic", "layer_groups": 3, "search": {"weight": [0.0, 1.0]}},
            "strategy": {"name": "cma", "seed": 0, "settings": {"popsize": 4}}, "budget": {"max_evaluations": 4},
            "tasks": [{"name": "syn_gen", "metric": "exact_match"}, {"name": "syn_mc", "metric": "acc", "limit": 8}],
            "evaluation": {"backend": "hf", "include_path": str(tasks_dir)}, "fidelity": fidelity}


def test_low_fidelity_tasks_are_a_seeded_subsample_of_the_validation_tasks(family, tasks_dir):
    from workers.scoring import EvalSettings, TaskSpec
    from workers.scoring.tasks import TaskRunner

    checked = check_run(RunConfig.model_validate(lm_eval_config(family, tasks_dir, low_limit=4)))
    low = checked.scoring.low_tasks
    assert [(t["name"], t["split"], t["limit"], t["subsample"]) for t in low] == [
        ("syn_gen", "validation", 4, "random"), ("syn_mc", "validation", 4, "random")]
    assert runner.worker_spec(checked).kwargs["low_tasks"] == list(low)
    # The same documents on every worker: drawn from the evaluation seed, not per process.
    documents = [TaskRunner(EvalSettings.from_dict(checked.scoring.settings)).documents(TaskSpec.from_dict(low[0]))
                 for _ in range(2)]
    assert documents[0] == documents[1] == sorted(documents[0]) and len(documents[0]) == 4
    assert set(documents[0]) <= set(range(12))
    off = check_run(RunConfig.model_validate({**lm_eval_config(family, tasks_dir), "fidelity": None}))
    assert off.scoring.low_tasks is None and "low_tasks" not in runner.worker_spec(off).kwargs


def test_the_real_scorer_scores_the_low_tasks_at_low_fidelity(family, tasks_dir):
    from search_spaces.recipe import Recipe
    from workers.candidate_scorer import CandidateScorer
    from workers.outcome import EvalRequest

    checked = check_run(RunConfig.model_validate(lm_eval_config(family, tasks_dir, low_limit=4)))
    kwargs = runner.worker_spec(checked).kwargs
    scorer = CandidateScorer(**kwargs)
    recipe = Recipe.from_dict({"merge_method": "linear", "models": [
        {"model": str(family[1]), "parameters": {"weight": 0.5}}, {"model": str(family[2]), "parameters": {"weight": 0.5}}]})
    low = scorer.evaluate(EvalRequest(recipe, Fidelity.LOW))
    full = scorer.evaluate(recipe)  # a bare recipe is a full request
    assert low.ok and full.ok
    assert {s: {t: len(v) for t, v in tasks.items()} for s, tasks in low.samples.items()} == {
        "validation": {"syn_gen": 4, "syn_mc": 4}}
    assert {s: {t: len(v) for t, v in tasks.items()} for s, tasks in full.samples.items()} == {
        "validation": {"syn_gen": 12, "syn_mc": 8}, "test": {"syn_gen": 4, "syn_mc": 4}}
    assert (low.samples_scored, full.samples_scored) == (8, 28)
    assert checked.samples_per_evaluation == {Fidelity.LOW: 8, Fidelity.FULL: 28}  # pre-flight's count agrees


def test_a_sample_budget_below_what_the_references_score_is_refused(family, tasks_dir):
    """Counted from the loaded tasks: 3 references x 28 documents (validation and test), and one
    candidate's low evaluation (4 documents of each of the 2 validation tasks)."""
    from search_spaces.errors import UserError

    config = lm_eval_config(family, tasks_dir, low_limit=4)
    with pytest.raises(UserError, match=r"budget\.max_samples: 91 samples .* \(3 x 28\) and one candidate \(8\)"):
        check_run(RunConfig.model_validate({**config, "budget": {"max_samples": 91}}))
    assert check_run(RunConfig.model_validate({**config, "budget": {"max_samples": 92}})).samples_per_evaluation[
        Fidelity.FULL] == 28


@pytest.mark.parametrize("low_limit, expected", [
    (8, r"fidelity\.low_limit: 8 documents is not below tasks\[1\]\.limit \(8\) of 'syn_mc'"),
    (12, r"fidelity\.low_limit: 12 documents is not below tasks\[1\]\.limit"),
])
def test_low_limit_must_be_below_each_task_limit(family, tasks_dir, low_limit, expected):
    from search_spaces.errors import UserError

    with pytest.raises(UserError, match=expected):
        check_run(RunConfig.model_validate(lm_eval_config(family, tasks_dir, low_limit=low_limit)))


def test_low_limit_must_be_below_each_task_size(family, tasks_dir):
    from search_spaces.errors import UserError

    config = lm_eval_config(family, tasks_dir, low_limit=12)
    config["tasks"] = config["tasks"][:1]
    with pytest.raises(UserError, match=r"fidelity\.low_limit: 12 documents is not below the 12 that 'syn_gen'"):
        check_run(RunConfig.model_validate(config))


# -- the store -------------------------------------------------------------------------------------
def test_a_candidate_has_one_complete_evaluation_per_fidelity_and_reads_default_to_full(tmp_path):
    from evolve.store import EvaluationStateError

    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    run = store.create_run("store")
    cand = store.add_candidate(run.id, [0.5], {"merge_method": "linear", "models": [{"model": "a"}]})
    low = store.start_evaluation(cand.id, worker="w0", fidelity="low")
    with pytest.raises(EvaluationStateError, match="already being evaluated"):
        store.start_evaluation(cand.id, worker="w1", fidelity=Fidelity.LOW)
    store.finish_evaluation(low, 0.9, samples={"validation": {"t": [1.0, 0.0, 1.0]}})
    assert store.list_evaluations(run.id) == [] and store.leaderboard(run.id) == []  # low rows never rank
    with pytest.raises(EvaluationStateError, match="already scored"):
        store.start_evaluation(cand.id, worker="w0", fidelity="low")
    full = store.start_evaluation(cand.id, worker="w0")  # promoted: a second row, attempt 1 at its fidelity
    record = store.finish_evaluation(full, 0.7, samples={"validation": {"t": [1.0] * 8}, "test": {"t": [0.0] * 4}})
    assert (record.fidelity, record.attempt, record.samples_scored) == (Fidelity.FULL, 1, 12)
    assert [e.id for e in store.list_evaluations(run.id)] == [full]
    assert [(e.fidelity, e.samples_scored) for e in store.list_evaluations(run.id, fidelity=None)] == [
        (Fidelity.LOW, 3), (Fidelity.FULL, 12)]
    (entry,) = store.leaderboard(run.id)
    assert entry.evaluation.id == full and entry.score == 0.7


def test_migration_0003_marks_old_evaluations_full_and_counts_their_samples(tmp_path):
    import sqlalchemy as sa
    from alembic import command

    import evolve.store.engine as engine_module
    from evolve.store import SchemaVersionError

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        command.upgrade(engine_module.alembic_config(connection), "0002_kinds_and_run_errors")
        connection.execute(sa.text(
            "INSERT INTO runs (id, name, config, status, seed, created_at, updated_at) "
            "VALUES ('r-old', 'old', '{}', 'FINISHED', 0, '2026-11-01', '2026-11-01')"))
        connection.execute(sa.text(
            "INSERT INTO candidates (id, run_id, number, generation, genome, recipe, recipe_hash, parents, "
            "strategy_info, created_at, kind) VALUES ('c-0', 'r-old', 0, 0, '[]', '{}', 'h0', '[]', '{}', "
            "'2026-11-01', 'search')"))
        for eid, status in ((1, "FAILED"), (2, "COMPLETE")):
            connection.execute(sa.text(
                "INSERT INTO evaluations (id, candidate_id, run_id, status, attempt, fitness, fitness_kind, scores, "
                "created_at) VALUES (:id, 'c-0', 'r-old', :status, :id, 0.5, 'FINITE', '{\"validation\": 0.5}', "
                "'2026-11-01')"),
                {"id": eid, "status": status})
        for split, scores in (("validation", "[1.0, 0.0, 1.0]"), ("test", "[0.0, 1.0]")):
            connection.execute(sa.text("INSERT INTO sample_scores (evaluation_id, split, task, scores) "
                                       "VALUES (2, :split, 't', :scores)"), {"split": split, "scores": scores})
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="older than 0003_fidelity"):
        Store(url)
    with Store(url, upgrade=True) as store:
        failed, complete = store.list_evaluations("r-old")  # old rows are full ones: the default read
        assert (failed.fidelity, failed.samples_scored) == (Fidelity.FULL, None)
        assert (complete.fidelity, complete.samples_scored) == (Fidelity.FULL, 5)
        assert [e.candidate.id for e in store.leaderboard("r-old")] == ["c-0"]


def test_the_promotion_rule_by_hand_when_the_low_rung_is_flat():
    from evolve.fidelity import FLAT_LOW_RESULTS, low_rung_flat

    n = FLAT_LOW_RESULTS
    assert low_rung_flat([0.0] * (n - 1)) is None  # too few to tell
    assert low_rung_flat([0.0] * n) == 0.0
    assert low_rung_flat([0.0] * (n - 1) + [0.125]) is None  # one score apart: the rung ranks
    assert low_rung_flat([0.5] * n + [1.0, 0.0]) == 0.5  # only the first ones count


@pytest.fixture(scope="module")
def unanswerable_task(tasks_dir) -> Path:
    """``syn_flat``: ``syn_gen``'s prompts with answers no model generates: every score is 0."""
    directory = tasks_dir.parent / "flat_task"
    directory.mkdir(exist_ok=True)
    text = (tasks_dir / "syn_gen.yaml").read_text().replace("task: syn_gen", "task: syn_flat")
    for split in ("validation", "test"):
        rows = [json.loads(line) for line in (tasks_dir / f"syn_{split}.jsonl").read_text().splitlines()]
        target = directory / f"flat_{split}.jsonl"
        target.write_text("".join(json.dumps({**row, "answer": "#never#"}) + "\n" for row in rows))
        text = text.replace(json.dumps(str(tasks_dir / f"syn_{split}.jsonl")), json.dumps(str(target)))
    (directory / "syn_flat.yaml").write_text(text)
    return directory


def test_a_low_rung_that_cannot_rank_is_dropped_and_later_candidates_scored_in_full(
        local_ray, family, unanswerable_task, tmp_path, capsys):
    """A real lm-eval run whose every score is 0: after the first 10 low results the loop says
    so and scores new candidates in full; replay comes to the same decision."""
    from evolve.cli import main
    from evolve.fidelity import FLAT_LOW_RESULTS
    from evolve.loop import SearchLoop
    from evolve.preflight import build_strategy

    config = lm_eval_config(family, unanswerable_task, low_limit=2)
    config.update(tasks=[{"name": "syn_flat", "metric": "exact_match"}], budget={"max_evaluations": 16})
    path, url = tmp_path / "flat.yaml", f"sqlite:///{tmp_path / 'runs.db'}"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--store", url, "--quiet"]) == 0
    assert f"the first {FLAT_LOW_RESULTS} low results all scored 0, so the low rung could not rank" in \
        capsys.readouterr().err.replace("\n", " ")
    store = Store(url)
    (run,) = store.list_runs()
    searched = {c.id for c in store.list_candidates(run.id, kind="search")}
    rows = [e for e in store.list_evaluations(run.id, fidelity=None) if e.candidate_id in searched]
    assert all(e.status == EvaluationStatus.COMPLETE and e.fitness == 0.0 for e in rows)
    with_low = {e.candidate_id for e in rows if e.fidelity == Fidelity.LOW}
    full_only = searched - with_low
    assert len(with_low) >= FLAT_LOW_RESULTS and len(full_only) >= 2, (len(with_low), len(full_only))
    assert all(sum(e.candidate_id == c for e in rows) == 1 for c in full_only)  # one full row each
    tenth = sorted((e for e in rows if e.fidelity == Fidelity.LOW), key=lambda e: (e.finished_at, e.id))[
        FLAT_LOW_RESULTS - 1]
    created = {c.id: c.created_at for c in store.list_candidates(run.id, kind="search")}
    assert all(created[c] >= tenth.finished_at for c in full_only)  # asked after the rung was dropped
    checked = check_run(RunConfig.model_validate(config))
    loop = SearchLoop(store, run.id, checked.space, build_strategy(checked.config, checked.space), None, 16, None,
                      progress=False, fidelity=checked.config.fidelity)
    assert loop.replay() == [] and loop.stats.low_rung_dropped == 0.0
