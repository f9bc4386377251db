"""The order in which the steady-state loop hands work to free workers.

Seeds come before the source models (references): CMA asks nothing until every seed is told,
so the source models fill the workers while it waits instead of delaying the seeds.

A free worker gets its next candidate before the store records what led to it; a driver killed
anywhere in those writes resumes to the same run.
"""

import pytest

from evolve import runner
from evolve.config import RunConfig
from evolve.loop import SearchLoop
from evolve.pool import WorkerPool
from evolve.preflight import build_strategy, check_run
from evolve.runner import reference_recipes, worker_spec
from evolve.store import Store
from evolve.store.records import EvaluationStatus
from tests.fixtures.run_configs import config_dict

pytestmark = pytest.mark.slow


def _kinds_in_start_order(store: Store, run_id: str) -> list[str]:
    """Per evaluation, in the order they were started: seed, reference or search."""
    candidates = {c.id: c for c in store.list_candidates(run_id)}

    def kind(candidate_id: str) -> str:
        c = candidates[candidate_id]
        if c.kind == "reference":
            return "reference"
        return "seed" if c.strategy_info.get("origin") == "seed" else "search"

    return [kind(e.candidate_id) for e in sorted(store.list_evaluations(run_id), key=lambda e: e.id)]


def test_seeds_start_first_and_the_source_models_fill_the_seed_barrier(local_ray, family, tmp_path):
    """Two workers, four seeds, three source models: the order does not depend on timing."""
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    outcome = runner.start(store, check_run(RunConfig.model_validate(config_dict(family))), progress=False)
    kinds = _kinds_in_start_order(store, outcome.run_id)
    seeds = kinds.count("seed")
    assert seeds >= 2  # more seeds than workers: the loop has a barrier to fill
    assert kinds == ["seed"] * seeds + ["reference"] * 3 + ["search"] * (18 - seeds)
    assert outcome.stats.evaluations == 18


def test_without_seeds_the_source_models_go_first(local_ray, family, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    data = config_dict(family, strategy={"seeds": "none"}, budget={"max_evaluations": 6})
    outcome = runner.start(store, check_run(RunConfig.model_validate(data)), progress=False)
    assert _kinds_in_start_order(store, outcome.run_id) == ["reference"] * 3 + ["search"] * 6


class _Killed(BaseException):
    """The driver dies here: nothing in the loop may catch it."""


class _StoreKilledAt(Store):
    """A store whose ``method`` kills the driver on its ``nth`` call, before writing anything."""

    def __init__(self, url: str, method: str, nth: int) -> None:
        super().__init__(url)
        self.calls = 0

        def killing(*args, **kwargs):
            self.calls += 1
            if self.calls == nth:
                raise _Killed(method)
            return getattr(Store, method)(self, *args, **kwargs)

        setattr(self, method, killing)


def _search(store: Store, run_id: str, checked, *, resume: bool) -> None:
    """Drive the run on one worker, as `evolve.runner.execute` does (replay first on resume)."""
    loop = SearchLoop(store, run_id, checked.space, build_strategy(checked.config, checked.space),
                      WorkerPool(1, worker_spec(checked)), checked.config.budget.max_evaluations, None,
                      progress=False, references=reference_recipes(checked.space))
    try:
        if resume:
            store.fail_stale_evaluations(run_id, grace_seconds=1e-3)
        loop.run(loop.replay() if resume else None)
    finally:
        loop.pool.shutdown()


def _history(store: Store, run_id: str) -> list[tuple[tuple[float, ...], float]]:
    """Each search candidate's genome and final fitness, in ask order."""
    fitness = {e.candidate_id: e.fitness for e in store.list_evaluations(run_id)
               if e.status == EvaluationStatus.COMPLETE}
    return [(c.genome, fitness[c.id]) for c in store.list_candidates(run_id, kind="search")]


@pytest.mark.parametrize("method, nth", [
    ("add_candidate", 9),  # a search candidate dispatched, not yet stored; the result before it stored
    ("save_snapshot", 6),  # a candidate dispatched, the result before it stored, not its tell
    ("finish_evaluation", 7),  # a candidate dispatched, nothing of the result before it stored
    ("start_evaluation", 10),  # a candidate dispatched and stored, its evaluation row not
])
def test_a_kill_between_dispatch_and_record_resumes_to_the_same_run(local_ray, family, tmp_path, method, nth):
    """One worker: results arrive in ask order, so a run killed anywhere in the writes that follow
    a dispatch and resumed asks, scores and tells exactly what an uninterrupted run does."""
    data = config_dict(family, resources={"workers": 1}, budget={"max_evaluations": 10},
                       strategy={"settings": {"popsize": 4}})
    checked = check_run(RunConfig.model_validate(data))
    whole = Store(f"sqlite:///{tmp_path / 'whole.db'}")
    whole_run = whole.create_run("whole", data, seed=3).id
    _search(whole, whole_run, checked, resume=False)

    url = f"sqlite:///{tmp_path / 'killed.db'}"
    killed = _StoreKilledAt(url, method, nth)
    run_id = killed.create_run("killed", data, seed=3).id
    with pytest.raises(_Killed):
        _search(killed, run_id, checked, resume=False)
    before = Store(url)
    finished = {e.id: e for e in before.list_evaluations(run_id, fidelity=None)
                if e.status == EvaluationStatus.COMPLETE}
    assert 0 < len(finished) < 10 + 3
    _search(before, run_id, checked, resume=True)

    after = {e.id: e for e in before.list_evaluations(run_id, fidelity=None)}
    assert all(after[i] == e for i, e in finished.items())  # nothing finished is lost or changed
    assert _history(before, run_id) == _history(whole, whole_run)
    complete = [e for e in after.values() if e.status == EvaluationStatus.COMPLETE]
    assert len({e.candidate_id for e in complete}) == len(complete) == 10 + 3


def test_an_error_mid_batch_still_records_the_results_already_received(local_ray, family, tmp_path):
    """Writes held back for the next dispatch reach the store when the loop dies of an error."""
    data = config_dict(family, resources={"workers": 1}, budget={"max_evaluations": 6})
    checked = check_run(RunConfig.model_validate(data))
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    run_id = store.create_run("broken", data, seed=3).id
    loop = SearchLoop(store, run_id, checked.space, build_strategy(checked.config, checked.space),
                      WorkerPool(1, worker_spec(checked)), checked.config.budget.max_evaluations, None,
                      progress=False, references=reference_recipes(checked.space))
    tell, told = loop.strategy.tell, []

    def failing_tell(candidate_id, result):
        if len(told) == 2:
            raise RuntimeError("a strategy bug")
        told.append(candidate_id)
        return tell(candidate_id, result)

    loop.strategy.tell = failing_tell
    try:
        with pytest.raises(RuntimeError, match="a strategy bug"):
            loop.run()
    finally:
        loop.pool.shutdown()
    search = {c.id for c in store.list_candidates(run_id, kind="search")}
    complete = [e for e in store.list_evaluations(run_id, fidelity=None)
                if e.status == EvaluationStatus.COMPLETE and e.candidate_id in search]
    assert len(complete) == 3  # the two told, and the third, recorded before its tell raised
