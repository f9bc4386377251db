"""Strategies behind one ask/tell interface: protocol, conformance over the registry (resume by replay: tests/evolve/test_resume.py),
nevergrad settings (bounds, sigma, seeding, penalties), and M2N2's pieces against hand-computed
values."""

import json
import math
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from evolve.strategies import (
    STRATEGIES,
    AlreadyToldError,
    Result,
    UnknownCandidateError,
    make_strategy,
    settings_of,
)
from evolve.strategies.m2n2 import (
    M2N2Strategy,
    attraction,
    competition_fitness,
    crossover,
    least_fit,
    sample_index,
    slerp,
)
from evolve.strategies.nevergrad_strategy import ARRAY_SIGMA, CMAStrategy, NevergradStrategy, genome_parametrization
from evolve.strategies.random_search import RandomSearch
from search_spaces.errors import UserError

REPO = Path(__file__).resolve().parents[2]
DIM = 5

# Every strategy of ours plus a spread of nevergrad optimizers (the registry has ~540; these
# cover the families: evolution strategies, DE, PSO, (1+1), population-based, the NGOpt wizard).
CONFORMANCE = {
    "cma": {"popsize": 4},
    "random": {},
    "m2n2": {"archive_size": 4},
    "pareto": {"population": 4},
    "NGOpt": {"budget": 60},
    "TwoPointsDE": {},
    "OnePlusOne": {},
    "PSO": {},
    "TBPSA": {},
}


@pytest.fixture(autouse=True)
def _quiet_nevergrad():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def objective(genome: np.ndarray, seq: int) -> Result:
    """A smooth fitness with per-sample scores in [0, 1]; every 7th candidate fails."""
    if seq % 7 == 3:
        return Result.failure("out of memory")
    if seq % 11 == 5:
        return Result(fitness=float("nan"))
    hits = (np.abs(genome - 0.3) < 0.25).astype(float)
    fitness = float(hits.mean() - np.sum((genome - 0.3) ** 2))
    return Result.success(fitness, samples={"b": hits[2:].tolist(), "a": hits[:2].tolist()})


def drive(strategy, steps: int, rng: np.random.Generator, batch: int = 3, log=None):
    """An asynchronous driver: ask up to ``batch``, tell a random pending one (out of order)."""
    in_flight = list(strategy.pending)
    for _ in range(steps):
        for c in strategy.ask(batch - len(in_flight)):
            in_flight.append(c)
            if log is not None:
                log.append(("ask", c.id, c.genome))
        if not in_flight:
            continue
        c = in_flight.pop(int(rng.integers(len(in_flight))))
        strategy.tell(c.id, objective(c.array, int(c.id)))
        if log is not None:
            log.append(("tell", c.id))
    return in_flight


# -- Result and the base protocol ----------------------------------------------------------------
def test_result_normalization():
    assert Result(fitness=float("nan")).normalized().failed
    assert Result(fitness=float("-inf")).normalized().error == "non-finite fitness -inf"
    assert Result.success(1, samples={"t": [1, float("nan")]}).normalized().failed
    assert Result.failure("boom").normalized() == Result(None, None, True, "boom")
    ok = Result.success(np.float32(0.5), samples={"t": np.array([1, 0])}).normalized()
    assert ok == Result(0.5, {"t": [1.0, 0.0]}, False, None)
    assert Result.from_dict(json.loads(json.dumps(ok.to_dict()))) == ok
    with pytest.raises(ValueError, match="needs a fitness"):
        Result().normalized()
    with pytest.raises(ValueError, match="must be a number"):
        Result(fitness="0.5").normalized()


def test_penalty_is_below_the_worst_fitness_seen():
    s = RandomSearch(3, seed=0)
    assert s.penalty_fitness() == -1.0
    a, b, c = s.ask(3)
    s.tell(a.id, Result.success(0.2))
    s.tell(b.id, Result.success(0.8))
    assert s.penalty_fitness() == pytest.approx(0.2 - 1.0)
    s.tell(c.id, Result.success(-5.0))
    assert s.penalty_fitness() == pytest.approx(-5.0 - 5.8)
    assert RandomSearch(3, seed=0, failure_fitness=-3.0).penalty_fitness() == -3.0


