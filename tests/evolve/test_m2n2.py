"""M2N2 as the paper and its reference code define it (issue 13), and the seeds every strategy
takes: hand-computed cases for each rule, and a step-by-step check of the archive's evolution
against an independent re-implementation of the update rule."""

import math
import warnings

import numpy as np
import pytest

from evolve.seeds import auto_seeds, resolve_seeds, seed_genomes
from evolve.strategies import STRATEGIES, Result, make_strategy
from evolve.strategies.m2n2 import (
    EPSILON,
    GenomeLayout,
    M2N2Strategy,
    check_samples_nonnegative,
    competition_fitness,
    crossover,
    gram_over_weights,
    slerp,
    slerp_values,
)
from evolve.strategies.nevergrad_strategy import CMAStrategy
from search_spaces.errors import UserError
from search_spaces.parameter_space import ParameterSpace


@pytest.fixture(autouse=True)
def _quiet_nevergrad():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def space(**overrides) -> ParameterSpace:
    data = {"merge_method": "task_arithmetic", "base_model": "zoo/base", "models": ["zoo/a", "zoo/b", "zoo/c"],
            "search": {"weight": [0.0, 1.0]}}
    return ParameterSpace.from_dict({**data, **overrides})


def ok(fitness, **samples) -> Result:
    return Result.success(fitness, samples={k: [float(x) for x in v] for k, v in samples.items()})


# -- 1. seeds ------------------------------------------------------------------------------------
def test_auto_seeds_are_the_source_models_uniform_merges_then_each_model_left_out():
    sp = space()
    seeds = auto_seeds(sp)
    assert [s.label for s in seeds] == ["parent:a", "parent:b", "parent:c", "uniform:1/3", "uniform:1",
                                        "without:a", "without:b", "without:c"]
    np.testing.assert_array_equal([s.genome for s in seeds[:3]], np.eye(3))  # one-hot weights
    np.testing.assert_allclose(seeds[3].genome, [1 / 3] * 3)
    assert seeds[4].genome == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal([s.genome for s in seeds[5:]], 1 - np.eye(3))  # the others at full strength
    first = sp.decode(seeds[0].genome)  # the recipe reproduces base + task vector of a
    assert [e.parameters["weight"] for e in first.models] == [1.0, 0.0, 0.0]
    assert seed_genomes(sp, "none") == () and seed_genomes(sp, None) == ()


def test_auto_seeds_clip_into_bounds_encode_density_one_and_drop_duplicates():
    sp = space(merge_method="dare_ties", layer_groups=2, search={"weight": [0.2, 0.8], "density": [0.1, 1.0]})
    seeds = auto_seeds(sp)
    values = [sp.values(s.genome) for s in seeds]
    # layout per group: a.density a.weight b.density b.weight c.density c.weight
    np.testing.assert_allclose(values[0], [1.0, 0.8, 1.0, 0.2, 1.0, 0.2] * 2)  # 1 -> 0.8, 0 -> 0.2 (bounds)
    np.testing.assert_allclose(values[3], [1.0, 1 / 3, 1.0, 1 / 3, 1.0, 1 / 3] * 2)
    np.testing.assert_allclose(values[4], [1.0, 0.8] * 6)  # weight 1, clipped to 0.8
    np.testing.assert_allclose(values[5], [1.0, 0.2, 1.0, 0.8, 1.0, 0.8] * 2)  # without:a, clipped the same way
    one = auto_seeds(space(models=["zoo/a"]))  # one model: parent, 1/1 and 1 are one genome
    assert [s.label for s in one] == ["parent:a"]
    two = auto_seeds(space(models=["zoo/a", "zoo/b"]))  # two models: leaving one out is the other parent
    assert [s.label for s in two] == ["parent:a", "parent:b", "uniform:1/2", "uniform:1"]


