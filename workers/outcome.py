"""The driver↔worker contract: what scoring one candidate returns, and who can produce it.

Torch-free on purpose: the driver imports it without pulling in any model code. A worker's
scorer (`RecipeScorer`) receives the candidate as a `Recipe`, decoded once in the driver,
and answers with a frozen `EvalOutcome`; the driver stores it as it is and tells the strategy.
A candidate's own failure is an outcome, never an exception; a worker that dies mid-candidate
becomes an outcome with status ``lost`` (made by the pool, not the worker).

A multi-fidelity run (the config's ``fidelity:``) submits an `EvalRequest` instead of a bare
`Recipe`: the same candidate at low fidelity (a fixed subsample of each validation task) or
full. Scorers that support it accept both (`EvalRequest.of`); a bare recipe means full.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from search_spaces.recipe import Recipe


class Fidelity(enum.StrEnum):
    LOW = "low"  # every validation task on the same seeded subsample of its documents
    FULL = "full"  # the run's tasks as configured (and the test split, when reported)


@dataclass(frozen=True)
class EvalRequest:
    """One candidate to score at one fidelity."""

    recipe: Recipe
    fidelity: Fidelity = Fidelity.FULL

    def __post_init__(self) -> None:
        object.__setattr__(self, "fidelity", Fidelity(self.fidelity))

    @classmethod
    def of(cls, item: Recipe | EvalRequest) -> EvalRequest:
        """What a worker was sent, as a request (a bare recipe is a full-fidelity one)."""
        return item if isinstance(item, EvalRequest) else cls(item)


class OutcomeStatus(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"  # the candidate's own failure (see `error_kind`)
    LOST = "lost"  # the worker died while scoring it: the candidate may be retried elsewhere


# Kinds of failure, beside the harness's own (`workers.scoring.result.FailureKind`).
SCORER_ERROR = "scorer_error"  # an exception escaped the scorer: a bug, reported with its message
WORKER_LOST = "worker_lost"


@dataclass(frozen=True)
class EvalOutcome:
    """One candidate scored (or not) by one worker.

    - ``fitness``: the search objective on the validation split, higher is better;
    - ``scores``: split -> the weighted sum of its task metrics (what leaderboards rank);
    - ``metrics``: split -> task -> metric -> aggregate value;
    - ``samples``: split -> task -> per-sample scores in document order (what M2N2 competes on);
    - ``merge_seconds`` / ``eval_seconds``: where the worker's time went;
    - ``error_kind`` / ``error``: why it failed, one line.
    """

    status: OutcomeStatus
    fitness: float | None = None
    scores: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, Mapping[str, float]]] = field(default_factory=dict)
    samples: Mapping[str, Mapping[str, tuple[float, ...]]] = field(default_factory=dict)
    merge_seconds: float = 0.0
    eval_seconds: float = 0.0
    error_kind: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", OutcomeStatus(self.status))
        if self.status == OutcomeStatus.OK and self.fitness is None:
            raise ValueError("an ok EvalOutcome needs a fitness")
        if self.status != OutcomeStatus.OK and not self.error:
            raise ValueError(f"a {self.status} EvalOutcome needs an error message")

    @property
    def ok(self) -> bool:
        return self.status == OutcomeStatus.OK

    @property
    def validation_samples(self) -> dict[str, tuple[float, ...]] | None:
        return dict(self.samples.get("validation", {})) or None

    @property
    def samples_scored(self) -> int:
        """Documents scored over every task and split: the cost unit of multi-fidelity runs."""
        return sum(len(values) for tasks in self.samples.values() for values in tasks.values())

    @property
    def message(self) -> str:
        """``kind: error`` as stored and shown."""
        return f"{self.error_kind}: {self.error}" if self.error_kind else str(self.error)

    @classmethod
    def failed(cls, kind: str, error: str, merge_seconds: float = 0.0, eval_seconds: float = 0.0) -> EvalOutcome:
        first = error.strip().splitlines()[0] if error.strip() else kind
        return cls(OutcomeStatus.FAILED, error_kind=kind, error=first,
                   merge_seconds=merge_seconds, eval_seconds=eval_seconds)

    @classmethod
    def lost(cls, reason: str) -> EvalOutcome:
        return cls(OutcomeStatus.LOST, error_kind=WORKER_LOST, error=reason)


class RecipeScorer(Protocol):
    """What a worker actor runs; built inside the actor from plain keyword arguments."""

    def evaluate(self, recipe: Recipe) -> EvalOutcome: ...


class FidelityScorer(Protocol):
    """A `RecipeScorer` that also scores at low fidelity (what a multi-fidelity run needs)."""

    def evaluate(self, request: Recipe | EvalRequest) -> EvalOutcome: ...
