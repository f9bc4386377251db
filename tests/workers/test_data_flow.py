"""Layer paths folded into plain models (issue 11), checked against an explicit forward pass.

The explicit reference (`fixtures.explicit_path`) is built without the folding code: a
transformers model of the path's depth whose layer k is a copy of the source model's layer,
with a forward pre-hook that multiplies the layer's input by the step's scale. The folded model is what
`write_path_model` writes, loaded back with ``from_pretrained``. With the norms' epsilon at
1e-12 the two must agree to 1e-5 relative error in float32 on random paths with scales in
[0.2, 3], for every family of `fixtures.architectures` that data-flow search supports.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures.architectures import ARCHITECTURES, write_family
from fixtures.explicit_path import explicit_logits as _explicit_logits
from fixtures.explicit_path import rel_error
from search_spaces.data_flow import DataFlowSpace, LayerPath, PathStep
from search_spaces.errors import UserError
from search_spaces.recipe import Recipe
from workers.checkpoint import Checkpoint
from workers.data_flow import (
    DataFlowError, DataFlowSources, check_pair, fold_factors, layout_for, padded_reference, write_path_model,
)

FAMILIES = ["llama-tied", "llama", "mistral", "qwen2-tied", "qwen3", "gemma2", "phi3", "mixtral"]
LAYERS = 3
IDS = torch.tensor([[1, 5, 9, 13, 40, 41, 7, 100, 64, 3]])
RTOL = 1e-5


def _family(root: Path, name: str, eps: float) -> tuple[str, str]:
    arch = ARCHITECTURES[name]
    arch = replace(arch, overrides={**arch.overrides, "num_hidden_layers": LAYERS, "rms_norm_eps": eps})
    base, variant = write_family(root, arch, n_variants=1, seed=3, noise=0.05)
    return str(base), str(variant)


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, tuple[str, str]]:
    root = tmp_path_factory.mktemp("dfs")
    return {name: _family(root / name, name, 1e-12) for name in FAMILIES}


def _load(path: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def explicit_logits(path: LayerPath, models: dict[str, torch.nn.Module]) -> torch.Tensor:
    return _explicit_logits(path, models, IDS)


def folded_logits(directory: Path) -> torch.Tensor:
    with torch.no_grad():
        return _load(str(directory))(IDS).logits


def random_path(a: str, b: str, rng: np.random.Generator, length: int) -> LayerPath:
    steps = [PathStep(str(rng.choice([a, b])), int(rng.integers(0, LAYERS)), float(rng.uniform(0.2, 3.0)))
             for _ in range(length)]
    return LayerPath(a, tuple(steps))


@pytest.mark.parametrize("name", FAMILIES)
def test_folded_path_matches_explicit_forward(name, families, tmp_path):
    a, b = families[name]
    models = {a: _load(a), b: _load(b)}
    rng = np.random.default_rng(FAMILIES.index(name))
    worst = 0.0
    for i, length in enumerate((5, 7)):
        path = random_path(a, b, rng, length)
        out = write_path_model(path, tmp_path / f"p{i}")
        err = rel_error(folded_logits(out), explicit_logits(path, models))
        worst = max(worst, err)
        # the unfolded path must differ from the folded one: scales matter, or this proves nothing
        plain = LayerPath(a, tuple(PathStep(s.model, s.layer) for s in path.steps))
        assert rel_error(explicit_logits(plain, models), explicit_logits(path, models)) > 1e-2
    print(f"{name}: worst relative logit error {worst:.2e}")
    assert worst < RTOL


@pytest.mark.parametrize("name", ["llama", "gemma2", "qwen2-tied"])
def test_folded_model_is_a_plain_checkpoint(name, families, tmp_path):
    from transformers import AutoModelForCausalLM

    a, b = families[name]
    path = LayerPath(a, (PathStep(a, 0), PathStep(b, 1, 1.7), PathStep(b, 1, 0.4), PathStep(a, 2, 2.5),
                         PathStep(a, 1)), seed=5)
    out = write_path_model(path, tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    arch = json.loads((Path(a) / "config.json").read_text())["architectures"]
    assert config["num_hidden_layers"] == 5 and config["architectures"] == arch and "auto_map" not in config
    if "layer_types" in config:
        assert len(config["layer_types"]) == 5
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert type(model).__name__ == arch[0]
    assert not info["missing_keys"] and not info["unexpected_keys"]
    recorded = LayerPath.from_recipe(Recipe.from_file(out / "evolve_recipe.yaml"))
    assert recorded.steps == path.steps
    card = (out / "README.md").read_text()
    assert "## Layer path" in card and "   1  B:variant_0      1   1.7000" in card
    own = write_path_model(path, tmp_path / "own", extra_files={"README.md": "# my card\n"}).joinpath("README.md")
    assert own.read_text().startswith("# my card") and "   3  A:base           2   2.5000" in own.read_text()
    assert (out / "tokenizer.json").is_file()


@pytest.mark.parametrize("name", ["llama-tied", "gemma2", "phi3"])
def test_identity_padding_is_exact(name, families, tmp_path):
    """A padded with zero-output layers gives A's logits; a live padded model swapped in place to
    a path gives the exported path's logits, and back (no stale weights)."""
    a, b = families[name]
    padded = padded_reference(a, LAYERS + 4, tmp_path / "padded")
    assert json.loads((padded / "config.json").read_text())["num_hidden_layers"] == LAYERS + 4
    with torch.no_grad():
        plain = _load(a)(IDS).logits
    assert rel_error(folded_logits(padded), plain) < 1e-6

    live = _load(str(padded))
    sources = DataFlowSources([a, b])
    path = LayerPath(a, (PathStep(a, 0), PathStep(b, 2, 1.5), PathStep(b, 0, 0.7), PathStep(a, 2)))
    exported = folded_logits(write_path_model(path, tmp_path / "path"))
    sources.apply(path.to_recipe(), live)
    with torch.no_grad():
        swapped = live(IDS).logits
    assert rel_error(swapped, exported) < 1e-6
    assert rel_error(swapped, plain) > 1e-2
    start = LayerPath(a, tuple(PathStep(a, i) for i in range(LAYERS)))
    sources.apply(start.to_recipe(), live)
    with torch.no_grad():
        assert rel_error(live(IDS).logits, plain) < 1e-6


