"""One ask/tell interface for every search strategy, with resume by replay.

The public `Strategy.ask` / `Strategy.tell` do all validation and bookkeeping (as nevergrad's
`Optimizer.ask`/`tell` do); algorithms implement only `_ask` (one proposal, or None for "not
yet") and `_tell`. Invariants every strategy keeps:

- ``ask(n)`` is exactly ``n`` successive ``ask(1)`` calls (stopping at the first "not yet"),
  and an ``_ask`` that answers None changes no state. So a run is fully described by the
  ordered log of single asks and tells, whatever batch sizes the driver used.
- Candidate ids are the ask sequence number as a string ("0", "1", ...).
- A failure (``Result.failed``, or a non-finite fitness) is always told to the algorithm,
  with a penalty fitness (see `Strategy.penalty_fitness`), so CMA generations complete.
- Identical seed + identical ask/tell sequence gives identical candidates.
- Seeds (``seeds=``: initial genomes, e.g. the source models; `evolve.seeds` builds them from
  the config) are asked first, in order, each exactly once, before any proposal of the
  algorithm; their results are told to ``_tell`` like any other (``info["origin"] == "seed"``).
  Strategies that route seeds through their own optimizer set ``asks_seeds_itself``.

Resume is by replay, not by pickle: the search loop records every ask and tell in the store,
and `evolve.loop.SearchLoop.replay` re-runs them, in order, on a fresh strategy built with the
same seed and settings. Afterwards the strategy continues exactly as if never interrupted.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search_spaces.errors import UserError


class StrategyError(RuntimeError):
    """Misuse of the ask/tell protocol, or a replay that does not reproduce its log."""


class UnknownCandidateError(StrategyError, KeyError):
    """`tell` for an id this strategy never asked."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AlreadyToldError(StrategyError):
    """`tell` twice for the same candidate."""


@dataclass(frozen=True)
class Candidate:
    """One proposal: a genome in [0, 1]^d, its lineage, and JSON-serialisable notes."""

    id: str
    genome: tuple[float, ...]
    parents: tuple[str, ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.genome, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "genome": list(self.genome), "parents": list(self.parents), "info": dict(self.info)}


