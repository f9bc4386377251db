"""The other mergekit 0.1.5 methods against mergekit (in process, as an oracle), and the
seed-paper methods mergekit lacks (PCB, WIDEN) against hand-computed cases of their equations."""

from __future__ import annotations

import math

import pytest
import torch

from search_spaces.errors import RecipeError
from search_spaces.methods import RULES
from workers.merge_methods import get_method
from workers.merge_methods.pcb import balance_scores
from workers.merge_methods.widen import widen_scores

mergekit_api = pytest.importorskip("mergekit.merge_methods.api")
import mergekit.merge_methods as mk_methods  # noqa: E402
from mergekit.merge_methods.base import BasePolicy, ParameterScope  # noqa: E402

MERGEKIT = ("model_stock", "sce", "nuslerp", "multislerp", "karcher", "nearswap", "arcee_fusion", "ram",
            "ramplus_tl")
PAPERS = ("pcb", "widen")
BASELESS = {"karcher"}  # mergekit ignores a base for it: the base is one more input


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _family(shape=(16, 24), n=3, seed=0, spread=0.1):
    base = _randn(*shape, seed=seed)
    return base, [base + spread * _randn(*shape, seed=seed + 1 + i) for i in range(n)]


def _rel_error(ours, theirs) -> float:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12))


def _assert_rel_close(ours, theirs, tol=1e-5):
    assert _rel_error(ours, theirs) <= tol


def _mergekit(name, tensors, base=None, **params):
    if base is None:
        return mergekit_api.merge_tensors(list(tensors), name, parameters=params)
    return mergekit_api.merge_tensors([base, *tensors], name, parameters=params, base_index=0)


def _call(name, tensors, base=None, **params):
    return get_method(name)(list(tensors), base, **params)


def _n_models(name):
    rules = RULES[name]
    return rules.max_models or max(rules.min_models, 3)


def _params(name, n):
    """A valid parameter set for every new method (the required ones and then some)."""
    return {"nuslerp": {"weight": [0.3, 0.7]}, "multislerp": {"weight": [0.5, 0.2, 0.9][:n]},
            "nearswap": {"t": 0.05}, "sce": {"select_topk": 0.5}, "pcb": {"drop_ratio": 0.5},
            "model_stock": {}, "karcher": {}, "arcee_fusion": {}, "ram": {}, "ramplus_tl": {},
            "widen": {}}[name]


def _inputs(name, shape=(16, 24), dtype=torch.float32):
    base, models = _family(shape, n=_n_models(name))
    uses_base = get_method(name).base != "unused"
    return [m.to(dtype) for m in models], (base.to(dtype) if uses_base else None)


# ---------------------------------------------------------------- mergekit as the oracle


@pytest.mark.parametrize("filter_wise", [False, True])
@pytest.mark.parametrize("shape,n", [((16, 24), 2), ((16, 24), 3), ((40,), 3), ((4, 5, 6), 4)])
def test_model_stock_matches_mergekit(shape, n, filter_wise):
    base, models = _family(shape, n=n)
    _assert_rel_close(_call("model_stock", models, base, filter_wise=filter_wise),
                      _mergekit("model_stock", models, base, filter_wise=filter_wise))


@pytest.mark.parametrize("select_topk", [1.0, 0.5, 0.1, 0.0])
@pytest.mark.parametrize("shape", [(16, 24), (40,)])
def test_sce_matches_mergekit(shape, select_topk):
    base, models = _family(shape)
    _assert_rel_close(_call("sce", models, base, select_topk=select_topk),
                      _mergekit("sce", models, base, select_topk=select_topk))


@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("flatten,row_wise", [(True, False), (False, False), (False, True)])
@pytest.mark.parametrize("weight", [[0.3, 0.7], [1.0, 1.0], [0.5, -0.5]])
@pytest.mark.parametrize("shape", [(16, 24), (40,)])
def test_nuslerp_matches_mergekit(shape, weight, flatten, row_wise, with_base):
    base, models = _family(shape, n=2, spread=1.0)
    params = {"weight": weight, "nuslerp_flatten": flatten, "nuslerp_row_wise": row_wise}
    b = base if with_base else None
    _assert_rel_close(_call("nuslerp", models, b, **params), _mergekit("nuslerp", models, b, **params))


@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("normalize_weights", [True, False])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_multislerp_matches_mergekit(n, normalize_weights, with_base):
    base, models = _family(n=n, spread=1.0)
    params = {"weight": [0.5, 0.2, 0.9][:n], "normalize_weights": normalize_weights}
    b = base if with_base else None
    _assert_rel_close(_call("multislerp", models, b, **params), _mergekit("multislerp", models, b, **params))