def test_auto_seeds_leave_each_model_out_one_tensor_kind_at_a_time_where_the_space_splits_kinds():
    sp = space(models=["zoo/a", "zoo/b"], kinds=["self_attn", "mlp"], layer_groups=2, search={"weight": [0.0, 1.5]})
    seeds = {s.label: s for s in auto_seeds(sp)}
    per_kind = [f"without:{m}[{k}]" for m in "ab" for k in ("self_attn", "mlp", "*")]
    assert list(seeds) == ["parent:a", "parent:b", "uniform:1/2", "uniform:1", *per_kind]
    # layout per group: attn (a, b), mlp (a, b), the rest (a, b); every weight 1 but b's embeddings etc.
    np.testing.assert_allclose(sp.values(seeds["without:b[*]"].genome), [1, 1, 1, 1, 1, 0] * 2)
    np.testing.assert_allclose(sp.values(seeds["without:a[self_attn]"].genome), [0, 1, 1, 1, 1, 1] * 2)
    one_group = space(models=["zoo/a", "zoo/b"], kinds=["self_attn", "mlp"], search={"weight": [0.0, 1.5]})
    (genome,) = [s.genome for s in auto_seeds(one_group) if s.label == "without:a[mlp]"]
    assert one_group.decode(genome).to_dict()["models"][0]["parameters"]["weight"] == [
        {"filter": "self_attn", "value": 1.0}, {"filter": "mlp", "value": 0.0}, {"value": 1.0}]
    assert [s.label for s in auto_seeds(space(models=["zoo/a", "zoo/b"]))] == [  # no kinds: none of them
        "parent:a", "parent:b", "uniform:1/2", "uniform:1"]
    # they may bring the seeds to a quarter of max_evaluations (10 seeds: a budget of 40), never beyond
    assert len(auto_seeds(sp, budget=40)) == 10 and len(seed_genomes(sp, "auto", budget=40)) == 10
    assert [s.label for s in auto_seeds(sp, budget=39)] == ["parent:a", "parent:b", "uniform:1/2", "uniform:1"]


@pytest.mark.parametrize(("overrides", "has_uniform_1"), [
    ({"merge_method": "dare_ties", "parameters": {"normalize": True}}, False),  # set
    ({"merge_method": "ties"}, False),  # the method's default
    ({"merge_method": "linear", "base_model": None}, False),
    ({"merge_method": "ties", "parameters": {"normalize": False}}, True),
    ({"merge_method": "dare_ties"}, True),
    ({}, True),  # task arithmetic does not normalize
])
def test_auto_seeds_leave_out_uniform_1_when_the_merge_normalizes_the_weights(overrides, has_uniform_1):
    labels = [s.label for s in auto_seeds(space(**overrides))]
    assert labels[:4] == ["parent:a", "parent:b", "parent:c", "uniform:1/3"]
    assert labels[-3:] == ["without:a", "without:b", "without:c"]
    assert ("uniform:1" in labels) == has_uniform_1 and len(labels) == 7 + has_uniform_1


def test_recipe_seeds_are_encoded_by_the_space_and_refused_by_index():
    sp = space()
    recipe = sp.decode(np.array([0.5, 0.25, 0.0])).to_dict()
    ((label, genome),) = [(s.label, s.genome) for s in resolve_seeds(sp, [recipe])]
    assert label == "recipe[0]" and genome == (0.5, 0.25, 0.0)
    bad = {**recipe, "merge_method": "ties"}
    with pytest.raises(UserError, match=r"strategy.seeds\[1\]: the space cannot encode.*merge_method"):
        resolve_seeds(sp, [recipe, bad])


@pytest.mark.parametrize("name", [*STRATEGIES, "TwoPointsDE", "PSO"])
def test_every_strategy_asks_its_seeds_first_in_order_and_replays_them(name):
    seeds = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.2]]

    def run() -> list[tuple[float, ...]]:
        s = make_strategy(name, 3, 5, num_workers=4, seeds=seeds)
        asked = s.ask(3)
        assert [c.info["origin"] for c in asked] == ["seed"] * 3
        assert [c.info["seed_index"] for c in asked] == [0, 1, 2]
        for c, f in zip(asked, (0.1, 0.7, 0.3)):
            s.tell(c.id, ok(f, t=[f > 0.2, f > 0.5]))
        after = [c for _ in range(6) for c in s.ask(1)]
        for c in after:
            s.tell(c.id, ok(0.2, t=[1, 0]))
        assert all(c.info.get("origin") != "seed" for c in after) and after  # each seed once
        return [c.genome for c in asked + after]

    genomes = run()
    assert genomes[:3] == [tuple(g) for g in seeds]
    assert run() == genomes  # same asks in the same order


def test_cma_waits_for_its_seeds_then_centres_on_the_best():
    s = CMAStrategy(3, seed=0, popsize=200, num_workers=None, sigma0=0.05,
                    seeds=[[0.1, 0.1, 0.1], [0.8, 0.2, 0.6], [0.5, 0.5, 0.5]])
    a, b, c = s.ask(5)
    assert s.ask(1) == []                         # the seeds are out: CMA waits for them
    s.tell(a.id, ok(0.3))
    s.tell(b.id, ok(0.9))
    assert s.ask(1) == [] and s.centre is None
    s.tell(c.id, Result.failure("oom"))
    np.testing.assert_array_equal(s.centre, [0.8, 0.2, 0.6])
    genomes = np.array([x.genome for x in s.ask(200)])
    np.testing.assert_allclose(genomes.mean(axis=0), [0.8, 0.2, 0.6], atol=0.015)
    assert s.state()["centre"] == [0.8, 0.2, 0.6] and s.state()["sigma"] == pytest.approx(0.05)
    failed = CMAStrategy(3, seed=0, seeds=[[0.1, 0.1, 0.1]])
    failed.tell(failed.ask(1)[0].id, Result.failure("oom"))
    assert failed.centre is None and len(failed.ask(1)) == 1  # every seed failed: start at `start`


