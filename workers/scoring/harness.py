"""`Scorer.score(candidate, tasks)`: merge a recipe into the live model, evaluate, never raise.

A candidate's own failures come back as an `EvalFailure` with a kind and a one-line reason:

- ``non_finite``: NaN or inf in the merged weights (checked right after they are written);
- ``merge_error``: the recipe does not fit the worker's models or the live model;
- ``oom``: out of memory while merging or evaluating;
- ``eval_error``: any other exception inside evaluation;
- ``invalid_score``: a fitness term came out NaN or inf.

After a failure the backend releases what it can, and the next candidate overwrites every
weight, so the worker stays usable. The one exception: when the engine itself is broken (a
dead vLLM engine core, a weight reload that stopped half way), `score` raises `EngineError`,
since no later candidate could be scored here either: the worker must be restarted. Bad settings (an unknown task, metric or split) are not
a candidate's failure: they raise `ScoringConfigError` before any candidate is touched.

Results are cached in process by recipe hash and task settings: an identical recipe is never
scored twice by this scorer. Deterministic failures are cached as well; an OOM or an
evaluation exception is not, so a retry (here or on another worker) can succeed.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Sequence

from search_spaces.errors import UserError
from search_spaces.recipe import Recipe
from workers.scoring.backend import Backend, is_oom
from workers.scoring.result import DETERMINISTIC_FAILURES, EngineError, EvalFailure, Score, TaskResult
from workers.scoring.spec import EvalSettings, TaskSpec
from workers.scoring.tasks import TaskRunner

log = logging.getLogger(__name__)


class Scorer:
    """Scores candidates on one live backend; use `Scorer.create` to build the backend too."""

    def __init__(self, backend: Backend, settings: EvalSettings):
        self.backend = backend
        self.settings = settings
        self.tasks = TaskRunner(settings)
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], Score | EvalFailure] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @classmethod
    def create(cls, model_paths: Sequence[str], settings: EvalSettings, reference: str | None = None) -> Scorer:
        """A scorer over a new backend holding ``model_paths`` resident.

        ``reference`` is the checkpoint the live model starts from (its config and tokenizer);
        default: the first of ``model_paths`` (put the base model first).
        """
        paths = [str(p) for p in model_paths]
        if settings.backend == "vllm":
            from workers.scoring.vllm_backend import VLLMBackend

            backend = VLLMBackend(paths, settings, reference=reference)
        else:
            from workers.scoring.hf import HFBackend

            backend = HFBackend(paths, settings, reference=reference)
        return cls(backend, settings)

    # -- the interface -------------------------------------------------------------------
    def score(self, candidate: Recipe, tasks: Sequence[TaskSpec]) -> Score | EvalFailure:
        tasks = list(tasks)
        if not tasks:
            raise ValueError("score() needs at least one TaskSpec")
        self.tasks.prepare(tasks)  # settings errors raise here, before the candidate
        key = (candidate.hash, tuple(t.key for t in tasks))
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return cached
        self.misses += 1
        result = self._score(candidate, tasks)
        if isinstance(result, Score) or result.kind in DETERMINISTIC_FAILURES:
            self._cache[key] = result
            while len(self._cache) > self.settings.cache_size:
                self._cache.popitem(last=False)
        return result

    def clear_cache(self) -> None:
        self._cache.clear()

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one candidate -------------------------------------------------------------------
    def _score(self, recipe: Recipe, tasks: list[TaskSpec]) -> Score | EvalFailure:
        h = recipe.hash
        start = time.perf_counter()
        try:
            report = self.backend.load(recipe)
        except Exception as exc:  # noqa: BLE001 - every candidate failure is returned, never raised
            return self._failure(exc, h, merge_seconds=time.perf_counter() - start, during="merge")
        merge_seconds = time.perf_counter() - start
        if report.non_finite:
            names = ", ".join(report.non_finite)
            return EvalFailure(f"merged weights hold NaN or inf (in {names})", "non_finite", h, merge_seconds)

        start = time.perf_counter()
        try:
            results = self.tasks.run(self.backend.lm, tasks)
        except Exception as exc:  # noqa: BLE001
            return self._failure(exc, h, merge_seconds, time.perf_counter() - start, during="evaluation")
        eval_seconds = time.perf_counter() - start

        fitness = _fitness(results)
        if not math.isfinite(fitness):
            terms = ", ".join(f"{r.name}:{r.metric}={r.value}" for r in results)
            return EvalFailure(f"fitness is {fitness} ({terms})", "invalid_score", h, merge_seconds, eval_seconds)
        return Score(h, fitness, tuple(results), merge_seconds, eval_seconds, self.backend.name)

    def _failure(self, exc: Exception, recipe_hash: str, merge_seconds: float = 0.0, eval_seconds: float = 0.0,
                 *, during: str) -> EvalFailure:
        if self.backend.fatal(exc):
            raise EngineError(f"the {self.backend.name} engine is unusable after candidate {recipe_hash} "
                              f"({type(exc).__name__} during {during}: {exc}); restart the worker") from exc
        if is_oom(exc):
            kind = "oom"
        elif during == "merge":
            kind = "merge_error"
        else:
            kind = "eval_error"
        reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__} during {during}: {exc}"
        log.warning("candidate %s failed (%s): %s", recipe_hash, kind, reason, exc_info=kind == "eval_error")
        try:
            self.backend.recover()
        except Exception:  # noqa: BLE001 - recovery is best effort; the failure is what we report
            log.exception("backend recovery after a failed candidate raised")
        return EvalFailure(reason.splitlines()[0] if reason else type(exc).__name__, kind, recipe_hash,
                           merge_seconds, eval_seconds)


def _fitness(results: Sequence[TaskResult]) -> float:
    return math.fsum(r.weight * r.value for r in results)
