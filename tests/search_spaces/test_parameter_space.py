"""The parameter-space genome codec: layout, value forms, round-trips and bounds as seeded
properties, validation errors that name the field, a golden file, and torch-freedom."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from search_spaces.errors import InvalidGenomeError, RecipeError, UserError
from search_spaces.parameter_space import ParameterSpace, SearchedParameter
from search_spaces.recipe import Recipe
from search_spaces.values import resolve

GOLDEN = Path(__file__).parent / "golden" / "parameter_space.json"
REPO = Path(__file__).resolve().parents[2]


def dare_ties(**over):
    data = {
        "merge_method": "dare_ties",
        "base_model": "zoo/base",
        "models": ["zoo/arith", "zoo/cipher"],
        "layer_groups": 2,
        "kinds": ["self_attn", "mlp"],
        "search": {"weight": [0, 1], "density": [0.1, 1.0]},
        "parameters": {"lambda": 1.0, "normalize": True},
        "dtype": "float32",
        "seed": 7,
    }
    data.update(over)
    return ParameterSpace.from_dict({k: v for k, v in data.items() if v is not None})


def random_space(rng: np.random.Generator) -> ParameterSpace:
    """A random but valid space: 1-3 models, 1-4 groups, 0-2 kinds, weight and/or density."""
    n_models = int(rng.integers(1, 4))
    search = {}
    if rng.random() < 0.8:
        lo = float(rng.uniform(-1, 0.5))
        search["weight"] = [lo, lo + float(rng.uniform(0.1, 2))]
    if not search or rng.random() < 0.6:
        lo = float(rng.uniform(0.01, 0.9))
        search["density"] = [lo, float(rng.uniform(lo + 0.01, 1.0))]
    kinds = ["self_attn", "mlp"][: int(rng.integers(0, 3))]
    method = str(rng.choice(["ties", "dare_ties", "task_arithmetic", "della"]))
    groups = int(rng.integers(1, 5))
    normalize = bool(rng.random() < 0.5)
    fix_epsilon = rng.random() < 0.3 and method == "della"  # only della has epsilon
    return ParameterSpace.from_dict({
        "merge_method": method,
        "base_model": "zoo/base",
        "models": [f"zoo/m{i}" for i in range(n_models)],
        "layer_groups": groups,
        "kinds": kinds,
        "search": search,
        "parameters": {"normalize": normalize},
        "model_parameters": {"epsilon": 0.05} if fix_epsilon else {},
    })


# -- layout and value forms ----------------------------------------------------------------------
def test_layout_is_group_major_then_kind_model_parameter():
    space = dare_ties()
    assert space.shape == (2, 3, 2, 2)
    assert space.dimension == 24
    labels = [c.label for c in space.coordinates]
    # parameters in name order, whatever the order of the search mapping
    assert [p.name for p in space.search] == ["density", "weight"]
    assert labels[:5] == [
        "arith.density[self_attn][g0]", "arith.weight[self_attn][g0]",
        "cipher.density[self_attn][g0]", "cipher.weight[self_attn][g0]", "arith.density[mlp][g0]",
    ]
    assert labels[8:12] == [
        "arith.density[*][g0]", "arith.weight[*][g0]", "cipher.density[*][g0]", "cipher.weight[*][g0]",
    ]
    assert labels[12] == "arith.density[self_attn][g1]"
    c = space.coordinates[13]
    assert (c.index, c.model, c.parameter, c.kind, c.group, c.lower, c.upper) == (
        13, "zoo/arith", "weight", "self_attn", 1, 0.0, 1.0,
    )
    assert space.coordinates[8].kind is None


def test_scalar_form_for_one_group_without_kinds():
    space = dare_ties(layer_groups=1, kinds=[])
    assert space.dimension == 4
    recipe = space.decode([0.0, 0.5, 1.0, 1.0])  # density, weight of arith; then cipher's
    arith, cipher = recipe.models
    assert arith.parameters["weight"] == 0.5 and arith.parameters["density"] == 0.1
    assert cipher.parameters["weight"] == 1.0 and cipher.parameters["density"] == 1.0
    assert recipe.parameters["lambda"] == 1.0 and recipe.parameters["normalize"] is True
    assert (recipe.merge_method, recipe.base_model, recipe.dtype, recipe.seed) == (
        "dare_ties", "zoo/base", "float32", 7,
    )


def test_groups_form_and_filter_form_resolve_to_the_genome_values():
    space = dare_ties(layer_groups=2)
    x = np.linspace(0, 1, space.dimension)
    recipe = space.decode(x)
    values = space.values(x).reshape(space.shape)  # (group, kind, model, param)
    weight = recipe.models[1].parameters["weight"]  # cipher
    assert [e.get("filter") for e in weight] == ["self_attn", "mlp", None]
    # through the recipe semantics: 4 layers in 2 groups -> layer 3 is group 1
    for kind_index, name in enumerate(["model.layers.3.self_attn.q_proj.weight", "model.layers.3.mlp.up_proj.weight",
                                       "model.layers.3.input_layernorm.weight"]):
        assert resolve(weight, name, 1.0, 3, 4) == values[1, kind_index, 1, 1]
        assert resolve(weight, name.replace(".3.", ".0."), 0.0, 0, 4) == values[0, kind_index, 1, 1]
    assert resolve(weight, "model.embed_tokens.weight", 0.0, None, 4) == values[0, 2, 1, 1]


def test_fixed_per_model_parameters_are_copied_to_every_model():
    space = dare_ties(merge_method="della", model_parameters={"epsilon": 0.05}, kinds=[], layer_groups=1)
    recipe = space.decode(np.full(space.dimension, 0.5))
    assert all(m.parameters["epsilon"] == 0.05 for m in recipe.models)
    assert space.decode(space.encode(recipe)) == recipe


# -- properties (seeded sampling; hypothesis is not installed) -------------------------------------
def test_round_trips_and_bounds_hold_over_random_spaces_and_genomes():
    rng = np.random.default_rng(20261122)
    for _ in range(40):
        space = random_space(rng)
        genomes = [rng.random(space.dimension) for _ in range(10)]
        genomes += [np.zeros(space.dimension), np.ones(space.dimension)]
        for x in genomes:
            recipe = space.decode(x)
            values = space.values(x)
            assert np.all(values >= space._lower) and np.all(values <= space._upper)
            for c, v in zip(space.coordinates, values):
                if c.parameter == "density":
                    assert 0 < v <= 1
            x2 = space.encode(recipe)
            assert x2.shape == (space.dimension,) and np.all((x2 >= 0) & (x2 <= 1))
            np.testing.assert_allclose(x2, x, rtol=0, atol=1e-12)
            again = space.decode(x2)
            assert again == recipe and again.hash == recipe.hash  # bit-exact, not merely close
            assert Recipe.from_dict(json.loads(recipe.to_json())) == recipe


def test_endpoints_decode_to_the_exact_bounds():
    space = dare_ties(search={"weight": [-0.3, 0.7], "density": [0.1, 1.0]})
    lo, hi = space.values(np.zeros(space.dimension)), space.values(np.ones(space.dimension))
    assert set(lo.tolist()) == {-0.3, 0.1}
    assert set(hi.tolist()) == {0.7, 1.0}


@pytest.mark.parametrize("bad, match", [
    (np.full(24, 1.0 + 1e-12), r"genome\[0\] \(arith.density\[self_attn\]\[g0\]\).*outside \[0, 1\] \(24 coordinates"),
    (np.r_[np.zeros(23), -0.1], r"genome\[23\] \(cipher.weight\[\*\]\[g1\]\)"),
    (np.r_[np.zeros(5), np.nan, np.zeros(18)], r"genome\[5\]"),
    (np.zeros(23), r"expected shape \(24,\), got \(23,\)"),
    (np.zeros((2, 12)), r"expected shape"),
    (["a"] * 24, r"not a vector of numbers"),
])
def test_invalid_genomes_raise_never_return_none(bad, match):
    space = dare_ties()
    with pytest.raises(InvalidGenomeError, match=match):
        space.decode(bad)
    with pytest.raises(InvalidGenomeError):
        space.describe(bad)


# -- encode of hand-written recipes ----------------------------------------------------------------
def recipe_for(space, weight, density=0.5, **over):
    data = {
        "merge_method": "dare_ties", "base_model": "zoo/base",
        "models": [{"model": m, "parameters": {"weight": weight, "density": density}} for m in space.models],
        "parameters": {"lambda": 1.0, "normalize": True}, "dtype": "float32", "seed": 7,
    }
    data.update(over)
    return Recipe.from_dict(data)


def test_encode_broadcasts_scalars_and_accepts_filters_in_any_order():
    space = dare_ties()
    x = space.encode(recipe_for(space, 0.25, 0.55))
    assert np.allclose(space.values(x).reshape(space.shape)[..., 1], 0.25)
    assert np.allclose(space.values(x).reshape(space.shape)[..., 0], 0.55)
    weight = [{"value": {"groups": [0.1, 0.2]}}, {"filter": "mlp", "value": 0.3}, {"filter": "self_attn", "value": 0.4}]
    grid = space.values(space.encode(recipe_for(space, weight))).reshape(space.shape)
    assert np.allclose(grid[:, 0, :, 1], 0.4) and np.allclose(grid[:, 1, :, 1], 0.3)
    assert np.allclose(grid[:, 2, 0, 1], [0.1, 0.2])


@pytest.mark.parametrize("change, match", [
    (dict(merge_method="ties"), r"recipe.merge_method: 'ties', but the space searches 'dare_ties'"),
    (dict(base_model="zoo/other"), r"recipe.base_model"),
    (dict(parameters={"lambda": 0.5, "normalize": True}), r"recipe.parameters"),
    (dict(weight={"groups": [0.1, 0.2, 0.3]}), r"models\[0\].parameters.weight.groups: 3 groups, but the space has 2"),
    (dict(weight=1.5), r"models\[0\].parameters.weight: 1.5 is outside the searched range \[0.0, 1.0\]"),
    (dict(density=0.05), r"parameters.density: 0.05 is outside"),
    (dict(weight=[0.2, 0.8]), r"gradient list cannot be encoded"),
    (dict(weight=[{"filter": "self_attn", "value": 0.1}, {"value": 0.2}]), r"missing filter 'mlp'"),
    (dict(weight=[{"filter": "self_attn", "value": 0.1}, {"filter": "mlp", "value": 0.2}]), r"missing a default entry"),
    (dict(weight=[{"filter": "q_proj", "value": 0.1}]), r"filter: 'q_proj' is not one of the space's kinds"),
])
def test_encode_rejects_recipes_outside_the_space(change, match):
    space = dare_ties()
    weight, density = change.pop("weight", 0.5), change.pop("density", 0.5)
    with pytest.raises(RecipeError, match=match):
        space.encode(recipe_for(space, weight, density, **change))


def test_encode_rejects_other_models_and_missing_parameters():
    space = dare_ties()
    swapped = recipe_for(space, 0.5)
    swapped = Recipe.from_dict({**swapped.to_dict(), "models": list(reversed(swapped.to_dict()["models"]))})
    with pytest.raises(RecipeError, match=r"recipe.models: .* but the space merges"):
        space.encode(swapped)
    data = recipe_for(space, 0.5).to_dict()
    del data["models"][1]["parameters"]["density"]
    with pytest.raises(RecipeError, match=r"models\[1\].parameters.density: missing"):
        space.encode(Recipe.from_dict(data))


# -- construction and validation -------------------------------------------------------------------
def test_to_dict_round_trips_and_spaces_are_frozen_and_hashable():
    space = dare_ties(merge_method="della", model_parameters={"epsilon": 0.1})
    again = ParameterSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space and hash(again) == hash(space)
    with pytest.raises(AttributeError):
        space.layer_groups = 3


def test_direct_construction_normalizes_and_validates():
    space = ParameterSpace("linear", ["a", "b"], [SearchedParameter("weight", 0, 1)])
    assert space.models == ("a", "b") and space.search == (SearchedParameter("weight", 0.0, 1.0),)
    assert space.decode([0.2, 0.4]).models[1].parameters["weight"] == 0.4
    with pytest.raises(UserError, match=r"search_space.search.density: \[0.0, 1.0\] must lie inside \(0, 1\]"):
        ParameterSpace("ties", ["a"], [SearchedParameter("density", 0, 1)], base_model="b")


@pytest.mark.parametrize("change, match", [
    (dict(merge_method=None), r"^cfg.merge_method: required"),
    (dict(models=[]), r"^cfg.models: required, a non-empty list"),
    (dict(models="zoo/a"), r"^cfg.models: required"),
    (dict(models=["zoo/a", 3]), r"^cfg.models\[1\]: must be a model path"),
    (dict(models=["zoo/a", "zoo/a"]), r"^cfg.models: 'zoo/a' is listed twice"),
    (dict(search=None), r"^cfg.search: required"),
    (dict(search={"weight": [1, 0]}), r"^cfg.search.weight: lower bound 1.0 must be below upper bound 0.0"),
    (dict(search={"weight": [0, "x"]}), r"^cfg.search.weight: bounds must be finite numbers"),
    (dict(search={"weight": [0, float("inf")]}), r"^cfg.search.weight: bounds must be finite"),
    (dict(search={"weight": 0.5}), r"^cfg.search.weight: bounds must be \[lower, upper\]"),
    (dict(search={"density": [0, 1]}), r"^cfg.search.density: \[0.0, 1.0\] must lie inside \(0, 1\]"),
    (dict(search={"density": [0.1, 1.5]}), r"^cfg.search.density: .*kept fraction"),
    (dict(layer_groups=0), r"^cfg.layer_groups: must be an integer >= 1"),
    (dict(layer_groups=2.5), r"^cfg.layer_groups"),
    (dict(kinds=["self_attn", "*"]), r"^cfg.kinds\[1\]"),
    (dict(kinds=["mlp", "mlp"]), r"^cfg.kinds: each kind may appear only once"),
    (dict(kinds="mlp"), r"^cfg.kinds: must be a list"),
    (dict(parameters={"weight": 0.5}), r"^cfg.parameters.weight: is also searched"),
    (dict(parameters={"lambda": float("nan")}), r"^cfg.parameters.lambda: must be a finite number"),
    (dict(model_parameters={"density": 0}), r"^cfg.model_parameters.density"),
    (dict(dtype="int8"), r"^cfg.dtype: 'int8' is not one of"),
    (dict(seed=-1), r"^cfg.seed: must be a non-negative integer"),
    (dict(slices=[]), r"^cfg: unknown key 'slices'"),
])
def test_from_dict_errors_name_the_field(change, match):
    data = dare_ties().to_dict()
    for key, value in change.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    with pytest.raises(UserError, match=match):
        ParameterSpace.from_dict(data, source="cfg")


def test_from_dict_requires_a_mapping():
    with pytest.raises(UserError, match=r"^search_space: must be a mapping"):
        ParameterSpace.from_dict(["dare_ties"])


# -- describe -----------------------------------------------------------------------------------------
def test_describe_maps_labels_to_values_in_genome_order():
    space = dare_ties(layer_groups=1, kinds=[])
    assert list(space.describe([0.0, 0.5, 1.0, 1.0]).items()) == [
        ("arith.density", 0.1), ("arith.weight", 0.5), ("cipher.density", 1.0), ("cipher.weight", 1.0),
    ]
    clash = ParameterSpace.from_dict({"merge_method": "linear", "models": ["a/m", "b/m"], "search": {"weight": [0, 2]}})
    assert list(clash.describe([0.5, 1.0]).items()) == [("a/m.weight", 1.0), ("b/m.weight", 2.0)]


# -- golden file --------------------------------------------------------------------------------------
def golden_cases():
    spaces = {
        "dare_ties_2groups_kinds": dare_ties(),
        "linear_scalar": ParameterSpace.from_dict({
            "merge_method": "linear", "models": ["zoo/a", "zoo/b", "zoo/c"], "search": {"weight": [0, 1]},
            "parameters": {"normalize": True},
        }),
        "ties_4groups": dare_ties(merge_method="ties", layer_groups=4, kinds=[], search={"density": [0.2, 0.9]}),
    }
    out = {}
    for name, space in spaces.items():
        rng = np.random.default_rng(1234)
        cases = []
        for _ in range(2):
            x = rng.random(space.dimension)
            recipe = space.decode(x)
            cases.append({"genome": x.tolist(), "recipe": recipe.to_dict(), "hash": recipe.hash,
                          "describe": space.describe(x)})
        out[name] = {"space": space.to_dict(), "dimension": space.dimension, "cases": cases}
    return out


def test_golden_decodings():
    """Seeded decodings pinned in a file: any change to the layout or value forms shows up here.

    Regenerate (after checking the change is intended) with UPDATE_GOLDEN=1.
    """
    got = json.loads(json.dumps(golden_cases()))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())
    assert got == expected
    for name, entry in expected.items():  # the file alone is enough to reproduce every recipe
        space = ParameterSpace.from_dict(entry["space"])
        for case in entry["cases"]:
            assert space.decode(case["genome"]).hash == case["hash"]


# -- torch-free ---------------------------------------------------------------------------------------
BLOCK_TORCH = """
import sys
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, BlockTorch())
"""


def test_search_spaces_import_without_torch():
    code = BLOCK_TORCH + (
        "import search_spaces, search_spaces.parameter_space, search_spaces.recipe, search_spaces.values\n"
        "from search_spaces.parameter_space import ParameterSpace\n"
        "s = ParameterSpace.from_dict({'merge_method': 'linear', 'models': ['a', 'b'], 'search': {'weight': [0, 1]}})\n"
        "s.encode(s.decode([0.25, 0.75]))\n"
        "assert 'torch' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