def test_cma_centres_on_the_centroid_of_seeds_the_documents_cannot_rank_apart():
    seeds = [[0.6, 0.0], [0.0, 0.6], [0.3, 0.3], [0.6, 0.6]]

    def centre(*results: Result) -> CMAStrategy:
        s = CMAStrategy(2, seed=0, seeds=seeds)
        for c, r in zip(s.ask(4), results):
            s.tell(c.id, r)
        return s

    flat = [0] * 64                                # the kind pair's seeds: 0, 0, 1 and 2 of 64 right
    s = centre(ok(0.0, t=flat), ok(0.0, t=flat), ok(1 / 64, t=[1] + flat[1:]), ok(2 / 64, t=[1, 1] + flat[2:]))
    np.testing.assert_allclose(s.centre, [0.375, 0.375])
    assert s.state()["centre_seeds"] == ["3", "0", "1", "2"]  # the best first, then seed order
    ahead = [1] * 6 + flat[6:]                     # 6 documents to none: a one-sided p of 1/64
    s = centre(ok(0.0, t=flat), ok(0.0, t=flat), ok(1 / 64, t=[1] + flat[1:]), ok(6 / 64, t=ahead))
    np.testing.assert_array_equal(s.centre, [0.6, 0.6])
    s = centre(ok(5 / 64, t=[1] * 5 + flat[5:]), ok(0.0, t=flat), Result.failure("oom"), ok(1 / 64, t=[0] * 5 + [1] + flat[6:]))
    np.testing.assert_allclose(s.centre, [0.6, 0.3])  # over seed 3, 5 wins to 1 (p = 7/64): tied;
    assert s.state()["centre_seeds"] == ["0", "3"]       # over seed 1, 5 to 0 (p = 1/32): ahead
    s = centre(ok(0.5), ok(0.5), ok(0.4), Result.failure("oom"))  # no per-sample scores: only equal fitness ties
    np.testing.assert_allclose(s.centre, [0.3, 0.3])
    s = centre(ok(0.5, t=flat), ok(0.5, u=flat), ok(0.4, t=[0] * 8), Result.failure("oom"))
    np.testing.assert_allclose(s.centre, [0.3, 0.3])  # other tasks or document counts: not comparable


@pytest.mark.parametrize(("wins", "n"), [(0, 0), (3, 3), (5, 5), (120, 200), (130, 201), (1050, 2000), (10100, 20000)])
def test_the_sign_test_is_exact_for_few_documents_and_close_for_many(wins, n):
    from evolve.strategies.nevergrad_strategy import _sign_test_p

    exact = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n if n <= 2000 else 0.07969  # exact, once: 32 s
    assert _sign_test_p(wins, n) == pytest.approx(exact, rel=0.01, abs=1e-4)


def test_cma_centres_on_the_best_seed_alone_in_a_space_of_layer_paths():
    from search_spaces.data_flow import DataFlowSpace

    paths = DataFlowSpace("m/a", "m/b", 4, repeats=2, max_path_length=8)
    assert make_strategy("cma", paths.dimension, space=paths).centre_on == "best"
    assert make_strategy("cma", paths.dimension, space=paths, centre_on="tied").centre_on == "tied"
    assert make_strategy("cma", space().dimension, space=space()).centre_on == "tied"
    s = CMAStrategy(2, seed=0, centre_on="best", seeds=[[0.6, 0.0], [0.0, 0.6]])
    for c in s.ask(2):
        s.tell(c.id, ok(0.5))
    np.testing.assert_array_equal(s.centre, [0.6, 0.0])  # tied, but the first seed alone
    with pytest.raises(UserError, match="cma.centre_on: must be tied or best"):
        CMAStrategy(2, centre_on="mean")


@pytest.mark.parametrize(("dimension", "sigma_from_seed"), [(6, 1 / 6), (17, 1 / 6), (18, 1 / 12), (72, 1 / 12)])
def test_cma_halves_its_default_step_from_a_seed_in_many_dimensions(dimension, sigma_from_seed):
    s = CMAStrategy(dimension, seed=0, popsize=300, num_workers=None, seeds=[[0.3] * dimension])
    assert s.sigma0 == pytest.approx(1 / 6)  # from the centre (every seed failed, or none): 1/6
    s.tell(s.ask(1)[0].id, ok(0.5))
    assert s.sigma0 == pytest.approx(sigma_from_seed) and s.state()["sigma"] == pytest.approx(sigma_from_seed)
    spread = np.array([c.genome for c in s.ask(300)]).std(axis=0).mean()
    assert spread == pytest.approx(sigma_from_seed, rel=0.15)  # CMA really samples with that step
    given = CMAStrategy(dimension, seed=0, sigma0=0.2, seeds=[[0.3] * dimension])
    given.tell(given.ask(1)[0].id, ok(0.5))
    assert given.sigma0 == 0.2  # an explicit sigma0 is kept
    unseeded = CMAStrategy(dimension, seed=0)
    assert unseeded.sigma0 == pytest.approx(1 / 6)


