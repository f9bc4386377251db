"""Merge kernels: matched against mergekit 0.1.5 (in process, as an oracle), known answers,
statistics of the random methods, and the registry."""

from __future__ import annotations

import math

import pytest
import torch

from search_spaces.errors import RecipeError
from search_spaces.values import resolve
from workers.merge_methods import METHODS, MergeMethod, get_method
from workers.merge_methods.registry import all_methods, build_registry
from workers.merge_methods.sparsify import keep_mask

mergekit_api = pytest.importorskip("mergekit.merge_methods.api")
import mergekit.merge_methods as mk_methods  # noqa: E402
from mergekit.config import ConditionalParameter, evaluate_setting  # noqa: E402
from mergekit.merge_methods.base import ParameterScope  # noqa: E402

NAMES = ("linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
         "breadcrumbs_ties", "della", "della_linear", "slerp", "passthrough")
RANDOMIZED = {"dare_ties", "dare_linear", "della", "della_linear"}
TASK_ARITHMETIC_FAMILY = [n for n in NAMES if n not in ("linear", "slerp", "passthrough")]


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _family(shape=(16, 24), n=3, seed=0, spread=0.1):
    """A base tensor and ``n`` fine-tune-like tensors near it."""
    base = _randn(*shape, seed=seed)
    return base, [base + spread * _randn(*shape, seed=seed + 1 + i) for i in range(n)]


def _assert_rel_close(ours, theirs, tol=1e-5):
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    scale = theirs.abs().max().clamp_min(1e-12)
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol * float(scale))


def _mergekit(name, tensors, base=None, **params):
    """mergekit 0.1.5's result for one tensor; the base goes first, as ``base_index=0``."""
    if base is None:
        return mergekit_api.merge_tensors(list(tensors), name, parameters=params)
    return mergekit_api.merge_tensors([base, *tensors], name, parameters=params, base_index=0)


def _call(name, tensors, base=None, seed=None, **params):
    method = get_method(name)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return method(list(tensors), base, generator=generator, **params)


def _default_params(name, n):
    """A valid parameter set for any method, for the generic property tests."""
    if name == "slerp":
        return {"t": 0.3}
    if name == "passthrough":
        return {"scale": [0.5]}
    params = {"weight": [0.7, 0.4, 0.9][:n]}
    if name not in ("linear", "task_arithmetic"):
        params["density"] = [0.5, 0.4, 0.6][:n]
    return params


def _inputs_for(name, shape=(16, 24), dtype=torch.float32):
    base, models = _family(shape)
    models = models[:1] if name in ("slerp", "passthrough") else models
    uses_base = get_method(name).base != "unused"
    return [m.to(dtype) for m in models], (base.to(dtype) if uses_base else None)


# ---------------------------------------------------------------- mergekit as the oracle


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("weight", [[0.3, 0.9, 0.5], [1.0, 1.0, 1.0], [-0.5, 1.2, 0.1]])
def test_linear_matches_mergekit(weight, normalize):
    _, models = _family()
    ours = _call("linear", models, weight=weight, normalize=normalize)
    _assert_rel_close(ours, _mergekit("linear", models, weight=weight, normalize=normalize))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("lambda_", [1.0, 0.7])
@pytest.mark.parametrize("weight", [[0.6, 1.3, 0.2], [0.3, 0.3, 0.4], [-0.4, 0.9, 0.5]])
def test_task_arithmetic_matches_mergekit(weight, lambda_, normalize):
    base, models = _family()
    params = {"weight": weight, "lambda": lambda_, "normalize": normalize}
    _assert_rel_close(_call("task_arithmetic", models, base, **params),
                      _mergekit("task_arithmetic", models, base, **params))


