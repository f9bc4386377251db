"""The asynchronous steady-state search loop.

Whenever a worker is free, the strategy is asked for one candidate; at most one candidate is
in flight per worker, so a slow candidate never leaves the other workers idle (mergekit-evolve
waits for a whole generation). Every ask becomes a candidate row, every result an evaluation
row, and every tell a snapshot row (the tell log), so `resume` can rebuild the strategy by
replaying asks and tells in their original order. A freed worker is handed its next candidate
before those rows are written (`SearchLoop._dispatch`): they reach the store in the same order,
just after the dispatch, so the store's commits never idle a worker. Seeds are asked before the
source models are scored (`SearchLoop._next_job`), which fill the workers while CMA-ES waits
for every seed's result.

A broken setup fails fast: `FailFast` watches every final outcome and stops the run with
`RunFailed` when the first evaluations all fail, or when too many recent ones do.

Multi-fidelity runs (``fidelity:``, `FidelityConfig`) are asynchronous successive halving
over two rungs, which keeps the loop steady-state: every candidate is scored LOW first; a
low result ranked within the top ``promote_fraction`` of the run's low results so far, or
above the best full result so far (the source models' included) by more than the promoted
low results turned out optimistic on average, is promoted and scored FULL (a second
evaluation row), ahead of any new ask (`promotes`). The strategy is told once per candidate, at the best
fidelity it gets: the full result of a promoted candidate (told when it arrives; the others
keep going meanwhile), the low result of every other one, as it is. A low result is the same tasks on a fixed subsample, so it estimates
the full fitness on the same scale; a candidate that was not promoted ranked below the
promoted ones on that estimate, and telling it lets CMA-ES complete its generations (it
needs a value for every candidate it asked). A promoted candidate whose full evaluation
fails (its retries spent) is told its low result, a real measurement of it; the failed full
row stays in the store and never ranks. A low rung that cannot rank is dropped: when the
first `FLAT_LOW_RESULTS` low results are all equal (on a needle-like task every subsample
score is 0), the loop says so and scores every later candidate in full (`low_rung_flat`).

The budget: ``max_evaluations`` counts candidates told; ``max_samples`` counts documents
scored (each evaluation's ``samples_scored``, 0 for a failed one) by every evaluation, the
source models' included. Work in flight and queued counts for what it will score
(`SampleBudget`), so a new candidate is asked, or a low result promoted, only when its
evaluation fits in what is left; a low result that would be promoted but does not fit is told
as it is. A retry replaces a lost evaluation that scored nothing, so it always runs.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from evolve.config import FailFastConfig, FidelityConfig
from evolve.fidelity import FLAT_LOW_RESULTS, low_rung_dropped, low_rung_flat, promotes
from evolve.pool import WorkerPool
from evolve.report import samples_used
from evolve.store import Store
from evolve.store.records import CandidateKind, EvaluationStatus
from evolve.strategies.base import Candidate, Result, Strategy
from search_spaces.errors import UserError
from search_spaces.parameter_space import ParameterSpace
from search_spaces.recipe import Recipe
from workers.outcome import WORKER_LOST, EvalOutcome, EvalRequest, Fidelity, OutcomeStatus

ABANDONED = "abandoned"  # the error kind of evaluations still in flight when a run failed fast
WAIT_SECONDS = 1.0  # how long the loop blocks on results before checking the budget again


class ReplayMismatchError(UserError):
    """Replaying a run's asks and tells does not reproduce its recorded candidates."""


class RunFailed(RuntimeError):
    """The run gave up on its own: its evaluations keep failing (the message says how)."""