def test_m2n2_archive_starts_from_the_seeds():
    seeds = np.eye(3)
    s = M2N2Strategy(3, seed=0, seeds=seeds)
    a, b, c = s.ask(3)
    s.tell(a.id, ok(0.5, t=[1, 0, 0]))
    s.tell(b.id, ok(0.5, t=[0, 1, 0]))
    assert s.archive == (a.id, b.id)
    (child,) = s.ask(1)                          # breeds at two members, the third seed in flight
    assert set(child.parents) == {a.id, b.id}
    s.tell(c.id, ok(0.5, t=[0, 0, 1]))
    assert s.archive == (a.id, b.id, c.id)


# -- 2. replacement: the child wins ties -----------------------------------------------------------
def test_replacement_drops_the_oldest_tied_least_fit_member():
    s = M2N2Strategy(2, seed=0, archive_size=3, seeds=[[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]])
    a, b, c = s.ask(3)
    s.tell(a.id, ok(0.5, t=[1, 0]))
    s.tell(b.id, ok(0.5, t=[1, 0]))
    s.tell(c.id, ok(0.5, t=[0, 1]))
    (child,) = s.ask(1)
    s.tell(child.id, ok(0.5, t=[1, 0]))          # z = [3, 1]: a, b, child all 1/3 / 2 samples; c 1/2
    assert s.archive == (b.id, c.id, child.id)   # the oldest of the tied (a) goes, the child stays


# -- 3. splits on block or layer-group boundaries --------------------------------------------------
@pytest.mark.parametrize(("split_on", "points"), [
    (None, {0, 4, 8, 12, 16, 20}),        # the default: every (group, kind) block
    ("block", {0, 4, 8, 12, 16, 20}),
    ("group", {0, 8, 16}),
])
def test_layout_from_a_space_splits_between_blocks_or_layer_groups(split_on, points):
    sp = space(merge_method="dare_ties", models=["zoo/a", "zoo/b"], layer_groups=3, kinds=["mlp"],
               search={"weight": [0.0, 1.0], "density": [0.1, 1.0]})
    layout = GenomeLayout.from_space(sp)
    assert sp.dimension == 24 and layout.split_points == (0, 8, 16)  # group = 2 kinds x 2 models x 2 params
    assert layout.block_starts == (0, 4, 8, 12, 16, 20)              # block = 2 models x 2 params
    assert layout.weight_mask[:4] == (False, True, False, True)      # density, weight per model
    settings = {} if split_on is None else {"split_on": split_on}
    seeds = [s.genome for s in auto_seeds(sp)]
    s = make_strategy("m2n2", sp.dimension, 0, space=sp, seeds=seeds, **settings)
    for c in s.ask(len(seeds)):
        s.tell(c.id, ok(0.5, t=np.random.default_rng(int(c.id)).integers(0, 2, 5)))
    splits = {c.info["split"] for c in s.ask(300)}
    assert splits == points


def test_block_splits_give_kinds_of_one_group_different_parents():
    """One group, three kinds: group-only splits can only SLERP whole models; block splits can
    put one parent's embeddings ("rest") under the other's blocks, the kind pair's answer."""
    sp = space(merge_method="task_arithmetic", models=["zoo/a", "zoo/b"], kinds=["self_attn", "mlp"],
               search={"weight": [0.0, 1.0]})
    layout = GenomeLayout.from_space(sp)
    assert layout.split_points == (0,) and layout.block_starts == (0, 2, 4)
    a, b = np.array([1.0, 0.0] * 3), np.array([0.0, 1.0] * 3)  # a's models everywhere, b's
    child = crossover(a, b, split=4, w=1.0, layout=layout)     # blocks from b, the rest from a
    np.testing.assert_allclose(child, [0, 1, 0, 1, 1, 0], atol=1e-12)
    with pytest.raises(UserError, match="m2n2.split_on"):
        make_strategy("m2n2", sp.dimension, 0, space=sp, split_on="kind")


