"""The scoring harness: evaluate merge candidates with lm-eval in one live model per worker.

    from workers.scoring import EvalSettings, Scorer, TaskSpec

    settings = EvalSettings(backend="hf", include_path=("zoo/tasks",))
    with Scorer.create([base, expert_a, expert_b], settings) as scorer:
        result = scorer.score(recipe, [TaskSpec("zoo_arith", weight=1.0, limit=64)])
        if result.ok:
            result.fitness, result.per_sample["zoo_arith"]
        else:
            result.kind, result.reason

Backends: ``hf`` (lm-eval's HFLM over a live transformers model) and ``vllm`` (one long-lived
``vllm.LLM`` whose weights are swapped in place by `vllm_extension.MergeExtension`).

Nothing here may download: the Hugging Face hub and datasets are put in offline mode unless
the caller has already decided otherwise.
"""

from workers.offline import go_offline

go_offline()

from workers.scoring.result import EngineError, EvalFailure, Score, TaskResult  # noqa: E402
from workers.scoring.spec import EvalSettings, ScoringConfigError, TaskSpec  # noqa: E402


def __getattr__(name: str):
    # The harness pulls in lm-eval and torch; keep `import workers.scoring` light for configs.
    if name == "Scorer":
        from workers.scoring.harness import Scorer

        return Scorer
    raise AttributeError(f"module 'workers.scoring' has no attribute '{name}'")


__all__ = [
    "EngineError", "EvalFailure", "EvalSettings", "Score", "Scorer", "ScoringConfigError", "TaskResult", "TaskSpec",
]