def test_ids_are_sequential_and_ask_n_equals_n_single_asks():
    batched = make_strategy("cma", DIM, seed=4, popsize=6, num_workers=6)
    single = make_strategy("cma", DIM, seed=4, popsize=6, num_workers=6)
    got = batched.ask(4) + batched.ask(2)
    ref = [single.ask(1)[0] for _ in range(6)]
    assert [c.id for c in got] == [str(i) for i in range(6)]
    assert [c.genome for c in got] == [c.genome for c in ref]


# -- conformance over the registry ---------------------------------------------------------------
@pytest.fixture(params=list(CONFORMANCE))
def name(request):
    return request.param


def build(name, seed=0):
    return make_strategy(name, DIM, seed=seed, num_workers=3, **CONFORMANCE[name])


def test_registry_covers_our_strategies():
    assert set(STRATEGIES) <= set(CONFORMANCE)


def test_ask_gives_valid_genomes(name):
    s = build(name)
    candidates = s.ask(3)
    assert 1 <= len(candidates) <= 3
    for c in candidates:
        assert isinstance(c.genome, tuple) and len(c.genome) == DIM
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in c.genome)
        assert c.array.shape == (DIM,)
    assert [c.id for c in s.pending] == [c.id for c in candidates]
    drive(s, 40, np.random.default_rng(1))
    assert s.num_told >= 30
    json.dumps(s.state())  # snapshots are JSON


def test_tell_validates_ids(name):
    s = build(name)
    c = s.ask(1)[0]
    with pytest.raises(UnknownCandidateError, match="'99' was never asked"):
        s.tell("99", Result.success(0.1))
    s.tell(c.id, Result.success(0.1, samples={"t": [1.0, 0.0]}))
    with pytest.raises(AlreadyToldError):
        s.tell(c.id, Result.success(0.2))
    with pytest.raises(TypeError):
        s.tell(c.id, 0.2)


def test_failures_are_told_and_the_search_goes_on(name):
    s = build(name)
    told = []
    original = type(s)._tell

    def spy(self, candidate, result, fitness):
        told.append((result.failed, fitness))
        return original(self, candidate, result, fitness)

    s._tell = spy.__get__(s)
    for step in range(12):  # only failures: strategies must keep proposing
        for c in s.ask(3):
            s.tell(c.id, Result.failure("crash") if step % 2 else Result(fitness=float("nan")))
    assert len(told) == s.num_told >= 12
    assert all(failed and fitness == -1.0 for failed, fitness in told)
    assert s.state()["num_failed"] == s.num_told and s.best is None


def test_seed_reproducibility(name):
    def asked(seed: int) -> list[tuple]:
        log: list = []
        drive(build(name, seed=seed), 25, np.random.default_rng(2), log=log)
        return log

    a = asked(5)
    np.random.seed(12345)  # nothing may draw from the global RNGs
    random.seed(12345)
    assert asked(5) == a
    assert [e for e in asked(6) if e[0] == "ask"] != [e for e in a if e[0] == "ask"]


# -- registry --------------------------------------------------------------------------------------
def test_registry_names_and_settings():
    assert isinstance(make_strategy("CMA", DIM), CMAStrategy)  # ours, not nevergrad's default CMA
    assert isinstance(make_strategy("M2N2", DIM), M2N2Strategy)
    de = make_strategy("twopointsde", DIM)
    assert isinstance(de, NevergradStrategy) and de.name == "TwoPointsDE"
    assert "popsize" in settings_of("cma") and "archive_size" in settings_of("m2n2")
    assert make_strategy("m2n2", DIM, num_workers=8).name == "m2n2"  # num_workers ignored where unused
    with pytest.raises(UserError, match=r"unknown optimizer 'cmaa'; did you mean 'cma'"):
        make_strategy("cmaa", DIM)
    with pytest.raises(UserError, match=r"did you mean .*'TwoPointsDE'"):
        make_strategy("TwoPointDE", DIM)
    with pytest.raises(UserError, match=r"strategy 'cma': unknown setting 'sigma' \(known: sigma0, popsize"):
        make_strategy("cma", DIM, sigma=0.1)
    with pytest.raises(UserError, match=r"needs 'budget'"):
        make_strategy("NGOpt", DIM)
    with pytest.raises(UserError, match=r"sequential: set num_workers to 1"):
        make_strategy("NelderMead", DIM, num_workers=2)
    with pytest.raises(UserError, match=r"m2n2.archive_size"):
        make_strategy("m2n2", DIM, archive_size=1)
    for injected in ("seeds", "task_weights", "layout"):  # the driver's, through make_strategy's arguments
        assert injected not in settings_of("m2n2")
    with pytest.raises(UserError, match="unknown setting 'layout'"):
        make_strategy("m2n2", DIM, layout=None)
    assert make_strategy("random", DIM, task_weights={"t": 2.0}).name == "random"  # ignored where unused


