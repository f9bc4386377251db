"""The PS+DFS pipeline: a parameter-space search, then a data-flow search whose model A is its best.

One config, two stages, each an ordinary run in the store with its own budget, leaderboard
and resume (named ``<name>/ps`` and ``<name>/dfs``):

    name: zoo-ps-dfs
    pipeline: ps_then_dfs
    ps:  {models: ..., space: ..., strategy: ..., budget: ..., tasks: ..., evaluation: ...}
    dfs: {models: {sources: [B]}, data_flow: ..., strategy: ..., budget: ..., tasks: ..., evaluation: ...}

The DFS stage's ``models.base`` (model A) is filled in: the PS stage's best search candidate
(ranked on validation), exported once as a plain model under the PS run's cache folder. With
``ps_result: b`` it becomes model B instead (``models.sources``), for a model A whose own
layers must frame the path (e.g. a block that has to come first). Both stages are
pre-flighted before anything runs (the DFS stage against the PS base model, which has the
PS result's architecture). `run_pipeline` is also the resume: it continues the first stage
that has not finished and starts the ones that have not begun, so running it again after a
crash loses nothing. ``python -m evolve.pipeline CONFIG [--store URL]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from evolve.config import ConfigError, RunConfig
from search_spaces.errors import UserError

PS_STAGE, DFS_STAGE = "ps", "dfs"


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "pipeline"
    pipeline: Literal["ps_then_dfs"]
    ps_result: Literal["a", "b"] = "a"  # which model of the DFS stage the PS stage's best becomes
    ps: dict[str, Any]
    dfs: dict[str, Any]
    store: str | None = None

    def stage(self, stage: str, best: str | None = None) -> RunConfig:
        """The stage's run config (the DFS one with the PS stage's ``best`` as model A, or B with
        ``ps_result: b``); errors name the stage."""
        data = dict(self.ps if stage == PS_STAGE else self.dfs)
        data["name"] = f"{self.name}/{stage}"
        if stage == DFS_STAGE:
            models = dict(data.get("models") or {})
            best = best or "(the PS stage's best)"
            if self.ps_result == "a":
                if "base" in models:
                    raise ConfigError("dfs.models.base: filled in by the pipeline (the PS stage's best); "
                                      "give only sources")
                models["base"] = best
            else:
                if "sources" in models:
                    raise ConfigError("dfs.models.sources: filled in by the pipeline (ps_result: b, the PS "
                                      "stage's best); give only base")
                models["sources"] = [best]
            data["models"] = models
        try:
            config = RunConfig.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{stage}.{where}: {err['msg'].removeprefix('Value error, ')}") from None
        if stage == PS_STAGE and config.data_flow is not None:
            raise ConfigError("ps.data_flow: the first stage searches the parameter space")
        if stage == DFS_STAGE and config.data_flow is None:
            raise ConfigError("dfs.data_flow: required, the second stage searches layer paths")
        return config


def load_pipeline(path: str | Path) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return PipelineConfig.model_validate(yaml.safe_load(path.read_text()))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {getattr(exc, 'problem', exc)}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def check_pipeline(config: PipelineConfig) -> None:
    """Pre-flight both stages before either runs; the DFS stage against the PS base model."""
    from evolve.preflight import check_run

    ps = config.stage(PS_STAGE)
    check_run(ps)
    check_run(config.stage(DFS_STAGE, best=ps.models.base))


def _find_run(store, config: RunConfig):
    wanted = config.model_dump(mode="json")
    return next((r for r in store.list_runs() if r.name == config.name and r.config == wanted), None)


def _finish(store, config: RunConfig, progress: bool) -> str:
    """Start the stage's run, or resume it where it stopped; its run id."""
    from evolve import runner
    from evolve.preflight import check_run
    from evolve.store.records import RunStatus

    run = _find_run(store, config)
    if run is None:
        return runner.start(store, check_run(config), progress=progress).run_id
    if run.status != RunStatus.FINISHED:
        runner.resume(store, run.id, progress=progress)
    return run.id


def best_model(store, run_id: str, out: Path, progress: bool = False) -> Path:
    """The run's best search candidate (validation), exported once to ``out``."""
    from evolve.report import leaderboard_data
    from search_spaces.recipe import Recipe
    from workers.export import merge_to_disk

    if (out / "config.json").is_file():
        return out
    rows = [r for r in leaderboard_data(store, run_id, "validation")["candidates"] if r["kind"] == "search"]
    if not rows:
        raise UserError(f"run {run_id}: no finished search candidate to hand to the next stage")
    recipe = Recipe.from_dict(store.get_candidate(rows[0]["id"]).recipe)
    return merge_to_disk(recipe, out, progress=progress,
                         card={"provenance": {"run": run_id, "candidate": rows[0]["id"], "stage": PS_STAGE}})


def run_pipeline(store, config: PipelineConfig, *, progress: bool = True,
                 cache: Path | None = None) -> dict[str, str]:
    """Run (or resume) both stages; returns ``{stage: run id}``."""
    from workers.data_flow_scorer import cache_root

    check_pipeline(config)
    ps_id = _finish(store, config.stage(PS_STAGE), progress)
    best = best_model(store, ps_id, (cache or cache_root()) / "pipelines" / ps_id / "best")
    dfs_id = _finish(store, config.stage(DFS_STAGE, best=str(best)), progress)
    return {PS_STAGE: ps_id, DFS_STAGE: dfs_id}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evolve.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--store", default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        from evolve.config import resolve_store_url
        from evolve.report import print_leaderboard
        from evolve.store import Store

        config = load_pipeline(args.config)
        store = Store(args.store or config.store or resolve_store_url(None))
        runs = run_pipeline(store, config, progress=not args.quiet)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for stage, run_id in runs.items():
        print(f"stage {stage}: run {run_id}")
        print_leaderboard(store, run_id, split="test", limit=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