def test_crossover_at_a_group_boundary():
    layout = GenomeLayout(split_points=(0, 2), weight_mask=(True,) * 4, lower=(0.0,) * 4, upper=(1.0,) * 4)
    p1, p2 = np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0, 1.0])  # orthogonal: angle pi/2
    child = crossover(p1, p2, split=2, w=0.25, layout=layout)
    lo, hi = math.sin(math.pi / 8), math.sin(3 * math.pi / 8)  # sin((1-t) pi/2), sin(t pi/2) for t = 1/4
    np.testing.assert_allclose(child, [hi, lo, lo, hi])          # group 0: SLERP_0.25, group 1: SLERP_0.75


# -- 4. the SLERP angle: value space, weights only --------------------------------------------------
def test_slerp_angle_is_taken_over_weight_values_and_densities_mix_linearly():
    # coordinates: a.weight in [0, 2], a.density in [0.1, 1], b.weight in [0, 2], b.density in [0.1, 1]
    layout = GenomeLayout((0,), (True, False, True, False), (0.0, 0.1, 0.0, 0.1), (2.0, 1.0, 2.0, 1.0))
    p1 = np.array([1.0, 0.0, 0.0, 1.0])  # values: weights (2, 0), densities 0.1, 1.0
    p2 = np.array([0.0, 1.0, 0.5, 0.0])  # values: weights (0, 1), densities 1.0, 0.1
    child = crossover(p1, p2, split=0, w=0.5, layout=layout)  # split 0: ratio 1 - w = 0.5 everywhere
    c = math.sin(math.pi / 4) / math.sin(math.pi / 2)          # angle between (2, 0) and (0, 1): pi/2
    np.testing.assert_allclose(child[[0, 2]], [c * 2 / 2, c * 1 / 2])  # weights c*(2, 0) + c*(0, 1), over width 2
    np.testing.assert_allclose(child[[1, 3]], [0.5, 0.5])      # densities: linear midpoint, back in genome units
    # densities do not move the angle: the weights come out the same whatever the densities
    other = crossover(np.array([1.0, 0.9, 0.0, 0.3]), np.array([0.0, 0.2, 0.5, 0.7]), 0, 0.5, layout)
    np.testing.assert_allclose(other[[0, 2]], child[[0, 2]])
    # a genome-space angle would differ: (1, 0, 0, 1) vs (0, 1, 0.5, 0) are not orthogonal in the weights' sense
    np.testing.assert_allclose(slerp_values(0.5, np.ones(2), np.ones(2), np.zeros(2, bool)), [1.0, 1.0])


def test_the_gram_angle_is_the_angle_of_the_merged_task_vectors():
    g = np.array([[1.0, 0.5], [0.5, 1.0]])  # cos(tau_a, tau_b) = 1/2
    child = slerp_values(0.5, np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.ones(2, bool), g)
    c = math.sin(math.pi / 6) / math.sin(math.pi / 3)  # Omega = pi/3, not the pi/2 of G = I
    np.testing.assert_allclose(child, [c, c])
    # against explicit task vectors: SLERP of the merged task vectors = the merge of the child's weights
    rng = np.random.default_rng(0)
    tau = rng.normal(size=(3, 50))                     # 3 models' task vectors, 50 parameters
    wa, wb = rng.random(3), rng.random(3)
    for t in (0.2, 0.7):
        weights = slerp_values(t, wa, wb, np.ones(3, bool), tau @ tau.T)
        np.testing.assert_allclose(weights @ tau, slerp(t, wa @ tau, wb @ tau), atol=1e-12)


def test_gram_over_weights_assembles_the_blocks_in_genome_order():
    sp = space(merge_method="ties", models=["zoo/a", "zoo/b"], layer_groups=2,
               search={"weight": [0.0, 1.0], "density": [0.1, 1.0]})
    g0, g1 = [[1.0, 0.2], [0.2, 2.0]], [[3.0, 0.0], [0.0, 4.0]]
    full = gram_over_weights(sp, [g0, g1])   # weight coordinates: a.g0, b.g0, a.g1, b.g1
    np.testing.assert_array_equal(full, [[1.0, 0.2, 0, 0], [0.2, 2.0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 4.0]])
    s = make_strategy("m2n2", sp.dimension, 0, space=sp, gram=full.tolist())
    assert s.state()["gram"] is True
    with pytest.raises(UserError, match="2 blocks given|1 blocks given"):
        gram_over_weights(sp, [g0])
    with pytest.raises(UserError, match="m2n2.gram: must be a symmetric 4 x 4"):
        make_strategy("m2n2", sp.dimension, 0, space=sp, gram=[[1.0]])