def test_multislerp_of_antipodal_pairs_falls_back_to_linear_like_mergekit():
    a = _randn(16, 24, seed=1)
    ours = _call("multislerp", [a, -a], weight=[1.0, 1.0])
    _assert_rel_close(ours + 1, _mergekit("multislerp", [a, -a], weight=[1.0, 1.0]) + 1)
    with pytest.raises(RecipeError, match="cancel out"):
        _call("multislerp", [a, -a, a], weight=[1.0, 2.0, 1.0])


@pytest.mark.parametrize("max_iter,tol", [(10, 1e-5), (3, 1e-5), (50, 1e-7)])
@pytest.mark.parametrize("n,spread", [(2, 1.0), (3, 0.5), (4, 2.0)])
def test_karcher_matches_mergekit(n, spread, max_iter, tol):
    _, models = _family(n=n, spread=spread)
    _assert_rel_close(_call("karcher", models, max_iter=max_iter, tol=tol),
                      _mergekit("karcher", models, max_iter=max_iter, tol=tol))


def test_karcher_with_a_base_merges_it_like_mergekit():
    """mergekit's karcher ignores base_model's role: the base is averaged like the others."""
    base, models = _family(n=2, spread=1.0)
    _assert_rel_close(_call("karcher", [base, *models]), _mergekit("karcher", models, base))


@pytest.mark.parametrize("t", [0.0, 0.01, 0.05, 0.3])
def test_nearswap_matches_mergekit(t):
    base, (x,) = _family(n=1)
    _assert_rel_close(_call("nearswap", [x], base, t=t), _mergekit("nearswap", [x], base, t=t))


@pytest.mark.parametrize("shape", [(16, 24), (40,), (4, 5, 6)])
def test_arcee_fusion_matches_mergekit(shape):
    base, (x,) = _family(shape, n=1, spread=0.5)
    ours = _call("arcee_fusion", [x], base)
    _assert_rel_close(ours, _mergekit("arcee_fusion", [x], base))
    assert 0 < int((ours != base).sum()) < base.numel()  # it really selects


@pytest.mark.parametrize("name,params", [("ram", {}), ("ram", {"epsilon": 0.05}), ("ramplus_tl", {}),
                                         ("ramplus_tl", {"r": 0.5, "alpha": 0.8, "epsilon": 0.05})])
def test_ram_matches_mergekit(name, params):
    base, models = _family()
    # Sparse task vectors, so that entries are changed by one, several or no model.
    models = [base + (m - base) * (_randn(*base.shape, seed=9 + i) > 0.3) for i, m in enumerate(models)]
    ours = _call(name, models, base, **params)
    _assert_rel_close(ours, _mergekit(name, models, base, **params))


@pytest.mark.parametrize("name", MERGEKIT)
def test_defaults_match_mergekit(name):
    models, base = _inputs(name)
    params = {k: v for k, v in _params(name, len(models)).items() if k in ("weight", "t")}
    _assert_rel_close(_call(name, models, base, **params), _mergekit(name, models, base, **params))


@pytest.mark.parametrize("name", MERGEKIT)
def test_specs_and_contracts_match_mergekit(name):
    """Every parameter, scope and default mergekit 0.1.5 declares, and its input contract."""
    spec = mk_methods.get(name).spec
    theirs = {p.name: p for p in spec.parameters}
    ours = {p.name: p for p in get_method(name).params}
    assert set(ours) == set(theirs)
    for pname, p in ours.items():
        assert p.scope == ("global" if theirs[pname].scope == ParameterScope.SHARED else "per_model")
        assert p.required == theirs[pname].required
        if not p.required:
            assert p.default == theirs[pname].default
    c, rules = spec.contract, RULES[name]
    base = {BasePolicy.REQUIRED: "required", BasePolicy.OPTIONAL: "optional", BasePolicy.IGNORED: "unused"}
    assert rules.base == base[c.base]
    with_base = int(c.base == BasePolicy.REQUIRED)
    assert rules.min_models == max(c.min_non_base or 0, c.min_inputs - with_base, 1)
    max_non_base = [m for m in (c.max_non_base, None if c.max_inputs is None else c.max_inputs - with_base)
                    if m is not None]
    assert rules.max_models == (min(max_non_base) if max_non_base else None)


