import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from search_spaces.recipe import Recipe
from workers.export import merge_to_disk


def load_dir(path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def linear_recipe(models, **extra) -> Recipe:
    a, b = models[1], models[2]
    return Recipe.from_dict({
        "merge_method": "linear",
        "models": [{"model": str(a), "parameters": {"weight": 0.25}},
                   {"model": str(b), "parameters": {"weight": [0.0, 1.5]}}],
        **extra,
    })


def test_linear_merge_to_disk_matches_closed_form(family, tmp_path):
    out = merge_to_disk(linear_recipe(family), tmp_path / "out", progress=False)
    merged, a, b = load_dir(out), load_dir(family[1]), load_dir(family[2])
    assert set(merged) == set(a)
    # 3 layers: the gradient [0, 1.5] gives layer 0 -> 0, layer 1 -> 0.75, layer 2 -> 1.5; others t=0.
    for name, tensor in merged.items():
        wb = {".layers.0.": 0.0, ".layers.1.": 0.75, ".layers.2.": 1.5}.get(
            next((k for k in (".layers.0.", ".layers.1.", ".layers.2.") if k in name), ""), 0.0)
        expected = (0.25 * a[name] + wb * b[name]) / (0.25 + wb)
        torch.testing.assert_close(tensor, expected, rtol=1e-6, atol=1e-7)


def test_output_is_a_loadable_hf_model_with_card_and_tokenizer(sharded_family, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = merge_to_disk(linear_recipe(sharded_family), tmp_path / "out", progress=False, max_shard_bytes=50_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    model = AutoModelForCausalLM.from_pretrained(out)
    logits = model(torch.tensor([[1, 5, 9, 12]])).logits
    assert torch.isfinite(logits).all()
    assert AutoTokenizer.from_pretrained(out)("w5 w9").input_ids == [5, 9]
    card = (out / "README.md").read_text()
    assert "merge_method: linear" in card and str(sharded_family[1]) in card
    assert Recipe.from_file(out / "evolve_recipe.yaml").merge_method == "linear"


def test_sharded_and_single_file_inputs_give_identical_tensors(family, sharded_family, tmp_path):
    one = load_dir(merge_to_disk(linear_recipe(family), tmp_path / "one", progress=False))
    many = load_dir(merge_to_disk(linear_recipe(sharded_family), tmp_path / "many", progress=False, max_shard_bytes=30_000))
    assert one.keys() == many.keys()
    for name in one:
        assert torch.equal(one[name], many[name])


def test_dtype_setting_casts_the_output(family, tmp_path):
    out = merge_to_disk(linear_recipe(family, dtype="bfloat16"), tmp_path / "bf16", progress=False)
    assert {t.dtype for t in load_dir(out).values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_a_truncated_source_is_refused_before_anything_is_written(family, tmp_path):
    from workers.checkpoint import CheckpointError

    broken = tmp_path / "broken"
    shutil.copytree(family[2], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated tensors
    recipe = Recipe.from_dict({"merge_method": "linear", "models": [
        {"model": str(family[1]), "parameters": {"weight": 1.0}},
        {"model": str(broken), "parameters": {"weight": 1.0}}]})
    with pytest.raises(CheckpointError, match="truncated"):
        merge_to_disk(recipe, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_failure_mid_merge_leaves_nothing_behind(family, tmp_path, monkeypatch):
    from workers.safetensors_io import TensorReader

    map_tensor, calls = TensorReader.map, []

    def failing_map(self, name):  # a disk error after some tensors were merged and written
        calls.append(name)
        if len(calls) > 5:
            raise OSError(f"injected read error at '{name}'")
        return map_tensor(self, name)

    monkeypatch.setattr(TensorReader, "map", failing_map)
    with pytest.raises(OSError, match="injected read error"):
        merge_to_disk(linear_recipe(family), tmp_path / "out", progress=False)
    assert len(calls) > 5 and list(tmp_path.iterdir()) == []


def test_existing_output_is_never_overwritten_without_force(family, tmp_path):
    from search_spaces.errors import UserError

    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(UserError, match="already exists"):
        merge_to_disk(linear_recipe(family), out, progress=False)
    assert (out / "precious.txt").read_text() == "keep"
    merge_to_disk(linear_recipe(family), out, progress=False, overwrite=True)
    assert not (out / "precious.txt").exists() and (out / "model.safetensors").exists()


def test_passthrough_slices_stack_layers(family, tmp_path):
    recipe = Recipe.from_dict({"merge_method": "passthrough", "slices": [
        {"sources": [{"model": str(family[1]), "layer_range": [0, 2]}]},
        {"sources": [{"model": str(family[2]), "layer_range": [1, 3]}]},
    ]})
    out = merge_to_disk(recipe, tmp_path / "stack", progress=False)
    merged, a, b = load_dir(out), load_dir(family[1]), load_dir(family[2])
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4
    key = "self_attn.q_proj.weight"
    assert torch.equal(merged[f"model.layers.1.{key}"], a[f"model.layers.1.{key}"])
    assert torch.equal(merged[f"model.layers.2.{key}"], b[f"model.layers.1.{key}"])
    assert torch.equal(merged[f"model.layers.3.{key}"], b[f"model.layers.2.{key}"])
    assert torch.equal(merged["model.embed_tokens.weight"], a["model.embed_tokens.weight"])
    assert torch.equal(merged["lm_head.weight"], b["lm_head.weight"])