# -- nevergrad specifics ---------------------------------------------------------------------------
def test_genome_parametrization_bounds_sigma_and_seed():
    param = genome_parametrization(4, seed=0)
    assert np.array_equal(param.value, np.full(4, 0.5))
    # one standardized unit (what optimizers move in) is 1/6 of a genome coordinate
    moved = param.spawn_child().set_standardized_data(np.array([1.0, -1.0, 0.0, 0.0]))
    np.testing.assert_allclose(moved.value, [0.5 + 1 / 6, 0.5 - 1 / 6, 0.5, 0.5])
    assert ARRAY_SIGMA == pytest.approx(1 / 6)
    # out of range: bounced back inside [0, 1]
    assert np.all((param.spawn_child().set_standardized_data(np.array([9.0, -9.0, 4.0, 0.0])).value >= 0))
    a, b = genome_parametrization(4, seed=3), genome_parametrization(4, seed=3)
    assert np.array_equal(a.random_state.rand(3), b.random_state.rand(3))


def test_cma_starts_at_the_midpoint_with_sigma_one_sixth():
    for dim in (4, 30):  # nevergrad scales CMA's step differently below and above 18 coordinates
        s = CMAStrategy(dim, seed=0, popsize=400, num_workers=400)
        assert float(s.optimizer.es.sigma0) * ARRAY_SIGMA == pytest.approx(1 / 6)
        genomes = np.array([c.genome for c in s.ask(400)])
        assert np.abs(genomes.mean(axis=0) - 0.5).max() < 0.05
        # the sample spread is sigma0 = 1/6 (slightly less: bouncing folds the tails back in)
        assert 0.145 < genomes.std() < 0.175
    shifted = CMAStrategy(4, seed=0, start=0.2, sigma0=0.05, popsize=200, num_workers=200)
    genomes = np.array([c.genome for c in shifted.ask(200)])
    assert abs(genomes.mean() - 0.2) < 0.02 and 0.04 < genomes.std() < 0.06
    with pytest.raises(UserError, match="cma: needs at least 2"):
        CMAStrategy(1)
    with pytest.raises(UserError, match="cma.sigma0"):
        CMAStrategy(3, sigma0=0)


def test_cma_minimizes_negated_fitness_and_generations_complete_despite_failures():
    s = CMAStrategy(3, seed=0, popsize=4, num_workers=4)
    losses = []
    real_tell = s.optimizer.tell
    s.optimizer.tell = lambda cand, loss: (losses.append(loss), real_tell(cand, loss))
    a, b, c, d = s.ask(4)
    s.tell(a.id, Result.success(0.7))
    s.tell(b.id, Result.failure("merge crashed"))
    s.tell(c.id, Result.success(0.1))
    assert s.optimizer.es.countiter == 0
    s.tell(d.id, Result(fitness=float("nan")))
    assert losses == [-0.7, pytest.approx(-(0.7 - 1.0)), -0.1, pytest.approx(-(0.1 - 1.0))]
    assert s.optimizer.es.countiter == 1  # the generation was told to pycma
    assert s.state()["generation"] == 1 and s.state()["popsize"] == 4
    assert [c.info["generation"] for c in (a, b, c, d)] == [0] * 4 and s.ask(1)[0].info["generation"] == 1


def test_cma_improves_on_a_simple_objective():
    s = CMAStrategy(4, seed=0, popsize=8, num_workers=8)
    target = np.array([0.2, 0.8, 0.4, 0.6])
    for _ in range(25):
        for c in s.ask(8):
            s.tell(c.id, Result.success(-float(np.sum((c.array - target) ** 2))))
    assert s.best[1] > -0.005