# ---------------------------------------------------------------- PCB: the paper's equations


def _softmax(v):
    e = [math.exp(x - max(v)) for x in v]
    return [x / sum(e) for x in e]


def _norm(v):
    lo, hi = min(v), max(v)
    return [(x - lo) / (hi - lo) for x in v]


def test_pcb_scores_follow_equations_2_to_4():
    tau = [[1.0, -2.0, 0.5, 0.0], [0.5, 1.0, 1.5, -1.0]]
    n = len(tau)
    intra = [_softmax([n * x for x in _norm([t * t for t in ti])]) for ti in tau]  # Eq. 2
    inter = [[sum(_softmax(_norm([a * b for a, b in zip(ti, tj)]))[d] for tj in tau) for d in range(4)]
             for ti in tau]  # Eq. 3
    expected = torch.tensor([[intra[i][d] * inter[i][d] for d in range(4)] for i in range(n)])  # Eq. 4
    torch.testing.assert_close(balance_scores(torch.tensor(tau)), expected)


def test_pcb_drops_low_scores_and_rescales_by_equations_5_to_8():
    base = torch.tensor([0.1, 0.2, 0.3, 0.4])
    tau = torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.5, 1.0, 1.5, -1.0]])
    beta = balance_scores(tau)
    # drop_ratio 0.5 of 4 entries: each task keeps its 2 largest scores (Eq. 5-6).
    keep = torch.zeros_like(beta)
    for i in range(2):
        keep[i, beta[i].argsort(descending=True)[:2]] = 1
    hat = beta * keep
    total = hat.sum(0)
    tau_m = torch.where(total > 0, (hat * tau).sum(0) / torch.where(total > 0, total, 1.0), 0.0)  # Eq. 7
    expected = base + 0.8 * tau_m  # Eq. 8
    out = _call("pcb", list(base + tau), base, drop_ratio=[0.5, 0.5], **{"lambda": 0.8})
    torch.testing.assert_close(out, expected)
    assert (keep.sum(0) == 0).any() == (out == base).any()  # an entry nobody keeps stays the base


def test_pcb_without_dropping_is_a_score_weighted_average():
    """drop_ratio 0, one model: Eq. 7 weights it by beta / beta = 1, so it is that model."""
    base, (x,) = _family(n=1)
    _assert_rel_close(_call("pcb", [x], base, drop_ratio=0.0), x)


def test_pcb_keeps_the_fraction_it_is_told():
    base, (x,) = _family((50, 40), n=1)
    out = _call("pcb", [x], base, drop_ratio=0.75)
    assert int((out != base).sum()) == 500


# ---------------------------------------------------------------- WIDEN: the paper's equations


def test_widen_scores_follow_equations_3_to_5():
    div = torch.tensor([[0.1, 5.0, 0.3], [2.0, 0.2, 0.4]])  # (T=2, R=3)
    # Eq. 3: ranks within each model, over (R - 1): model 0 -> [0, 1, .5]; model 1 -> [1, 0, .5].
    r = [[0.0, 1.0, 0.5], [1.0, 0.0, 0.5]]
    s = [[math.exp(r[t][k]) / (math.exp(r[0][k]) + math.exp(r[1][k])) for k in range(3)] for t in range(2)]  # Eq. 4
    torch.testing.assert_close(widen_scores(div, 2.0, 1.0), torch.tensor(s))  # nothing above 2 x mean (1.0)
    # Eq. 5: scores >= ratio / T = 0.6 are set to the calibration value 1.5.
    calibrated = [[1.5 if v >= 0.6 else v for v in row] for row in s]
    torch.testing.assert_close(widen_scores(div, 1.2, 1.5), torch.tensor(calibrated))


def test_widen_merges_magnitude_and_direction_by_equations_1_and_6():
    base = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    a = torch.tensor([[6.0, 8.0], [1.0, 1.0], [0.0, 2.5]])
    b = torch.tensor([[3.0, 4.5], [0.0, 1.0], [0.1, 2.0]])
    ratio, s = 1.2, 1.0
    # Eq. 1: row norms and directions.
    m0, ma, mb = (torch.linalg.vector_norm(w, dim=1) for w in (base, a, b))
    d0, da, db = base / m0[:, None], a / ma[:, None], b / mb[:, None]
    # Eq. 2: divergences; Eq. 3-5 through widen_scores (checked above).
    sm = widen_scores(torch.stack([(ma - m0).abs(), (mb - m0).abs()]), ratio, s)
    sd = widen_scores(torch.stack([1 - (da * d0).sum(1), 1 - (db * d0).sum(1)]), ratio, s)
    # Eq. 6.
    m = m0 + sm[0] * (ma - m0) + sm[1] * (mb - m0)
    d = d0 + sd[0][:, None] * (da - d0) + sd[1][:, None] * (db - d0)
    out = _call("widen", [a, b], base, above_average_value_ratio=ratio, score_calibration_value=s)
    torch.testing.assert_close(out, m[:, None] * d)


