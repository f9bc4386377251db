import json

import pytest

from search_spaces.errors import RecipeError
from search_spaces.recipe import Recipe
from search_spaces.values import resolve

BASIC = {
    "merge_method": "ties",
    "base_model": "m/base",
    "models": [
        {"model": "m/a", "parameters": {"weight": 0.6, "density": {"groups": [0.3, 0.5, 0.9]}}},
        {"model": "m/b", "parameters": {"weight": [{"filter": "self_attn", "value": 0.2}, {"value": [0.1, 0.9]}]}},
    ],
    "parameters": {"lambda": 1.0, "normalize": True},
    "dtype": "float32",
}


def test_round_trip_and_hash_are_stable():
    r = Recipe.from_dict(BASIC)
    again = Recipe.from_dict(json.loads(r.to_json()))
    assert again == r and again.hash == r.hash and hash(again) == hash(r)
    assert Recipe.from_dict({**BASIC, "seed": 1}).hash != r.hash


def test_key_order_does_not_change_identity():
    shuffled = dict(reversed(list(BASIC.items())))
    assert Recipe.from_dict(shuffled).hash == Recipe.from_dict(BASIC).hash


def test_model_paths_base_first_without_duplicates():
    r = Recipe.from_dict({**BASIC, "models": BASIC["models"] + [{"model": "m/base"}]})
    assert r.model_paths == ["m/base", "m/a", "m/b"]


@pytest.mark.parametrize("mutation, message", [
    ({"merge_method": None}, "merge_method: required"),
    ({"models": []}, "at least one model"),
    ({"dtype": "float8"}, "dtype: 'float8'"),
    ({"seed": -1}, "seed"),
    ({"surprise": 1}, "unknown key 'surprise'"),
    ({"models": [{"model": "m/a", "parameters": {"density": 1.5}}]}, "models[0].parameters.density: 1.5 is outside (0, 1]"),
    ({"models": [{"model": "m/a", "parameters": {"density": {"groups": [0.5, 0]}}}]}, "density.groups[1]: 0 is outside"),
    ({"models": [{"model": "m/a", "parameters": {"weight": "heavy"}}]}, "models[0].parameters.weight: unsupported value"),
    ({"models": [{"model": "m/a", "parameters": {"weight": []}}]}, "empty list"),
    ({"models": [{"mdl": "m/a"}]}, "models[0].model: required"),
])
def test_bad_recipes_name_the_field(mutation, message):
    with pytest.raises(RecipeError, match=None) as info:
        Recipe.from_dict({**BASIC, **mutation})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_mergekit_slices_form_parses():
    r = Recipe.from_dict({
        "merge_method": "passthrough",
        "slices": [{"sources": [{"model": "m/a", "layer_range": [0, 2]}]},
                   {"sources": [{"model": "m/b", "layer_range": [1, 3]}]}],
    })
    assert [s.num_layers for s in r.slices] == [2, 2]
    with pytest.raises(RecipeError, match="same length"):
        Recipe.from_dict({"merge_method": "linear", "slices": [{"sources": [
            {"model": "m/a", "layer_range": [0, 2]}, {"model": "m/b", "layer_range": [0, 3]}]}]})


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("merge_method: linear\nmodels:\n  - model: [unclosed\n")
    with pytest.raises(RecipeError) as info:
        Recipe.from_file(bad)
    assert str(bad) in str(info.value) and "malformed YAML" in str(info.value)


def test_relative_model_paths_resolve_against_the_recipe_file(tmp_path):
    (tmp_path / "models" / "a").mkdir(parents=True)
    f = tmp_path / "r.yaml"
    f.write_text("merge_method: linear\nmodels:\n  - model: models/a\n")
    assert Recipe.from_file(f).models[0].model == str((tmp_path / "models" / "a").resolve())


@pytest.mark.parametrize("value, name, position, layer, expected", [
    (0.5, "x", 0.3, 1, 0.5),
    ([0.0, 1.0], "x", 0.25, 1, 0.25),
    ([0.0, 1.0, 0.0], "x", 0.75, 3, 0.5),
    ({"groups": [1, 2, 3]}, "model.layers.5.mlp", 0.0, 5, 2),   # 9 layers: group = 5*3//9 = 1
    ({"groups": [1, 2, 3]}, "model.embed_tokens.weight", 0.0, None, 1),
    ([{"filter": "self_attn", "value": 0.2}, {"value": 0.7}], "model.layers.0.self_attn.q_proj.weight", 0.0, 0, 0.2),
    ([{"filter": "self_attn", "value": 0.2}, {"value": 0.7}], "model.layers.0.mlp.up_proj.weight", 0.0, 0, 0.7),
    ([{"filter": "mlp", "value": {"groups": [0.1, 0.9]}}], "model.layers.8.mlp.up_proj.weight", 1.0, 8, 0.9),
    ([{"filter": "mlp", "value": 0.1}], "model.norm.weight", 0.0, None, None),
    ([{"filter": "*", "value": 0.4}], "model.norm.weight", 0.0, None, 0.4),
])
def test_value_resolution(value, name, position, layer, expected):
    got = resolve(value, name, position, layer, num_layers=9)
    assert got == pytest.approx(expected) if expected is not None else got is None
