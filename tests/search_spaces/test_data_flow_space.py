"""The data-flow genome codec: layout and blocks, the starting genome at the centre, decode and
encode round trips (seeded), the path-length bound, the cumulative-scale clamp, validation
errors and torch-freedom."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from search_spaces.data_flow import (
    DATA_FLOW_METHOD, DataFlowSpace, LayerPath, PathStep, clamp_cumulative, is_data_flow,
)
from search_spaces.errors import InvalidGenomeError, RecipeError, UserError
from search_spaces.recipe import Recipe

REPO = Path(__file__).resolve().parents[2]


def space(**over) -> DataFlowSpace:
    data = {"model_a": "zoo/a", "model_b": "zoo/b", "num_layers": 4}
    data.update(over)
    return DataFlowSpace.from_dict(data)


@pytest.mark.parametrize("scales, n_scale", [("per_slot", 24 + 1), ("full", 64), ("none", 0)])
def test_layout_blocks_and_labels(scales, n_scale):
    s = space(scales=scales)
    assert s.num_slots == 8 * 3 == 24
    assert s.dimension == 24 + n_scale
    assert list(s.blocks["indicators"]) == list(range(24))
    assert list(s.blocks["scales"]) == list(range(24, 24 + n_scale))
    assert s.binary_indices + s.continuous_indices == tuple(range(s.dimension))
    assert [c.block for c in s.coordinates] == ["indicators"] * 24 + ["scales"] * n_scale
    assert s.coordinates[0].label == "I[r0:A.0]" and s.coordinates[4].label == "I[r0:B.0]"
    assert s.coordinates[9].label == "I[r1:A.1]"
    if scales == "full":
        assert s.coordinates[24 + 3 * 8 + 5].label == "W[A.3->B.1]"


def test_interleaved_order():
    s = space(slot_order="interleaved")
    assert [s.slot(t) for t in range(4)] == [(0, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 1)]


@pytest.mark.parametrize("slot_order", ["sequential", "interleaved"])
@pytest.mark.parametrize("scales", ["per_slot", "full", "none"])
def test_models_of_different_depths(slot_order, scales):
    """Stacking: A has 5 layers, B 4 (the zoo's reader and adder); A's last layer ends the path."""
    s = space(num_layers=5, num_layers_b=4, slot_order=slot_order, scales=scales)
    assert s.layers_per_repeat == 9 and s.num_slots == 27 and s.max_path_length == 9
    assert sorted(s.layout) == [(0, i) for i in range(5)] + [(1, i) for i in range(4)]
    if slot_order == "interleaved":
        assert s.layout[-1] == (0, 4)
    assert s.dimension == 27 + {"per_slot": 28, "full": 81, "none": 0}[scales]
    start = s.decode_path(s.start_genome())
    assert [(st.model, st.layer) for st in start.steps] == [("zoo/a", i) for i in range(5)]
    stacked = LayerPath("zoo/a", (PathStep("zoo/a", 0), *(PathStep("zoo/b", i) for i in range(4)), PathStep("zoo/a", 4)))
    assert s.decode(s.encode(stacked)) == stacked.to_recipe()
    with pytest.raises(RecipeError, match="layer 4, but 'zoo/b' has 4"):
        s.encode(LayerPath("zoo/a", (PathStep("zoo/a", 0), PathStep("zoo/b", 4), PathStep("zoo/a", 4))))
    rng = np.random.default_rng(1)
    for _ in range(20):
        recipe = s.decode(rng.random(s.dimension))
        assert all(st.layer < (5 if st.model == "zoo/a" else 4) for st in LayerPath.from_recipe(recipe).steps)
        assert s.decode(s.encode(recipe)) == recipe


@pytest.mark.parametrize("fix_ends", [True, False])
def test_naive_paths_are_the_parents_and_the_stacks(fix_ends):
    s = space(num_layers=5, num_layers_b=4, fix_ends=fix_ends, max_path_length=9)
    paths = dict(s.naive_paths())
    assert list(paths) == ["parent:a", "parent:b", "stack:a+b", "stack:b+a"]
    steps = {k: [(st.model[-1], st.layer) for st in p.steps] for k, p in paths.items()}
    a, b = [("a", i) for i in range(5)], [("b", i) for i in range(4)]
    assert steps["parent:a"] == a
    assert np.allclose(s.encode(paths["parent:a"]), s.start_genome())
    if fix_ends:  # B inside A's fixed ends; the stacks fit the bound of 9 exactly
        assert steps["parent:b"] == [a[0], *b, a[4]]
        assert steps["stack:a+b"] == [*a[:4], *b, a[4]] and steps["stack:b+a"] == [a[0], *b, *a[1:]]
    else:
        assert steps["parent:b"] == b and steps["stack:a+b"] == a + b and steps["stack:b+a"] == b + a
    shorter = space(num_layers=5, num_layers_b=4, fix_ends=fix_ends, max_path_length=8)
    assert [k for k, _ in shorter.naive_paths()] == ["parent:a", "parent:b"]  # the stacks are too long
    assert all(s.decode(s.encode(p)) == p.to_recipe() for p in paths.values())


@pytest.mark.parametrize("fix_ends", [True, False])
@pytest.mark.parametrize("scales", ["per_slot", "full", "none"])
def test_centre_is_model_a_unscaled(fix_ends, scales):
    s = space(fix_ends=fix_ends, scales=scales)
    path = s.decode_path(s.start_genome())
    assert [(st.model, st.layer, st.scale) for st in path.steps] == [("zoo/a", i, 1.0) for i in range(4)]


def test_decode_reads_indicators_and_per_slot_scales():
    s = space(scale_range=(0.5, 2.0))
    x = s.start_genome()
    x[5] = 0.9        # B.1 in repetition 0 on (its bound is [-1.5, 0.5]: I = 0.3)
    x[2] = 0.2        # A.2 off (I = -0.1)
    x[24 + 5] = 1.0   # its input scale: the upper bound
    x[24 + 24] = 0.0  # the fixed last step's scale: the lower bound
    path = s.decode_path(x)
    assert [(st.model[-1], st.layer) for st in path.steps] == [("a", 0), ("a", 1), ("b", 1), ("a", 3)]
    assert [st.scale for st in path.steps] == [1.0, 1.0, 2.0, 0.5]
    assert s.indicators(x)[5] == pytest.approx(0.3)


def test_full_w_scales_depend_on_the_step():
    s = space(scales="full")
    x = s.start_genome()
    # W[A.1 -> A.2] = 2 (x = 1), every other W entry stays 1
    x[24 + s.layer_id(0, 1) * 8 + s.layer_id(0, 2)] = 1.0
    path = s.decode_path(x)
    assert [st.scale for st in path.steps] == [1.0, 1.0, 2.0, 1.0]


@pytest.mark.parametrize("scales", ["per_slot", "full", "none"])
def test_encode_decode_round_trip(scales):
    s = space(scales=scales, max_path_length=10)
    rng = np.random.default_rng(0)
    for _ in range(40):
        x = rng.random(s.dimension)
        recipe = s.decode(x)
        back = s.decode(s.encode(recipe))
        assert back == recipe and back.hash == recipe.hash
        # ...and through the store's form
        assert Recipe.from_dict(json.loads(recipe.to_json())) == recipe


def test_path_length_bound_keeps_the_largest_indicators():
    s = space(max_path_length=5)
    x = np.full(s.dimension, 0.5)
    x[: s.num_slots] = 1.0  # every slot on
    x[10], x[20] = 0.99, 0.98  # slightly weaker ones lose ties below the rest...
    path = s.decode_path(x)
    assert path.length == 5
    assert s.selected_slots(x) == (0, 1, 2)  # three inner slots: the strongest, earliest first
    assert path.steps[0] == PathStep("zoo/a", 0) and path.steps[-1].layer == 3


def test_cumulative_scale_is_clamped_on_long_paths():
    s = space(repeats=4, max_path_length=34, scale_range=(0.25, 4.0), max_cumulative_scale=8.0)
    x = np.ones(s.dimension)  # every slot on, every scale at 4
    path = s.decode_path(x)
    assert path.length == 34
    cumulative = path.cumulative_scales()
    assert max(cumulative) == pytest.approx(8.0) and min(cumulative) >= 1.0
    assert all(0.25 <= st.scale <= 4.0 for st in path.steps)
    x[s.num_slots:] = 0.0  # every scale at 1/4
    assert min(s.decode_path(x).cumulative_scales()) == pytest.approx(1 / 8)
    assert clamp_cumulative([3.0, 3.0, 0.1, 10.0], 4.0) == pytest.approx([3.0, 4 / 3, 0.1, 10.0])


def test_layer_path_recipe_form():
    path = LayerPath("m/a", (PathStep("m/a", 0), PathStep("m/b", 2, 1.5), PathStep("m/a", 1, 0.5)), "float32", 3)
    recipe = path.to_recipe()
    assert is_data_flow(recipe) and recipe.merge_method == DATA_FLOW_METHOD
    assert recipe.to_dict()["slices"][1] == {"sources": [{"model": "m/b", "layer_range": [2, 3],
                                                          "parameters": {"input_scale": 1.5}}]}
    assert LayerPath.from_recipe(recipe) == path
    assert hash(path) == hash(LayerPath.from_recipe(recipe))
    assert path.cumulative_scales() == (1.0, 1.5, 0.75)
    drawing = path.draw()
    assert "b" in drawing and "0.7500" in drawing and len(drawing.splitlines()) == 4


def test_bad_layer_paths_name_the_field():
    good = LayerPath("m/a", (PathStep("m/a", 0),)).to_recipe().to_dict()
    bad = json.loads(json.dumps(good))
    bad["slices"][0]["sources"][0]["parameters"] = {"input_scale": -1.0}
    with pytest.raises(RecipeError, match="input_scale: must be a finite number > 0"):
        LayerPath.from_recipe(Recipe.from_dict(bad))
    bad["slices"][0]["sources"][0]["parameters"] = {"weight": 1.0}
    with pytest.raises(RecipeError, match=r"parameters\.weight: not a layer-path parameter"):
        LayerPath.from_recipe(Recipe.from_dict(bad))
    bad["slices"][0]["sources"][0]["layer_range"] = [0, 2]
    with pytest.raises(RecipeError, match="one-layer layer_range"):
        LayerPath.from_recipe(Recipe.from_dict(bad))


def test_encode_refuses_what_the_space_cannot_express():
    s = space()
    outside = LayerPath("zoo/a", (PathStep("zoo/a", 0), PathStep("zoo/b", 1, 9.0), PathStep("zoo/a", 3)))
    with pytest.raises(RecipeError, match="outside the scale range"):
        s.encode(outside)
    no_end = LayerPath("zoo/a", (PathStep("zoo/a", 0), PathStep("zoo/b", 1)))
    with pytest.raises(RecipeError, match="fix_ends"):
        s.encode(no_end)
    too_deep = LayerPath("zoo/a", tuple(PathStep("zoo/a", i % 4) for i in range(4 * 4)))
    with pytest.raises(RecipeError, match="max_path_length|does not fit"):
        s.encode(too_deep)


@pytest.mark.parametrize("over, message", [
    ({"scales": "diag"}, "data_flow.scales: 'diag' is not one of"),
    ({"scale_range": [1.0, 2.0]}, "0 < lower < 1 < upper"),
    ({"max_path_length": 99}, "max_path_length: 99 exceeds the 24 slots"),
    ({"max_path_length": 2}, "max_path_length: must be an integer >= 3"),
    ({"model_b": "zoo/a"}, "model_b: must differ"),
    ({"num_layers": 1}, "num_layers: must be an integer >= 2"),
    ({"repeat": 2}, "unknown key 'repeat'"),
    ({"max_cumulative_scale": 1.5}, "max_cumulative_scale: must be a number >= the upper scale"),
])
def test_validation_errors_are_one_line(over, message):
    with pytest.raises(UserError, match=message) as info:
        space(**over)
    assert "\n" not in str(info.value)


def test_bad_genomes():
    s = space()
    with pytest.raises(InvalidGenomeError, match="expected shape"):
        s.decode(np.zeros(3))
    x = s.start_genome()
    x[1] = 1.5
    with pytest.raises(InvalidGenomeError, match=r"genome\[1\] \(I\[r0:A.1\]\)"):
        s.decode(x)


def test_to_dict_round_trip():
    s = space(scales="full", repeats=2, dtype="float32", seed=4)
    assert DataFlowSpace.from_dict(s.to_dict()) == s


def test_torch_free():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from search_spaces.data_flow import DataFlowSpace\n"
            "s = DataFlowSpace('a', 'b', 3)\n"
            "print(s.decode(s.start_genome()).hash)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
