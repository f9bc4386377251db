"""The model-free analytic scorer speaks the same `EvalOutcome` contract as the real one."""

from search_spaces.recipe import Recipe
from workers.analytic_scorer import N_SAMPLES, AnalyticScorer
from workers.outcome import EvalOutcome, OutcomeStatus


def recipe(*weights: float) -> Recipe:
    return Recipe.from_dict({"merge_method": "linear",
                             "models": [{"model": f"/m{i}", "parameters": {"weight": w}} for i, w in enumerate(weights)]})


def test_fitness_peaks_at_the_target_and_samples_say_which_questions_are_solved():
    scorer = AnalyticScorer(target=0.7)
    best, worse = scorer.evaluate(recipe(0.7, 0.7)), scorer.evaluate(recipe(0.2, 0.9))
    assert isinstance(best, EvalOutcome) and best.status is OutcomeStatus.OK
    assert best.fitness == 1.0 and worse.fitness == 1.0 - (0.5**2 + 0.2**2) / 2
    assert best.samples["validation"]["analytic"] == (1.0,) * N_SAMPLES
    assert sum(worse.samples["validation"]["analytic"]) < N_SAMPLES
    assert best.scores == {"validation": 1.0, "test": 1.0}


def test_fail_rate_fails_the_same_recipes_every_time():
    assert AnalyticScorer(fail_rate=0.0).evaluate(recipe(0.5, 0.5)).ok
    always = AnalyticScorer(fail_rate=1.0).evaluate(recipe(0.5, 0.5))
    assert always.status is OutcomeStatus.FAILED and always.error_kind == "merge_error"
    half = AnalyticScorer(fail_rate=0.5)
    recipes = [recipe(i / 50, 0.5) for i in range(50)]
    first = [half.evaluate(r).ok for r in recipes]
    assert first == [half.evaluate(r).ok for r in recipes] and 10 < sum(first) < 40
