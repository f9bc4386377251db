"""Export a stored candidate as a Hugging Face model directory with proof of where it came from.

The directory holds the merged weights, config and tokenizer, ``recipe.yaml`` (our recipe;
``evolve merge recipe.yaml`` rebuilds it; ``evolve_recipe.yaml`` is the same file under its
older name), ``mergekit.yaml`` (``mergekit-yaml mergekit.yaml OUT`` rebuilds the same tensors)
and a model card whose front matter carries ``base_model``, the tags and a ``model-index``
with every stored score. `verify_export` reloads the directory from disk and re-scores it on
the run's own tasks and settings.
"""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evolve.report import SPLITS, leaderboard_data
from evolve.store import CandidateKind, EvaluationStatus, Store
from search_spaces.errors import UserError
from search_spaces.mergekit_yaml import to_mergekit
from search_spaces.recipe import Recipe

RECIPE_FILE = "recipe.yaml"
LEGACY_RECIPE_FILE = "evolve_recipe.yaml"
TAGS = ("merge", "evolutionary-merge", "evolve-merge")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    candidate_id: str
    seconds: float
    bytes: int


def _pick(store: Store, run_id: str, candidate_id: str | None) -> str:
    store.get_run(run_id)
    if candidate_id is None:
        board = leaderboard_data(store, run_id, "validation")
        if not board["candidates"]:
            raise UserError(f"run {run_id}: no finished candidate to export")
        return board["candidates"][0]["id"]
    candidate = store.get_candidate(candidate_id)
    if candidate.run_id != run_id:
        raise UserError(f"candidate {candidate_id} belongs to run {candidate.run_id}, not {run_id}")
    return candidate_id


def _stored(store: Store, run_id: str, candidate_id: str) -> Any:
    done = store.list_evaluations(run_id, EvaluationStatus.COMPLETE, candidate_id=candidate_id)
    if not done:
        raise UserError(f"candidate {candidate_id} has no complete evaluation to export")
    return done[-1]


def export_candidate(store: Store, run_id: str, out: str | Path, *, candidate_id: str | None = None,
                     overwrite: bool = False, progress: bool = True) -> Path:
    """Write a candidate (default: the best on validation) to ``out``; returns the directory."""
    return export_run(store, run_id, out, candidate_id=candidate_id, overwrite=overwrite, progress=progress).path


def export_run(store: Store, run_id: str, out: str | Path, *, candidate_id: str | None = None,
               overwrite: bool = False, progress: bool = True) -> ExportResult:
    from workers.checkpoint import Checkpoint
    from workers.export import merge_to_disk

    start = time.perf_counter()
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (pass --force to replace it)")
    candidate_id = _pick(store, run_id, candidate_id)
    evaluation = _stored(store, run_id, candidate_id)
    candidate = store.get_candidate(candidate_id)
    recipe = Recipe.from_dict(candidate.recipe)
    num_layers = Checkpoint.open(recipe.model_paths[0]).num_layers
    mergekit = yaml.safe_dump(to_mergekit(recipe, num_layers), sort_keys=False)
    card = search_card(store, run_id, candidate_id, evaluation, recipe, out)
    path = merge_to_disk(recipe, out, overwrite=overwrite, progress=progress,
                         extra_files={"mergekit.yaml": mergekit, RECIPE_FILE: recipe.to_yaml(), "README.md": card})
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return ExportResult(path, candidate_id, time.perf_counter() - start, size)