@dataclass(frozen=True)
class Result:
    """What scoring a candidate gave. Fitness: higher is better.

    ``samples``: per-sample scores by task (M2N2 needs them; others ignore them).
    ``failed``: the candidate could not be built or scored; ``error`` says why.
    """

    fitness: float | None = None
    samples: Mapping[str, Sequence[float]] | None = field(default=None, hash=False, compare=True)
    failed: bool = False
    error: str | None = None

    @classmethod
    def success(cls, fitness: float, samples: Mapping[str, Sequence[float]] | None = None) -> Result:
        return cls(fitness=float(fitness), samples=samples)

    @classmethod
    def failure(cls, error: str = "failed") -> Result:
        return cls(fitness=None, samples=None, failed=True, error=error)

    def normalized(self) -> Result:
        """Validated copy: a non-finite fitness becomes a failure; a success needs a fitness."""
        if self.failed:
            return Result(None, None, True, self.error or "failed")
        if self.fitness is None:
            raise ValueError("Result: a result that did not fail needs a fitness (or use Result.failure(...))")
        if isinstance(self.fitness, bool) or not isinstance(self.fitness, int | float | np.floating | np.integer):
            raise ValueError(f"Result.fitness: must be a number, got {self.fitness!r}")
        fitness = float(self.fitness)
        if not math.isfinite(fitness):
            return Result(None, None, True, f"non-finite fitness {fitness}")
        samples = None
        if self.samples is not None:
            if not isinstance(self.samples, Mapping):
                raise ValueError("Result.samples: must map task name to a list of per-sample scores")
            samples = {}
            for task, values in self.samples.items():
                arr = np.asarray(values, dtype=np.float64)
                if arr.ndim != 1:
                    raise ValueError(f"Result.samples[{task!r}]: must be a flat list of numbers")
                if not np.all(np.isfinite(arr)):
                    return Result(None, None, True, f"non-finite per-sample score in task {task!r}")
                samples[str(task)] = [float(v) for v in arr]
        return Result(fitness, samples, False, None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fitness": self.fitness, "failed": self.failed}
        if self.samples is not None:
            out["samples"] = {k: list(v) for k, v in self.samples.items()}
        if self.error is not None:
            out["error"] = self.error
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        return cls(data.get("fitness"), data.get("samples"), bool(data.get("failed", False)), data.get("error"))


@dataclass(frozen=True)
class Proposal:
    """What an algorithm's `_ask` returns; the base class turns it into a `Candidate`."""

    genome: np.ndarray
    parents: tuple[str, ...] = ()
    info: Mapping[str, Any] = field(default_factory=dict)
    handle: Any = None  # algorithm-private object to attach to the candidate id (see `_on_asked`)


class Strategy(ABC):
    """Base class: validation, ids, bookkeeping and failure penalties.

    Subclasses set ``name`` and implement `_ask` and `_tell`; they may override `_state`
    (extra snapshot fields) and `_check_result` (reject a result before any bookkeeping).
    Every random draw must come from state seeded by ``seed`` (e.g. ``self.rng``).
    """

    name: str = "strategy"  # registry name; NevergradStrategy sets the optimizer's per instance
    asks_seeds_itself: bool = False
    """True when the subclass emits ``self.seeds`` from its own `_ask` (nevergrad's ``suggest``)."""
    needs_nonnegative_samples: bool = False
    """True when per-sample scores must be >= 0: pre-flight then runs
    `evolve.strategies.m2n2.check_samples_nonnegative` on the first results it has (M2N2 without
    a ``score_transform``); a negative score reaching `tell` is kept out, never a crash."""

    def __init__(
        self,
        dimension: int,
        seed: int = 0,
        *,
        failure_fitness: float | None = None,
        seeds: Sequence[Sequence[float]] = (),
    ) -> None:
        if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 1:
            raise ValueError(f"{self.name}: dimension must be a positive integer, got {dimension!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"{self.name}: seed must be a non-negative integer, got {seed!r}")
        if failure_fitness is not None and not math.isfinite(failure_fitness):
            raise ValueError(f"{self.name}: failure_fitness must be finite, got {failure_fitness!r}")
        self.dimension = dimension
        self.seed = seed
        self.failure_fitness = failure_fitness
        self.rng = np.random.default_rng(seed)
        self.seeds: tuple[np.ndarray, ...] = check_seeds(seeds, dimension, self.name)
        self._seed_ids: list[str] = []  # candidate ids of the seeds asked so far, in seed order
        self._candidates: dict[str, Candidate] = {}
        self._results: dict[str, Result] = {}
        self._pending: dict[str, Candidate] = {}  # insertion-ordered
        self._best: tuple[float, str] | None = None
        self._worst: float | None = None
        self._num_failed = 0

    # -- public protocol ----------------------------------------------------------------
    def ask(self, n: int = 1) -> list[Candidate]:
        """Up to ``n`` new candidates; fewer (even none) when the algorithm waits for results."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"ask: n must be a non-negative integer, got {n!r}")
        out = []
        for _ in range(n):
            candidate = self._ask_one()
            if candidate is None:
                break
            out.append(candidate)
        return out

    def tell(self, candidate_id: str, result: Result) -> None:
        """Report ``result`` for a candidate asked earlier (any order, exactly once)."""
        if not isinstance(result, Result):
            raise TypeError(f"tell: expected a Result, got {type(result).__name__}")
        if candidate_id not in self._candidates:
            raise UnknownCandidateError(
                f"tell: candidate '{candidate_id}' was never asked by this {self.name} strategy"
            )
        if candidate_id in self._results:
            raise AlreadyToldError(f"tell: candidate '{candidate_id}' was already told")
        result = result.normalized()
        if not result.failed:
            self._check_result(result)
        candidate = self._candidates[candidate_id]
        fitness = self.penalty_fitness() if result.failed else result.fitness
        # Bookkeeping first: if the algorithm raises below, the tell is still on record and
        # replay will raise at the same point; that is a bug to fix, not a state to lose.
        self._results[candidate_id] = result
        del self._pending[candidate_id]
        if result.failed:
            self._num_failed += 1
        else:
            if self._best is None or result.fitness > self._best[0]:
                self._best = (result.fitness, candidate_id)
            self._worst = result.fitness if self._worst is None else min(self._worst, result.fitness)
        self._tell(candidate, result, fitness)

    def penalty_fitness(self) -> float:
        """The fitness a failure is told with: ``failure_fitness`` if set, else below the worst seen.

        Adaptive default: ``worst - max(1, best - worst)`` over the successful fitnesses so far,
        or -1.0 before any success (our fitnesses are mean accuracies in [0, 1]).
        """
        if self.failure_fitness is not None:
            return float(self.failure_fitness)
        if self._worst is None:
            return -1.0
        best = self._best[0]
        return self._worst - max(1.0, best - self._worst)

    # -- introspection ------------------------------------------------------------------
    @property
    def pending(self) -> tuple[Candidate, ...]:
        """Candidates asked and not yet told, oldest first."""
        return tuple(self._pending.values())

    @property
    def num_pending(self) -> int:
        return len(self._pending)

    @property
    def num_asked(self) -> int:
        return len(self._candidates)

    @property
    def num_told(self) -> int:
        return len(self._results)

    def candidate(self, candidate_id: str) -> Candidate:
        try:
            return self._candidates[candidate_id]
        except KeyError:
            raise UnknownCandidateError(f"candidate '{candidate_id}' was never asked") from None

    @property
    def best(self) -> tuple[Candidate, float] | None:
        """The best successful candidate so far and its fitness (earliest wins ties)."""
        if self._best is None:
            return None
        return self._candidates[self._best[1]], self._best[0]

    @property
    def seeds_pending(self) -> bool:
        """True until every seed has been asked and told (CMA waits for this to centre)."""
        return len(self._seed_ids) < len(self.seeds) or any(i not in self._results for i in self._seed_ids)

    def seed_results(self) -> list[tuple[Candidate, Result]]:
        """The seeds told so far, in seed order, with their (normalized) results."""
        return [(self._candidates[i], self._results[i]) for i in self._seed_ids if i in self._results]

    def state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot summary (not a resume mechanism: use `replay`)."""
        best = self.best
        return {
            "strategy": self.name,
            "dimension": self.dimension,
            "seed": self.seed,
            "num_asked": self.num_asked,
            "num_told": self.num_told,
            "num_failed": self._num_failed,
            "pending": list(self._pending),
            "num_seeds": len(self.seeds),
            "best": None if best is None else {"id": best[0].id, "fitness": best[1], "genome": list(best[0].genome)},
            **self._state(),
        }

    # -- for subclasses -----------------------------------------------------------------
    @abstractmethod
    def _ask(self) -> Proposal | None:
        """One proposal, or None to say "not until more results come in" (changing no state)."""

    @abstractmethod
    def _tell(self, candidate: Candidate, result: Result, fitness: float) -> None:
        """Learn from a result. ``fitness`` is the one to use: the penalty when ``result.failed``."""

    def _state(self) -> dict[str, Any]:
        return {}

    def _check_result(self, result: Result) -> None:
        """Raise ValueError for a successful result this algorithm cannot use (before bookkeeping)."""

    # -- internals ----------------------------------------------------------------------
    def _ask_one(self) -> Candidate | None:
        k = len(self._seed_ids)
        is_seed = k < len(self.seeds)
        if is_seed and not self.asks_seeds_itself:
            if not self._seed_ready():
                return None
            proposal: Proposal | None = Proposal(self.seeds[k], info={"origin": "seed", "seed_index": k, "generation": 0})
        else:
            proposal = self._ask()
        if proposal is None:
            return None
        genome = np.asarray(proposal.genome, dtype=np.float64)
        if genome.shape != (self.dimension,):
            raise StrategyError(f"{self.name}: proposed a genome of shape {genome.shape}, expected ({self.dimension},)")
        if not np.all(np.isfinite(genome)) or genome.min() < 0.0 or genome.max() > 1.0:
            raise StrategyError(f"{self.name}: proposed a genome outside [0, 1]^{self.dimension}")
        candidate = Candidate(
            id=str(len(self._candidates)),
            genome=tuple(float(v) for v in genome),
            parents=tuple(proposal.parents),
            info=dict(proposal.info),
        )
        self._candidates[candidate.id] = candidate
        self._pending[candidate.id] = candidate
        if is_seed:
            self._seed_ids.append(candidate.id)
        self._on_asked(candidate, proposal)
        return candidate

    def _seed_ready(self) -> bool:
        """Hook: False to hold the next seed back (as `_ask` answering None), e.g. at a cap in flight."""
        return True

    def _on_asked(self, candidate: Candidate, proposal: Proposal) -> None:
        """Hook: the proposal became ``candidate`` (e.g. to map the id to optimizer state)."""


def check_seeds(seeds: Sequence[Sequence[float]], dimension: int, name: str = "strategy") -> tuple[np.ndarray, ...]:
    """Seeds as float arrays, each of shape (dimension,) inside [0, 1]; `UserError` otherwise."""
    if isinstance(seeds, str | bytes):
        raise UserError(f"{name}.seeds: must be a list of genomes, got {seeds!r}")
    out = []
    for i, g in enumerate(seeds):
        try:
            arr = np.asarray(g, dtype=np.float64)
        except (TypeError, ValueError):
            arr = np.full(0, np.nan)
        if arr.shape != (dimension,) or not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
            raise UserError(f"{name}.seeds[{i}]: must be {dimension} numbers in [0, 1]")
        out.append(arr.copy())
    return tuple(out)
