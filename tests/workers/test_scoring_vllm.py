"""The scoring harness on the vLLM backend: one engine for the whole module, weights swapped
in place, agreement with the HF backend, and failures that leave the engine usable.

The models are the embedded zoo's (built on first use, then cached by version): trained models
whose greedy answers mean something, so agreement is measured on the zoo tasks. One engine
serves every test.

vLLM starts its engine in spawned child processes; pytest's entry point has the
``__main__`` guard that requires. The engine runs eagerly with a fixed 64 MiB KV cache, which
skips vLLM's memory profiling and warm-up (start-up is then mostly imports).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

pytest.importorskip("vllm")

from search_spaces.recipe import Recipe  # noqa: E402
from workers.scoring import EvalFailure, EvalSettings, Score, Scorer, TaskSpec  # noqa: E402

pytestmark = pytest.mark.slow

ENGINE = {"enforce_eager": True, "kv_cache_memory_bytes": 64 << 20}


@dataclass
class World:
    name: str
    paths: list[str]
    include_path: tuple[str, ...]
    tasks: list[TaskSpec]  # the fitness tasks every test scores
    recipes: dict[str, Recipe]


def linear(*weighted: tuple[str, float], normalize: bool = True) -> Recipe:
    return Recipe.from_dict({
        "merge_method": "linear",
        "models": [{"model": str(path), "parameters": {"weight": w}} for path, w in weighted],
        "parameters": {"normalize": normalize},
    })


def failing_recipes(a: str, b: str) -> dict[str, Recipe]:
    return {
        "inf": linear((a, 3e38), (b, 3e38), normalize=False),  # float32 overflow: 3e38 + 3e38 = inf
        "unmergeable": linear((a, 1.0), (b, -1.0)),  # weights sum to 0: the kernel cannot normalize
    }


def zoo_world(tmp) -> World:
    from tests.fixtures.synthetic_tasks import write_fault_tasks
    from workers.zoo import build_zoo

    zoo = build_zoo(progress=False)  # cached by version; the issue asks for agreement on the zoo tasks
    base, arith, cipher = str(zoo.base), str(zoo.experts["arith"]), str(zoo.experts["cipher"])
    data = zoo.tasks.include_path / zoo.tasks.skills["arith"]
    faults = write_fault_tasks(tmp, prefix="fault", data_files={s: data / f"{s}.jsonl" for s in ("validation", "test")})
    return World(
        name="zoo",
        paths=[base, arith, cipher, str(zoo.experts["distractor"])],
        include_path=(str(zoo.tasks.include_path), str(faults)),
        tasks=[TaskSpec(zoo.tasks.skills["arith"], limit=60), TaskSpec(zoo.tasks.skills["cipher"], limit=60),
               TaskSpec(zoo.tasks.target, limit=60, weight=2.0)],
        recipes={
            "base": linear((base, 1.0)),
            "other": linear((arith, 1.0)),
            "mix": Recipe.from_dict({"merge_method": "task_arithmetic", "base_model": base, "models": [
                {"model": arith, "parameters": {"weight": 1.0}}, {"model": cipher, "parameters": {"weight": 1.0}}]}),
            **failing_recipes(arith, cipher),
        },
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("scoring_vllm")
    return zoo_world(tmp)


@pytest.fixture(scope="module")
def engine(world):
    settings = EvalSettings(backend="vllm", include_path=world.include_path, dtype="float32", engine_kwargs=ENGINE)
    with Scorer.create(world.paths, settings) as scorer:
        yield scorer


def test_candidates_swap_into_one_live_engine(engine, world):
    llm = engine.backend.llm
    base = engine.score(world.recipes["base"], world.tasks)
    other = engine.score(world.recipes["other"], world.tasks)
    assert isinstance(base, Score) and isinstance(other, Score) and other.backend == "vllm"
    assert engine.backend.llm is llm
    assert other.tasks != base.tasks
    assert other.merge_seconds > 0  # the swap was timed (speed is for benchmarks/, not tests)
    # Back to the first candidate: nothing of the second one (weights, prefix cache) remains.
    engine.clear_cache()
    assert engine.score(world.recipes["base"], world.tasks).tasks == base.tasks


def test_hf_and_vllm_agree_per_sample(engine, world):
    hf = Scorer.create(world.paths, EvalSettings(backend="hf", include_path=world.include_path, dtype="float32"))
    agree = total = 0
    for name in ("base", "other", "mix"):
        a, b = hf.score(world.recipes[name], world.tasks), engine.score(world.recipes[name], world.tasks)
        assert isinstance(a, Score) and isinstance(b, Score)
        for ta, tb in zip(a.tasks, b.tasks, strict=True):
            assert ta.doc_ids == tb.doc_ids
            if ta.metric.startswith(("exact_match", "acc")):
                agree += sum(x == y for x, y in zip(ta.samples, tb.samples, strict=True))
                total += len(ta.samples)
            else:  # a perplexity is continuous: the two engines agree to float32 rounding
                assert tb.samples == pytest.approx(ta.samples, rel=1e-5)
    assert agree / total >= 0.95, f"HF and vLLM agree on {agree}/{total} per-sample results ({world.name})"


@pytest.mark.parametrize("case, kind, reason", [
    ("inf", "non_finite", "NaN or inf"),
    ("unmergeable", "merge_error", "sum to 0"),
    ("fault_oom", "oom", "OutOfMemoryError"),
    ("fault_broken", "eval_error", "injected failure"),
])
def test_failures_leave_the_engine_usable(engine, world, case, kind, reason):
    baseline = engine.score(world.recipes["mix"], world.tasks)
    if case.startswith("fault_"):
        result = engine.score(world.recipes["other"], [world.tasks[0], TaskSpec(case)])
    else:
        result = engine.score(world.recipes[case], world.tasks)
    assert isinstance(result, EvalFailure) and result.kind == kind and reason in result.reason
    engine.clear_cache()
    assert engine.score(world.recipes["mix"], world.tasks).tasks == baseline.tasks


def test_a_recipe_that_does_not_fit_the_engine_is_refused_before_loading(engine, world):
    one_layer = Recipe.from_dict({"merge_method": "linear", "slices": [
        {"sources": [{"model": world.paths[0], "layer_range": [0, 1], "parameters": {"weight": 1.0}}]}]})
    before = engine.score(world.recipes["base"], world.tasks[:1])
    result = engine.score(one_layer, world.tasks[:1])
    assert result.kind == "merge_error" and "does not fit the live engine" in result.reason
    engine.clear_cache()
    assert engine.score(world.recipes["base"], world.tasks[:1]).tasks == before.tasks


def test_a_dead_engine_is_fatal(engine):
    from vllm.v1.engine.exceptions import EngineDeadError

    assert engine.backend.fatal(EngineDeadError())
    assert not engine.backend.fatal(ValueError("a bad candidate"))
