"""The scoring harness on the vLLM backend: one engine for the whole module, weights swapped
in place, agreement with the HF backend, and failures that leave the engine usable.

vLLM starts its engine in spawned child processes; pytest's entry point has the
``__main__`` guard that requires. The engine runs eagerly with a fixed 64 MiB KV cache, which
skips vLLM's memory profiling and warm-up (start-up is then mostly imports).
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from search_spaces.recipe import Recipe  # noqa: E402
from workers.scoring import EvalFailure, EvalSettings, Score, Scorer, TaskSpec  # noqa: E402

pytestmark = pytest.mark.slow

ENGINE = {"enforce_eager": True, "kv_cache_memory_bytes": 64 << 20, "max_model_len": 256}
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
    from workers.scoring.synthetic_tasks import write_fault_tasks, write_synthetic_tasks
    from workers.synthetic import LlamaShape, write_family

    root = tmp_path_factory.mktemp("scoring_vllm")
    shape = LlamaShape(hidden=128, heads=2, kv_heads=2, intermediate=256, layers=2, vocab=64)
    paths = write_family(root / "models", shape, n_variants=2, seed=0)
    write_synthetic_tasks(root / "tasks", paths[0])
    write_fault_tasks(root / "tasks")
    return [str(p) for p in paths], str(root / "tasks")


@pytest.fixture(scope="module")
def engine(workspace):
    paths, tasks = workspace
    settings = EvalSettings(backend="vllm", include_path=(tasks,), dtype="float32", engine_kwargs=ENGINE)
    with Scorer.create(paths, settings) as scorer:
        yield scorer


@pytest.fixture(scope="module")
def recipes(workspace):
    base, v0, v1 = workspace[0]
    return {
        "base": linear((base, 1.0)),
        "soup": linear((v0, 1.0), (v1, 1.0)),
        "v0": linear((v0, 1.0)),
        "mix": linear((base, 0.2), (v0, 0.3), (v1, 0.5)),
        "inf": linear((v0, 3e38), (v1, 3e38), normalize=False),
        "unmergeable": linear((v0, 1.0), (v1, -1.0)),
    }


def test_candidates_swap_into_one_live_engine(engine, recipes):
    llm = engine.backend.llm
    base = engine.score(recipes["base"], TASKS)
    soup = engine.score(recipes["soup"], TASKS)
    assert isinstance(base, Score) and isinstance(soup, Score) and soup.backend == "vllm"
    assert engine.backend.llm is llm
    assert base.tasks[0].value == pytest.approx(0.5)  # targets are the base model's greedy output
    assert soup.tasks[2].samples != base.tasks[2].samples
    assert soup.merge_seconds < 5.0
    # Back to the first candidate: nothing of the second one (weights, prefix cache) remains.
    engine.clear_cache()
    assert engine.score(recipes["base"], TASKS).tasks == base.tasks


def test_hf_and_vllm_agree_per_sample(engine, workspace, recipes):
    paths, tasks = workspace
    hf = Scorer.create(paths, EvalSettings(backend="hf", include_path=(tasks,), dtype="float32"))
    agree = total = 0
    for name in ("base", "soup", "mix"):
        a, b = hf.score(recipes[name], TASKS), engine.score(recipes[name], TASKS)
        for ta, tb in zip(a.tasks[:2], b.tasks[:2], strict=True):  # exact match and accuracy
            assert ta.doc_ids == tb.doc_ids
            agree += sum(x == y for x, y in zip(ta.samples, tb.samples, strict=True))
            total += len(ta.samples)
        # Perplexity is continuous: the two engines agree to float32 rounding.
        assert b.tasks[2].samples == pytest.approx(a.tasks[2].samples, rel=1e-4)
    assert agree / total >= 0.95, f"HF and vLLM agree on {agree}/{total} per-sample results"


@pytest.mark.parametrize("case, kind, reason", [
    ("inf", "non_finite", "NaN or inf"),
    ("unmergeable", "merge_error", "sum to 0"),
    ("oom_task", "oom", "OutOfMemoryError"),
    ("broken_task", "eval_error", "injected failure"),
])
def test_failures_leave_the_engine_usable(engine, recipes, case, kind, reason):
    baseline = engine.score(recipes["mix"], TASKS)
    if case.endswith("_task"):
        result = engine.score(recipes["v0"], [TASKS[0], TaskSpec("syn_" + case.removesuffix("_task"))])
    else:
        result = engine.score(recipes[case], TASKS)
    assert isinstance(result, EvalFailure) and result.kind == kind and reason in result.reason
    engine.clear_cache()
    assert engine.score(recipes["mix"], TASKS).tasks == baseline.tasks


def test_a_recipe_that_does_not_fit_the_engine_is_refused_before_loading(engine, workspace, recipes):
    base = workspace[0][0]
    one_layer = Recipe.from_dict({"merge_method": "linear", "slices": [
        {"sources": [{"model": base, "layer_range": [0, 1], "parameters": {"weight": 1.0}}]}]})
    result = engine.score(one_layer, TASKS[:1])
    assert result.kind == "merge_error" and "does not fit the live engine" in result.reason
    engine.clear_cache()
    assert engine.score(recipes["base"], TASKS[:1]).tasks[0].value == pytest.approx(0.5)


def test_a_dead_engine_is_fatal(engine):
    from vllm.v1.engine.exceptions import EngineDeadError

    assert engine.backend.fatal(EngineDeadError())
    assert not engine.backend.fatal(ValueError("a bad candidate"))
