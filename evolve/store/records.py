"""Frozen records the store hands to callers.

Callers never see ORM rows: every read returns one of these immutable dataclasses, built
inside the database session, so nothing is lazily loaded later and nothing a caller does
to a record can reach the database. JSON fields are fresh copies on every read.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workers.outcome import Fidelity  # torch-free: the driver-worker contract owns the names


class RunStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"


class CandidateKind(enum.StrEnum):
    """SEARCH: proposed by the strategy. REFERENCE: a source model scored as it is, beside the search."""

    SEARCH = "search"
    REFERENCE = "reference"


class EvaluationStatus(enum.StrEnum):
    """Life cycle: RUNNING -> COMPLETE | FAILED | STALE.

    `Store.start_evaluation` creates a RUNNING evaluation. COMPLETE, FAILED and STALE are
    final: the row never changes again.
    """

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    STALE = "STALE"

    @property
    def is_finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({EvaluationStatus.COMPLETE, EvaluationStatus.FAILED, EvaluationStatus.STALE})


@dataclass(frozen=True)
class RunRecord:
    id: str
    name: str
    config: dict[str, Any]
    status: RunStatus
    seed: int
    created_at: datetime
    updated_at: datetime
    heartbeat_at: datetime | None
    error: str | None = None
    """Why the run stopped on its own (e.g. fail-fast), if it did."""


@dataclass(frozen=True)
class CandidateRecord:
    id: str
    run_id: str
    number: int
    """Ask order within the run (0, 1, 2, ...), assigned by the store."""
    generation: int
    genome: tuple[float, ...]
    recipe: dict[str, Any]
    recipe_hash: str
    parents: tuple[str, ...]
    strategy_info: dict[str, Any]
    created_at: datetime
    kind: CandidateKind = CandidateKind.SEARCH
    label: str | None = None
    """A reference's name (its model directory's name)."""


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds spent building (merging) and scoring one candidate."""

    merge_seconds: float | None = None
    eval_seconds: float | None = None

    @classmethod
    def coerce(cls, value: Timings | Mapping[str, Any] | None) -> Timings:
        if value is None:
            return cls()
        if isinstance(value, Timings):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"merge_seconds", "eval_seconds"}
            if unknown:
                raise ValueError(
                    f"timings: unknown keys {sorted(unknown)}; expected merge_seconds, eval_seconds"
                )
            return cls(
                merge_seconds=_opt_float(value.get("merge_seconds")),
                eval_seconds=_opt_float(value.get("eval_seconds")),
            )
        raise TypeError(f"timings must be a Timings, a mapping or None, not {type(value).__name__}")


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class EvaluationRecord:
    id: int
    run_id: str
    candidate_id: str
    status: EvaluationStatus
    attempt: int
    """1 for the first evaluation of a candidate, 2 after a FAILED or STALE one, ..."""
    fitness: float | None
    """The search objective (higher is better); None until COMPLETE. May be +-inf or NaN."""
    scores: dict[str, float]
    """One scalar per split, e.g. {"validation": 0.52, "test": 0.49}; used by leaderboards."""
    metrics: dict[str, Any]
    """{split: {task: {metric: value}}}."""
    merge_seconds: float | None
    eval_seconds: float | None
    worker: str | None
    host: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    error_kind: str | None = None
    """Why it failed, as a kind (`workers.outcome`: ``worker_lost``, ``merge_error``, ...)."""
    fidelity: Fidelity = Fidelity.FULL
    """LOW: a multi-fidelity run's first look at a candidate (a subsample); FULL: the run's tasks."""
    samples_scored: int | None = None
    """Documents scored over every task and split (its per-sample scores); None before 0003."""

    @property
    def timings(self) -> Timings:
        return Timings(self.merge_seconds, self.eval_seconds)


@dataclass(frozen=True)
class LeaderboardEntry:
    rank: int
    """1-based."""
    score: float
    """The evaluation's score on the leaderboard's split."""
    split: str
    metrics: dict[str, Any]
    """{task: {metric: value}} on the leaderboard's split."""
    candidate: CandidateRecord
    evaluation: EvaluationRecord


@dataclass(frozen=True)
class SnapshotRecord:
    run_id: str
    sequence: int
    """1, 2, 3, ... per run, assigned by the store in save order."""
    state: dict[str, Any] = field(repr=False)
    created_at: datetime | None = None
