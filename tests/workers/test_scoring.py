"""The scoring harness on the HF backend: settings pass-through, results, caching, failures.

Models are random synthetic Llamas (head_dim 64, so vLLM can load the same ones); tasks are
written next to them, anchored on the base model's greedy output (`synthetic_tasks`).
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from search_spaces.recipe import Recipe
from workers.scoring import EvalFailure, EvalSettings, Score, Scorer, ScoringConfigError, TaskSpec

TASKS = [
    TaskSpec("syn_gen"),
    TaskSpec("syn_mc", metric="acc", weight=0.5),
    TaskSpec("syn_ppl", metric="word_perplexity", weight=-0.01),
]


def linear(*weighted: tuple[str, float], normalize: bool = True) -> Recipe:
    return Recipe.from_dict({
        "merge_method": "linear",
        "models": [{"model": str(path), "parameters": {"weight": w}} for path, w in weighted],
        "parameters": {"normalize": normalize},
    })


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from tests.fixtures.synthetic_tasks import write_fault_tasks, write_synthetic_tasks
    from tests.fixtures.synthetic_models import LlamaShape, write_family

    root = tmp_path_factory.mktemp("scoring")
    shape = LlamaShape(hidden=128, heads=2, kv_heads=2, intermediate=256, layers=2, vocab=64)
    paths = write_family(root / "models", shape, n_variants=2, seed=0)
    write_synthetic_tasks(root / "tasks", paths[0])
    write_fault_tasks(root / "tasks")
    return [str(p) for p in paths], str(root / "tasks")


@pytest.fixture(scope="module")
def scorer(workspace):
    paths, tasks = workspace
    with Scorer.create(paths, EvalSettings(backend="hf", include_path=(tasks,), batch_size=8)) as s:
        yield s


@pytest.fixture(scope="module")
def recipes(workspace):
    base, v0, v1 = workspace[0]
    return {
        "base": linear((base, 1.0)),
        "soup": linear((v0, 1.0), (v1, 1.0)),
        "v0": linear((v0, 1.0)),
        # float32 overflow in the norm weights: 3e38 + 3e38 = inf
        "inf": linear((v0, 3e38), (v1, 3e38), normalize=False),
        # weights summing to zero cannot be normalized: the merge kernel raises
        "unmergeable": linear((v0, 1.0), (v1, -1.0)),
    }


# -- plain data ---------------------------------------------------------------------------
def test_task_spec_validates_and_has_a_canonical_key():
    spec = TaskSpec.from_dict({"name": "t", "metric": "acc,none", "limit": 0.5, "gen_kwargs": {"b": 1, "a": 2}})
    assert spec.metric_name == "acc" and spec.metric_filter == "none"
    assert spec.key == TaskSpec.from_dict({"gen_kwargs": {"a": 2, "b": 1}, "limit": 0.5, "metric": "acc,none",
                                           "name": "t"}).key
    assert hash(spec) == hash(TaskSpec("t", metric="acc,none", limit=0.5, gen_kwargs={"a": 2, "b": 1}))
    assert TaskSpec.from_dict("t") == TaskSpec("t")
    for bad, field in [({"name": "t", "split": "train"}, "split"), ({"name": "t", "limit": 0}, "limit"),
                       ({"name": "t", "weight": float("nan")}, "weight"), ({"name": "t", "colour": 1}, "colour"),
                       ({"name": "t", "subsample": "middle"}, "subsample"), ({"metric": "acc"}, "name")]:
        with pytest.raises(ScoringConfigError, match=field):
            TaskSpec.from_dict(bad)


def test_eval_settings_pass_through_plain_data():
    settings = EvalSettings.from_dict({
        "backend": "vllm", "include_path": "tasks", "seed": 7, "gen_kwargs": {"max_gen_toks": 4},
        "engine_kwargs": {"gpu_memory_utilization": 0.3}, "lm_kwargs": {"max_length": 64},
        "apply_chat_template": True, "system_instruction": "Be brief.",
    })
    assert settings.include_path == ("tasks",)
    assert settings.to_dict()["engine_kwargs"] == {"gpu_memory_utilization": 0.3}
    assert EvalSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ScoringConfigError, match="backend"):
        EvalSettings(backend="onnx")
    with pytest.raises(ScoringConfigError, match="unknown key 'bogus'"):
        EvalSettings.from_dict({"bogus": 1})


# -- a scored candidate ---------------------------------------------------------------------
def test_score_reports_metrics_samples_fitness_and_timings(scorer, recipes):
    result = scorer.score(recipes["base"], TASKS)
    assert isinstance(result, Score) and result.ok and result.backend == "hf"
    gen, mc, ppl = result.tasks
    # Half the generation targets are the base model's own greedy output.
    assert gen.value == pytest.approx(0.5) and gen.samples[:4] == (1.0, 0.0, 1.0, 0.0)
    assert len(gen.samples) == len(gen.doc_ids) == 24 and gen.doc_ids == tuple(range(24))
    assert set(mc.samples) <= {0.0, 1.0} and mc.value == pytest.approx(sum(mc.samples) / len(mc.samples))
    assert set(ppl.metrics) == {"word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"}
    assert all(s < 0 for s in ppl.samples)  # log-likelihood per word
    # word perplexity = exp(-sum(loglik) / words); every document here has 12 words.
    assert ppl.value == pytest.approx(math.exp(-sum(ppl.samples) / len(ppl.samples)), rel=1e-6)
    # A negative weight turns the perplexity into fitness.
    assert result.fitness == pytest.approx(gen.value + 0.5 * mc.value - 0.01 * ppl.value)
    assert result.metrics["syn_ppl"]["word_perplexity,none"] == ppl.value
    assert result.per_sample["syn_gen"] == gen.samples
    assert result.merge_seconds > 0 and result.eval_seconds > 0
    assert result.to_dict()["tasks"][0]["samples"] == list(gen.samples)


def test_candidates_are_written_into_the_live_model(scorer, recipes):
    model = scorer.backend.model
    scorer.score(recipes["base"], TASKS[:1])
    soup = scorer.score(recipes["soup"], TASKS[:1])
    assert scorer.backend.model is model  # one model object, rewritten in place
    assert soup.tasks[0].samples != scorer.score(recipes["base"], TASKS[:1]).tasks[0].samples


def test_split_chooses_the_documents(scorer, recipes):
    val, test = scorer.score(recipes["base"], [TaskSpec("syn_ppl", metric="word_perplexity"),
                                               TaskSpec("syn_ppl", metric="word_perplexity", split="test")]).tasks
    assert (val.split, len(val.samples)) == ("validation", 24)
    assert (test.split, len(test.samples)) == ("test", 16)
    assert val.value != test.value


def test_limit_keeps_the_same_documents_for_every_candidate(scorer, recipes):
    first = TaskSpec("syn_ppl", metric="word_perplexity", limit=5)
    rand = TaskSpec("syn_ppl", metric="word_perplexity", limit=5, subsample="random")
    frac = TaskSpec("syn_ppl", metric="word_perplexity", limit=0.25, subsample="random")
    a = scorer.score(recipes["base"], [first, rand])
    b = scorer.score(recipes["soup"], [first, rand, frac])
    assert a.tasks[0].doc_ids == (0, 1, 2, 3, 4)
    assert a.tasks[1].doc_ids == b.tasks[1].doc_ids != (0, 1, 2, 3, 4)
    assert list(a.tasks[1].doc_ids) == sorted(a.tasks[1].doc_ids)
    assert len(b.tasks[2].doc_ids) == 6  # ceil(0.25 * 24)
    full = scorer.score(recipes["base"], [TaskSpec("syn_ppl", metric="word_perplexity")]).tasks[0]
    by_doc = dict(zip(full.doc_ids, full.samples, strict=True))
    assert a.tasks[1].samples == tuple(by_doc[d] for d in a.tasks[1].doc_ids)
    other_seed = Scorer(scorer.backend, dataclasses.replace(scorer.settings, seed=99))
    assert other_seed.tasks.documents(rand) != list(a.tasks[1].doc_ids)


def test_settings_reach_lm_eval(scorer, workspace, recipes):
    spec = TaskSpec("syn_gen", num_fewshot=2, gen_kwargs={"max_gen_toks": 1})
    task = scorer.tasks.task(spec)
    assert task.config.num_fewshot == 2
    assert task.config.generation_kwargs["max_gen_toks"] == 1
    assert task.config.generation_kwargs["until"] == ["\n"]  # the YAML's own, kept
    assert task.config.test_split == "validation"  # split: validation
    # One generated token can never match a three-word target.
    assert scorer.score(recipes["base"], [spec]).tasks[0].value == 0.0
    settings = dataclasses.replace(scorer.settings, gen_kwargs={"max_gen_toks": 2})
    assert Scorer(scorer.backend, settings).tasks.task(TaskSpec("syn_gen")).config.generation_kwargs[
        "max_gen_toks"] == 2


def test_identical_recipes_are_scored_once(scorer, workspace):
    base, v0, v1 = workspace[0]
    spec = [TaskSpec("syn_gen", limit=4)]
    scorer.clear_cache()
    hits, misses = scorer.hits, scorer.misses
    first = scorer.score(linear((v0, 0.3), (v1, 0.7)), spec)
    # The same recipe from differently ordered data has the same hash.
    again = scorer.score(Recipe.from_dict({"parameters": {"normalize": True}, "merge_method": "linear", "models": [
        {"parameters": {"weight": 0.3}, "model": v0}, {"model": v1, "parameters": {"weight": 0.7}}]}), spec)
    assert again is first
    assert (scorer.hits - hits, scorer.misses - misses) == (1, 1)
    scorer.score(linear((v0, 0.3), (v1, 0.7)), [TaskSpec("syn_gen", limit=5)])  # other task settings
    assert scorer.misses - misses == 2


def test_a_swap_leaves_nothing_behind(scorer, recipes):
    before = scorer.score(recipes["base"], TASKS)
    scorer.score(recipes["soup"], TASKS)
    scorer.clear_cache()
    assert scorer.score(recipes["base"], TASKS).tasks == before.tasks


# -- failures -------------------------------------------------------------------------------
@pytest.mark.parametrize("case, kind, reason", [
    ("inf", "non_finite", "NaN or inf"),
    ("unmergeable", "merge_error", "sum to 0"),
    ("oom_task", "oom", "OutOfMemoryError"),
    ("broken_task", "eval_error", "injected failure"),
])
def test_failures_are_returned_and_the_worker_stays_usable(scorer, recipes, case, kind, reason):
    baseline = scorer.score(recipes["base"], TASKS)
    if case.endswith("_task"):
        result = scorer.score(recipes["v0"], [TASKS[0], TaskSpec("syn_" + case.removesuffix("_task"))])
    else:
        result = scorer.score(recipes[case], TASKS)
    assert isinstance(result, EvalFailure) and not result.ok
    assert result.kind == kind and reason in result.reason
    scorer.clear_cache()
    assert scorer.score(recipes["base"], TASKS).tasks == baseline.tasks


def test_transient_failures_are_retried_deterministic_ones_cached(scorer, recipes):
    scorer.clear_cache()
    oom = [TaskSpec("syn_oom")]
    misses = scorer.misses
    assert scorer.score(recipes["v0"], oom).kind == "oom"
    assert scorer.score(recipes["v0"], oom).kind == "oom"
    assert scorer.misses - misses == 2  # evaluated twice: an OOM may not happen again
    bad = scorer.score(recipes["inf"], TASKS)
    assert scorer.score(recipes["inf"], TASKS) is bad


def test_a_recipe_over_foreign_models_is_a_merge_error(scorer, tmp_path):
    result = scorer.score(linear((str(tmp_path / "elsewhere"), 1.0)), TASKS[:1])
    assert result.kind == "merge_error" and "not among this worker's resident models" in result.reason


def test_bad_settings_raise_before_any_candidate(scorer, recipes):
    with pytest.raises(ScoringConfigError, match="no lm-eval task named 'nope'"):
        scorer.score(recipes["base"], [TaskSpec("nope")])
    with pytest.raises(ScoringConfigError, match="reports no 'acc'"):
        scorer.score(recipes["base"], [TaskSpec("syn_gen", metric="acc")])
    with pytest.raises(ScoringConfigError, match="no filter 'strict'"):
        scorer.score(recipes["base"], [TaskSpec("syn_gen", metric="exact_match,strict")])


def test_a_broken_engine_raises_instead_of_failing_every_later_candidate(scorer, recipes):
    from workers.scoring import EngineError

    class Broken:
        name = "broken"
        lm = None

        def load(self, recipe):
            raise EngineError("reload stopped half way")

        def recover(self):
            pass

        def fatal(self, exc):
            return isinstance(exc, EngineError)

    with pytest.raises(EngineError, match="restart the worker"):
        Scorer(Broken(), scorer.settings).score(recipes["base"], TASKS[:1])


def test_the_finiteness_check_is_exact():
    import torch

    from workers.scoring.backend import is_finite, non_finite

    big = torch.full((1000,), 3e38)  # every value finite, the float32 sum overflows
    assert is_finite(big) and is_finite(torch.arange(5))
    for bad in (float("nan"), float("inf"), -float("inf")):
        t = torch.zeros(10, dtype=torch.bfloat16)
        t[3] = bad
        assert not is_finite(t)
    assert non_finite([("a", big), ("b", torch.tensor([1.0, float("nan")]))]) == ("b",)