# -- 5. presets ------------------------------------------------------------------------------------
def test_presets_set_the_ablations():
    for preset, alpha, attract, split in [("m2n2", 1.0, True, True), ("ga", 0.0, False, True),
                                          ("no_split", 1.0, True, False), ("no_attraction", 1.0, False, True)]:
        s = M2N2Strategy(3, preset=preset)
        assert (s.alpha, s.use_attraction, s.use_split) == (alpha, attract, split)
        assert s.state()["preset"] == preset
    s = M2N2Strategy(4, seed=1, preset="no_split", seeds=[[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])
    a, b = s.ask(2)
    s.tell(a.id, ok(0.5, t=[1, 0]))
    s.tell(b.id, ok(0.5, t=[0, 1]))
    (child,) = s.ask(1)
    assert child.info["split"] == 4                            # every coordinate takes SLERP_w
    w = child.info["w"]
    p1, p2 = (a, b) if child.parents[0] == a.id else (b, a)
    expected = np.sin((1 - w) * math.pi / 2) * p1.array + np.sin(w * math.pi / 2) * p2.array
    np.testing.assert_allclose(child.array, np.clip(expected, 0, 1))


# -- 6. negative per-sample scores -----------------------------------------------------------------
def test_negative_scores_are_refused_up_front_and_kept_out_mid_run():
    check_samples_nonnegative({"gsm8k": [1, 0], "mmlu": [0.5]})
    with pytest.raises(UserError, match=r"^m2n2: task 'logprob' gives negative per-sample scores \(min -2\)"):
        check_samples_nonnegative({"gsm8k": [1, 0], "logprob": [-2.0, 0.1]})
    assert M2N2Strategy(2).needs_nonnegative_samples and not M2N2Strategy(2, score_transform="minmax").needs_nonnegative_samples
    assert not make_strategy("cma", 2).needs_nonnegative_samples
    s = M2N2Strategy(2, seed=0, seeds=[[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]])
    a, b, c = s.ask(3)
    s.tell(a.id, ok(0.5, t=[1, 0]))
    with pytest.warns(UserWarning, match="task 't' gave a negative"):
        s.tell(b.id, ok(0.5, t=[-1, 0]))          # no crash: told, not archived
    s.tell(c.id, ok(0.5, t=[0, 1]))
    assert s.archive == (a.id, c.id) and s.num_told == 3
    assert [r["id"] for r in s.state()["rejected"]] == [b.id]


def test_minmax_rescales_each_task_by_the_scores_seen():
    s = M2N2Strategy(2, seed=0, alpha=0.0, score_transform="minmax", seeds=[[0.1, 0.1], [0.2, 0.2]])
    a, b = s.ask(2)
    s.tell(a.id, ok(0.0, t=[-2, 0], u=[5]))
    s.tell(b.id, ok(0.0, t=[2, 1], u=[5]))
    # t: min -2, max 2 -> a (0, 0.5), b (1, 0.75); u: constant -> 0. alpha 0, weights 1/2 for t, 1 for u
    got = [m["competition_fitness"] for m in s.state()["archive"]]
    np.testing.assert_allclose(got, [0.5 * 0.5 / (1 + EPSILON), 0.5 * 1.75 / (1 + EPSILON)])


# -- 7. task weights ---------------------------------------------------------------------------------
def test_sample_weights_are_task_weight_over_item_count():
    s = M2N2Strategy(2, seed=0, alpha=0.0, task_weights={"a": 2.0, "b": 1.0}, seeds=[[0.1, 0.1], [0.2, 0.2]])
    x, y = s.ask(2)
    # fitness as the scorer computes it: 2 * mean(a) + 1 * mean(b)
    s.tell(x.id, ok(2 * 0.5 + 1 * 1.0, a=[1, 0], b=[1]))
    s.tell(y.id, ok(2 * 1.0 + 1 * 0.0, a=[1, 1], b=[0]))
    state = s.state()
    for m in state["archive"]:  # alpha 0: competition sees exactly what fitness sees
        assert m["competition_fitness"] == pytest.approx(m["fitness"] / (1 + EPSILON))
    # alpha 1: z = [2, 1, 1]; x: 1*1/2 + 1*1/1 = 1.5, y: 1/2 + 1 = 1.5; the weights stay outside the share
    np.testing.assert_allclose(competition_fitness(np.array([[1, 0, 1], [1, 1, 0]]), 1.0, 0.0, np.array([1, 1, 1])),
                               [1.5, 1.5])


# -- 8. reporting -------------------------------------------------------------------------------------
def test_state_reports_the_best_archive_member_and_the_best_ever():
    s = M2N2Strategy(2, seed=0, archive_size=2, seeds=[[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]])
    a, b, c = s.ask(3)
    s.tell(a.id, ok(0.9, t=[1, 0, 0]))   # the best fitness, but its only sample is shared by b and c
    s.tell(b.id, ok(0.4, t=[1, 1, 0]))
    s.tell(c.id, ok(0.3, t=[1, 0, 1]))   # f: a 1/3, b 1/3 + 1, c 1/3 + 1 -> a is dropped
    state = s.state()
    assert s.archive == (b.id, c.id)
    assert state["best"]["id"] == a.id and state["best"]["fitness"] == 0.9
    assert state["best_member"]["id"] == b.id and state["best_member"]["fitness"] == 0.4
    assert s.best_member[0].id == b.id


# -- the update rule, step by step --------------------------------------------------------------------
TABLE = np.array([  # per-sample scores by ask order (cycled): 2 tasks, 3 + 2 samples
    [1, 0, 0, 1, 0], [0, 1, 0, 0, 1], [0, 0, 1, 1, 1], [1, 1, 0, 0, 0],
    [0, 1, 1, 0, 0], [1, 0, 1, 0, 1], [0, 0, 0, 1, 0], [1, 1, 1, 0, 0],
], dtype=float)
WEIGHTS = {"x": 1.0, "y": 3.0}


def scored(k: int) -> Result:
    row = TABLE[k % len(TABLE)]
    fitness = WEIGHTS["x"] * row[:3].mean() + WEIGHTS["y"] * row[3:].mean()
    return Result.success(fitness, samples={"y": row[3:].tolist(), "x": row[:3].tolist()})


class Reference:
    """The paper's rule written out plainly, for a (2 groups x 2 params) genome, weights at 0 and 2."""

    def __init__(self, seed, archive_size, seeds, mutation_std=0.0):
        self.rng = np.random.default_rng(seed)
        self.mutation_std = mutation_std
        self.size = archive_size
        self.genomes = {}
        self.archive = []  # (id, scores)
        self.c = np.array([1 / 3] * 3 + [3 / 2] * 2)  # x: 1/3 per sample; y: 3/2 (sorted: x then y)
        self.seeds = [np.asarray(g, float) for g in seeds]

    def fitness(self, scores):
        z = scores.sum(axis=0)
        return np.array([sum(self.c[j] * s[j] / (z[j] + EPSILON) for j in range(len(z))) for s in scores])

    def draw(self, p):
        q = p / p.sum() if p.sum() > 0 else np.full(len(p), 1.0 / len(p))
        return int(self.rng.choice(len(p), p=q))

    def child(self):
        scores = np.array([s for _, s in self.archive])
        f = self.fitness(scores)
        i = self.draw(f)
        z = scores.sum(axis=0)
        g = np.array([sum(self.c[j] * max(b[j] - scores[i][j], 0) / (z[j] + EPSILON) for j in range(len(z)))
                      for b in scores])
        others = [k for k in range(len(scores)) if k != i]
        j = others[self.draw(g[others])]
        split = [0, 2][int(self.rng.integers(0, 2))]
        w = float(self.rng.random())
        a, b = self.genomes[self.archive[i][0]], self.genomes[self.archive[j][0]]
        va, vb = a * 2.0, b * 2.0  # value space: weights in [0, 2]
        cos = va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb))
        omega = math.acos(min(max(cos, -1.0), 1.0))
        out = []
        for k in range(4):
            t = w if k < split else 1 - w
            out.append((math.sin((1 - t) * omega) * va[k] + math.sin(t * omega) * vb[k]) / math.sin(omega) / 2.0)
        out = np.clip(out, 0, 1)
        if self.mutation_std > 0:  # Gaussian noise in genome units, after the crossover, clipped again
            out = np.clip(out + self.rng.normal(0.0, self.mutation_std, 4), 0, 1)
        return (self.archive[i][0], self.archive[j][0]), out

    def tell(self, cid, scores):
        self.archive.append((cid, scores))
        if len(self.archive) > self.size:
            f = self.fitness(np.array([s for _, s in self.archive]))
            drop = int(np.flatnonzero(f == f.min())[0])  # the oldest of the least fit
            self.archive.pop(drop)


