"""The SQL store of search runs: runs, candidates, evaluations, strategy snapshots.

One class, `Store`, over SQLAlchemy, for SQLite (a file, or in memory) and PostgreSQL:
sessions, retries and the queries. Engines, URLs and the schema are in `engine.py`; rows
become frozen records, and caller values become column values, in `mapping.py`. Its
invariants are listed in its docstring; `tests/evolve/test_store.py` is the contract suite
that checks them on every backend.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from evolve.store.engine import (
    WRITE,
    current_revision,
    default_store_url,
    display,
    ensure_schema,
    is_memory_sqlite,
    is_disconnect,
    is_retryable,
    make_engine,
    parse_url,
)
from evolve.store.errors import (
    EvaluationStateError,
    FinishedEvaluationError,
    NotFoundError,
    StoreError,
)
from evolve.store.mapping import (
    as_float,
    candidate_record,
    evaluation_record,
    recipe_and_hash,
    run_record,
    sample_scores,
    snapshot_record,
    split_mapping,
    to_list,
)
from evolve.store.models import (
    CandidateModel,
    EvaluationModel,
    RunModel,
    SampleScoresModel,
    SnapshotModel,
    encode_float,
    seconds_since,
    to_json_data,
    utcnow,
)
from evolve.store.records import (
    CandidateKind,
    CandidateRecord,
    EvaluationRecord,
    EvaluationStatus,
    Fidelity,
    LeaderboardEntry,
    RunRecord,
    RunStatus,
    SnapshotRecord,
    Timings,
)

_log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_ERROR_CHARS = 20_000  # keep the tail of long tracebacks

_S = EvaluationStatus


class Store:
    """Persistent record of search runs, shared by the driver, the workers and the UI.

    Invariants (checked by the contract tests on every backend):

    - Thread- and process-safe. Several processes, and several runs, may share one
      database. Every public method is one transaction; a write that meets a lock timeout
      or a deadlock is rerun whole, up to `max_retries` times with jittered back-off; on
      PostgreSQL, one that loses its connection (a server restart) is rerun for up to
      `reconnect_seconds`. Opening a store that cannot be reached fails at once.
    - Callers get frozen records (`records.py`), never ORM rows, and JSON fields are
      fresh copies. Floats round-trip exactly, including +-inf and NaN.
    - Timestamps come from the database clock (naive UTC), never from the caller's.
    - Within a run, a recipe hash appears once: `add_candidate` with a known hash returns
      the existing candidate, so identical recipes are never scored twice. Candidates are
      numbered 0, 1, 2, ... in the order they were added (`CandidateRecord.number`).
    - A candidate has, per fidelity, at most one RUNNING and at most one COMPLETE
      evaluation, never both; `start_evaluation` refuses otherwise. A multi-fidelity run
      scores a candidate LOW first and, if promoted, FULL: two rows. Reads of evaluations
      (`list_evaluations`, `leaderboard`) see FULL ones unless asked otherwise, so every
      report, leaderboard and export ranks full-fidelity results only.
    - Finished evaluations (COMPLETE, FAILED, STALE) are immutable: finishing, failing or
      heartbeating them raises `FinishedEvaluationError`. A worker whose evaluation was
      declared STALE learns it from its next heartbeat and should stop.
    - `fail_stale_evaluations` only moves RUNNING evaluations whose last heartbeat is
      older than the grace period, with a conditional update, so it is safe to race with
      a late `finish_evaluation`: exactly one of them wins. Keep the grace period well
      above the heartbeat interval (e.g. 4x) so live evaluations are never failed.
    - Strategy snapshots are JSON (never pickle), numbered 1, 2, 3, ... per run.
    - Higher fitness is better. Leaderboards rank by a split's score, NaN last.
    - The schema is managed by Alembic. A new, empty database is created at the head
      revision on open; an older schema raises `SchemaVersionError` naming the upgrade
      command (or is upgraded when `upgrade=True`), and a newer one always raises.
    - `read_only=True` opens an existing store at the head revision for reading only: the
      database itself refuses writes (SQLite `mode=ro`, PostgreSQL read-only transactions).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        upgrade: bool = False,
        busy_timeout: float = 30.0,
        max_retries: int = 8,
        reconnect_seconds: float = 60.0,
        read_only: bool = False,
    ) -> None:
        self._url = parse_url(url if url is not None else default_store_url())
        self.url = display(self._url)
        self.read_only = read_only
        self._max_retries = max_retries
        self._reconnect_seconds = reconnect_seconds
        self._is_sqlite = self._url.get_backend_name() == "sqlite"
        self._engine = make_engine(self._url, busy_timeout, read_only=read_only)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        # The in-memory database is one shared connection: serialize its transactions.
        self._lock: Any = threading.RLock() if is_memory_sqlite(self._url) else nullcontext()

        def open_schema() -> None:
            with self._lock:
                ensure_schema(self._engine, self.url, upgrade, read_only=read_only)

        try:
            self._retrying(open_schema)
        except BaseException:
            self._engine.dispose()
            raise

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release the connection pool. An in-memory database is gone afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @contextmanager
    def _session(self, *, write: bool) -> Iterator[Session]:
        """The one place that opens, commits, rolls back and closes database sessions.

        Driver errors (`SQLAlchemyError`) leave as `StoreError`, with the original as
        `__cause__`; the store's own errors pass through after the rollback.
        """
        with self._lock:
            session = self._sessions()
            try:
                if write:
                    session.connection(execution_options={WRITE: True})
                yield session
                session.commit()
            except SQLAlchemyError as exc:
                _safe_rollback(session)
                orig = getattr(exc, "orig", None) or exc
                raise StoreError(f"{self.url}: {type(orig).__name__}: {orig}".strip()) from exc
            except BaseException:
                _safe_rollback(session)
                raise
            finally:
                session.close()

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Rerun a transaction that met a lock (up to `max_retries` times) or a lost
        connection (for up to `reconnect_seconds`), with jittered exponential back-off.

        A transaction that fails is rolled back whole, so rerunning it is safe; the one
        unknowable case is a commit whose acknowledgement was lost with the connection, which
        the store's idempotent writes (a recipe hash is added once) mostly absorb.
        """
        delay, tries = 0.02, 0
        deadline = time.monotonic() + self._reconnect_seconds
        while True:
            try:
                return attempt()
            except StoreError as exc:
                if not self._is_sqlite and is_disconnect(exc.__cause__) and time.monotonic() < deadline:
                    _log.warning("store %s unreachable (%s); retrying in up to %.1fs", self.url, exc, delay)
                elif is_retryable(exc.__cause__) and tries < self._max_retries:
                    tries += 1
                    _log.debug("store busy (%s); retrying in up to %.2fs", exc, delay)
                else:
                    raise
                time.sleep(random.uniform(0.5 * delay, delay))
                delay = min(2 * delay, 2.0)

    def _write(self, work: Callable[[Session], T]) -> T:
        def attempt() -> T:
            with self._session(write=True) as session:
                return work(session)

        return self._retrying(attempt)

    def _read(self, work: Callable[[Session], T]) -> T:
        def attempt() -> T:
            with self._session(write=False) as session:
                return work(session)

        return self._retrying(attempt)

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at."""
        return self._read(lambda s: current_revision(s.connection()))

    # -- runs ---------------------------------------------------------------------------

    def create_run(
        self,
        name: str,
        config: Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
        run_id: str | None = None,
    ) -> RunRecord:
        """Start a RUNNING run. Without a seed, a random one is drawn and persisted, so every
        run can be replayed."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("run name must be a non-empty string")
        config_data = to_json_data(dict(config or {}), "config")
        seed = secrets.randbits(31) if seed is None else int(seed)
        run_id = run_id or f"r-{secrets.token_hex(4)}"

        def work(session: Session) -> RunRecord:
            if session.get(RunModel, run_id) is not None:
                raise StoreError(f"run {run_id!r} already exists")
            row = RunModel(
                id=run_id,
                name=name,
                config=config_data,
                status=RunStatus.RUNNING.value,
                seed=seed,
                heartbeat_at=utcnow(),
            )
            session.add(row)
            session.flush()
            session.refresh(row)
            return run_record(row)

        return self._write(work)

    def get_run(self, run_id: str) -> RunRecord:
        return self._read(lambda s: run_record(RunModel.find_or_raise(s, run_id)))

    def list_runs(self, status: RunStatus | str | None = None) -> list[RunRecord]:
        """Runs, oldest first."""
        query = sa.select(RunModel).order_by(RunModel.created_at, RunModel.id)
        if status is not None:
            query = query.where(RunModel.status == RunStatus(status).value)
        return self._read(lambda s: [run_record(row) for row in s.scalars(query)])

    def set_run_status(self, run_id: str, status: RunStatus | str, error: str | None = None) -> RunRecord:
        """Any transition is allowed: `resume` sets an INTERRUPTED or FAILED run back to
        RUNNING. `error` says why a run stopped on its own; it is cleared by the next status."""
        status = RunStatus(status)

        def work(session: Session) -> RunRecord:
            row = RunModel.find_or_raise(session, run_id, for_update=True)
            row.status = status.value
            row.error = error
            row.updated_at = utcnow()
            session.flush()
            session.refresh(row)
            return run_record(row)

        return self._write(work)

    def heartbeat_run(self, run_id: str) -> None:
        """Record that the run's driver is alive (database clock)."""

        def work(session: Session) -> None:
            result = session.execute(
                sa.update(RunModel)
                .where(RunModel.id == run_id)
                .values(heartbeat_at=utcnow(), updated_at=RunModel.updated_at)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"run {run_id!r} is not in the store")

        self._write(work)

    def seconds_since_heartbeat(self, run_id: str) -> float | None:
        """Seconds since the run's driver last beat, on the database clock (None: never)."""

        def work(session: Session) -> float | None:
            RunModel.find_or_raise(session, run_id)
            age = session.scalar(
                sa.select(seconds_since(RunModel.heartbeat_at)).where(RunModel.id == run_id)
            )
            return None if age is None else float(age)

        return self._read(work)

    # -- candidates ---------------------------------------------------------------------

    def add_candidate(
        self,
        run_id: str,
        genome: Sequence[float],
        recipe: Mapping[str, Any] | Any,
        *,
        recipe_hash: str | None = None,
        parents: Iterable[str] = (),
        generation: int = 0,
        strategy_info: Mapping[str, Any] | None = None,
        kind: CandidateKind | str = CandidateKind.SEARCH,
        label: str | None = None,
    ) -> CandidateRecord:
        """Record a proposed candidate, or return the run's existing candidate with the same
        recipe hash (unchanged: its genome, parents and generation are kept).

        `recipe` is a JSON mapping or an object with `to_dict()` (a `search_spaces.Recipe`);
        its hash defaults to the object's `hash`, else to `recipe_hash_of(recipe)`. Parents
        are candidate ids (of any run) and must exist.
        """
        recipe_data, recipe_hash = recipe_and_hash(recipe, recipe_hash)
        genome_data = tuple(float(x) for x in to_list(genome, "genome"))
        parent_ids = tuple(parents)
        if not all(isinstance(p, str) for p in parent_ids):
            raise TypeError(f"parents must be candidate ids (strings), got {parent_ids!r}")
        info = to_json_data(dict(strategy_info or {}), "strategy_info")
        generation = int(generation)
        kind = CandidateKind(kind)

        def work(session: Session) -> CandidateRecord:
            # Serialize additions per run (PostgreSQL), so `number` has no gaps or races.
            # FOR NO KEY UPDATE still lets evaluations referencing the run be inserted.
            RunModel.find_or_raise(session, run_id, for_update=True, key_share=True)
            existing = _find_by_hash(session, run_id, recipe_hash)
            if existing is not None:
                return candidate_record(existing)
            if parent_ids:
                found = set(
                    session.scalars(
                        sa.select(CandidateModel.id).where(CandidateModel.id.in_(parent_ids))
                    )
                )
                missing = [p for p in parent_ids if p not in found]
                if missing:
                    raise NotFoundError(f"parent candidates {missing} are not in the store")
            number = session.scalar(
                sa.select(sa.func.coalesce(sa.func.max(CandidateModel.number), -1)).where(
                    CandidateModel.run_id == run_id
                )
            )
            row = CandidateModel(
                id=f"c-{secrets.token_hex(6)}",
                run_id=run_id,
                number=int(number) + 1,
                generation=generation,
                genome=list(genome_data),
                recipe=recipe_data,
                recipe_hash=recipe_hash,
                parents=list(parent_ids),
                strategy_info=info,
                kind=kind.value,
                label=label,
            )
            session.add(row)
            session.flush()
            session.refresh(row)
            return candidate_record(row)

        return self._write(work)

    def get_candidate(self, candidate_id: str) -> CandidateRecord:
        return self._read(lambda s: candidate_record(CandidateModel.find_or_raise(s, candidate_id)))

    def find_candidate_by_hash(self, run_id: str, recipe_hash: str) -> CandidateRecord | None:
        def work(session: Session) -> CandidateRecord | None:
            row = _find_by_hash(session, run_id, recipe_hash)
            return None if row is None else candidate_record(row)

        return self._read(work)

    def list_candidates(
        self, run_id: str, *, generation: int | None = None, kind: CandidateKind | str | None = None
    ) -> list[CandidateRecord]:
        """The run's candidates in the order they were added (of one `kind`, if given)."""
        query = (
            sa.select(CandidateModel)
            .where(CandidateModel.run_id == run_id)
            .order_by(CandidateModel.number)
        )
        if generation is not None:
            query = query.where(CandidateModel.generation == int(generation))
        if kind is not None:
            query = query.where(CandidateModel.kind == CandidateKind(kind).value)
        return self._read(lambda s: [candidate_record(row) for row in s.scalars(query)])

    # -- evaluations --------------------------------------------------------------------

    def start_evaluation(
        self, candidate_id: str, worker: str, host: str | None = None, fidelity: Fidelity | str = Fidelity.FULL
    ) -> int:
        """Mark the candidate as being scored at `fidelity` by `worker` on `host` (default:
        this host) and return the evaluation id.

        Raises `EvaluationStateError` if the candidate already has a RUNNING or COMPLETE
        evaluation at that fidelity. A candidate whose evaluations FAILED or went STALE can be
        started again; `attempt` counts the tries at that fidelity.
        """
        host = host if host is not None else socket.gethostname()
        fidelity = Fidelity(fidelity)

        def work(session: Session) -> int:
            candidate = CandidateModel.find_or_raise(session, candidate_id, for_update=True)
            siblings = [e for e in _evaluations_of(session, candidate_id) if e.fidelity == fidelity.value]
            _check_can_start(candidate_id, siblings)
            row = EvaluationModel(
                fidelity=fidelity.value,
                candidate_id=candidate_id,
                run_id=candidate.run_id,
                attempt=len(siblings) + 1,
                status=_S.RUNNING.value,
                worker=str(worker),
                host=str(host),
                started_at=utcnow(),
                heartbeat_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return row.id

        return self._write(work)

    def heartbeat_evaluation(self, evaluation_id: int) -> None:
        """Record that the evaluation's worker is alive (database clock).

        Raises `FinishedEvaluationError` if the evaluation is no longer RUNNING, e.g.
        because it was declared STALE: the worker should give up on it.
        """

        def work(session: Session) -> None:
            result = session.execute(
                sa.update(EvaluationModel)
                .where(EvaluationModel.id == evaluation_id, EvaluationModel.status == _S.RUNNING.value)
                .values(heartbeat_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 0:
                _check_updatable(EvaluationModel.find_or_raise(session, evaluation_id))

        self._write(work)

    def finish_evaluation(
        self,
        evaluation_id: int,
        fitness: float,
        metrics: Mapping[str, Mapping[str, Any]] | None = None,
        samples: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
        timings: Timings | Mapping[str, Any] | None = None,
        *,
        scores: Mapping[str, float] | None = None,
    ) -> EvaluationRecord:
        """Record a RUNNING evaluation's result; it becomes COMPLETE and immutable.

        - `fitness`: the search objective, higher is better; +-inf and NaN are kept.
        - `metrics`: {split: {task: {metric: value}}}, e.g. {"validation": {...}, "test": {...}}.
        - `samples`: per-sample scores, {split: {task: [score, ...]}}; how many there are is
          recorded as `samples_scored` (the cost of the evaluation).
        - `timings`: `Timings` or {"merge_seconds": s, "eval_seconds": s}.
        - `scores`: one scalar per split, for leaderboards; `scores["validation"]` defaults
          to `fitness`.
        """
        fitness = as_float(fitness, "fitness")
        metrics_data = split_mapping(metrics, "metrics")
        samples_data = sample_scores(samples)
        timing = Timings.coerce(timings)
        for name in ("merge_seconds", "eval_seconds"):
            value = getattr(timing, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"timings.{name} must be a finite number >= 0, got {value!r}")
        scores_data = {str(k): as_float(v, f"scores[{k!r}]") for k, v in (scores or {}).items()}
        scores_data.setdefault("validation", fitness)
        value, kind = encode_float(fitness)

        def work(session: Session) -> EvaluationRecord:
            row = EvaluationModel.find_or_raise(session, evaluation_id, for_update=True)
            _check_updatable(row)
            row.status = _S.COMPLETE.value
            row.fitness, row.fitness_kind = value, kind
            row.scores = scores_data
            row.metrics = metrics_data
            row.merge_seconds = timing.merge_seconds
            row.eval_seconds = timing.eval_seconds
            row.samples_scored = sum(len(values) for tasks in samples_data.values() for values in tasks.values())
            row.finished_at = utcnow()
            session.add_all(
                SampleScoresModel(evaluation_id=evaluation_id, split=split, task=task, scores=values)
                for split, tasks in samples_data.items()
                for task, values in tasks.items()
            )
            session.flush()
            session.refresh(row)
            return evaluation_record(row)

        return self._write(work)

    def fail_evaluation(self, evaluation_id: int, error: str, kind: str | None = None) -> EvaluationRecord:
        """A RUNNING evaluation becomes FAILED (immutable), keeping `error` (its last 20,000
        characters) and the failure's `kind`, if given."""
        error = str(error)
        if len(error) > _MAX_ERROR_CHARS:
            error = "...\n" + error[-_MAX_ERROR_CHARS:]

        def work(session: Session) -> EvaluationRecord:
            row = EvaluationModel.find_or_raise(session, evaluation_id, for_update=True)
            _check_updatable(row)
            row.status = _S.FAILED.value
            row.error = error
            row.error_kind = kind
            row.finished_at = utcnow()
            session.flush()
            session.refresh(row)
            return evaluation_record(row)

        return self._write(work)

    def fail_stale_evaluations(self, run_id: str, grace_seconds: float) -> list[str]:
        """Mark the run's RUNNING evaluations whose last heartbeat is more than
        `grace_seconds` old (database clock) as STALE, and return their candidate ids so
        the caller can re-queue them or tell the strategy. Safe to race with other callers
        and with late finishes: each evaluation is moved by one conditional update."""
        grace = float(grace_seconds)
        if not grace > 0:
            raise ValueError(f"grace_seconds must be > 0, got {grace_seconds!r}")
        last_seen = sa.func.coalesce(
            EvaluationModel.heartbeat_at, EvaluationModel.started_at, EvaluationModel.created_at
        )
        is_stale = sa.and_(
            EvaluationModel.status == _S.RUNNING.value, seconds_since(last_seen) > grace
        )

        def work(session: Session) -> list[str]:
            candidates = session.execute(
                sa.select(EvaluationModel.id, EvaluationModel.candidate_id)
                .where(EvaluationModel.run_id == run_id, is_stale)
                .order_by(EvaluationModel.id)
            ).all()
            failed: list[str] = []
            for evaluation_id, candidate_id in candidates:
                result = session.execute(
                    sa.update(EvaluationModel)
                    .where(EvaluationModel.id == evaluation_id, is_stale)
                    .values(
                        status=_S.STALE.value,
                        finished_at=utcnow(),
                        error=f"no heartbeat for more than {grace:g} s",
                    )
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1 and candidate_id not in failed:
                    failed.append(candidate_id)
            return failed

        return self._write(work)

    def get_evaluation(self, evaluation_id: int) -> EvaluationRecord:
        return self._read(
            lambda s: evaluation_record(EvaluationModel.find_or_raise(s, evaluation_id))
        )

    def list_evaluations(
        self,
        run_id: str,
        status: EvaluationStatus | str | Iterable[EvaluationStatus | str] | None = None,
        *,
        candidate_id: str | None = None,
        fidelity: Fidelity | str | None = Fidelity.FULL,
    ) -> list[EvaluationRecord]:
        """The run's evaluations in creation order, optionally filtered by status(es) and
        candidate; at `fidelity` only (default FULL: what reports rank; None: every one)."""
        query = (
            sa.select(EvaluationModel)
            .where(EvaluationModel.run_id == run_id)
            .order_by(EvaluationModel.id)
        )
        if fidelity is not None:
            query = query.where(EvaluationModel.fidelity == Fidelity(fidelity).value)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            query = query.where(EvaluationModel.status.in_([_S(s).value for s in statuses]))
        if candidate_id is not None:
            query = query.where(EvaluationModel.candidate_id == candidate_id)
        return self._read(lambda s: [evaluation_record(row) for row in s.scalars(query)])

    def get_samples(self, evaluation_id: int, split: str = "validation") -> dict[str, list[float]]:
        """Per-sample scores of one evaluation: {task: [score, ...]}."""

        def work(session: Session) -> dict[str, list[float]]:
            EvaluationModel.find_or_raise(session, evaluation_id)
            rows = session.execute(
                sa.select(SampleScoresModel.task, SampleScoresModel.scores)
                .where(
                    SampleScoresModel.evaluation_id == evaluation_id,
                    SampleScoresModel.split == split,
                )
                .order_by(SampleScoresModel.task)
            )
            return {task: list(scores) for task, scores in rows}

        return self._read(work)

    def leaderboard(
        self, run_id: str, split: str = "validation", limit: int | None = None
    ) -> list[LeaderboardEntry]:
        """COMPLETE full-fidelity evaluations that have a score on `split`, best first: score
        descending, NaN last, ties in evaluation order (earlier first). Each entry carries the
        candidate, the evaluation and the split's metrics."""

        def work(session: Session) -> list[LeaderboardEntry]:
            rows = session.execute(
                sa.select(EvaluationModel, CandidateModel)
                .join(CandidateModel, CandidateModel.id == EvaluationModel.candidate_id)
                .where(
                    EvaluationModel.run_id == run_id,
                    EvaluationModel.status == _S.COMPLETE.value,
                    EvaluationModel.fidelity == Fidelity.FULL.value,
                )
                .order_by(EvaluationModel.id)
            ).all()
            scored = []
            for evaluation, candidate in rows:
                score = (evaluation.scores or {}).get(split)
                if score is not None:
                    scored.append((float(score), evaluation, candidate))
            scored.sort(key=lambda item: _rank_key(item[0]))  # stable: ties keep finish order
            if limit is not None:
                scored = scored[: max(int(limit), 0)]
            return [
                LeaderboardEntry(
                    rank=rank,
                    score=score,
                    split=split,
                    metrics=dict((evaluation.metrics or {}).get(split, {})),
                    candidate=candidate_record(candidate),
                    evaluation=evaluation_record(evaluation),
                )
                for rank, (score, evaluation, candidate) in enumerate(scored, start=1)
            ]

        return self._read(work)

    # -- strategy snapshots ----------------------------------------------------------------

    def save_snapshot(self, run_id: str, state: Mapping[str, Any]) -> SnapshotRecord:
        """Append a JSON snapshot of the strategy's state; returns it with its sequence
        number (1, 2, 3, ... per run)."""
        state_data = to_json_data(dict(state), "state")

        def work(session: Session) -> SnapshotRecord:
            RunModel.find_or_raise(session, run_id, for_update=True, key_share=True)
            last = session.scalar(
                sa.select(sa.func.coalesce(sa.func.max(SnapshotModel.sequence), 0)).where(
                    SnapshotModel.run_id == run_id
                )
            )
            row = SnapshotModel(run_id=run_id, sequence=int(last) + 1, state=state_data)
            session.add(row)
            session.flush()
            session.refresh(row)
            return snapshot_record(row)

        return self._write(work)

    def list_snapshots(self, run_id: str) -> list[SnapshotRecord]:
        query = (
            sa.select(SnapshotModel)
            .where(SnapshotModel.run_id == run_id)
            .order_by(SnapshotModel.sequence)
        )
        return self._read(lambda s: [snapshot_record(row) for row in s.scalars(query)])


def upgrade_schema(url: str | None = None) -> str:
    """Bring the database at `url` to the head revision; returns that revision."""
    with Store(url, upgrade=True) as store:
        revision = store.schema_revision()
    assert revision is not None
    return revision



# -- helpers --------------------------------------------------------------------------------


def _rank_key(score: float) -> tuple[bool, float]:
    """Best first: descending score, +inf first, NaN after everything else."""
    return (True, 0.0) if math.isnan(score) else (False, -score)


def _safe_rollback(session: Session) -> None:
    try:
        session.rollback()
    except SQLAlchemyError:  # the connection is already gone; closing discards it
        _log.debug("rollback failed", exc_info=True)


def _find_by_hash(session: Session, run_id: str, recipe_hash: str) -> CandidateModel | None:
    return session.scalars(
        sa.select(CandidateModel).where(
            CandidateModel.run_id == run_id, CandidateModel.recipe_hash == recipe_hash
        )
    ).one_or_none()


def _evaluations_of(session: Session, candidate_id: str) -> list[EvaluationModel]:
    return list(
        session.scalars(
            sa.select(EvaluationModel)
            .where(EvaluationModel.candidate_id == candidate_id)
            .order_by(EvaluationModel.id)
        )
    )


def _check_can_start(candidate_id: str, siblings: list[EvaluationModel]) -> None:
    for row in siblings:
        if row.status == _S.COMPLETE.value:
            raise EvaluationStateError(
                f"candidate {candidate_id} is already scored (evaluation {row.id}); "
                "identical recipes are never scored twice"
            )
        if row.status == _S.RUNNING.value:
            raise EvaluationStateError(
                f"candidate {candidate_id} is already being evaluated "
                f"(evaluation {row.id}, worker {row.worker} on {row.host})"
            )


def _check_updatable(row: EvaluationModel) -> None:
    status = _S(row.status)
    if status.is_finished:  # every other status is RUNNING
        raise FinishedEvaluationError(
            f"evaluation {row.id} is {status.value} and can no longer change"
        )