def test_nevergrad_asks_at_most_num_workers_in_flight():
    s = make_strategy("NGOpt", DIM, seed=0, num_workers=2, budget=50)  # may pick a sequential method
    first = s.ask(5)
    assert len(first) == 2 and s.ask(1) == []
    s.tell(first[0].id, Result.success(0.3))
    assert len(s.ask(5)) == 1
    assert len(make_strategy("DE", DIM).ask(3)) == 1  # default: one in flight, safe for any optimizer
    assert len(make_strategy("cma", DIM, popsize=4).ask(9)) == 9  # CMA: uncapped by default
    assert len(make_strategy("cma", DIM, popsize=4, num_workers=3).ask(9)) == 3


# -- M2N2: the pieces against hand-computed values ------------------------------------------------
S = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # z = [2, 1, 2]


def test_competition_fitness_hand_computed():
    np.testing.assert_allclose(competition_fitness(S, alpha=1.0, eps=0.0), [1 / 2 + 1 / 2, 1 / 2 + 1, 1 / 2])
    np.testing.assert_allclose(competition_fitness(S, alpha=0.0, eps=0.0), [2.0, 2.0, 1.0])  # plain GA
    np.testing.assert_allclose(competition_fitness(S, alpha=1.0), [1.0, 1.5, 0.5], rtol=1e-7)
    assert np.all(competition_fitness(np.zeros((2, 3))) == 0)  # unsolved samples: no division by zero


def test_attraction_hand_computed():
    np.testing.assert_allclose(attraction(S, 0, eps=0.0), [0.0, 1.0, 0.0])  # only B=1 solves what A=0 misses
    np.testing.assert_allclose(attraction(S, 2, eps=0.0), [1 / 2, 1 / 2 + 1, 0.0])
    np.testing.assert_allclose(attraction(S, 1, eps=0.0), [1 / 2, 0.0, 1 / 2])


def test_slerp_hand_computed():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(slerp(0.5, a, b), [math.sqrt(0.5), math.sqrt(0.5)])
    np.testing.assert_allclose(slerp(0.0, a, b), a, atol=1e-15)
    np.testing.assert_allclose(slerp(1.0, a, b), b, atol=1e-15)
    np.testing.assert_allclose(slerp(1 / 3, a, b), [math.cos(math.pi / 6), math.sin(math.pi / 6)])
    np.testing.assert_allclose(slerp(0.5, np.array([1.0, 1.0]), np.array([2.0, 2.0])), [1.5, 1.5])  # parallel: linear
    np.testing.assert_allclose(slerp(0.25, np.zeros(2), np.array([0.4, 0.8])), [0.1, 0.2])  # zero vector: linear
    np.testing.assert_allclose(slerp(np.array([0.0, 1.0]), a, b), [1.0, 1.0], atol=1e-15)  # per-coordinate ratio


def test_crossover_at_a_fixed_split_and_ratio():
    # coordinate 0 (< split 1) takes SLERP_0.25, coordinate 1 takes SLERP_0.75; angle pi/2
    child = crossover(np.array([1.0, 0.0]), np.array([0.0, 1.0]), split=1, w=0.25)
    np.testing.assert_allclose(child, [math.sin(3 * math.pi / 8), math.sin(3 * math.pi / 8)])
    # angle pi/4: both coefficients sin(pi/8)/sin(pi/4) = 0.5412; coordinate 0 = 1.082 -> clipped to 1
    child = crossover(np.array([1.0, 1.0]), np.array([1.0, 0.0]), split=2, w=0.5)
    c = math.sin(math.pi / 8) / math.sin(math.pi / 4)
    np.testing.assert_allclose(child, [1.0, c])
    # split 0: every coordinate takes SLERP_{1-w}
    np.testing.assert_allclose(crossover(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0, 1.0), [1.0, 0.0], atol=1e-15)


def test_parent_sampling_frequencies():
    rng = np.random.default_rng(0)
    draws = np.bincount([sample_index(rng, np.array([1.0, 2.0, 3.0, 0.0])) for _ in range(12000)], minlength=4) / 12000
    np.testing.assert_allclose(draws, [1 / 6, 2 / 6, 3 / 6, 0.0], atol=0.015)
    draws = np.bincount([sample_index(rng, np.zeros(3)) for _ in range(6000)], minlength=3) / 6000
    np.testing.assert_allclose(draws, [1 / 3] * 3, atol=0.02)


