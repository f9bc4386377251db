"""Start or resume a search run: pre-flighted config → store rows, strategy, worker pool, loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evolve.config import RunConfig
from evolve.heartbeat import GRACE_SECONDS, DriverHeartbeat
from evolve.loop import LoopStats, RunFailed, SampleBudget, SearchLoop
from evolve.pool import WorkerPool, WorkerSpec, WorkerStartError, connect
from evolve.preflight import ZOO_PREFIX, CheckedRun, build_strategy, check_run
from evolve.store import Store
from evolve.store.records import RunStatus
from search_spaces.errors import UserError
from search_spaces.parameter_space import ParameterSpace
from search_spaces.recipe import Recipe

SCORER_FACTORY = "workers.candidate_scorer:CandidateScorer"
ANALYTIC_FACTORY = "workers.analytic_scorer:AnalyticScorer"
ANALYTIC_FIDELITY_FACTORY = "workers.analytic_fidelity:AnalyticFidelityScorer"


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    stats: LoopStats


def is_data_flow_space(space) -> bool:
    """A layer-path run (`evolve.data_flow`): its own worker and reference recipes."""
    from search_spaces.data_flow import DataFlowSpace

    return isinstance(space, DataFlowSpace)


def reference_recipes(space: ParameterSpace) -> dict[str, Recipe]:
    """Each source model as a recipe that reproduces it exactly, to score beside the search."""
    if is_data_flow_space(space):
        from evolve.data_flow import data_flow_references

        return data_flow_references(space)
    paths = [p for p in [space.base_model, *space.models] if p is not None]
    return {Path(p).name: Recipe.from_dict({"merge_method": "linear",
                                            "models": [{"model": p, "parameters": {"weight": 1.0}}]})
            for p in paths}


def worker_spec(checked: CheckedRun) -> WorkerSpec:
    """How each worker actor builds its scorer: plain data only, settings as pre-flight built them."""
    config, space = checked.config, checked.space
    if checked.scoring is None and config.fidelity is not None:
        factory = ANALYTIC_FIDELITY_FACTORY
        kwargs = {**config.evaluation.engine_kwargs, "low_limit": config.fidelity.low_limit}
    elif checked.scoring is None:
        factory, kwargs = ANALYTIC_FACTORY, dict(config.evaluation.engine_kwargs)
    elif is_data_flow_space(space):
        from evolve.data_flow import DATA_FLOW_FACTORY, data_flow_worker_kwargs

        factory, kwargs = DATA_FLOW_FACTORY, data_flow_worker_kwargs(space, checked.scoring)
    else:
        factory = SCORER_FACTORY
        kwargs = {"models": [space.base_model, *space.models],  # base first: the live model starts from it
                  "settings": checked.scoring.settings, "tasks": list(checked.scoring.tasks)}
        if checked.scoring.low_tasks is not None:
            kwargs["low_tasks"] = list(checked.scoring.low_tasks)
    return WorkerSpec(factory, kwargs,
                      num_cpus=config.resources.cpus_per_worker, num_gpus=config.resources.gpus_per_worker)


def execute(store: Store, run_id: str, checked: CheckedRun, *, resume: bool, progress: bool = True) -> RunOutcome:
    config, space = checked.config, checked.space
    strategy = build_strategy(config, space)
    max_seconds = config.budget.max_minutes * 60 if config.budget.max_minutes else None
    max_samples = config.budget.max_samples
    sample_budget = None if max_samples is None else SampleBudget(max_samples, checked.samples_per_evaluation)
    pool = None
    loop: SearchLoop | None = None
    heartbeat = DriverHeartbeat(store, run_id, evaluations=lambda: loop.running_evaluations if loop else ())
    with heartbeat:
        try:
            loop = SearchLoop(store, run_id, space, strategy, None, config.budget.max_evaluations, max_seconds,
                              max_retries=config.resources.max_retries, progress=progress,
                              references=reference_recipes(space), fail_fast=config.fail_fast,
                              fidelity=config.fidelity, sample_budget=sample_budget)
            pending = []
            if resume:
                # The driver that owned this run is gone (or overridden with --force), so none
                # of its RUNNING evaluations will finish: STALE; replay re-dispatches them. It
                # runs before Ray starts: a run the code no longer reproduces is refused in seconds.
                store.fail_stale_evaluations(run_id, grace_seconds=1e-3)
                pending = loop.replay()
            connect(config.resources.address, num_cpus=None)
            loop.pool = pool = WorkerPool(config.resources.workers, worker_spec(checked))
            store.set_run_status(run_id, RunStatus.RUNNING)
            stats = loop.run(pending)
            store.set_run_status(run_id, RunStatus.FINISHED)
        except RunFailed as exc:
            store.set_run_status(run_id, RunStatus.FAILED, error=str(exc))
            raise RunFailed(f"run {run_id} FAILED: {exc}") from None
        except WorkerStartError as exc:
            store.set_run_status(run_id, RunStatus.FAILED, error=str(exc))
            raise
        except KeyboardInterrupt:
            store.set_run_status(run_id, RunStatus.INTERRUPTED)
            raise
        finally:
            if pool is not None:
                pool.shutdown()
    return RunOutcome(run_id, stats)


def start(store: Store, checked: CheckedRun, *, progress: bool = True) -> RunOutcome:
    """A new run of a pre-flighted config (`evolve.preflight.check_run`)."""
    if checked.needs_zoo:
        _build_zoo(checked.config, progress)
    config = checked.config
    run = store.create_run(config.name, config.model_dump(mode="json"), seed=config.strategy.seed)
    return execute(store, run.id, checked, resume=False, progress=progress)


def resume(store: Store, run_id: str, *, force: bool = False, progress: bool = True) -> RunOutcome:
    """Continue a run whose driver is gone; refuses a live driver's run unless ``force``."""
    run = store.get_run(run_id)
    if run.status == RunStatus.FINISHED:
        raise UserError(f"run {run_id} already finished")
    if run.status == RunStatus.FAILED and not force:
        raise UserError(f"run {run_id} FAILED: {run.error or 'no reason recorded'}; "
                        "fix the cause, then resume it with --force")
    age = store.seconds_since_heartbeat(run_id)
    if run.status == RunStatus.RUNNING and age is not None and age < GRACE_SECONDS and not force:
        raise UserError(f"run {run_id} is still driven: its driver beat {age:.0f} s ago (a driver counts as gone "
                        f"after {GRACE_SECONDS:.0f} s without a heartbeat); wait, or pass --force")
    checked = check_run(RunConfig.model_validate(run.config))
    if checked.needs_zoo:
        _build_zoo(checked.config, progress)
    return execute(store, run_id, checked, resume=True, progress=progress)


def _build_zoo(config: RunConfig, progress: bool) -> None:
    """Build the zoo models the config names (`workers.zoo.catalog`), before the run gets a row."""
    from workers.zoo.catalog import build_models

    refs = [config.models.base, *config.models.sources]
    build_models([r.removeprefix(ZOO_PREFIX) for r in refs if r.startswith(ZOO_PREFIX)], progress=progress)
