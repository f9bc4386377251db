"""Multi-objective search: Pareto dominance (`evolve.pareto`), the NSGA-II strategy on analytic
problems against random search, and `evolve leaderboard --pareto` / `evolve export --candidate`
of a front member on a real HF + lm-eval run over the embedded zoo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evolve.pareto import crowding_distance, dominates, non_dominated_sort, pareto_front
from evolve.strategies import Result, make_strategy
from evolve.strategies.pareto import ParetoStrategy, polynomial_mutation, sbx
from search_spaces.errors import UserError


# -- dominance -------------------------------------------------------------------------------------
def test_front_of_a_simple_set():
    points = [[1, 0], [0, 1], [0.5, 0.5], [0.4, 0.4], [1, 0]]
    assert pareto_front(points).tolist() == [0, 1, 2, 4]  # the duplicate [1, 0] stays: equals never dominate
    assert dominates(points)[2, 3] and not dominates(points)[0, 4] and not dominates(points)[4, 0]


def test_ties_on_one_objective_are_settled_by_the_other():
    # equal first score: the larger second one dominates; equal in all: both stay
    assert pareto_front([[0.5, 0.2], [0.5, 0.3], [0.2, 0.9]]).tolist() == [1, 2]
    assert pareto_front([[0.5, 0.3], [0.5, 0.3]]).tolist() == [0, 1]


def test_one_objective_front_is_every_point_at_the_maximum():
    assert pareto_front([[0.1], [0.7], [0.3], [0.7]]).tolist() == [1, 3]
    assert pareto_front([[2.0]]).tolist() == [0]
    assert pareto_front(np.zeros((0, 2))).tolist() == [] == pareto_front([]).tolist()


def test_the_sweep_agrees_with_the_dominance_matrix_on_many_ties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, m = int(rng.integers(0, 30)), int(rng.integers(1, 5))
        points = rng.integers(0, 4, size=(n, m)).astype(float)  # coarse: ties and copies everywhere
        assert pareto_front(points).tolist() == np.flatnonzero(~dominates(points).any(axis=0)).tolist()


def test_bad_points_are_refused():
    with pytest.raises(ValueError, match="finite"):
        pareto_front([[0.1, float("nan")]])
    with pytest.raises(ValueError, match="shape"):
        pareto_front([0.1, 0.2])


def test_non_dominated_sort_and_crowding_by_hand():
    points = np.array([[3, 0], [2, 2], [0, 3], [1, 1], [0, 0], [1.8, 0.5]])
    fronts = non_dominated_sort(points)
    assert [f.tolist() for f in fronts] == [[0, 1, 2], [3, 5], [4]]
    # within the first front (x sorted 0, 2, 3 and y 0, 2, 3): the middle point's gaps are (3 - 0) / 3 twice
    assert crowding_distance(points[fronts[0]]).tolist() == [np.inf, 2.0, np.inf]
    assert crowding_distance([[1, 1], [1, 1], [1, 1]]).tolist() == [np.inf, 0.0, 0.0]  # copies add no spread
    # copies of an earlier point get 0; the rest are spread as if the copies were not there
    assert crowding_distance([[0, 2], [1, 1], [0, 2], [2, 0], [1, 1]]).tolist() == [np.inf, 2.0, 0.0, np.inf, 0.0]
    assert crowding_distance([[0, 1, 5], [1, 0, 5], [0.5, 0.5, 5]]).tolist() == [np.inf, np.inf, 2.0]  # no range in z
    brute = [i for i in range(len(points)) if not any(np.all(points[j] >= points[i]) and np.any(points[j] > points[i])
                                                      for j in range(len(points)))]
    assert pareto_front(points).tolist() == brute == fronts[0].tolist()


def test_operators_stay_in_the_box_and_move_only_masked_coordinates():
    rng = np.random.default_rng(0)
    p1, p2 = rng.random(50), rng.random(50)
    mask = rng.random(50) < 0.5
    child = sbx(p1, p2, 2.0, mask, rng.random(50))
    assert np.all((0 <= child) & (child <= 1)) and np.array_equal(child[~mask], p1[~mask])
    assert not np.array_equal(child[mask], p1[mask])
    mutated = polynomial_mutation(np.ones(50), 2.0, mask, rng.random(50))
    assert np.all(mutated[~mask] == 1.0) and np.all((0 <= mutated) & (mutated <= 1)) and mutated[mask].min() < 1.0


# -- the strategy on analytic problems -------------------------------------------------------------
def zdt1(x: np.ndarray) -> tuple[float, float]:
    """ZDT1 (both objectives negated: maximised); front at x[1:] = 0, f2 = -(1 - sqrt(-f1))."""
    g = 1.0 + 9.0 * x[1:].mean()
    return -float(x[0]), -float(g * (1.0 - np.sqrt(x[0] / g)))


def spheres(x: np.ndarray) -> tuple[float, float]:
    """Two competing optima at 0.2 and 0.8 in every coordinate."""
    return -4.0 * float(np.mean((x - 0.2) ** 2)), -4.0 * float(np.mean((x - 0.8) ** 2))


def hypervolume(points: np.ndarray, ref: tuple[float, float]) -> float:
    """The area two-objective ``points`` dominate above ``ref`` (maximisation)."""
    area, floor = 0.0, ref[1]
    for a, b in sorted((tuple(p) for p in points if p[0] > ref[0] and p[1] > ref[1]), key=lambda p: -p[0]):
        if b > floor:
            area, floor = area + (a - ref[0]) * (b - floor), b
    return area


def search(name: str, problem, seed: int, budget: int = 200, dim: int = 6, **settings) -> np.ndarray:
    """An asynchronous run (3 in flight, told out of order); returns every point scored."""
    s = make_strategy(name, dim, seed=seed, task_weights={"a": 1.0, "b": 1.0}, **settings)
    rng, in_flight, points = np.random.default_rng(seed), [], []
    while s.num_told < budget:
        in_flight += s.ask(3 - len(in_flight))
        c = in_flight.pop(int(rng.integers(len(in_flight))))
        a, b = problem(c.array)
        points.append((a, b))
        s.tell(c.id, Result.success(a + b, samples={"a": [a], "b": [b]}))
    return np.array(points)


@pytest.mark.parametrize("problem, ref, budget, dim", [(zdt1, (-1.0, -6.0), 200, 6), (spheres, (-1.0, -1.0), 300, 6)])
def test_front_beats_random_search_at_equal_budget(problem, ref, budget, dim):
    seeds = range(3)
    fronts = {name: [(p := search(name, problem, s, budget, dim))[pareto_front(p)] for s in seeds]
              for name in ("pareto", "random")}
    ours = [hypervolume(f, ref) for f in fronts["pareto"]]
    theirs = [hypervolume(f, ref) for f in fronts["random"]]
    assert min(ours) > max(theirs), (ours, theirs)  # every seed of ours beats every seed of random search
    for front, other in zip(fronts["pareto"], fronts["random"]):
        # most of random search's front is dominated by ours, little of ours by theirs
        beaten = dominates(np.vstack([front, other]))[: len(front), len(front):].any(axis=0).mean()
        lost = dominates(np.vstack([other, front]))[: len(other), len(other):].any(axis=0).mean()
        assert beaten > 0.5 > lost, (beaten, lost)


def test_seeds_first_then_a_random_population_then_children():
    seeds = [[0.1] * 4, [0.9] * 4]
    s = make_strategy("pareto", 4, seed=1, seeds=seeds, task_weights={"a": 1.0, "b": 0.5}, population=4)
    first = s.ask(4)
    assert [list(c.genome) for c in first[:2]] == seeds and [c.info["origin"] for c in first] == \
        ["seed", "seed", "random", "random"]
    assert s.ask(1) == []  # the population is in flight: wait
    for c in first:
        s.tell(c.id, Result.success(0.0, samples={"a": [c.array[0]], "b": [1 - c.array[0], 0.0]}))
    (child,) = s.ask(1)
    assert child.info["origin"] == "child" and set(child.parents) <= set(s.archive) and child.info["generation"] == 1
    assert s.objectives == ("a", "b") and s.objective_values("0") == pytest.approx((0.1, 0.45))
    state = s.state()
    json.dumps(state)
    assert state["front"] == list(s.front) and {m["id"] for m in state["archive"]} == set(s.archive)


def test_the_archive_keeps_the_front_and_drops_the_most_crowded_of_the_last_front():
    s = ParetoStrategy(2, seed=0, population=3, objectives=["a", "b"])
    asked = s.ask(3)
    values = [(1.0, 0.0), (0.0, 1.0), (0.2, 0.2)]
    for c, (a, b) in zip(asked, values):
        s.tell(c.id, Result.success(a + b, samples={"a": [a], "b": [b]}))
    (child,) = s.ask(1)
    s.tell(child.id, Result.success(1.0, samples={"a": [0.5], "b": [0.5]}))  # dominates (0.2, 0.2)
    assert s.archive == ("0", "1", child.id) and s.front == s.archive
    (other,) = s.ask(1)
    s.tell(other.id, Result.success(0.0, samples={"a": [0.0], "b": [0.0]}))  # dominated: out at once
    assert s.archive == ("0", "1", child.id)
    failed = s.ask(1)[0]
    s.tell(failed.id, Result.failure("boom"))
    assert s.archive == ("0", "1", child.id)
    (copy,) = s.ask(1)
    s.tell(copy.id, Result.success(1.0, samples={"a": [0.5], "b": [0.5]}))  # same scores as child: adds no spread
    assert s.archive == ("0", "1", child.id)
    (spread,) = s.ask(1)
    # on the front too, but more crowded: distance (1 - 0.5) + (0.5 - 0) = 1 against (0.5,0.5)'s 0.8 + 0.7
    s.tell(spread.id, Result.success(1.1, samples={"a": [0.8], "b": [0.3]}))
    assert s.archive == ("0", "1", child.id)


def test_objectives_pick_tasks_and_are_checked():
    s = make_strategy("pareto", 3, task_weights={"t": 1.0, "u": 1.0, "v": 1.0}, objectives=["v", "t"])
    assert s.objectives == ("v", "t")
    (c,) = s.ask(1)
    s.tell(c.id, Result.success(0.5, samples={"t": [1.0, 0.0], "u": [0.0], "v": [1.0]}))
    assert s.objective_values(c.id) == (1.0, 0.5)
    with pytest.raises(UserError, match="task 'w' is not one of the run's tasks .t, u, v.; the setting"):
        make_strategy("pareto", 3, task_weights={"t": 1.0, "u": 1.0, "v": 1.0}, objectives=["w"])
    with pytest.raises(UserError, match="list of distinct task names"):
        make_strategy("pareto", 3, objectives="t")
    (d,) = s.ask(1)
    with pytest.raises(ValueError, match="no per-sample scores for objective task 'v'"):
        s.tell(d.id, Result.success(0.5, samples={"t": [1.0]}))
    fallback = make_strategy("pareto", 3)  # outside a run and without samples: the fitness alone
    (e,) = fallback.ask(1)
    fallback.tell(e.id, Result.success(0.25))
    assert fallback.objectives == ("<fitness>",) and fallback.objective_values(e.id) == (0.25,)


def test_preflight_names_an_unknown_objective(family):
    from evolve.config import RunConfig
    from evolve.preflight import check_run
    from tests.fixtures.run_configs import config_dict

    data = config_dict(family, strategy={"name": "pareto", "seed": 0, "settings": {"objectives": ["analytic", "nope"]}})
    with pytest.raises(UserError, match=r"strategy\.settings\.objectives: task 'nope' is not one of the "
                                        r"run's tasks \(analytic\)"):
        check_run(RunConfig.model_validate(data))
    check_run(RunConfig.model_validate(config_dict(family, strategy={"name": "pareto", "seed": 0, "settings": {}})))


# -- leaderboard --pareto and export of a front member on a real zoo run ---------------------------
ZOO_PARETO = {
    "name": "zoo-pareto",
    "models": {"base": "zoo:base", "sources": ["zoo:arith", "zoo:cipher"]},
    "space": {"merge_method": "task_arithmetic", "layer_groups": 2, "search": {"weight": [0.0, 1.5]}},
    "strategy": {"name": "pareto", "seed": 0, "settings": {"population": 4}},
    "budget": {"max_evaluations": 8},
    "tasks": [{"name": "zoo_target", "metric": "exact_match", "limit": 8},
              {"name": "zoo_arith", "metric": "exact_match", "weight": 0.5, "limit": 8},
              {"name": "zoo_cipher", "metric": "exact_match", "weight": 0.5, "limit": 8}],
    "evaluation": {"backend": "hf", "batch_size": 8},
    "resources": {"workers": 1},
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from evolve import runner
    from evolve.config import RunConfig
    from evolve.pool import connect
    from evolve.preflight import check_run
    from evolve.store import Store

    connect(None, num_cpus=2)
    url = f"sqlite:///{tmp_path_factory.mktemp('zoo-pareto') / 'runs.db'}"
    with Store(url) as store:
        outcome = runner.start(store, check_run(RunConfig.model_validate(ZOO_PARETO)), progress=False)
    return url, outcome.run_id


def board(capsys, *argv) -> dict:
    from evolve.cli import main

    capsys.readouterr()
    assert main(["leaderboard", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def validation_scores(store, run_id: str, tasks: list[str]) -> dict[str, np.ndarray]:
    from evolve.store import CandidateKind

    searched = {c.id for c in store.list_candidates(run_id, kind=CandidateKind.SEARCH)}
    return {e.candidate_id: np.array([e.metrics["validation"][t]["exact_match"] for t in tasks])
            for e in store.list_evaluations(run_id, "COMPLETE") if e.candidate_id in searched}


@pytest.mark.slow
def test_leaderboard_pareto_shows_exactly_the_non_dominated_merges(zoo, capsys):
    from evolve.cli import main
    from evolve.store import Store

    url, run_id = zoo
    tasks = ["zoo_target", "zoo_arith", "zoo_cipher"]
    scores = validation_scores(Store(url), run_id, tasks)
    for objectives in (tasks, ["zoo_target", "zoo_cipher"]):
        argv = [run_id, "--pareto", "--top", "100", "--store", url]
        data = board(capsys, *argv, *(["--objectives", ",".join(objectives)] if objectives != tasks else []))
        assert data["pareto"] == {"objectives": objectives, "split": "validation"}
        cols = [tasks.index(t) for t in objectives]
        shown = {c["id"] for c in data["candidates"]}

        def beaten(i):
            return any(np.all(v[cols] >= scores[i][cols]) and np.any(v[cols] > scores[i][cols])
                       for v in scores.values())

        assert shown == {i for i in scores if not beaten(i)}, (shown, scores)
        fitness = [c["fitness"] for c in data["candidates"]]
        assert fitness == sorted(fitness, reverse=True) and [c["rank"] for c in data["candidates"]] == \
            list(range(1, len(shown) + 1))
        assert set(data["parents"]) == {"base", "arith", "cipher"}
    full = board(capsys, run_id, "--top", "100", "--store", url)
    assert full["pareto"] is None and len(full["candidates"]) == len(scores) >= len(shown)

    capsys.readouterr()
    assert main(["leaderboard", run_id, "--pareto", "--store", url]) == 0
    assert "Pareto front over zoo_target, zoo_arith, zoo_cipher" in " ".join(capsys.readouterr().out.split())
    assert main(["leaderboard", run_id, "--pareto", "--objectives", "zoo_target,nope", "--store", url]) == 2
    assert "no task 'nope'" in capsys.readouterr().err
    assert main(["leaderboard", run_id, "--objectives", "zoo_target", "--store", url]) == 2
    assert "--objectives: only with --pareto" in capsys.readouterr().err


@pytest.mark.slow
def test_export_takes_any_front_member(zoo, capsys, tmp_path):
    from evolve.cli import main
    from evolve.store import Store
    from search_spaces.recipe import Recipe

    url, run_id = zoo
    front = board(capsys, run_id, "--pareto", "--store", url)["candidates"]
    member = front[-1]  # the front's lowest fitness: not what a plain export would pick
    assert len(front) > 1 and member["id"] != board(capsys, run_id, "--store", url)["candidates"][0]["id"]
    out = tmp_path / "member"
    assert main(["export", run_id, "--candidate", member["id"], "--out", str(out), "--verify", "--quiet",
                 "--store", url]) == 0
    captured = capsys.readouterr()
    assert "verified: the exported model reproduces the stored scores" in captured.out + captured.err
    assert Recipe.from_file(out / "recipe.yaml").hash == Store(url).get_candidate(member["id"]).recipe_hash
    assert f"--candidate {member['id']}" in (out / "README.md").read_text()
