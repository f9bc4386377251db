import torch
from safetensors.torch import load_file

from search_spaces.recipe import Recipe
from workers.export import merge_to_disk
from workers.resident import ResidentSources


def test_in_memory_merge_matches_disk_and_reuses_the_live_model(family, tmp_path):
    from transformers import AutoModelForCausalLM

    recipe = Recipe.from_dict({"merge_method": "linear", "models": [
        {"model": str(family[1]), "parameters": {"weight": [0.1, 0.9]}},
        {"model": str(family[2]), "parameters": {"weight": 0.5}}]})
    disk = load_file(merge_to_disk(recipe, tmp_path / "out", progress=False) / "model.safetensors")

    sources = ResidentSources([str(p) for p in family[1:]])
    model = AutoModelForCausalLM.from_pretrained(family[0])
    before = id(model), {n: p.data_ptr() for n, p in model.named_parameters()}
    sources.apply(recipe, model)
    after = id(model), {n: p.data_ptr() for n, p in model.named_parameters()}
    assert before == after  # written in place: same object, same storage
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), disk[name]), name


def test_switching_candidates_changes_outputs_and_comes_back(family):
    from transformers import AutoModelForCausalLM

    sources = ResidentSources([str(p) for p in family[1:]])
    model = AutoModelForCausalLM.from_pretrained(family[0])
    ids = torch.tensor([[1, 7, 9, 11]])

    def recipe(w):
        return Recipe.from_dict({"merge_method": "linear", "models": [
            {"model": str(family[1]), "parameters": {"weight": w}},
            {"model": str(family[2]), "parameters": {"weight": 1 - w}}]})

    with torch.no_grad():
        sources.apply(recipe(1.0), model)
        first = model(ids).logits
        sources.apply(recipe(0.0), model)
        second = model(ids).logits
        sources.apply(recipe(1.0), model)
        third = model(ids).logits
    assert not torch.allclose(first, second)
    assert torch.equal(first, third)