class FailFast:
    """Decides, from the stream of final outcomes, when a run is broken rather than unlucky."""

    def __init__(self, config: FailFastConfig) -> None:
        self.config = config
        self.seen = 0
        self.succeeded = 0
        self.recent: deque[bool] = deque(maxlen=config.window)  # True: failed
        self.errors: Counter[str] = Counter()

    def record(self, outcome: EvalOutcome) -> None:
        """Count one final outcome; raises `RunFailed` when the run should stop."""
        failed = not outcome.ok
        self.seen += 1
        self.succeeded += not failed
        self.recent.append(failed)
        if failed:
            self.errors[outcome.message] += 1
        first = self.config.first
        if first and self.seen == first and self.succeeded == 0:
            raise RunFailed(f"the first {first} evaluations all failed; {self.most_common()}")
        window, rate = self.config.window, self.config.max_failure_rate
        if rate < 1 and len(self.recent) == window and sum(self.recent) > rate * window:
            raise RunFailed(f"{sum(self.recent)} of the last {window} evaluations failed "
                            f"(more than {rate:.0%}); {self.most_common()}")

    def most_common(self) -> str:
        if not self.errors:
            return "no error recorded"
        message, count = self.errors.most_common(1)[0]
        return f"most common error ({count}x): {message}"


@dataclass
class LoopStats:
    evaluations: int = 0
    failures: int = 0
    retries: int = 0
    best_fitness: float = -math.inf  # full-fidelity results only
    promoted: int = 0  # low-fidelity results promoted to a full evaluation
    low_rung_dropped: float | None = None  # the one score every first low result had (`low_rung_flat`)
    samples_scored: int = 0  # documents scored over every evaluation, the cost of the run
    busy_seconds: float = 0.0
    wall_seconds: float = 0.0
    workers: int = 0

    def progress_line(self) -> str:
        """The progress bar's text: the best full result, or that there is none yet, and failures."""
        best = f"best {self.best_fitness:.3f}" if self.best_fitness > -math.inf else "no full result yet"
        return f"searching · {best}" + (f" · {self.failures} failed" if self.failures else "")

    @property
    def busy_fraction(self) -> float:
        capacity = self.wall_seconds * self.workers
        return self.busy_seconds / capacity if capacity else 0.0


@dataclass
class _InFlight:
    candidate: Candidate | None  # None for a reference (a source model scored as it is)
    store_id: str
    evaluation_id: int
    worker: int
    started: float
    attempt: int = 1
    fidelity: Fidelity = Fidelity.FULL
    ref: Any = None  # the pool's handle on its result


_Job = tuple[Candidate | None, str, Fidelity]  # what is queued: a candidate (None: a reference), store id, fidelity


@dataclass(frozen=True)
class _NewAsk:
    """A candidate whose recipe is new to the run: it has no store row until it is dispatched."""

    candidate: Candidate
    recipe: Recipe


@dataclass(frozen=True)
class SampleBudget:
    """``budget.max_samples``, with what one evaluation scores at each fidelity (pre-flight's
    count, `CheckedRun.samples_per_evaluation`): work is counted before it is scored."""

    max_samples: int
    per_evaluation: Mapping[Fidelity, int]