@pytest.mark.parametrize("shape", [(16, 24), (40,), (4, 5, 6)])
@pytest.mark.parametrize("density", [[0.3, 1.0, 0.5], [1.0, 1.0, 1.0], [0.3, 0.3, 0.3], [0.0, 0.7, 0.01]])
@pytest.mark.parametrize("normalize,rescale,lambda_", [(True, False, 1.0), (False, False, 1.5), (True, True, 0.8)])
def test_ties_matches_mergekit(shape, density, normalize, rescale, lambda_):
    base, models = _family(shape)
    params = {"weight": [0.4, 0.9, 1.7], "density": density, "normalize": normalize,
              "rescale": rescale, "lambda": lambda_}
    _assert_rel_close(_call("ties", models, base, **params), _mergekit("ties", models, base, **params))


def test_ties_with_opposing_weights_matches_mergekit():
    base, models = _family(n=2)
    params = {"weight": [-0.5, 1.0], "density": [0.6, 0.3]}
    _assert_rel_close(_call("ties", models, base, **params), _mergekit("ties", models, base, **params))


@pytest.mark.parametrize("name", ["breadcrumbs", "breadcrumbs_ties"])
@pytest.mark.parametrize("density,gamma", [([0.3, 0.9, 0.5], [0.01, 0.1, 0.0]), ([1.0, 0.95, 0.2], [0.2, 0.1, 0.5]),
                                           ([0.0, 0.5, 0.99], [0.01, 0.01, 0.01])])
@pytest.mark.parametrize("normalize,rescale", [(False, False), (True, True)])
def test_breadcrumbs_matches_mergekit(name, density, gamma, normalize, rescale):
    base, models = _family((24, 20))
    params = {"weight": [0.5, 1.1, 0.8], "density": density, "gamma": gamma,
              "normalize": normalize, "rescale": rescale, "lambda": 0.9}
    _assert_rel_close(_call(name, models, base, **params), _mergekit(name, models, base, **params))


def test_defaults_match_mergekit():
    """Only the required parameters given: every other default must agree with mergekit's."""
    base, models = _family()
    for name in ("task_arithmetic", "ties", "breadcrumbs", "breadcrumbs_ties"):
        _assert_rel_close(_call(name, models, base, weight=[0.5, 0.3, 0.9]),
                          _mergekit(name, models, base, weight=[0.5, 0.3, 0.9]))
        _assert_rel_close(_call(name, models, base, weight=[0.5, 0.3, 0.9], density=0.4),
                          _mergekit(name, models, base, weight=[0.5, 0.3, 0.9], density=[0.4] * 3))


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 1.0, 1.2])
@pytest.mark.parametrize("shape", [(16, 24), (40,)])
def test_slerp_matches_mergekit(t, shape):
    base, (other,) = _family(shape, n=1, spread=1.0)
    _assert_rel_close(_call("slerp", [other], base, t=t), _mergekit("slerp", [other], base, t=t))


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_slerp_of_nearly_parallel_tensors_falls_back_to_linear_like_mergekit(t):
    base = _randn(16, 24, seed=3)
    other = 2.0 * base + 1e-3 * _randn(16, 24, seed=4)
    ours = _call("slerp", [other], base, t=t)
    _assert_rel_close(ours, _mergekit("slerp", [other], base, t=t))
    _assert_rel_close(ours, (1 - t) * base + t * other)


@pytest.mark.parametrize("scale", [None, 0.5, -2.0])
def test_passthrough_matches_mergekit(scale):
    (x,) = _family(n=1)[1]
    _assert_rel_close(_call("passthrough", [x], scale=[scale]), _mergekit("passthrough", [x], scale=[scale]))


