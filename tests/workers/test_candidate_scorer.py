"""The driver↔worker contract on the real scorer: `CandidateScorer` (HF + lm-eval) answers every
recipe with a frozen `EvalOutcome`, ok or failed, never a raise."""

import dataclasses

import pytest

from search_spaces.recipe import Recipe
from workers.outcome import EvalOutcome, OutcomeStatus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scorer(family, tmp_path_factory):
    from tests.fixtures.synthetic_tasks import write_synthetic_tasks
    from workers.candidate_scorer import CandidateScorer
    from workers.scoring import EvalSettings, TaskSpec

    tasks = write_synthetic_tasks(tmp_path_factory.mktemp("contract_tasks"), family[0], n_validation=6, n_test=4)
    specs = [TaskSpec("syn_gen"), TaskSpec("syn_mc", metric="acc", weight=0.5)]
    specs += [dataclasses.replace(t, split="test") for t in specs]
    settings = EvalSettings(backend="hf", include_path=(str(tasks),), batch_size=8)
    return CandidateScorer([str(p) for p in family], settings.to_dict(), [t.to_dict() for t in specs])


def linear(*weighted, normalize=True) -> Recipe:
    return Recipe.from_dict({"merge_method": "linear", "parameters": {"normalize": normalize},
                             "models": [{"model": str(p), "parameters": {"weight": w}} for p, w in weighted]})


def test_an_ok_outcome_carries_everything_the_store_keeps(scorer, family):
    outcome = scorer.evaluate(linear((family[1], 1.0), (family[2], 1.0)))
    assert isinstance(outcome, EvalOutcome) and outcome.status is OutcomeStatus.OK and outcome.ok
    assert set(outcome.metrics) == set(outcome.scores) == {"validation", "test"}
    assert set(outcome.metrics["validation"]) == {"syn_gen", "syn_mc"}
    gen, mc = outcome.metrics["validation"]["syn_gen"]["exact_match"], outcome.metrics["validation"]["syn_mc"]["acc"]
    assert outcome.fitness == pytest.approx(gen + 0.5 * mc) == pytest.approx(outcome.scores["validation"])
    assert [len(outcome.samples["validation"][t]) for t in ("syn_gen", "syn_mc")] == [6, 6]
    assert [len(outcome.samples["test"][t]) for t in ("syn_gen", "syn_mc")] == [4, 4]
    assert outcome.validation_samples == dict(outcome.samples["validation"])
    assert outcome.merge_seconds > 0 and outcome.eval_seconds > 0
    assert outcome.error is None and outcome.error_kind is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.fitness = 2.0  # type: ignore[misc]


def test_a_candidates_failure_is_an_outcome_with_a_kind(scorer, family):
    outcome = scorer.evaluate(linear((family[1], 3e38), (family[2], 3e38), normalize=False))  # float32 overflow
    assert outcome.status is OutcomeStatus.FAILED and not outcome.ok and outcome.fitness is None
    assert outcome.error_kind == "non_finite" and "NaN or inf" in outcome.error
    assert outcome.message.startswith("non_finite: ") and "\n" not in outcome.message
    # The worker stays usable.
    assert scorer.evaluate(linear((family[0], 1.0))).ok


def test_outcomes_refuse_inconsistent_states():
    with pytest.raises(ValueError, match="needs a fitness"):
        EvalOutcome(OutcomeStatus.OK)
    with pytest.raises(ValueError, match="needs an error message"):
        EvalOutcome(OutcomeStatus.FAILED)
    lost = EvalOutcome.lost("RayActorError")
    assert lost.status is OutcomeStatus.LOST and lost.message == "worker_lost: RayActorError"
