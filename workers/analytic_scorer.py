"""An analytic objective over recipe values, with no model behind it.

It exercises everything around scoring (Ray actors, the loop, the store, resume, strategy
behaviour) in milliseconds: fitness is highest when every per-model ``weight`` value is at
``target``, and the per-sample scores say which of 20 "questions" a recipe gets right, so
M2N2's competition has something to work with. ``delay`` simulates slow candidates and
``fail_rate`` failing ones (chosen by recipe hash, so the same recipe always fails), to check
a cluster's fail-fast and retry plumbing.
"""

from __future__ import annotations

import time
from typing import Any

from search_spaces.recipe import Recipe, thaw
from workers.outcome import EvalOutcome, OutcomeStatus

N_SAMPLES = 20


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return []


class AnalyticScorer:
    """A `workers.outcome.RecipeScorer` with no model behind it."""

    def __init__(self, target: float = 0.7, delay: float = 0.0, delay_jitter: float = 0.0, fail_rate: float = 0.0):
        self.target = target
        self.delay = delay
        self.delay_jitter = delay_jitter
        self.fail_rate = fail_rate

    def evaluate(self, r: Recipe) -> EvalOutcome:
        weights = [x for m in r.models for x in _numbers(thaw(m.parameters).get("weight"))]
        if self.delay:
            time.sleep(self.delay + self.delay_jitter * (int(r.hash[:4], 16) / 0xFFFF))
        if int(r.hash[4:8], 16) / 0x10000 < self.fail_rate:
            return EvalOutcome.failed("merge_error", f"injected failure (fail_rate {self.fail_rate})")
        error = sum((w - self.target) ** 2 for w in weights) / max(len(weights), 1)
        # Question j is answered when the error is below its difficulty.
        samples = [1.0 if error < (j + 1) / (4 * N_SAMPLES) else 0.0 for j in range(N_SAMPLES)]
        fitness = 1.0 - error
        return EvalOutcome(OutcomeStatus.OK, fitness=fitness, scores={"validation": fitness, "test": fitness},
                           metrics={split: {"analytic": {"score": fitness}} for split in ("validation", "test")},
                           samples={"validation": {"analytic": tuple(samples)}}, eval_seconds=self.delay)