@pytest.mark.parametrize("name", sorted(RANDOMIZED))
@pytest.mark.parametrize("shape", [(16, 24), (40,)])
def test_random_methods_match_mergekit_given_the_same_draws(name, shape, monkeypatch):
    """mergekit draws its masks with the global ``torch.bernoulli``; feed it the uniforms our
    kernel draws (same generator seed, same order and shapes), and the merges must agree."""
    base, models = _family(shape)
    params = {"weight": [0.6, 0.8, 0.3], "density": [0.3, 0.7, 0.5], "lambda": 1.2}
    if name.startswith("della"):
        params["epsilon"] = [0.1, 0.2, 0.05]
    draws = torch.Generator().manual_seed(11)
    monkeypatch.setattr(torch, "bernoulli", lambda p: (torch.rand(p.shape, generator=draws) < p).to(p.dtype))
    for normalize, rescale in [(None, None), (True, False), (False, True)]:
        extra = {} if normalize is None else {"normalize": normalize, "rescale": rescale}
        draws.manual_seed(11)
        theirs = _mergekit(name, models, base, **params, **extra)
        ours = _call(name, models, base, seed=11, **params, **extra)
        _assert_rel_close(ours, theirs)


def test_specs_match_mergekit():
    """Every parameter mergekit 0.1.5 declares for these methods, with its scope and default."""
    for name in NAMES:
        theirs = {p.name: p for p in mk_methods.get(name).spec.parameters}
        ours = {p.name: p for p in get_method(name).params}
        assert set(ours) == set(theirs), name
        for pname, spec in ours.items():
            mk = theirs[pname]
            assert spec.scope == ("global" if mk.scope == ParameterScope.SHARED else "per_model"), (name, pname)
            assert spec.required == mk.required, (name, pname)
            if not spec.required:
                assert spec.default == mk.default, (name, pname)


# ---------------------------------------------------------------- known answers


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("slerp", "passthrough")])
def test_one_model_with_weight_one_is_that_model(name):
    base, (x,) = _family(n=1)
    params = {"weight": [1.0]}
    if name in RANDOMIZED:
        params["density"] = [1.0]
    out = _call(name, [x], None if name == "linear" else base, seed=0, **params)
    _assert_rel_close(out, x)


def test_slerp_endpoints_are_the_base_and_the_other_model():
    base, (x,) = _family(n=1, spread=1.0)
    _assert_rel_close(_call("slerp", [x], base, t=0.0), base)
    _assert_rel_close(_call("slerp", [x], base, t=1.0), x)


def test_slerp_midpoint_of_orthogonal_unit_vectors():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    _assert_rel_close(_call("slerp", [b], a, t=0.5), torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))


def test_ties_closed_form_on_a_tiny_example():
    base = torch.zeros(4)
    x1 = torch.tensor([1.0, -2.0, 0.5, 0.0])
    x2 = torch.tensor([3.0, 1.0, -0.25, 0.0])
    # Signs of the weighted sums: +, -, + (0.5*1 - 0.25*1 >= 0), + (all zero, nothing kept).
    expected = torch.tensor([(1 * 1 + 3 * 1) / 2, -2.0 / 1, 0.5 / 1, 0.0])
    _assert_rel_close(_call("ties", [x1, x2], base, weight=[1.0, 1.0]), expected)


def test_task_arithmetic_lambda_scales_the_merged_task_vector():
    base, models = _family()
    one = _call("task_arithmetic", models, base, weight=[0.2, 0.5, 0.3])
    two = _call("task_arithmetic", models, base, weight=[0.2, 0.5, 0.3], **{"lambda": 2.0})
    _assert_rel_close(two - base, 2 * (one - base), tol=1e-4)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("lambda_", [1.0, 0.7])
@pytest.mark.parametrize("weight", [[0.6, 1.3, 0.2], [1.5, 1.5, 1.5], [0.5, -0.5, 1e-9]])
def test_task_arithmetic_is_the_float64_task_vector_sum_to_float32_rounding(weight, lambda_, normalize):
    """Computed as (1 - sum c) b + sum c x: the float64 b + sum c (x - b) up to a few float32 ulps."""
    base, models = _family(spread=0.01)
    total = sum(weight)
    divisor = total if normalize and abs(total) >= 1e-8 else 1.0  # the third weight set sums to ~1e-9
    expected = base.double() + sum(lambda_ * w / divisor * (x.double() - base.double()) for w, x in zip(weight, models))
    ours = _call("task_arithmetic", models, base, weight=weight, normalize=normalize, **{"lambda": lambda_})
    scale = max(1.0, sum(abs(lambda_ * w / divisor) for w in weight))  # the largest term, in units of |x|
    assert (ours.double() - expected).abs().max() <= 4 * scale * 2**-24 * expected.abs().max()