def test_least_fit_drops_the_oldest_on_ties():
    assert least_fit(S) == 2
    # rows 2 and 3 tie at 0: the oldest (row 2) goes, so a child (last row) wins ties
    assert least_fit(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])) == 2


# -- M2N2: the strategy (the paper's update rule step by step: tests/evolve/test_m2n2.py) --------
def told(s, candidate, hits):
    s.tell(candidate.id, Result.success(float(np.mean(hits)), samples={"t": list(map(float, hits))}))


def test_m2n2_fills_the_archive_then_waits_then_breeds():
    seed_genome = [0.1, 0.2, 0.3]
    s = M2N2Strategy(3, seed=0, archive_size=3, seeds=[seed_genome], random_fill=True)
    a, b, c = s.ask(5)  # the archive size, no more
    assert a.genome == tuple(seed_genome) and a.info == {"origin": "seed", "seed_index": 0, "generation": 0}
    assert b.info["origin"] == c.info["origin"] == "random" and s.ask(1) == []
    s.tell(b.id, Result.failure("crash"))          # a failed initial genome is replaced
    (d,) = s.ask(3)
    assert d.info["origin"] == "random" and d.id == "3"
    told(s, a, [1, 0, 0])
    assert s.ask(1) == []                          # one member: nothing to breed yet
    told(s, c, [0, 1, 0])
    (child,) = s.ask(1)                            # two members, nothing else to fill
    assert set(child.parents) == {a.id, c.id} and child.info["origin"] == "child"
    assert 0 <= child.info["split"] < 3 and 0 <= child.info["w"] < 1 and child.info["generation"] == 1
    assert s.archive == (a.id, c.id)


