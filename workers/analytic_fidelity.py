"""The analytic objective at two fidelities: multi-fidelity plumbing checked without a model.

``backend: analytic`` with a ``fidelity:`` section runs this instead of `AnalyticScorer`. FULL
is `AnalyticScorer` itself; LOW answers ``low_limit`` of its questions (every
``N_SAMPLES / low_limit``-th) and adds a fixed error per recipe, up to ±``NOISE / 2``, as a
subsample's luck would: low results then rank candidates roughly, not exactly, as full ones do.
"""

from __future__ import annotations

from search_spaces.recipe import Recipe
from workers.analytic_scorer import N_SAMPLES, AnalyticScorer
from workers.outcome import EvalOutcome, EvalRequest, Fidelity, OutcomeStatus

NOISE = 0.1


class AnalyticFidelityScorer:
    """A `workers.outcome.FidelityScorer` with no model behind it."""

    def __init__(self, low_limit: int, **analytic: float):
        if not 1 <= low_limit < N_SAMPLES:
            raise ValueError(f"low_limit: {low_limit} is not in [1, {N_SAMPLES})")
        self.low_limit = low_limit
        self.full = AnalyticScorer(**analytic)

    def evaluate(self, request: Recipe | EvalRequest) -> EvalOutcome:
        request = EvalRequest.of(request)
        outcome = self.full.evaluate(request.recipe)
        if request.fidelity == Fidelity.FULL or not outcome.ok:
            return outcome
        luck = NOISE * (int(request.recipe.hash[8:12], 16) / 0xFFFF - 0.5)
        fitness = outcome.fitness + luck
        questions = outcome.samples["validation"]["analytic"]
        kept = tuple(questions[i * N_SAMPLES // self.low_limit] for i in range(self.low_limit))
        return EvalOutcome(OutcomeStatus.OK, fitness=fitness, scores={"validation": fitness},
                           metrics={"validation": {"analytic": {"score": fitness}}},
                           samples={"validation": {"analytic": kept}}, eval_seconds=outcome.eval_seconds)
