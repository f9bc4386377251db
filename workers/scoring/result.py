"""What scoring returns: a frozen `Score`, or an `EvalFailure` for the candidate's own failure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from search_spaces.recipe import FrozenDict, thaw

FailureKind = Literal[
    "non_finite",  # NaN or inf in the merged weights
    "merge_error",  # the recipe could not be merged into the live model
    "oom",  # out of memory while merging or evaluating
    "eval_error",  # an exception inside evaluation
    "invalid_score",  # evaluation finished but a fitness term is NaN or inf
]
# Failures that repeat for the same recipe and settings, so the harness caches them too.
DETERMINISTIC_FAILURES: frozenset[str] = frozenset({"non_finite", "merge_error", "invalid_score"})


class EngineError(RuntimeError):
    """The live engine is broken (not the candidate's fault alone): the worker must be restarted.

    `Scorer.score` raises it instead of returning an `EvalFailure`, because no later candidate
    could be scored by this worker either.
    """


@dataclass(frozen=True)
class TaskResult:
    """One task's outcome: every aggregate metric lm-eval reported, and per-sample scores.

    ``samples[i]`` is the fitness metric on document ``doc_ids[i]`` of the evaluated split
    (ordered by document id), as a float that is higher-is-better: 0/1 for exact match and
    accuracy, the log-likelihood for ``perplexity``, the log-likelihood per word or byte for
    the rolling perplexities (whose aggregate ``value`` is lower-is-better, as in lm-eval).
    """

    name: str
    split: str
    metric: str  # the fitness metric, "name,filter"
    value: float  # its aggregate
    weight: float
    metrics: FrozenDict  # "metric,filter" -> aggregate value, all that lm-eval reported
    doc_ids: tuple[int, ...]
    samples: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "split": self.split, "metric": self.metric, "value": self.value,
            "weight": self.weight, "metrics": thaw(self.metrics), "doc_ids": list(self.doc_ids),
            "samples": list(self.samples),
        }


@dataclass(frozen=True)
class Score:
    """A candidate's scores: fitness = sum of weight * metric over its tasks."""

    recipe_hash: str
    fitness: float
    tasks: tuple[TaskResult, ...]
    merge_seconds: float
    eval_seconds: float
    backend: str

    @property
    def ok(self) -> bool:
        return True

    def task(self, name: str) -> TaskResult:
        for result in self.tasks:
            if result.name == name:
                return result
        raise KeyError(f"no task '{name}' in this score (tasks: {', '.join(t.name for t in self.tasks)})")

    @property
    def metrics(self) -> Mapping[str, Mapping[str, float]]:
        """Task name -> every aggregate metric lm-eval reported for it."""
        return {t.name: dict(t.metrics) for t in self.tasks}

    @property
    def per_sample(self) -> Mapping[str, tuple[float, ...]]:
        """Task name -> the fitness metric on each evaluated document (what M2N2 needs)."""
        return {t.name: t.samples for t in self.tasks}

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe_hash": self.recipe_hash, "fitness": self.fitness, "backend": self.backend,
            "merge_seconds": self.merge_seconds, "eval_seconds": self.eval_seconds,
            "tasks": [t.to_dict() for t in self.tasks],
        }


@dataclass(frozen=True)
class EvalFailure:
    """A candidate that could not be scored, and why. Never raised: returned."""

    reason: str
    kind: FailureKind
    recipe_hash: str = ""
    merge_seconds: float = 0.0
    eval_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "kind": self.kind, "recipe_hash": self.recipe_hash,
                "merge_seconds": self.merge_seconds, "eval_seconds": self.eval_seconds}
