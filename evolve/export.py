"""Export a stored candidate as a Hugging Face model directory plus a mergekit YAML."""

from __future__ import annotations

from pathlib import Path

import yaml

from evolve.report import leaderboard_data
from evolve.store import Store
from search_spaces.errors import UserError
from search_spaces.mergekit_yaml import to_mergekit
from search_spaces.recipe import Recipe


def export_candidate(store: Store, run_id: str, out: str | Path, *, candidate_id: str | None = None,
                     overwrite: bool = False, progress: bool = True) -> Path:
    from workers.checkpoint import Checkpoint
    from workers.export import merge_to_disk

    board = {split: leaderboard_data(store, run_id, split) for split in ("validation", "test")}
    if candidate_id is None:
        if not board["validation"]["candidates"]:
            raise UserError(f"run {run_id}: no finished candidate to export")
        candidate_id = board["validation"]["candidates"][0]["id"]
    candidate = store.get_candidate(candidate_id)
    if candidate.run_id != run_id:
        raise UserError(f"candidate {candidate_id} belongs to run {candidate.run_id}, not {run_id}")
    recipe = Recipe.from_dict(candidate.recipe)
    scores = {}
    for split, data in board.items():
        row = next((r for r in data["candidates"] if r["id"] == candidate_id), None)
        if row:
            for task, metrics in row["metrics"].items():
                for metric, value in metrics.items():
                    scores.setdefault(f"{task} ({split})", {})[metric] = value
    parents = {name: {"validation": board["validation"]["parents"].get(name, {}).get("score"),
                      "test": board["test"]["parents"].get(name, {}).get("score")}
               for name in board["validation"]["parents"]}
    card = {"scores": scores, "parent scores": parents,
            "provenance": {"run": run_id, "candidate": candidate_id, "recipe_hash": candidate.recipe_hash}}
    num_layers = Checkpoint.open(recipe.model_paths[0]).num_layers
    mergekit = yaml.safe_dump(to_mergekit(recipe, num_layers), sort_keys=False)
    return merge_to_disk(recipe, out, overwrite=overwrite, progress=progress, card=card,
                         extra_files={"mergekit.yaml": mergekit})
