"""`workers.plan`: the compatibility checks made before any tensor is read."""

from __future__ import annotations

import json
import shutil

import pytest

from search_spaces.recipe import Recipe
from workers.checkpoint import CheckpointError
from workers.plan import open_checkpoints, plan_merge


def linear_of(a, b) -> Recipe:
    return Recipe.from_dict({"merge_method": "linear", "models": [
        {"model": str(a), "parameters": {"weight": 0.5}}, {"model": str(b), "parameters": {"weight": 0.5}}]})


def test_identical_tokenizer_files_are_not_parsed(family):
    recipe = linear_of(family[1], family[2])
    assert (family[1] / "tokenizer.json").read_bytes() == (family[2] / "tokenizer.json").read_bytes()
    checkpoints = open_checkpoints(recipe)
    plan_merge(recipe, checkpoints)
    assert all("vocabulary_fingerprint" not in vars(c) for c in checkpoints.values())  # never computed


def test_different_tokenizer_files_are_compared_by_vocabulary(family, tmp_path):
    reformatted, renamed = tmp_path / "reformatted", tmp_path / "renamed"
    for d in (reformatted, renamed):
        shutil.copytree(family[2], d)
    tok = json.loads((family[2] / "tokenizer.json").read_text())
    (reformatted / "tokenizer.json").write_text(json.dumps(tok, indent=4))  # other bytes, same vocabulary
    plan_merge(linear_of(family[1], reformatted), open_checkpoints(linear_of(family[1], reformatted)))
    vocab = tok["model"]["vocab"]
    vocab["zz"] = vocab.pop(next(iter(vocab)))
    (renamed / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(CheckpointError, match="tokenizer vocabulary differs"):
        plan_merge(linear_of(family[1], renamed), open_checkpoints(linear_of(family[1], renamed)))
