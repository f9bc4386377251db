"""What a worker actor runs: merge a candidate in memory and score it on both splits.

Built inside the actor's process from plain data (model paths, task and evaluation
settings), so the driver never ships live objects. ``evaluate`` returns a plain dict the
loop stores as it is; a candidate's own failure is a ``status: failed`` dict, never a raise.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from search_spaces.recipe import Recipe
from workers.scoring import EvalSettings, Scorer, TaskSpec
from workers.scoring.result import EngineError


def scoring_settings(tasks: list[dict[str, Any]], evaluation: dict[str, Any]) -> tuple[EvalSettings, list[TaskSpec]]:
    """Validated scoring settings from the run config's plain data (cheap: the driver checks them first)."""
    settings = {k: v for k, v in evaluation.items() if k != "report_test"}
    if settings.get("include_path") is None:
        from workers.zoo import zoo_tasks

        settings["include_path"] = str(zoo_tasks().include_path)
    specs = [TaskSpec.from_dict(t) for t in tasks]
    if evaluation.get("report_test", True):
        specs += [dataclasses.replace(t, split="test") for t in specs if t.split == "validation"]
    return EvalSettings.from_dict(settings), specs


class CandidateScorer:
    def __init__(self, models: list[str], tasks: list[dict[str, Any]], evaluation: dict[str, Any]):
        self.settings, self.tasks = scoring_settings(tasks, evaluation)
        self.scorer = Scorer.create(models, self.settings)

    def evaluate(self, recipe: dict[str, Any]) -> dict[str, Any]:
        try:
            result = self.scorer.score(Recipe.from_dict(recipe), self.tasks)
        except EngineError:
            # The engine itself is broken (e.g. a dead vLLM core): no later candidate could be
            # scored here. Ending the actor makes the pool start a fresh one and retry this
            # candidate there.
            os._exit(3)
        if not result.ok:
            return {"status": "failed", "error": f"{result.kind}: {result.reason}",
                    "merge_seconds": result.merge_seconds, "eval_seconds": result.eval_seconds}
        metrics: dict[str, dict[str, Any]] = {}
        samples: dict[str, dict[str, list[float]]] = {}
        scores: dict[str, float] = {}
        for task in result.tasks:
            metrics.setdefault(task.split, {})[task.name] = {task.metric.split(",")[0]: task.value}
            samples.setdefault(task.split, {})[task.name] = list(task.samples)
            scores[task.split] = scores.get(task.split, 0.0) + task.weight * task.value
        return {"status": "ok", "fitness": scores.get("validation", result.fitness), "scores": scores,
                "metrics": metrics, "samples": samples,
                "merge_seconds": result.merge_seconds, "eval_seconds": result.eval_seconds}