def test_long_path_cumulative_scale_is_clamped_and_still_exact(families, tmp_path):
    a, b = families["llama"]
    space = DataFlowSpace(a, b, LAYERS, repeats=4, scale_range=(0.25, 4.0), max_path_length=20,
                          max_cumulative_scale=8.0)
    path = space.decode_path(np.ones(space.dimension))  # every slot on, every scale at 4
    assert path.length == 20
    factors = fold_factors(path)
    assert min(factors) == pytest.approx(1 / 8) and max(factors) <= 1.0
    unclamped = float(np.prod([4.0] * 19))
    assert unclamped > 1e11  # what the clamp prevented
    models = {a: _load(a), b: _load(b)}
    out = write_path_model(path, tmp_path / "long")
    assert rel_error(folded_logits(out), explicit_logits(path, models)) < RTOL


def test_path_longer_than_the_engine_is_refused(families):
    a, b = families["llama"]
    live = _load(a)
    path = LayerPath(a, tuple(PathStep(a, i % LAYERS) for i in range(LAYERS + 1)))
    with pytest.raises(DataFlowError, match=r"the path has 4 layers, more than the 3 the engine was built for"):
        DataFlowSources([a, b]).apply(path.to_recipe(), live)


def test_unknown_family_and_mismatched_pair_are_one_line(families):
    with pytest.raises(DataFlowError, match="model_type 'olmo2'.*not know") as info:
        layout_for({"model_type": "olmo2", "architectures": ["Olmo2ForCausalLM"]})
    assert "\n" not in str(info.value) and isinstance(info.value, UserError)
    llama, _ = families["llama"]
    qwen, _ = families["qwen3"]
    with pytest.raises(DataFlowError, match="architecture Qwen3ForCausalLM differs"):
        check_pair(Checkpoint.open(llama), Checkpoint.open(qwen))


def test_fold_is_fast_enough_to_swap(families):
    """The in-place swap of a path costs about as much as copying a model (no reload)."""
    a, b = families["llama"]
    sources = DataFlowSources([a, b])
    live = _load(a)
    path = LayerPath(a, (PathStep(a, 0), PathStep(b, 1, 1.3), PathStep(a, 2)))
    start = time.perf_counter()
    sources.apply(path.to_recipe(), live)
    assert time.perf_counter() - start < 5.0


@pytest.mark.slow
def test_scoring_paths_without_restarts(families, tmp_path):
    """The data-flow worker scores A's own path exactly as the PS worker scores A, then other
    paths by in-place swap in the same live model; both swap times are printed side by side."""
    from fixtures.synthetic_tasks import write_synthetic_tasks
    from search_spaces.recipe import Recipe
    from workers.candidate_scorer import CandidateScorer
    from workers.data_flow_scorer import DataFlowCandidateScorer
    from workers.scoring import EvalSettings, TaskSpec

    a, b = families["llama"]
    tasks = write_synthetic_tasks(tmp_path / "tasks", a, n_validation=6, n_test=2)
    specs = [TaskSpec("syn_gen").to_dict(), TaskSpec("syn_mc", metric="acc").to_dict()]
    settings = EvalSettings(backend="hf", include_path=(str(tasks),), batch_size=8).to_dict()
    space = DataFlowSpace(a, b, LAYERS, repeats=2, max_path_length=7)
    dfs = DataFlowCandidateScorer([a, b], space.max_path_length, settings, specs, cache_dir=str(tmp_path / "cache"))
    ps = CandidateScorer([a, b], settings, specs)
    live = dfs.scorer.backend.model
    assert live.config.num_hidden_layers == 7

    start = dfs.evaluate(space.decode(space.start_genome()))
    plain = ps.evaluate(Recipe.from_dict({"merge_method": "linear", "models": [{"model": a, "parameters": {"weight": 1.0}}]}))
    assert start.ok and plain.ok
    assert start.samples == plain.samples and start.fitness == plain.fitness

    rng = np.random.default_rng(1)
    outcomes = [dfs.evaluate(space.decode(rng.random(space.dimension))) for _ in range(3)]
    assert all(o.ok for o in outcomes)
    assert dfs.scorer.backend.model is live  # the same live model throughout
    assert any(o.samples != start.samples for o in outcomes)
    ps_swap = ps.evaluate(Recipe.from_dict({"merge_method": "linear", "models": [
        {"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.5}}]}))
    print(f"swap seconds: data-flow {[round(o.merge_seconds, 4) for o in outcomes]}, "
          f"parameter-space {ps_swap.merge_seconds:.4f}")
