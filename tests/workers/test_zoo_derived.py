"""The zoo's derived builds (the data-flow pair, the kind pair): structure of tiny builds, the
catalog of zoo: names, and (slow) on the real data-flow pair, the stacked path beating both
parents and parameter-space merges."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from workers.zoo import build_zoo
from workers.zoo.catalog import ZOO_MODEL_NAMES, model_depth, model_dir, models_built
from workers.zoo.data_flow_pair import DATA_FLOW_PAIR, DESIGNED_PATH
from workers.zoo.kind_pair import KIND_PAIR

TINY_SCALE = 0.005


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    return build_zoo(tmp_path_factory.mktemp("zoo") / "zoo-v1", progress=False, train_scale=TINY_SCALE)


@pytest.fixture(scope="module")
def tiny_pair(tiny_zoo):
    return tiny_zoo, DATA_FLOW_PAIR.build(tiny_zoo.root, progress=False, train_scale=TINY_SCALE)


@pytest.fixture(scope="module")
def tiny_kind(tiny_zoo):
    return tiny_zoo, KIND_PAIR.build(tiny_zoo.root, progress=False, train_scale=TINY_SCALE)


def _state(path):
    return load_file(str(path / "model.safetensors"))


def test_reader_is_the_base_with_one_block_in_front(tiny_pair):
    zoo, pair = tiny_pair
    base, reader, adder = _state(zoo.base), _state(pair["reader"]), _state(pair["adder"])
    assert set(pair) == {"reader", "adder"} and pair["reader"].parent.parent == DATA_FLOW_PAIR.directory(zoo.root)
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
    assert not DATA_FLOW_PAIR.is_built(zoo.root)  # a tiny build writes no marker: it is never "the" pair


def test_kind_pair_moves_embeddings_and_blocks_only(tiny_kind):
    """Each kind expert moves its kana rows and its blocks (each a skill and a conflict); the
    head never moves, and the adder's norms may (its addition phase trains them)."""
    from workers.zoo.tokenizer import KANA, vocabulary

    zoo, pair = tiny_kind
    base = _state(zoo.base)
    kana = [vocabulary()[c] for c in KANA]
    others = [i for i in range(base["model.embed_tokens.weight"].shape[0]) if i not in kana]
    for name, path in pair.items():
        state = _state(path)
        emb, base_emb = state["model.embed_tokens.weight"], base["model.embed_tokens.weight"]
        assert torch.equal(emb[others], base_emb[others]) and not torch.equal(emb[kana], base_emb[kana]), name
        assert torch.equal(state["lm_head.weight"], base["lm_head.weight"]), name
        assert not torch.equal(state["model.layers.1.mlp.down_proj.weight"], base["model.layers.1.mlp.down_proj.weight"])
    assert (zoo.root / "kind-v1" / "kind.json").is_file() and not KIND_PAIR.is_built(zoo.root)


def test_pair_models_load_in_transformers(tiny_pair, tiny_kind):
    from transformers import AutoModelForCausalLM

    for name, path in {**tiny_pair[1], **tiny_kind[1]}.items():
        model = AutoModelForCausalLM.from_pretrained(path)
        assert model.config.num_hidden_layers == model_depth(name)
        assert torch.isfinite(model(torch.tensor([[1, 5, 6]])).logits).all()


def test_catalog_names_every_zoo_model(tmp_path):
    assert ZOO_MODEL_NAMES == ("base", "arith", "cipher", "distractor", "reader", "adder", "kind_reader",
                               "kind_adder")
    assert model_dir("arith", tmp_path) == tmp_path.absolute() / "models" / "arith"
    assert model_dir("reader", tmp_path) == tmp_path.absolute() / "dfs-v1" / "models" / "reader"
    assert model_dir("kind_adder", tmp_path) == tmp_path.absolute() / "kind-v1" / "models" / "kind_adder"
    assert [model_depth(n) for n in ("reader", "adder", "base", "kind_reader")] == [5, 4, 4, 4]
    assert not models_built(["base"], tmp_path) and not models_built(["reader"], tmp_path)
    with pytest.raises(KeyError):
        model_dir("nope", tmp_path)


# --- the real pair: a layer path matters -------------------------------------------------------
@pytest.mark.slow
def test_stacked_path_beats_parents_and_merges(tmp_path):
    """On 64 validation prompts of zoo_target: the designed path >= 0.3 and 0.3 above every merge,
    the parents and a task-arithmetic grid over base + reader's shifted blocks + adder <= 0.1.

    How far the path gets depends on the build (training is not bit-reproducible across CPUs):
    0.844 on one machine, 0.453 on another, merges 0.0-0.03 on both (docs/zoo.md); the bar is
    what makes it a pair on which only a layer path works, not one build's figure."""
    from search_spaces.data_flow import LayerPath, PathStep
    from workers.data_flow import write_path_model
    from workers.zoo import data as D
    from workers.zoo.evaluate import load_model
    from workers.zoo.train import greedy_accuracy

    zoo = build_zoo(progress=False)
    pair = DATA_FLOW_PAIR.build(zoo.root, progress=False)
    assert DATA_FLOW_PAIR.is_built(zoo.root)
    target = D.all_splits()["zoo_target"]["validation"][:64]
    parents = {n: greedy_accuracy(load_model(p), target) for n, p in pair.items()}
    assert max(parents.values()) <= 0.1, parents

    path = LayerPath(str(pair["reader"]), tuple(PathStep(str(pair[m]), k) for m, k in DESIGNED_PATH))
    stacked = greedy_accuracy(load_model(write_path_model(path, tmp_path / "stacked")), target)
    assert stacked >= 0.3, stacked

    base, adder = _state(zoo.base), _state(pair["adder"])
    reader = {n.replace(f".layers.{k}.", f".layers.{int(k) - 1}.") if (k := _layer(n)) else n: t
              for n, t in _state(pair["reader"]).items() if _layer(n) != "0"}  # aligned with the base
    probe = load_model(zoo.base)
    best_merge = 0.0
    for wr in (0.0, 0.5, 1.0):
        for wd in (0.5, 1.0, 1.25):
            probe.load_state_dict({n: b + wr * (reader[n] - b) + wd * (adder[n] - b) for n, b in base.items()})
            best_merge = max(best_merge, greedy_accuracy(probe, target))
    assert best_merge <= 0.1 and stacked >= best_merge + 0.3, (best_merge, stacked)


def _layer(name: str) -> str | None:
    return name.split(".layers.")[1].split(".")[0] if ".layers." in name else None