@pytest.mark.parametrize("mutation_std", [0.0, 0.2])
def test_archive_evolution_follows_the_update_rule_step_by_step(mutation_std):
    seeds = [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.9, 0.1, 0.2, 0.8]]
    layout = GenomeLayout((0, 2), (True,) * 4, (0.0,) * 4, (2.0,) * 4)
    s = M2N2Strategy(4, seed=11, archive_size=4, seeds=seeds, task_weights=WEIGHTS, layout=layout,
                     mutation_std=mutation_std)
    ref = Reference(11, 4, seeds, mutation_std)
    for c in s.ask(4):  # the seeds, told in order
        ref.genomes[c.id] = c.array
        s.tell(c.id, scored(int(c.id)))
        ref.tell(c.id, TABLE[int(c.id) % len(TABLE)])
    dropped = 0
    for _ in range(30):
        (c,) = s.ask(1)
        parents, genome = ref.child()
        assert c.parents == parents
        np.testing.assert_allclose(c.array, genome, atol=1e-12)
        ref.genomes[c.id] = c.array
        s.tell(c.id, scored(int(c.id)))
        ref.tell(c.id, TABLE[int(c.id) % len(TABLE)])
        assert s.archive == tuple(cid for cid, _ in ref.archive)
        dropped += 1
    assert s.state()["num_dropped"] == dropped  # the archive was full throughout: every child competed
    assert len(set(s.archive) - {"0", "1", "2", "3"}) > 0  # and some children won places