def _model_index(name: str, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    for split in SPLITS:
        for task, values in (metrics.get(split) or {}).items():
            results.append({"task": {"type": "text-generation"},
                            "dataset": {"name": task, "type": task, "split": split},
                            "metrics": [{"type": m, "name": m, "value": float(v)} for m, v in values.items()
                                        if isinstance(v, int | float) and math.isfinite(v)]})
    return [{"name": name, "results": results}]


def search_card(store: Store, run_id: str, candidate_id: str, evaluation: Any, recipe: Recipe, out: Path) -> str:
    """The model card of a searched merge: front matter, recipe, parents, scores, settings, how to reproduce."""
    from evolve.report import recipe_rows, task_scores

    run = store.get_run(run_id)
    candidate = store.get_candidate(candidate_id)
    base = recipe.base_model or recipe.model_paths[0]
    front = {"base_model": base, "library_name": "transformers", "tags": list(TAGS),
             "model-index": _model_index(out.name, evaluation.metrics or {})}
    tasks = sorted({t for s in SPLITS for t in (evaluation.metrics or {}).get(s, {})})
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---",
             f"# {out.name}", "",
             f"An evolutionary merge ({recipe.merge_method}) found by evolve-merge: candidate `{candidate_id}` "
             f"(#{candidate.number}, generation {candidate.generation}) of run `{run_id}` ({run.name}), "
             f"fitness {_f(evaluation.fitness)} on validation. Recipe hash `{recipe.hash}`.", "",
             "## Scores", "", "| task | validation | test |", "|---|---|---|"]
    val, test = task_scores(evaluation, "validation"), task_scores(evaluation, "test")
    lines += [f"| {t} | {_f(val.get(t))} | {_f(test.get(t))} |" for t in tasks]
    lines += ["", "## Parents", "", "| model | " + " | ".join(f"{t} (validation) | {t} (test)" for t in tasks) + " |",
              "|---|" + "---|" * (2 * len(tasks))]
    for ref in store.list_candidates(run_id, kind=CandidateKind.REFERENCE):
        ev = next(iter(store.list_evaluations(run_id, EvaluationStatus.COMPLETE, candidate_id=ref.id)), None)
        rv, rt = task_scores(ev, "validation"), task_scores(ev, "test")
        path = Recipe.from_dict(ref.recipe).model_paths[0]  # a parameter-space or a layer-path recipe
        lines.append(f"| `{ref.label}` ({path}) | " + " | ".join(f"{_f(rv.get(t))} | {_f(rt.get(t))}" for t in tasks)
                     + " |")
    if candidate.parents:
        lines += ["", "Search parents (lineage): " + ", ".join(f"`{p}`" for p in candidate.parents)]
    groups = max((len(r["values"]) for r in recipe_rows(candidate.recipe) if r["form"] == "groups"), default=1)
    lines += ["", "## Recipe", "", "| model | parameter | kind | " + " | ".join(f"g{g}" for g in range(groups)) + " |",
              "|---|---|---|" + "---|" * groups]
    for r in recipe_rows(candidate.recipe):
        vals = r["values"] if r["form"] == "groups" else r["values"] * groups if r["form"] == "scalar" else \
            [" ".join(_f(v) for v in r["values"])] + [""] * (groups - 1)
        lines.append(f"| {r['model']} | {r['parameter']} | {r['kind'] or ''} | " + " | ".join(_f(v) for v in vals) + " |")
    lines += ["", "```yaml", recipe.to_yaml().strip(), "```", ""]
    config = run.config
    settings = {k: config.get(k) for k in ("strategy", "budget", "tasks", "evaluation", "space") if k in config}
    lines += ["## Run settings", "", "```yaml", yaml.safe_dump(settings, sort_keys=False).strip(), "```", "",
              "## Reproduce", "", "```bash",
              f"evolve merge {RECIPE_FILE} --out rebuilt/          # in this directory: the same model",
              "mergekit-yaml mergekit.yaml rebuilt-mergekit/      # the same tensors with mergekit",
              f"evolve export {run_id} --candidate {candidate_id} --out {shlex.quote(out.name)} --verify"
              "  # from the run's store",
              "```", ""]
    return "\n".join(lines)


def _f(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


# -- verification ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verification:
    """Stored against re-scored values, one row per (split, task, metric)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r["ok"] for r in self.rows)


def verifiable(store: Store, run_id: str) -> Any:
    """The run's pre-flighted config, if its scores can be re-checked on weights; else `UserError`."""
    from evolve.config import RunConfig
    from evolve.preflight import check_run

    checked = check_run(RunConfig.model_validate(store.get_run(run_id).config))
    if checked.scoring is None:
        raise UserError(f"run {run_id} used the analytic backend, which scores recipes, not weights: "
                        "there is no model score to verify")
    return checked


def verify_export(store: Store, run_id: str, candidate_id: str, directory: str | Path) -> Verification:
    """Reload ``directory`` from disk, score it on the run's stored tasks and settings, compare.

    Greedy decoding is deterministic, so the only noise is numeric (a merge in memory against
    weights read back from disk): a task may differ by one sample at most (1/n).
    """
    from workers.candidate_scorer import outcome_of
    from workers.scoring import EvalSettings, Scorer, TaskSpec

    start = time.perf_counter()
    checked = verifiable(store, run_id)
    stored = _stored(store, run_id, candidate_id)
    settings = EvalSettings.from_dict(checked.scoring.settings)
    tasks = [TaskSpec.from_dict(t) for t in checked.scoring.tasks]
    directory = Path(directory).absolute()
    identity = Recipe.from_dict({"merge_method": "linear",
                                 "models": [{"model": str(directory), "parameters": {"weight": 1.0}}]})
    with Scorer.create([str(directory)], settings) as scorer:
        score = scorer.score(identity, tasks)
    if not score.ok:
        raise UserError(f"{directory}: re-scoring failed ({score.kind}): {score.reason}")
    again = outcome_of(score)
    rows = []
    for split, per_task in (stored.metrics or {}).items():
        for task, metrics in per_task.items():
            n = len(store.get_samples(stored.id, split).get(task, [])) or 1
            for metric, value in metrics.items():
                new = (again.metrics.get(split) or {}).get(task, {}).get(metric)
                tolerance = 1.0 / n + 1e-9
                ok = new is not None and abs(float(new) - float(value)) <= tolerance
                rows.append({"split": split, "task": task, "metric": metric, "stored": value, "rescored": new,
                             "tolerance": tolerance, "ok": ok})
    return Verification(rows, time.perf_counter() - start)
