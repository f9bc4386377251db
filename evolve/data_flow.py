"""Data-flow runs in the driver: pre-flight, the worker spec and the reference paths.

A run config with a ``data_flow:`` section searches layer paths over models A (``models.base``)
and B (the one entry of ``models.sources``) through the same loop, store, resume and
leaderboard as a parameter-space run; only the space, the worker and the references differ.
Pre-flight fails in one line (exit 2) before any evaluation when A and B differ in family or
hidden size (their depths may differ), when the family's layer layout is unknown, when the
path bound does not fit the slot layout, or when the backend cannot score paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evolve.config import RunConfig
from search_spaces.data_flow import DataFlowSpace, LayerPath, PathStep
from search_spaces.errors import UserError
from search_spaces.recipe import Recipe

DATA_FLOW_FACTORY = "workers.data_flow_scorer:DataFlowCandidateScorer"


def check_data_flow_run(config: RunConfig, fail) -> Any:
    """`evolve.preflight.check_run` for a ``data_flow`` config; returns its `CheckedRun`."""
    from evolve.preflight import (
        ZOO_PREFIX, CheckedRun, _check_backend, _check_strategy, _model_paths, _scoring, _zoo_layers,
    )
    from workers.checkpoint import Checkpoint

    dfs = config.data_flow
    assert dfs is not None
    if config.evaluation.backend not in ("hf", "vllm"):
        raise fail(("evaluation", "backend"), f"'{config.evaluation.backend}' cannot score layer paths; "
                                              "data-flow search runs on the 'hf' or 'vllm' backend")
    paths, needs_zoo = _model_paths(config, fail)
    a, b = paths[config.models.base], paths[config.models.sources[0]]
    if needs_zoo:
        depths = [_zoo_layers(ref) if ref.startswith(ZOO_PREFIX) else Checkpoint.open(paths[ref]).num_layers
                  for ref in (config.models.base, config.models.sources[0])]
    else:
        from workers.data_flow import check_pair

        try:
            ckpt_a, ckpt_b = Checkpoint.open(a), Checkpoint.open(b)
            check_pair(ckpt_a, ckpt_b)
        except UserError as exc:
            raise fail(("models",), str(exc)) from None
        depths = [ckpt_a.num_layers, ckpt_b.num_layers]
    space = data_flow_space(config, a, b, depths, fail)
    _check_strategy(config, space, fail)
    if not needs_zoo:
        from workers.data_flow import plan_path

        try:  # the starting path plans against the real checkpoints, padded to the engine's depth
            plan_path(space.decode_path(space.start_genome()), {a: Checkpoint.open(a), b: Checkpoint.open(b)},
                      pad_to=space.max_path_length)
        except UserError as exc:
            raise fail(("models",), str(exc)) from None
    _check_backend(config, fail)
    scoring = _scoring(config, needs_zoo, fail)
    if config.resources.address:
        from evolve.pool import check_reachable

        check_reachable(config.resources.address)
    return CheckedRun(config, space, scoring, needs_zoo)


def data_flow_space(config: RunConfig, a: str, b: str, depths: list[int], fail) -> DataFlowSpace:
    dfs = config.data_flow
    assert dfs is not None
    try:
        return DataFlowSpace(a, b, depths[0], depths[1], repeats=dfs.repeats, scales=dfs.scales,
                             scale_range=tuple(dfs.scale_range), max_path_length=dfs.max_path_length,
                             fix_ends=dfs.fix_ends, slot_order=dfs.slot_order,
                             max_cumulative_scale=dfs.max_cumulative_scale, dtype=config.space.dtype,
                             seed=config.strategy.seed)
    except UserError as exc:  # "data_flow.field: message"
        head, _, message = str(exc).partition(": ")
        loc = tuple(head.split(".")) if head.startswith("data_flow") else ("data_flow",)
        raise fail(loc, message if head.startswith("data_flow") else str(exc)) from None


def data_flow_worker_kwargs(space: DataFlowSpace, scoring) -> dict[str, Any]:
    return {"models": [space.model_a, space.model_b], "max_path_length": space.max_path_length,
            "settings": scoring.settings, "tasks": list(scoring.tasks)}


def data_flow_references(space: DataFlowSpace) -> dict[str, Recipe]:
    """A and B each as its own full path: the parents, scored beside the search.

    The centre of the box *is* model A's path: the loop tells that search candidate the
    reference's result instead of scoring it twice.
    """
    return {Path(m).name: LayerPath(m, tuple(PathStep(m, i) for i in range(space.depth(k))), space.dtype).to_recipe()
            for k, m in enumerate(space.models)}
