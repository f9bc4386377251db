"""Start or resume a search run: config → store rows, search space, strategy, worker pool, loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.config import RunConfig
from evolve.loop import LoopStats, SearchLoop
from evolve.pool import WorkerPool, WorkerSpec, connect
from evolve.store import Store
from evolve.store.records import RunStatus
from evolve.strategies.registry import make_strategy
from search_spaces.errors import UserError
from search_spaces.parameter_space import ParameterSpace
from search_spaces.recipe import Recipe

SCORER_FACTORY = "workers.candidate_scorer:CandidateScorer"
ANALYTIC_FACTORY = "workers.analytic_scorer:AnalyticScorer"


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    stats: LoopStats


def resolve_model(ref: str) -> str:
    """A model directory path; ``zoo:NAME`` names a model of the embedded zoo (built if absent)."""
    if ref.startswith("zoo:"):
        from workers.zoo import MODEL_NAMES, build_zoo

        name = ref.removeprefix("zoo:")
        if name not in MODEL_NAMES:
            raise UserError(f"models: '{ref}' names no zoo model (zoo models: {', '.join(MODEL_NAMES)})")
        return str(build_zoo(progress=True).models[name])
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise UserError(f"models: '{ref}' is not a model directory")
    return str(path.resolve())


def build_space(config: RunConfig, seed: int) -> ParameterSpace:
    space = config.space.model_dump()
    space["search"] = {k: list(v) for k, v in space["search"].items()}
    return ParameterSpace.from_dict({
        **space,
        "base_model": resolve_model(config.models.base),
        "models": [resolve_model(m) for m in config.models.sources],
        "seed": seed,
    })


def reference_recipes(space: ParameterSpace) -> dict[str, Recipe]:
    """Each source model as a recipe that reproduces it exactly, to score beside the search."""
    paths = [p for p in [space.base_model, *space.models] if p is not None]
    return {Path(p).name: Recipe.from_dict({"merge_method": "linear",
                                            "models": [{"model": p, "parameters": {"weight": 1.0}}]})
            for p in paths}


def scorer_kwargs(config: RunConfig, space: ParameterSpace) -> dict[str, Any]:
    """Plain data the worker actors build their scorer from (nothing here is a live object)."""
    return {
        "models": [space.base_model, *space.models],  # base first: the live model starts from it
        "tasks": [t.model_dump() for t in config.tasks],
        "evaluation": config.evaluation.model_dump(),
    }


def execute(store: Store, run_id: str, config: RunConfig, *, resume: bool, progress: bool = True) -> RunOutcome:
    space = build_space(config, seed=config.strategy.seed)
    strategy = make_strategy(config.strategy.name, space.dimension, config.strategy.seed,
                             num_workers=config.resources.workers, **config.strategy.settings)
    connect(config.resources.address, num_cpus=None)
    if config.evaluation.backend == "analytic":
        factory, kwargs = ANALYTIC_FACTORY, dict(config.evaluation.engine_kwargs)
    else:
        from workers.candidate_scorer import scoring_settings

        factory, kwargs = SCORER_FACTORY, scorer_kwargs(config, space)
        scoring_settings(kwargs["tasks"], kwargs["evaluation"])  # bad settings fail here, not in an actor
    spec = WorkerSpec(factory, kwargs,
                      num_cpus=config.resources.cpus_per_worker, num_gpus=config.resources.gpus_per_worker)
    pool = WorkerPool(config.resources.workers, spec)
    max_seconds = config.budget.max_minutes * 60 if config.budget.max_minutes else None
    loop = SearchLoop(store, run_id, space, strategy, pool, config.budget.max_evaluations, max_seconds,
                      max_retries=config.resources.max_retries, progress=progress,
                      references=reference_recipes(space))
    try:
        pending = []
        if resume:
            # The driver that owned this run is gone, so none of its RUNNING evaluations will
            # finish: mark them all STALE; replay re-dispatches their candidates.
            store.fail_stale_evaluations(run_id, grace_seconds=1e-3)
            pending = loop.replay()
        store.set_run_status(run_id, RunStatus.RUNNING)
        stats = loop.run(pending)
        store.set_run_status(run_id, RunStatus.FINISHED)
    except KeyboardInterrupt:
        store.set_run_status(run_id, RunStatus.INTERRUPTED)
        raise
    finally:
        pool.shutdown()
    return RunOutcome(run_id, stats)


def start(store: Store, config: RunConfig, *, progress: bool = True) -> RunOutcome:
    run = store.create_run(config.name, config.model_dump(mode="json"), seed=config.strategy.seed)
    return execute(store, run.id, config, resume=False, progress=progress)


def resume(store: Store, run_id: str, *, progress: bool = True) -> RunOutcome:
    run = store.get_run(run_id)
    config = RunConfig.model_validate(run.config)
    if run.status == RunStatus.FINISHED:
        raise UserError(f"run {run_id} already finished")
    return execute(store, run_id, config, resume=True, progress=progress)

