"""Every method through `evolve merge` and through the search space: each new method merges
a real (tiny) checkpoint, and bad input is one line naming the method, the parameter and the
rule, exit code 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from evolve.cli import main
from search_spaces.errors import UserError
from search_spaces.parameter_space import ParameterSpace

NEW = {  # method -> (number of models besides the base, global parameters, per-model parameters)
    "model_stock": (2, {}, {}), "sce": (2, {"select_topk": 0.5}, {}), "nuslerp": (2, {}, {"weight": 0.5}),
    "multislerp": (2, {}, {"weight": 0.5}), "karcher": (2, {"max_iter": 5}, {}), "nearswap": (1, {"t": 0.01}, {}),
    "arcee_fusion": (1, {}, {}), "ram": (2, {}, {}), "ramplus_tl": (2, {"r": 0.2}, {}),
    "pcb": (2, {"lambda": 0.9}, {"drop_ratio": 0.5}), "widen": (2, {"score_calibration_value": 1.0}, {}),
}


def _recipe(family, method, n, params=None, model_params=None, base=True):
    data = {"merge_method": method,
            "models": [{"model": str(p), "parameters": dict(model_params or {})} for p in family[1:1 + n]]}
    if base:
        data["base_model"] = str(family[0])
    if params:
        data["parameters"] = params
    return data


def _merge(tmp_path, capsys, data):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    code = main(["merge", str(path), "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err.strip(), out


@pytest.mark.parametrize("method", sorted(NEW))
def test_each_new_method_merges_a_checkpoint(family, tmp_path, capsys, method):
    n, params, model_params = NEW[method]
    code, err, out = _merge(tmp_path, capsys, _recipe(family, method, n, params, model_params))
    assert code == 0, err
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("method, edit, culprit", [
    ("model_stock", dict(n=1), "models: model_stock merges at least 2 models besides the base model, got 1"),
    ("nuslerp", dict(n=1, model_params={"weight": 0.5}), "nuslerp merges exactly 2 models besides the base model, got 1"),
    ("nearswap", dict(n=2, params={"t": 0.1}), "nearswap merges exactly 1 model besides the base model, got 2"),
    ("pcb", dict(n=2, base=False), "base_model: pcb needs a base model"),
    ("sce", dict(n=2, params={"select_topk": 1.5}), "parameters.select_topk: 1.5 is outside (0, 1] (sce's select_topk"),
    ("pcb", dict(n=2, model_params={"drop_ratio": 1.0}), "drop_ratio: 1.0 is outside [0, 1) (pcb's drop_ratio"),
    ("karcher", dict(n=2, params={"max_iter": 2.5}), "parameters.max_iter: 2.5 is outside >= 0 (karcher's max_iter"),
    ("nearswap", dict(n=1, params={"t": {"groups": [0.1, -0.2]}}), "parameters.t: -0.2 is outside >= 0 (nearswap's t)"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(family, tmp_path, capsys, method, edit, culprit):
    n = edit.pop("n")
    code, err, out = _merge(tmp_path, capsys, _recipe(family, method, n, **edit))
    assert code == 2
    assert culprit in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


# ---------------------------------------------------------------- searchable


def _space(method, search, n=2, **extra):
    return ParameterSpace.from_dict({"merge_method": method, "base_model": "zoo/base",
                                     "models": [f"zoo/m{i}" for i in range(n)], "search": search, **extra})


@pytest.mark.parametrize("method, search, globals_", [
    ("pcb", {"drop_ratio": [0.5, 0.95], "lambda": [0.5, 1.5]}, {"lambda"}),
    ("sce", {"select_topk": [0.1, 1.0]}, {"select_topk"}),
    ("widen", {"above_average_value_ratio": [0.5, 1.5], "score_calibration_value": [0.5, 2.0]},
     {"above_average_value_ratio", "score_calibration_value"}),
    ("nuslerp", {"weight": [0.0, 1.0]}, set()),
    ("ramplus_tl", {"r": [0.0, 0.5], "alpha": [0.1, 0.5]}, {"r", "alpha"}),
])
def test_new_methods_are_searchable_and_round_trip(method, search, globals_):
    space = _space(method, search, layer_groups=2, kinds=["mlp"])
    per_model = len(search) - len(globals_)
    assert space.dimension == 2 * 2 * (2 * per_model + len(globals_))
    x = np.random.default_rng(0).uniform(size=space.dimension)
    recipe = space.decode(x)
    assert set(recipe.parameters) == globals_
    assert all(set(m.parameters) == set(search) - globals_ for m in recipe.models)
    assert space.decode(space.encode(recipe)) == recipe
    assert np.allclose(space.encode(recipe), x)
    # The global coordinates sit after the per-model ones of each (group, kind) block.
    labels = [c.label for c in space.coordinates]
    block = 2 * per_model + len(globals_)
    assert [lab.split("[")[0] for lab in labels[block - len(globals_):block]] == sorted(globals_)


@pytest.mark.parametrize("method, search, extra, culprit", [
    ("pcb", {"drop_ratio": [0.5, 1.0]}, {}, r"^s.search.drop_ratio: \[0.5, 1.0\] must lie inside \[0, 1\) \(pcb's drop_ratio"),
    ("sce", {"select_topk": [0.0, 0.5]}, {}, r"^s.search.select_topk: \[0.0, 0.5\] must lie inside \(0, 1\]"),
    ("sce", {"weight": [0.0, 1.0]}, {}, r"^s.search.weight: 'weight' is not a parameter of sce \(searchable: select_topk\)"),
    ("model_stock", {"filter_wise": [0, 1]}, {}, r"^s.search.filter_wise: model_stock's filter_wise is a flag, not searchable"),
    ("karcher", {"tol": [0.0, 1e-3]}, {}, r"^s.search.tol: \[0.0, 0.001\] must lie inside > 0 \(karcher's tol\)"),
    ("nearswap", {"t": [0.0, 0.1]}, {}, r"^s.models: nearswap merges exactly 1 model besides the base model, got 2"),
    ("pcb", {"drop_ratio": [0.1, 0.9]}, {"base_model": None}, r"^s.base_model: pcb needs a base model"),
    ("sce", {"select_topk": [0.1, 0.5]}, {"parameters": {"int8_mask": True, "bogus": 1}},
     r"^s.parameters.bogus: not a parameter of sce \(known: select_topk, int8_mask\)"),
    ("pcb", {"lambda": [0.5, 1.0]}, {"model_parameters": {"drop_ratio": 1.2}},
     r"^s.model_parameters.drop_ratio: 1.2 is outside \[0, 1\)"),
    ("ties", {"weight": [0, 1]}, {"model_parameters": {"lambda": 1.0}},
     r"^s.model_parameters.lambda: not a per-model parameter of ties \(known: weight, density\)"),
    ("blend", {"weight": [0, 1]}, {}, r"^s.merge_method: unknown method 'blend' \(known: arcee_fusion, .*widen\)"),
])
def test_invalid_spaces_are_refused_with_one_line(method, search, extra, culprit):
    data = {"merge_method": method, "base_model": "zoo/base", "models": ["zoo/a", "zoo/b"], "search": search, **extra}
    if data["base_model"] is None:
        del data["base_model"]
    with pytest.raises(UserError, match=culprit) as info:
        ParameterSpace.from_dict(data, source="s")
    assert "\n" not in str(info.value)