# -- seeds and the driver's arguments ------------------------------------------------------------------
def test_seeds_respect_the_cap_on_candidates_in_flight():
    s = CMAStrategy(3, seed=0, num_workers=2, seeds=[[0.1] * 3, [0.2] * 3, [0.3] * 3])
    a, b = s.ask(5)
    assert s.ask(1) == []                          # the cap holds the third seed back
    s.tell(a.id, ok(0.1))
    (c,) = s.ask(5)
    assert c.info["seed_index"] == 2
    de = make_strategy("TwoPointsDE", 3, 0, num_workers=1, seeds=[[0.1] * 3, [0.2] * 3])
    assert len(de.ask(3)) == 1


def test_an_optimizer_that_cannot_learn_from_seeds_is_refused_when_built():
    with pytest.raises(UserError, match="strategy 'EDA': cannot learn from seeds.*strategy.seeds: none"):
        make_strategy("EDA", 3, 0, seeds=[[0.1] * 3])
    assert make_strategy("EDA", 3, 0).ask(1)       # without seeds it runs


def test_make_strategy_gives_m2n2_the_layout_of_the_space():
    sp = space(layer_groups=2)
    s = make_strategy("m2n2", sp.dimension, 0, space=sp, task_weights={"t": 2.0})
    assert s.layout == GenomeLayout((0, 3), (True,) * 6, (0.0,) * 6, (1.0,) * 6, (0, 3)) and s.task_weights == {"t": 2.0}
    assert make_strategy("m2n2", 4, 0).layout == GenomeLayout.flat(4)  # no space: split anywhere
    with pytest.raises(UserError, match="space has 6 coordinates, not 5"):
        make_strategy("m2n2", 5, 0, space=sp)
    with pytest.raises(ValueError, match="split_points"):
        GenomeLayout((1,), (True,), (0.0,), (1.0,))
    with pytest.raises(ValueError, match="block_starts"):  # a group start that is no block start
        GenomeLayout((0, 2), (True,) * 3, (0.0,) * 3, (1.0,) * 3, (0, 1))


def test_other_spaces_seed_from_their_start_genome_and_split_anywhere():
    class Other:  # e.g. the data-flow genome: no parameter coordinates
        dimension = 3

        def start_genome(self):
            return np.array([1.0, 0.0, 0.5])

    assert seed_genomes(Other(), "auto") == ((1.0, 0.0, 0.5),)
    assert GenomeLayout.from_space(Other()) == GenomeLayout.flat(3)


# -- replay through the store, with seeds, the space and task weights, as the runner builds them --------
@pytest.mark.slow
@pytest.mark.parametrize("name, settings", [("m2n2", {"archive_size": 4, "mutation_std": 0.2}), ("cma", {"popsize": 4}),
                                            ("TwoPointsDE", {})])
def test_seeded_strategies_replay_exactly_through_the_loop(local_ray, family, tmp_path, name, settings):
    from evolve.config import RunConfig
    from evolve.loop import SearchLoop
    from evolve.pool import WorkerPool
    from evolve.preflight import check_run
    from evolve.runner import reference_recipes, worker_spec
    from evolve.store import Store
    from tests.fixtures.run_configs import config_dict

    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    data = config_dict(family, strategy={"name": name, "seed": 7, "settings": settings},
                       budget={"max_evaluations": 12}, tasks=[{"name": "analytic", "metric": "score", "weight": 2.0}])
    checked = check_run(RunConfig.model_validate(data))
    space = checked.space
    run = store.create_run("replay", data, seed=7)

    def strategy():
        return make_strategy(name, space.dimension, 7, num_workers=2, seeds=seed_genomes(space, "auto"),
                             task_weights={"analytic": 2.0}, space=space, **settings)

    original = strategy()
    pool = WorkerPool(2, worker_spec(checked))
    SearchLoop(store, run.id, space, original, pool, 12, None, progress=False,
               references=reference_recipes(space)).run()
    pool.shutdown()
    seeds = [c for c in store.list_candidates(run.id, kind="search") if c.strategy_info.get("origin") == "seed"]
    assert len(seeds) == len(auto_seeds(space)) == 4  # 2 parents, uniform 1/2 and 1
    replayed = strategy()
    pending = SearchLoop(store, run.id, space, replayed, None, 12, None, progress=False).replay()
    assert pending == []
    assert replayed.state() == original.state()
    assert [c.genome for c in replayed.ask(3)] == [c.genome for c in original.ask(3)]
