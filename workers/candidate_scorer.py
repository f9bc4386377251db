"""What a worker actor runs: merge a candidate in memory and score it on every task.

Built inside the actor's process from plain data (model paths, `EvalSettings.to_dict()` and
`TaskSpec.to_dict()` as the driver built them once), so the driver never ships live
objects. ``evaluate`` returns an `EvalOutcome`; a candidate's own failure is an outcome,
never a raise.

With ``low_tasks`` (a multi-fidelity run), an `EvalRequest` at low fidelity is scored on those
instead: each validation task on a seeded subsample of its documents, no test split.
"""

from __future__ import annotations

import os
from typing import Any

from search_spaces.recipe import Recipe
from workers.outcome import EvalOutcome, EvalRequest, Fidelity, OutcomeStatus
from workers.scoring import EvalSettings, Score, Scorer, TaskSpec
from workers.scoring.result import EngineError


class CandidateScorer:
    """A `workers.outcome.RecipeScorer` over lm-eval, on the HF or the vLLM backend."""

    def __init__(self, models: list[str], settings: dict[str, Any], tasks: list[dict[str, Any]],
                 low_tasks: list[dict[str, Any]] | None = None):
        self.settings = EvalSettings.from_dict(settings)
        self.tasks = {Fidelity.FULL: [TaskSpec.from_dict(t) for t in tasks]}
        if low_tasks is not None:
            self.tasks[Fidelity.LOW] = [TaskSpec.from_dict(t) for t in low_tasks]
        self.scorer = Scorer.create(models, self.settings)

    def evaluate(self, request: Recipe | EvalRequest) -> EvalOutcome:
        request = EvalRequest.of(request)
        tasks = self.tasks.get(request.fidelity)
        if tasks is None:
            raise ValueError(f"this scorer was built without {request.fidelity} fidelity tasks")
        try:
            result = self.scorer.score(request.recipe, tasks)
        except EngineError:
            # The engine itself is broken (e.g. a dead vLLM core): no later candidate could be
            # scored here. Ending the actor makes the pool start a fresh one and retry this
            # candidate there.
            os._exit(3)
        if not result.ok:
            return EvalOutcome.failed(result.kind, result.reason, result.merge_seconds, result.eval_seconds)
        return outcome_of(result)


def outcome_of(score: Score) -> EvalOutcome:
    """A harness `Score` over tasks on both splits, as the driver stores it."""
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    samples: dict[str, dict[str, tuple[float, ...]]] = {}
    scores: dict[str, float] = {}
    for task in score.tasks:
        metrics.setdefault(task.split, {})[task.name] = {task.metric.split(",")[0]: task.value}
        samples.setdefault(task.split, {})[task.name] = tuple(task.samples)
        scores[task.split] = scores.get(task.split, 0.0) + task.weight * task.value
    return EvalOutcome(OutcomeStatus.OK, fitness=scores.get("validation", score.fitness), scores=scores,
                       metrics=metrics, samples=samples,
                       merge_seconds=score.merge_seconds, eval_seconds=score.eval_seconds)