@dataclass
class SearchLoop:
    store: Store
    run_id: str
    space: ParameterSpace
    strategy: Strategy
    pool: WorkerPool | None  # None until `run` (replay needs no workers)
    max_evaluations: int | None
    max_seconds: float | None
    max_retries: int = 2
    progress: bool = True
    references: dict[str, Recipe] = field(default_factory=dict)  # name -> recipe of a source model
    fail_fast: FailFastConfig = field(default_factory=FailFastConfig)
    fidelity: FidelityConfig | None = None  # None: every evaluation is a full one
    sample_budget: SampleBudget | None = None  # None: no budget.max_samples
    stats: LoopStats = field(default_factory=LoopStats)
    running_evaluations: frozenset[int] = frozenset()  # what the driver's heartbeat keeps alive
    _ids: dict[str, str] = field(default_factory=dict)  # strategy candidate id -> store candidate id
    _asked: int = 0
    _told: int = 0
    _results: dict[str, Result] = field(default_factory=dict)  # store candidate id -> result told
    _told_at: dict[str, Fidelity] = field(default_factory=dict)  # store candidate id -> fidelity of that result
    _low: dict[str, Result] = field(default_factory=dict)  # store candidate id -> its low result (search, ok)
    _best_reference: float = -math.inf  # the best source model's full result: a merge worth a full look beats it
    _running: set[str] = field(default_factory=set)  # store candidate ids in flight or promoted, not told
    _waiting: dict[str, list[Candidate]] = field(default_factory=dict)  # asks duplicating one in flight
    _recipes: dict[str, Recipe] = field(default_factory=dict)  # decoded, not yet dispatched
    _by_hash: dict[str, str] = field(default_factory=dict)  # recipe hash -> store id, every candidate of the run
    _journal: list[Callable[[], object]] = field(default_factory=list)  # store writes held back, in order (`_flush`)

    # -- resume ---------------------------------------------------------------------------
    def replay(self) -> list[_Job]:
        """Rebuild the strategy from the store; returns the asked-but-unfinished candidates, each
        at the fidelity it needs next (`_next_fidelity`)."""
        stored = self.store.list_candidates(self.run_id, kind=CandidateKind.SEARCH)
        tells = [s.state for s in self.store.list_snapshots(self.run_id)]
        results = _final_results(self.store, self.run_id)
        evaluations = self.store.list_evaluations(self.run_id, fidelity=None)
        promoted = {e.candidate_id for e in evaluations if e.fidelity == Fidelity.FULL}
        open_: dict[str, tuple[Candidate, str]] = {}
        matched = 0  # stored candidates re-asked so far

        def ask_one() -> None:
            nonlocal matched
            (cand,) = self.strategy.ask(1)
            self._asked += 1
            recipe = self.space.decode(cand.genome)
            known = self.store.find_candidate_by_hash(self.run_id, recipe.hash)
            if known is not None and (known.kind == CandidateKind.REFERENCE or known.id in self._ids.values()):
                self._ids[cand.id] = known.id  # a duplicate ask (or a source model's), told from cache live
                open_[cand.id] = (cand, known.id)
                return
            record = stored[matched] if matched < len(stored) else None
            if record is None or record.recipe_hash != recipe.hash:
                raise ReplayMismatchError(f"resume of run {self.run_id}: the strategy no longer reproduces "
                                          f"candidate {record.id if record else self._asked}; was the code or "
                                          "the config changed since the run started?")
            matched += 1
            self._ids[cand.id] = record.id
            open_[cand.id] = (cand, record.id)

        for entry in tells:
            while self._asked < entry["asked"]:
                ask_one()
            cand, store_id = open_.pop(entry["strategy_id"])
            fidelity = Fidelity(entry.get("fidelity", Fidelity.FULL))  # tells before multi-fidelity were full
            result = results.get((store_id, fidelity)) or _FAILED
            self.strategy.tell(cand.id, result)
            self._results[store_id] = result
            self._told_at[store_id] = fidelity
            self._told += 1
        while matched < len(stored):  # asked after the last tell: they were in flight
            ask_one()
        searched = {c.id for c in stored}
        self._low = {cid: r for (cid, fid), r in results.items()
                     if fid == Fidelity.LOW and cid in searched and not r.failed}
        self.stats.evaluations = sum(1 for r in self._results.values() if not r.failed)
        full = [r for (cid, fid), r in results.items() if fid == Fidelity.FULL and cid in searched]
        self.stats.best_fitness = max((r.fitness for r in full if not r.failed), default=-math.inf)
        self.stats.promoted = sum(1 for cid, fid in results if fid == Fidelity.FULL and (cid, Fidelity.LOW) in results)
        self.stats.samples_scored = samples_used(evaluations)
        self.stats.low_rung_dropped = low_rung_dropped(evaluations, searched)
        pending: list[_Job] = []
        for cand, store_id in open_.values():
            fidelity = self._next_fidelity(store_id, results, promoted)
            if (store_id, fidelity) in results:  # finished, but the driver died before telling it
                self._tell(cand, store_id, *self._as_told(store_id, results[(store_id, fidelity)], fidelity))
            elif any(job[1] == store_id for job in pending):  # a twin ask: told with the first
                self._waiting.setdefault(store_id, []).append(cand)
            else:
                pending.append((cand, store_id, fidelity))
        self._flush()
        return pending

    def _next_fidelity(self, store_id: str, results: dict[tuple[str, Fidelity], Result],
                       promoted: set[str]) -> Fidelity:
        """FULL for a promoted candidate (a full evaluation of it was started); LOW for one with
        a low result in and no full evaluation started, told as it is: the driver died before
        telling it, or (rarely) between promoting it and starting the full evaluation, where
        promoting it again could spend samples the run no longer had; else what a new
        candidate gets (`_first_fidelity`)."""
        if store_id in promoted:
            return Fidelity.FULL
        if (store_id, Fidelity.LOW) in results:
            return Fidelity.LOW
        return self._first_fidelity

    # -- the loop -------------------------------------------------------------------------
    def run(self, pending: list[_Job] | None = None) -> LoopStats:
        """Fill the budget; raises `RunFailed` (after recording everything) if the run is broken."""
        queue: list[_Job] = list(pending or [])
        references = self._unscored_references()
        self._by_hash = {c.recipe_hash: c.id for c in self.store.list_candidates(self.run_id)}
        inflight: dict[Any, _InFlight] = {}
        retries: dict[tuple[str, Fidelity], int] = {}
        watch = FailFast(self.fail_fast)
        start = time.monotonic()
        self.stats.workers = self.pool.size
        try:
            with _progress(self.progress, self.max_evaluations) as bar:
                task = bar.add_task("searching", total=self.max_evaluations, completed=self._told)
                while True:
                    out_of_budget = self._budget_spent(start, inflight, queue + references)
                    # Fill every idle worker: a retry or a promotion first, then what resume
                    # re-dispatches, then the source models and new asks (`_next_job`).
                    while self.pool.idle() and (queue or references or not out_of_budget):
                        item = queue.pop(0) if queue else self._next_job(references, out_of_budget)
                        if item is None:
                            break
                        job = self._dispatch(item, self.pool.idle()[0])
                        job.attempt = retries.get((job.store_id, job.fidelity), 0) + 1
                        inflight[job.ref] = job
                        out_of_budget = self._budget_spent(start, inflight, queue + references)
                    self._flush()
                    self.running_evaluations = frozenset(job.evaluation_id for job in inflight.values())
                    if not inflight:
                        if self.pool.waiting() and (queue or references or not out_of_budget):
                            self.pool.wait_for_room(self.pool.placement_timeout)  # every worker was lost
                            continue
                        break
                    for ref, outcome in self.pool.wait(list(inflight), timeout=WAIT_SECONDS):
                        job = inflight.pop(ref)
                        self.stats.busy_seconds += time.monotonic() - job.started
                        if outcome.status == OutcomeStatus.LOST:
                            self._journal.append(partial(self.store.fail_evaluation, job.evaluation_id, outcome.message,
                                                         kind=outcome.error_kind))
                            self.pool.replace(job.worker)
                            key = (job.store_id, job.fidelity)
                            retries[key] = retries.get(key, 0) + 1
                            if retries[key] <= self.max_retries:
                                self.stats.retries += 1
                                queue.insert(0, (job.candidate, job.store_id, job.fidelity))
                                continue
                            self._running.discard(job.store_id)
                            self.stats.failures += 1
                            self._settle(job, _FAILED)
                        else:
                            self.pool.release(job.worker)
                            self._running.discard(job.store_id)
                        try:
                            if outcome.status != OutcomeStatus.LOST and self._record(
                                    job, outcome, self._reserved(inflight, queue + references)):
                                self._running.add(job.store_id)  # promoted: its tell waits for the full result
                                queue.insert(0, (job.candidate, job.store_id, Fidelity.FULL))
                            watch.record(outcome)
                        except RunFailed:
                            self._abandon(inflight)
                            raise
                        bar.update(task, completed=self._told, description=self.stats.progress_line())
        finally:  # an interrupt or error mid-batch: what already happened still reaches the store
            self._flush()
        self.stats.wall_seconds = time.monotonic() - start
        if self.stats.evaluations == 0 and self.stats.failures:
            raise RunFailed(f"no evaluation succeeded ({self.stats.failures} failed); {watch.most_common()}")
        return self.stats

    def _next_job(self, references: list[_Job], out_of_budget: bool) -> _Job | _NewAsk | None:
        """The source models (``references``, popped from) before new asks, except while the
        strategy still has seeds to ask or tell: then the seeds go first and the source models
        fill the workers that CMA would leave idle until every seed is told. A seed with a source
        model's recipe waits for that source model, scored first, as a twin ask does; a source
        model already scored or running (a twin re-dispatched by resume) is skipped."""
        references[:] = [job for job in references if job[1] not in self._running and job[1] not in self._results]
        if references and not self.strategy.seeds_pending:
            return references.pop(0)
        item = None if out_of_budget else self._ask()
        twin = next((job for job in references if isinstance(item, tuple) and job[1] == item[1]), None)
        if twin is not None:
            references.remove(twin)
            self._waiting.setdefault(twin[1], []).append(item[0])
            return twin
        if item is None and references:
            return references.pop(0)
        return item

    def _dispatch(self, item: _Job | _NewAsk, worker: int) -> _InFlight:
        """Hand ``worker`` its next evaluation first, then record what led to it: the writes held
        back since the last dispatch (`_flush`), the new candidate's row, its evaluation row.

        The store gets these rows in the order the driver made them, only later, so a kill at
        any point leaves the same prefix of the ask/tell log the earlier write-first order
        could leave; the one thing lost with the driver is the evaluation just handed out,
        which dies with it anyway and which resume re-dispatches (a candidate with no
        finished evaluation is pending). Telling and asking stay before the dispatch: the
        strategy caps what is in flight (``num_workers``), so it only asks once it is told."""
        if isinstance(item, _NewAsk):
            cand, fidelity = item.candidate, self._first_fidelity
            ref = self.pool.submit(worker, self._request(item.recipe, fidelity))
            started = time.monotonic()
            self._flush()
            store_id = self._add(item)
        else:
            cand, store_id, fidelity = item
            ref = self.pool.submit(worker, self._request(self._recipe_of(store_id), fidelity))
            started = time.monotonic()
            self._flush()
        evaluation_id = self.store.start_evaluation(store_id, worker=f"worker-{worker}",
                                                    host=self.pool.node_of(worker), fidelity=fidelity)
        self._running.add(store_id)
        return _InFlight(cand, store_id, evaluation_id, worker, started, fidelity=fidelity, ref=ref)

    def _flush(self) -> None:
        """Make the store writes held back since the last dispatch, in order. A write that fails
        drops those after it, so the store still holds a prefix of what happened."""
        journal, self._journal = self._journal, []
        for write in journal:
            write()

    def _abandon(self, inflight: dict[Any, _InFlight]) -> None:
        """Record the evaluations still in flight as failed: the run stops without them."""
        self._flush()
        for job in inflight.values():
            self.store.fail_evaluation(job.evaluation_id, "the run failed fast", kind=ABANDONED)
        inflight.clear()
        self.running_evaluations = frozenset()

    def _recipe_of(self, store_id: str) -> Recipe:
        recipe = self._recipes.pop(store_id, None)
        return recipe if recipe is not None else Recipe.from_dict(self.store.get_candidate(store_id).recipe)

    def _request(self, recipe: Recipe, fidelity: Fidelity) -> Recipe | EvalRequest:
        """What the worker is sent: a bare recipe unless the run is multi-fidelity."""
        return recipe if self.fidelity is None else EvalRequest(recipe, fidelity)

    def _unscored_references(self) -> list[_Job]:
        """Source models are scored once per run, beside the search, for the leaderboard.

        Their results are shared like any other: a search candidate whose recipe is a source
        model's (a seed, a data-flow path's start) is told the reference's result.
        """
        out: list[_Job] = []
        finished = _final_results(self.store, self.run_id)
        for name, recipe in self.references.items():
            record = self.store.add_candidate(self.run_id, (), recipe, kind=CandidateKind.REFERENCE, label=name)
            result = finished.get((record.id, Fidelity.FULL))
            if result is not None and not result.failed:
                self._results[record.id] = result
                self._told_at[record.id] = Fidelity.FULL
                self._best_reference = max(self._best_reference, result.fitness)
            else:
                self._recipes[record.id] = recipe
                out.append((None, record.id, Fidelity.FULL))
        return out

    def _budget_spent(self, start: float, inflight: dict[Any, _InFlight], queue: list[_Job]) -> bool:
        """Whether no new candidate may be asked (queued work still runs)."""
        searching = sum(1 for job in inflight.values() if job.candidate is not None)
        if self.max_evaluations is not None and self._told + searching >= self.max_evaluations:
            return True
        if not self._affordable(self._first_fidelity, self._reserved(inflight, queue)):
            return True
        return self.max_seconds is not None and time.monotonic() - start >= self.max_seconds

    @property
    def _first_fidelity(self) -> Fidelity:
        """The fidelity a new candidate is scored at first: FULL once the low rung is dropped."""
        if self.fidelity is None or self.stats.low_rung_dropped is not None:
            return Fidelity.FULL
        return Fidelity.LOW

    def _reserved(self, inflight: dict[Any, _InFlight], queue: list[_Job]) -> int:
        """Samples that the evaluations in flight and queued will score (0 without ``max_samples``)."""
        if self.sample_budget is None:
            return 0
        cost = self.sample_budget.per_evaluation
        return sum(cost[job.fidelity] for job in inflight.values()) + sum(cost[fidelity] for *_, fidelity in queue)

    def _affordable(self, fidelity: Fidelity, reserved: int) -> bool:
        """Whether one more evaluation at ``fidelity`` fits in ``max_samples`` beside the samples
        scored so far (`LoopStats.samples_scored`) and ``reserved``."""
        budget = self.sample_budget
        return budget is None or (self.stats.samples_scored + reserved + budget.per_evaluation[fidelity]
                                  <= budget.max_samples)

    def _ask(self) -> _Job | _NewAsk | None:
        """Ask for one candidate; duplicates of finished recipes are told from cache at once.
        A recipe new to the run is stored when it is dispatched (`_dispatch`)."""
        while True:
            asked = self.strategy.ask(1)
            if not asked:
                return None
            cand = asked[0]
            self._asked += 1
            recipe = self.space.decode(cand.genome)
            store_id = self._by_hash.get(recipe.hash)
            if store_id is None:
                return _NewAsk(cand, recipe)
            self._ids[cand.id] = store_id  # the store's add_candidate would return this one too
            cached = self._results.get(store_id)
            if cached is not None:
                self._tell(cand, store_id, cached, self._told_at[store_id])
            elif store_id in self._running:
                self._waiting.setdefault(store_id, []).append(cand)
            else:
                self._recipes[store_id] = recipe
                return cand, store_id, self._first_fidelity

    def _add(self, ask: _NewAsk) -> str:
        """Store a new candidate; returns its store id."""
        cand = ask.candidate
        parents = tuple(self._ids[p] for p in cand.parents if p in self._ids)
        record = self.store.add_candidate(self.run_id, cand.genome, ask.recipe, parents=parents,
                                          generation=int(cand.info.get("generation", 0)),
                                          strategy_info={"strategy_id": cand.id, **cand.info})
        self._ids[cand.id] = self._by_hash[ask.recipe.hash] = record.id
        return record.id

    def _record(self, job: _InFlight, outcome: EvalOutcome, reserved: int) -> bool:
        """Store an outcome and tell it (and any twin asks); True when it is promoted instead.
        ``reserved``: samples the other work in flight and queued will score."""
        if outcome.ok:
            self.stats.samples_scored += outcome.samples_scored
            self._journal.append(partial(
                self.store.finish_evaluation, job.evaluation_id, outcome.fitness, metrics=outcome.metrics,
                samples=outcome.samples, scores=outcome.scores,
                timings={"merge_seconds": outcome.merge_seconds, "eval_seconds": outcome.eval_seconds}))
        else:
            self._journal.append(partial(self.store.fail_evaluation, job.evaluation_id, outcome.message,
                                         kind=outcome.error_kind))
        if outcome.ok and self.strategy.needs_nonnegative_samples:
            from evolve.strategies.m2n2 import check_samples_nonnegative

            try:  # the first scores show it (a reference's, usually): stop before the budget goes
                check_samples_nonnegative(outcome.validation_samples, where=self.strategy.name)
            except UserError as exc:
                raise RunFailed(str(exc)) from None
        result = Result(fitness=outcome.fitness, samples=outcome.validation_samples, failed=False) if outcome.ok \
            else _FAILED
        if job.candidate is not None and not outcome.ok:
            self.stats.failures += 1
        elif job.candidate is not None and job.fidelity == Fidelity.LOW:
            if self.stats.low_rung_dropped is None and len(self._low) < FLAT_LOW_RESULTS:
                self.stats.low_rung_dropped = low_rung_flat([*(r.fitness for r in self._low.values()), result.fitness])
            if self._promote(job.store_id, result, reserved):
                self.stats.promoted += 1
                return True
        elif job.candidate is not None:
            self.stats.best_fitness = max(self.stats.best_fitness, outcome.fitness)
        self._settle(job, result)
        return False

    def _promote(self, store_id: str, low: Result, reserved: int) -> bool:
        """Whether a low result is promoted (`promotes`): and only when its full evaluation
        fits in ``max_samples`` (beside ``reserved``)."""
        earlier = [r.fitness for r in self._low.values()]
        self._low[store_id] = low
        best_full = max(self.stats.best_fitness, self._best_reference)
        return (promotes(low.fitness, earlier, best_full, self.fidelity.promote_fraction, self._optimism())
                and self._affordable(Fidelity.FULL, reserved))

    def _optimism(self) -> float:
        """How far the promoted candidates' low results were above their full ones, on average
        (0 when they were not): a low result picked for being high is high partly by luck."""
        gaps = [self._low[cid].fitness - r.fitness for cid, r in self._results.items()
                if cid in self._low and self._told_at.get(cid) == Fidelity.FULL and not r.failed]
        return max(0.0, sum(gaps) / len(gaps)) if gaps else 0.0

    def _settle(self, job: _InFlight, result: Result) -> None:
        """Tell a finished evaluation's result (`_as_told`) to its candidate and any twin asks;
        a reference's is kept for identical asks, never told itself."""
        result, fidelity = self._as_told(job.store_id, result, job.fidelity)
        if job.candidate is None:
            self._results[job.store_id] = result
            self._told_at[job.store_id] = fidelity
            if not result.failed:
                self._best_reference = max(self._best_reference, result.fitness)
        else:
            if not result.failed:
                self.stats.evaluations += 1
            self._tell(job.candidate, job.store_id, result, fidelity)
        for twin in self._waiting.pop(job.store_id, []):
            self._tell(twin, job.store_id, result, fidelity)

    def _as_told(self, store_id: str, result: Result, fidelity: Fidelity) -> tuple[Result, Fidelity]:
        """What the strategy is told of a finished evaluation: a failed full one after a
        successful low one is told the low result (a real measurement; the full row stays
        FAILED). A resumed run tells a finished, untold evaluation through here too; what was
        told before replays from the fidelity its tell recorded."""
        low = self._low.get(store_id)
        if result.failed and fidelity == Fidelity.FULL and low is not None:
            return low, Fidelity.LOW
        return result, fidelity

    def _tell(self, cand: Candidate, store_id: str, result: Result, fidelity: Fidelity) -> None:
        self.strategy.tell(cand.id, result)
        self._results[store_id] = result
        self._told_at[store_id] = fidelity
        self._told += 1
        self._journal.append(partial(self.store.save_snapshot, self.run_id, {
            "asked": self._asked, "strategy_id": cand.id, "candidate": store_id, "told": self._told,
            "fidelity": fidelity.value}))


_FAILED = Result(fitness=None, samples=None, failed=True)


def _final_results(store: Store, run_id: str) -> dict[tuple[str, Fidelity], Result]:
    """The last finished evaluation of each candidate at each fidelity, as the strategy was told it."""
    out: dict[tuple[str, Fidelity], Result] = {}
    for ev in store.list_evaluations(run_id, fidelity=None):
        key = (ev.candidate_id, ev.fidelity)
        if ev.status == EvaluationStatus.COMPLETE:
            samples = store.get_samples(ev.id, "validation")
            out[key] = Result(fitness=ev.fitness, samples=samples or None, failed=False)
        elif ev.status == EvaluationStatus.FAILED and ev.error_kind not in (WORKER_LOST, ABANDONED):
            out.setdefault(key, _FAILED)
    return out


def _progress(enabled: bool, total: int | None) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not enabled)