def test_task_arithmetic_of_one_hot_weights_is_that_model_bit_for_bit():
    base, models = _family()
    for i, x in enumerate(models):
        out = _call("task_arithmetic", models, base, weight=[float(i == k) for k in range(3)])
        assert torch.equal(out.view(torch.int32), x.view(torch.int32))


@pytest.mark.parametrize("name", [n for n in NAMES if n not in RANDOMIZED | {"slerp", "passthrough"}])
def test_models_can_be_given_in_any_order(name):
    base, models = _family()
    params = {"weight": [0.7, 0.4, 0.9]}
    if name not in ("linear", "task_arithmetic"):
        params["density"] = [0.5, 0.4, 0.6]
    if name.startswith("breadcrumbs"):
        params["gamma"] = [0.01, 0.05, 0.02]
    order = [2, 0, 1]
    permuted = {k: [v[i] for i in order] for k, v in params.items()}
    b = None if name == "linear" else base
    _assert_rel_close(_call(name, [models[i] for i in order], b, **permuted), _call(name, models, b, **params))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_output_keeps_the_input_dtype_and_shape(name, dtype):
    models, base = _inputs_for(name, dtype=dtype)
    out = _call(name, models, base, seed=0, **_default_params(name, len(models)))
    assert out.dtype == dtype and out.shape == models[0].shape
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", TASK_ARITHMETIC_FAMILY + ["linear"])
def test_bfloat16_is_computed_in_float32(name):
    models, base = _inputs_for(name, dtype=torch.bfloat16)
    params = _default_params(name, len(models))
    low = _call(name, models, base, seed=0, **params)
    high = _call(name, [m.float() for m in models], None if base is None else base.float(), seed=0, **params)
    assert torch.equal(low, high.to(torch.bfloat16))


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_shapes_raise(name):
    models, base = _inputs_for(name)
    params = _default_params(name, len(models))
    if base is not None:
        with pytest.raises(RecipeError, match="shape"):
            _call(name, models, base[:, :-1], seed=0, **params)
    if len(models) > 1:
        with pytest.raises(RecipeError, match="shape"):
            _call(name, [models[0], models[1][:-1], models[2]], base, seed=0, **params)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_are_not_modified(name):
    models, base = _inputs_for(name)
    before = [m.clone() for m in models] + ([base.clone()] if base is not None else [])
    _call(name, models, base, seed=0, **_default_params(name, len(models)))
    after = models + ([base] if base is not None else [])
    assert all(torch.equal(x, y) for x, y in zip(before, after))


def test_slerp_needs_exactly_one_other_model():
    base, models = _family(n=2)
    with pytest.raises(RecipeError, match="exactly one other model"):
        _call("slerp", models, base, t=0.5)


def test_passthrough_needs_exactly_one_model():
    _, models = _family(n=2)
    with pytest.raises(RecipeError, match="exactly one model"):
        _call("passthrough", models)


def test_linear_with_weights_summing_to_zero_says_how_to_fix_it():
    _, models = _family(n=2)
    with pytest.raises(RecipeError, match="normalize: false"):
        _call("linear", models, weight=[1.0, -1.0])
    _call("linear", models, weight=[1.0, -1.0], normalize=False)


def test_della_rejects_density_and_epsilon_outside_zero_one():
    base, models = _family(n=1)
    with pytest.raises(RecipeError, match="epsilon"):
        _call("della", models, base, seed=0, weight=[1.0], density=[0.9], epsilon=[0.15])


# ---------------------------------------------------------------- random methods


@pytest.mark.parametrize("name", sorted(RANDOMIZED))
def test_random_methods_are_reproducible_from_the_seed(name):
    base, models = _family()
    params = {"weight": [0.5, 0.8, 0.3], "density": [0.4, 0.6, 0.5]}
    first = _call(name, models, base, seed=5, **params)
    assert torch.equal(first, _call(name, models, base, seed=5, **params))
    assert not torch.equal(first, _call(name, models, base, seed=6, **params))


