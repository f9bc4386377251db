"""`evolve export --verify` on a real HF + lm-eval run over the embedded zoo: model card, recipe,
a mergekit YAML that mergekit itself turns into the same tensors, and re-scoring from disk."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from evolve.cli import main
from evolve.export import verify_export
from evolve.store import CandidateKind, Store
from search_spaces.recipe import Recipe
from tests.evolve.inspect_runs import shared_run, zoo_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return zoo_run(tmp_path_factory.mktemp("zoo-export") / "runs.db")


@pytest.fixture(scope="module")
def exported(zoo, tmp_path_factory):
    url, run_id = zoo
    out = tmp_path_factory.mktemp("export") / "best"
    return url, run_id, out


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_export_verify_writes_card_recipes_and_reproduces_the_scores(exported, capsys):
    url, run_id, out = exported
    capsys.readouterr()
    assert main(["export", run_id, "--out", str(out), "--verify", "--quiet", "--store", url]) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "verified" in printed and "re-scored" in printed
    store = Store(url)
    best = next(e for e in store.leaderboard(run_id) if e.candidate.kind == CandidateKind.SEARCH)
    for name in ("recipe.yaml", "evolve_recipe.yaml"):
        assert Recipe.from_file(out / name).hash == best.candidate.recipe_hash
    card = (out / "README.md").read_text()
    front = front_matter(card)
    assert front["base_model"] == best.candidate.recipe["base_model"]
    assert {"merge", "evolutionary-merge"} <= set(front["tags"])
    results = {(r["dataset"]["name"], r["dataset"]["split"]): r["metrics"][0]["value"]
               for r in front["model-index"][0]["results"]}
    stored = best.evaluation.metrics
    assert results == {(t, s): m["exact_match"] for s in ("validation", "test") for t, m in stored[s].items()}
    for section in ("## Recipe", "## Parents", "## Scores", "## Run settings", "## Reproduce", "`arith`"):
        assert section in card
    assert f"evolve export {run_id} --candidate {best.candidate.id}" in card


def test_mergekit_yaml_reproduces_the_exported_tensors(exported, tmp_path):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    _, _, out = exported
    config = yaml.safe_load((out / "mergekit.yaml").read_text())
    run_merge(MergeConfiguration.model_validate(config), str(tmp_path / "mk"),
              options=MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False))
    theirs = {k: v for f in (tmp_path / "mk").glob("*.safetensors") for k, v in load_file(f).items()}
    ours = load_file(out / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert torch.allclose(tensor.float(), theirs[name].float(), atol=1e-6, rtol=1e-5), name


def test_export_loads_in_transformers_and_generates(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, out = exported
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("12+7=", return_tensors="pt").input_ids
    generated = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == ids.shape[1] + 3


def test_existing_out_is_refused_without_force_and_replaced_with_it(exported, capsys):
    url, run_id, out = exported
    before = (out / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["export", run_id, "--out", str(out), "--quiet", "--store", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--force" in err
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    assert main(["export", run_id, "--out", str(out), "--quiet", "--force", "--store", url]) == 0
    assert not list(out.parent.glob(".best.tmp-*"))  # the atomic write left no temp folder


def test_verify_fails_on_weights_that_are_not_the_candidate(exported, zoo, tmp_path):
    """The cipher expert's weights under the best candidate's name must not pass."""
    url, run_id, out = exported
    store = Store(url)
    best = next(e for e in store.leaderboard(run_id) if e.candidate.kind == CandidateKind.SEARCH)
    cipher = next(c for c in store.list_candidates(run_id, kind="reference") if c.label == "cipher")
    cipher_ev = store.list_evaluations(run_id, "COMPLETE", candidate_id=cipher.id)[0]
    assert cipher_ev.metrics != best.evaluation.metrics  # otherwise this test could not fail
    fake = tmp_path / "fake"
    shutil.copytree(out, fake)
    shutil.copy(cipher.recipe["models"][0]["model"] + "/model.safetensors", fake / "model.safetensors")
    check = verify_export(store, run_id, best.candidate.id, fake)
    assert not check.ok and any(not r["ok"] for r in check.rows)
    assert all(r["rescored"] is not None for r in check.rows)


def test_verify_of_an_analytic_run_is_a_one_line_error(family, tmp_path_factory, tmp_path, capsys):
    url, run_id = shared_run(family, tmp_path_factory)
    capsys.readouterr()
    assert main(["export", run_id, "--out", str(tmp_path / "x"), "--verify", "--quiet", "--store", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "analytic backend" in err
