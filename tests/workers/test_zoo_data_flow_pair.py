"""The zoo's data-flow pair: structure of a tiny build, the catalog of zoo: names, and (slow)
on the real build, the stacked path beating both parents and parameter-space merges."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from workers.zoo import build_zoo
from workers.zoo.catalog import ZOO_MODEL_NAMES, model_depth, model_dir, models_built
from workers.zoo.data_flow_pair import DESIGNED_PATH, PAIR_NAMES, build_pair, is_pair_built, pair_dir

TINY_SCALE = 0.005


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    zoo = build_zoo(tmp_path_factory.mktemp("zoo") / "zoo-v1", progress=False, train_scale=TINY_SCALE)
    return zoo, build_pair(zoo.root, progress=False, train_scale=TINY_SCALE)


def _state(path):
    return load_file(str(path / "model.safetensors"))


def test_reader_is_the_base_with_one_block_in_front(tiny_pair):
    zoo, pair = tiny_pair
    base, reader, adder = _state(zoo.base), _state(pair["reader"]), _state(pair["adder"])
    assert set(pair) == set(PAIR_NAMES) and pair["reader"].parent.parent == pair_dir(zoo.root)
    for name, tensor in base.items():  # the reader's layers 1..4 are the base's 0..3, bit for bit
        if ".layers." in name:
            head, rest = name.split(".layers.")
            k, tail = rest.split(".", 1)
            assert torch.equal(reader[f"{head}.layers.{int(k) + 1}.{tail}"], tensor), name
        else:
            assert torch.equal(reader[name], tensor), name
        if "embed_tokens" in name or "lm_head" in name:
            assert torch.equal(adder[name], tensor), name  # the adder trains blocks and norms only
    front = {n: t for n, t in reader.items() if ".layers.0." in n}
    assert front and not torch.equal(front["model.layers.0.self_attn.o_proj.weight"],
                                     torch.zeros_like(front["model.layers.0.self_attn.o_proj.weight"]))
    assert not is_pair_built(zoo.root)  # a tiny build writes no marker: it is never "the" pair


def test_pair_models_load_in_transformers(tiny_pair):
    from transformers import AutoModelForCausalLM

    _, pair = tiny_pair
    for name, path in pair.items():
        model = AutoModelForCausalLM.from_pretrained(path)
        assert model.config.num_hidden_layers == model_depth(name)
        assert torch.isfinite(model(torch.tensor([[1, 5, 6]])).logits).all()


def test_catalog_names_every_zoo_model(tmp_path):
    assert ZOO_MODEL_NAMES == ("base", "arith", "cipher", "distractor", "reader", "adder")
    assert model_dir("arith", tmp_path) == tmp_path.absolute() / "models" / "arith"
    assert model_dir("reader", tmp_path) == pair_dir(tmp_path.absolute()) / "models" / "reader"
    assert (model_depth("reader"), model_depth("adder"), model_depth("base")) == (5, 4, 4)
    assert not models_built(["base"], tmp_path) and not models_built(["reader"], tmp_path)
    with pytest.raises(KeyError):
        model_dir("nope", tmp_path)


# --- the real pair: a layer path matters -------------------------------------------------------
@pytest.mark.slow
def test_stacked_path_beats_parents_and_merges(tmp_path):
    """On 64 validation prompts of zoo_target: the designed path >= 0.6, the parents and a
    task-arithmetic grid over base + reader's shifted blocks + adder <= 0.1 (docs/zoo.md)."""
    from search_spaces.data_flow import LayerPath, PathStep
    from workers.data_flow import write_path_model
    from workers.zoo import data as D
    from workers.zoo.evaluate import load_model
    from workers.zoo.train import greedy_accuracy

    zoo = build_zoo(progress=False)
    pair = build_pair(zoo.root, progress=False)
    assert is_pair_built(zoo.root)
    target = D.all_splits()["zoo_target"]["validation"][:64]
    parents = {n: greedy_accuracy(load_model(p), target) for n, p in pair.items()}
    assert max(parents.values()) <= 0.1, parents

    path = LayerPath(str(pair["reader"]), tuple(PathStep(str(pair[m]), k) for m, k in DESIGNED_PATH))
    stacked = greedy_accuracy(load_model(write_path_model(path, tmp_path / "stacked")), target)
    assert stacked >= 0.6, stacked

    base, adder = _state(zoo.base), _state(pair["adder"])
    reader = {n.replace(f".layers.{k}.", f".layers.{int(k) - 1}.") if (k := _layer(n)) else n: t
              for n, t in _state(pair["reader"]).items() if _layer(n) != "0"}  # aligned with the base
    probe = load_model(zoo.base)
    best_merge = 0.0
    for wr in (0.0, 0.5, 1.0):
        for wd in (0.5, 1.0, 1.25):
            probe.load_state_dict({n: b + wr * (reader[n] - b) + wd * (adder[n] - b) for n, b in base.items()})
            best_merge = max(best_merge, greedy_accuracy(probe, target))
    assert best_merge <= 0.1 and stacked >= best_merge + 0.5, (best_merge, stacked)


def _layer(name: str) -> str | None:
    return name.split(".layers.")[1].split(".")[0] if ".layers." in name else None