def test_widen_is_not_dominated_by_a_continued_pretraining_model():
    """A model whose changes are 100x larger gets the same importance scores (Eq. 3 ranks):
    the weights are scale-free, unlike an average of deltas."""
    base, (ft, cpt) = _family((32, 16), n=2)
    cpt_far = base + 100 * (cpt - base)
    for x in (ft, cpt, cpt_far):
        assert torch.isfinite(_call("widen", [ft, x], base)).all()
    div = torch.stack([(ft - base).abs().sum(1), (cpt - base).abs().sum(1)])
    far = torch.stack([(ft - base).abs().sum(1), 100 * (cpt - base).abs().sum(1)])
    assert torch.equal(widen_scores(div), widen_scores(far))


def test_widen_of_one_model_is_that_model():
    base, (x,) = _family(n=1)
    _assert_rel_close(_call("widen", [x], base), x, tol=1e-5)
    b1, (x1,) = _family((40,), n=1)
    _assert_rel_close(_call("widen", [x1], b1), x1, tol=1e-5)


# ---------------------------------------------------------------- properties of every new method


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("name", MERGEKIT + PAPERS)
def test_output_keeps_the_input_dtype_and_shape(name, dtype):
    models, base = _inputs(name, dtype=dtype)
    out = _call(name, models, base, **_params(name, len(models)))
    assert out.dtype == dtype and out.shape == models[0].shape
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", MERGEKIT + PAPERS)
def test_inputs_are_not_modified(name):
    models, base = _inputs(name)
    before = [m.clone() for m in models] + ([base.clone()] if base is not None else [])
    _call(name, models, base, **_params(name, len(models)))
    assert all(torch.equal(x, y) for x, y in zip(before, models + ([base] if base is not None else [])))


@pytest.mark.parametrize("name", MERGEKIT + PAPERS)
def test_mismatched_shapes_raise(name):
    models, base = _inputs(name)
    params = _params(name, len(models))
    if base is not None:
        with pytest.raises(RecipeError, match="shape"):
            _call(name, models, base[:, :-1], **params)
    if len(models) > 1:
        with pytest.raises(RecipeError, match="shape"):
            _call(name, [models[0], models[1][:-1], *models[2:]], base, **params)


@pytest.mark.parametrize("name", [n for n in MERGEKIT + PAPERS if n not in ("karcher", "nuslerp")])
def test_models_can_be_given_in_any_order(name):
    models, base = _inputs(name)
    params = _params(name, len(models))
    order = list(reversed(range(len(models))))
    permuted = {k: [v[i] for i in order] if isinstance(v, list) else v for k, v in params.items()}
    _assert_rel_close(_call(name, [models[i] for i in order], base, **permuted), _call(name, models, base, **params))


@pytest.mark.parametrize("name", [n for n in MERGEKIT + PAPERS if RULES[n].max_models or RULES[n].min_models > 1])
def test_wrong_model_counts_name_the_method_and_the_rule(name):
    rules = RULES[name]
    n = rules.max_models + 1 if rules.max_models else rules.min_models - 1
    base, models = _family(n=n)
    params = {k: (0.5 if k == "weight" else v) for k, v in _params(name, n).items()}
    with pytest.raises(RecipeError, match=rf"{name}: merges (exactly|at least) {rules.min_models} model"):
        _call(name, models, base, **params)


@pytest.mark.parametrize("name", [n for n in MERGEKIT + PAPERS if RULES[n].base == "required"])
def test_a_missing_base_is_refused(name):
    models, _ = _inputs(name)
    with pytest.raises(RecipeError, match=f"{name}: needs a base model"):
        _call(name, models, None, **_params(name, len(models)))


def test_every_new_method_is_registered_with_a_reference():
    assert get_method("pcb").reference == "https://arxiv.org/abs/2410.02396"
    assert get_method("widen").reference == "https://arxiv.org/abs/2408.03092"
    for name in MERGEKIT:
        assert get_method(name).reference.startswith("https://")
        assert not get_method(name).randomized