@pytest.mark.parametrize("name", ["dare_linear", "della_linear"])
@pytest.mark.parametrize("density", [0.3, 0.7])
def test_kept_fraction_is_the_density(name, density):
    n = 100_000
    base, x = torch.zeros(n), _randn(n, seed=1)
    out = _call(name, [x], base, seed=2, weight=[1.0], density=[density], rescale=False)
    kept = float((out != 0).float().mean())
    assert abs(kept - density) < 5 * math.sqrt(density * (1 - density) / n)


@pytest.mark.parametrize("density", [0.3, 0.8])
def test_dare_with_rescale_is_unbiased(density):
    """The mean of N rescaled draws tends to the undropped task vector, with a relative L2
    error of about sqrt((1 - d) / (d N)) (plus an O(1/n) bias from the L1 rescale)."""
    n, draws = 2_000, 400
    base, x = _randn(n, seed=1), _randn(n, seed=2)
    delta = x - base
    total = torch.zeros(n)
    for seed in range(draws):
        total += _call("dare_linear", [x], base, seed=seed, weight=[1.0], density=[density]) - base
    error = float((total / draws - delta).norm() / delta.norm())
    expected = math.sqrt((1 - density) / (density * draws))
    assert error < 1.3 * expected + 2 / n
    assert error > 0.7 * expected  # really random: the draws differ


def test_della_keeps_large_entries_more_often_by_rank():
    """Per row, entry of magnitude rank r (0 = smallest of C) is kept with probability
    density - eps + 2 eps r / (C - 1); without rescale the mean of draws is p * delta."""
    rows, cols, draws, density, eps = 4, 500, 400, 0.4, 0.15
    base, x = torch.zeros(rows, cols), _randn(rows, cols, seed=3)
    rank = x.abs().argsort(dim=1).argsort(dim=1).float()
    p = density - eps + 2 * eps * rank / (cols - 1)
    kept = torch.zeros(rows, cols)
    for seed in range(draws):
        out = _call("della_linear", [x], base, seed=seed, weight=[1.0], density=[density],
                    epsilon=[eps], rescale=False)
        kept += (out != 0).float()
        if seed == 0:
            assert torch.equal(out[out != 0], x[out != 0])
    z = (kept / draws - p).abs() / (p * (1 - p) / draws).sqrt()
    assert float(z.max()) < 5.5


def test_rescale_keeps_the_l1_norm_of_each_task_vector():
    base, x = torch.zeros(3000), _randn(3000, seed=4)
    for name, extra in [("dare_linear", {}), ("della_linear", {"epsilon": [0.1]}), ("breadcrumbs", {"gamma": [0.05]})]:
        out = _call(name, [x], base, seed=1, weight=[1.0], density=[0.3], rescale=True, **extra)
        assert (out != 0).float().mean() < 0.4
        assert math.isclose(float(out.abs().sum()), float(x.abs().sum()), rel_tol=1e-5)


def test_magnitude_mask_keeps_exactly_k_even_with_ties():
    x = torch.tensor([1.0, 2.0, 2.0, 2.0, 3.0, 0.5, 2.0, -2.0])
    mask = keep_mask(x, "magnitude", 0.5)
    assert int(mask.sum()) == 4 and bool(mask[4])
    assert set(x[mask].abs().tolist()) == {3.0, 2.0}


# ---------------------------------------------------------------- registry and parameters


def test_every_method_is_registered_with_a_reference():
    assert set(NAMES) <= set(METHODS)
    for name in NAMES:
        method = get_method(name)
        assert method.name == name and method.reference.startswith("https://")
        assert method.randomized == (name in RANDOMIZED), name


def test_registering_a_name_twice_raises():
    methods = all_methods()
    with pytest.raises(ValueError, match="registered twice"):
        build_registry([*methods, methods[0]])