def test_m2n2_breeds_as_soon_as_two_seeds_are_in_without_random_fill():
    s = M2N2Strategy(2, seed=0, archive_size=20, seeds=[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    a, b, c = s.ask(5)                             # the seeds, then nothing: no random fill
    assert [x.info["origin"] for x in (a, b, c)] == ["seed"] * 3 and s.ask(1) == []
    told(s, a, [1, 0])
    assert s.ask(1) == []                          # one member, two more seeds in flight
    told(s, b, [0, 1])
    (child,) = s.ask(1)
    assert child.info["origin"] == "child" and set(child.parents) == {a.id, b.id}
    lone = M2N2Strategy(2, seed=0, seeds=[[1.0, 0.0]])
    x, y = lone.ask(3)                             # one seed: one random starter, so two can breed
    assert (x.info["origin"], y.info["origin"]) == ("seed", "random")
    lone.tell(y.id, Result.failure("crash"))
    assert lone.ask(1)[0].info["origin"] == "random"  # replaced until two members can exist


def test_m2n2_replacement_drops_the_least_fit_possibly_the_child():
    s = M2N2Strategy(3, seed=0, archive_size=3, random_fill=True)
    a, b, c = s.ask(3)
    told(s, a, [1, 1, 0, 0])
    told(s, b, [0, 1, 1, 0])
    told(s, c, [0, 0, 0, 1])
    (child,) = s.ask(1)
    told(s, child, [0, 1, 0, 0])                   # solves only a crowded sample: f = 1/3, lowest
    assert s.archive == (a.id, b.id, c.id) and s.state()["num_dropped"] == 1
    (child2,) = s.ask(1)
    s.tell(child2.id, Result.failure("nan loss"))  # failures never enter
    assert s.archive == (a.id, b.id, c.id)
    (child3,) = s.ask(1)
    assert child3.info["generation"] == (2 if child.id in child3.parents else 1)
    told(s, child3, [1, 0, 0, 1])                  # z = [2, 2, 1, 2]: f = 1, 3/2, 1/2, 1 -> c goes
    assert s.archive == (a.id, b.id, child3.id)
    state = s.state()
    assert [m["id"] for m in state["archive"]] == [a.id, b.id, child3.id]
    assert state["archive"][2]["parents"] == list(child3.parents)
    # each of the 4 samples weighs 1/4 (task weight 1 over 4 items)
    np.testing.assert_allclose([m["competition_fitness"] for m in state["archive"]], [0.25, 0.375, 0.375], rtol=1e-6)
    json.dumps(state)


def test_m2n2_parent_frequencies_follow_fitness_and_attraction():
    s = M2N2Strategy(4, seed=0, archive_size=3, random_fill=True)
    members = s.ask(3)
    for m, hits in zip(members, S):
        told(s, m, hits)
    children = s.ask(3000)  # asking changes nothing but the RNG: parents come from one archive
    first = np.array([int(c.parents[0]) for c in children])
    np.testing.assert_allclose(np.bincount(first, minlength=3) / len(first), np.array([1.0, 1.5, 0.5]) / 3.0, atol=0.03)
    # given parent 1 = member 2, parent 2 is 0 or 1 in proportion 1/2 : 3/2
    second = np.array([int(c.parents[1]) for c in children if c.parents[0] == "2"])
    assert abs(np.mean(second == 1) - 0.75) < 0.06
    # given parent 1 = member 0, only member 1 attracts
    assert {c.parents[1] for c in children if c.parents[0] == "0"} == {"1"}


def test_m2n2_without_attraction_draws_parent_two_by_fitness_with_replacement():
    for s in (M2N2Strategy(4, seed=0, archive_size=3, alpha=0.0, attraction=False, random_fill=True),
              M2N2Strategy(4, seed=0, archive_size=3, preset="ga", random_fill=True)):
        members = s.ask(3)
        for m, hits in zip(members, S):
            told(s, m, hits)
        children = s.ask(3000)
        first = np.bincount([int(c.parents[0]) for c in children], minlength=3) / 3000
        np.testing.assert_allclose(first, [0.4, 0.4, 0.2], atol=0.03)  # alpha 0: f = plain hit counts 2, 2, 1
        second = np.array([int(c.parents[1]) for c in children if c.parents[0] == "0"])
        # not uniform among the others (1/2 each) but by fitness, parent 1 included: 0.4, 0.4, 0.2
        np.testing.assert_allclose(np.bincount(second, minlength=3) / len(second), [0.4, 0.4, 0.2], atol=0.04)


def test_m2n2_validates_sample_layout_before_bookkeeping():
    s = M2N2Strategy(2, seed=0, archive_size=2)
    a, b = s.ask(2)
    told(s, a, [1, 0])
    with pytest.raises(ValueError, match="one layout"):
        told(s, b, [1, 0, 1])
    told(s, b, [0, 1])  # the rejected tell left no trace
    assert s.archive == (a.id, b.id) and s.num_told == 2
    fallback = M2N2Strategy(2, seed=0, archive_size=2)
    c, _ = fallback.ask(2)
    fallback.tell(c.id, Result.success(0.4))  # no samples: the fitness is the one sample
    assert fallback.state()["layout"] == [["<fitness>", 1]]


def test_m2n2_settings_are_validated():
    with pytest.raises(UserError, match=r"m2n2.seeds\[0\]"):
        M2N2Strategy(2, seeds=[[0.5, 1.5]])
    with pytest.raises(UserError, match="m2n2.alpha"):
        M2N2Strategy(2, alpha=-1)
    with pytest.raises(UserError, match="m2n2.preset: unknown preset 'gaa'"):
        M2N2Strategy(2, preset="gaa")
    with pytest.raises(UserError, match="m2n2.attraction: True contradicts preset 'ga'"):
        M2N2Strategy(2, preset="ga", attraction=True)
    with pytest.raises(UserError, match="m2n2.score_transform"):
        M2N2Strategy(2, score_transform="zscore")
    with pytest.raises(UserError, match="task 'x' has weight -1"):
        M2N2Strategy(2, task_weights={"x": -1})


# -- torch-free ------------------------------------------------------------------------------------
def test_strategies_import_without_torch():
    code = """
import sys
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, BlockTorch())
import evolve.strategies, evolve.strategies.base, evolve.strategies.m2n2, evolve.strategies.random_search
import evolve.strategies.nevergrad_strategy, evolve.strategies.registry
import search_spaces.parameter_space
s = evolve.strategies.make_strategy("cma", 3, seed=0)
s.tell(s.ask(1)[0].id, evolve.strategies.Result.success(0.5))
assert "torch" not in sys.modules, "torch was imported"
"""
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
