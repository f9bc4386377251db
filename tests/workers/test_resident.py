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


def test_fused_moe_experts_are_written_where_from_pretrained_puts_them(tmp_path):
    """Mixtral's per-expert checkpoint tensors live in fused parameters in transformers 5: every
    live tensor, fused ones included, equals a fresh ``from_pretrained`` of the export bit for bit
    (a wrong expert order or gate/up split would not)."""
    from transformers import AutoModelForCausalLM

    from tests.fixtures.architectures import ARCHITECTURES, write_family

    base, x, y = (str(p) for p in write_family(tmp_path / "fam", ARCHITECTURES["mixtral"]))
    recipe = Recipe.from_dict({"merge_method": "linear", "models": [
        {"model": x, "parameters": {"weight": 0.7}}, {"model": y, "parameters": {"weight": 0.3}}]})
    want = AutoModelForCausalLM.from_pretrained(merge_to_disk(recipe, tmp_path / "out", progress=False),
                                                dtype=torch.float32).state_dict()
    live = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    assert any(name.endswith("experts.gate_up_proj") for name in want)  # the fusion this is about
    ResidentSources([base, x, y]).apply(recipe, live)
    got = live.state_dict()
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name


def test_the_sources_do_not_keep_a_closed_live_model_alive(family):
    """The name placement is cached per live model, by weak reference: a backend that drops its
    model (HFBackend.close) frees it, memory included."""
    import gc
    import weakref

    from transformers import AutoModelForCausalLM

    sources = ResidentSources([str(p) for p in family[1:]])
    recipe = Recipe.from_dict({"merge_method": "linear", "models": [
        {"model": str(family[1]), "parameters": {"weight": 1.0}}]})
    model = AutoModelForCausalLM.from_pretrained(family[0])
    sources.apply(recipe, model)
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None
    again = AutoModelForCausalLM.from_pretrained(family[0])  # a new live model gets its own placement
    sources.apply(recipe, again)