def test_unknown_method_names_the_known_ones():
    with pytest.raises(RecipeError, match="unknown method 'tie'.*dare_ties.*ties"):
        get_method("tie")


def test_lambda_is_the_user_name_of_lambda_():
    spec = get_method("ties").param("lambda")
    assert spec is not None and spec.scope == "global" and spec.default == 1.0
    assert get_method("ties").param("lambda_") is None


def test_variants_hide_what_they_do_not_use():
    assert get_method("ties").param("gamma") is None and get_method("ties").param("epsilon") is None
    assert get_method("breadcrumbs").param("gamma").default == 0.01
    assert get_method("della").param("epsilon").default == 0.15


def test_call_checks_parameters():
    base, models = _family()
    with pytest.raises(RecipeError, match="required"):
        _call("ties", models, base)
    with pytest.raises(RecipeError, match="3 values for 3 models|2 values for 3 models"):
        _call("ties", models, base, weight=[1.0, 1.0])
    with pytest.raises(RecipeError, match="unknown parameter"):
        _call("ties", models, base, weight=[1.0] * 3, densty=[0.5] * 3)
    # A scalar per-model value applies to every model.
    torch.testing.assert_close(_call("ties", models, base, weight=0.5),
                               _call("ties", models, base, weight=[0.5] * 3))


def test_define_derives_params_from_the_signature():
    def kernel(tensors: list[torch.Tensor], base: torch.Tensor | None, *, w: list[float], k: float = 2.0,
               mode: str = "x", generator: torch.Generator | None = None) -> torch.Tensor:
        return tensors[0]

    method = MergeMethod.define("k", kernel, fixed={"mode": "y"}, defaults={"k": 3.0})
    assert method.base == "optional" and method.randomized
    assert [(p.name, p.scope, p.required, p.default) for p in method.params] == [
        ("w", "per_model", True, None), ("k", "global", False, 3.0)]
    assert not MergeMethod.define("k", kernel, fixed={"generator": None}).randomized
    with pytest.raises(ValueError, match="not parameters"):
        MergeMethod.define("k", kernel, defaults={"nope": 1})


# ---------------------------------------------------------------- gradients and filters


@pytest.mark.parametrize("t", [0.0, 0.2, 1 / 3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("value", [[0.0, 1.0], [0.2, 0.8, 0.4], [1, 0.5, 0.25, 0.0, 0.6], [0.7], [True, False],
                                   [False, True, True]])
def test_gradients_resolve_like_mergekit(value, t):
    """A numeric list interpolates; a boolean one (e.g. ``normalize``) picks a point."""
    is_bool = isinstance(value[0], bool)
    theirs = evaluate_setting("model.layers.1.mlp.up_proj.weight", value, t,
                              validate=bool if is_bool else float)
    ours = resolve(value, "model.layers.1.mlp.up_proj.weight", t, 1, 4)
    if is_bool:
        assert ours is theirs
    else:
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
                                  "lm_head.weight"])
def test_filters_resolve_like_mergekit(name):
    ours_value = [{"filter": "self_attn", "value": [0.1, 0.9]}, {"filter": "mlp", "value": 0.5}, {"value": 0.3}]
    theirs_value = [ConditionalParameter(**e) for e in ours_value]
    for t in (0.0, 0.5, 1.0):
        assert resolve(ours_value, name, t, 0, 4) == pytest.approx(
            evaluate_setting(name, theirs_value, t, validate=float))
    star = [{"filter": "*", "value": 0.4}, {"value": 0.9}]
    assert resolve(star, name, 0.5, 0, 4) == evaluate_setting(name, [ConditionalParameter(**e) for e in star], 0.5,
                                                              validate=float)
    none = [{"filter": "nothing_matches", "value": 0.4}]
    assert resolve(none, name, 0.5, 0, 4) is None
    assert evaluate_setting(name, [ConditionalParameter(**e) for e in none], 0.5, validate=float) is None
