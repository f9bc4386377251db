"""`evolve runs / status / leaderboard / show / compare` against a real small M2N2 run in a SQLite file."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest

from evolve.cli import main
from evolve.store import CandidateKind, EvaluationStatus, Store
from tests.evolve.inspect_runs import shared_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(family, tmp_path_factory):
    return shared_run(family, tmp_path_factory)


def cli_json(capsys, *argv) -> object:
    capsys.readouterr()
    assert main([*argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_runs_lists_budget_used_and_best_fitness(run, capsys):
    url, run_id = run
    (row,) = cli_json(capsys, "runs", "--store", url)
    store = Store(url)
    searched = {c.id for c in store.list_candidates(run_id, kind="search")}
    fitness = [e.fitness for e in store.list_evaluations(run_id, "COMPLETE") if e.candidate_id in searched]
    assert row["id"] == run_id and row["status"] == "FINISHED" and row["name"] == "inspect"
    assert (row["budget_used"], row["budget"]) == (12, 12)
    assert row["best_fitness"] == max(fitness)
    assert row["created"] and row["last_heartbeat"] and row["last_heartbeat"] >= row["created"]


def test_leaderboard_top_limit_csv_task_and_parents_beside_merges(run, capsys):
    url, run_id = run
    store = Store(url)
    top = cli_json(capsys, "leaderboard", run_id, "--top", "3", "--store", url)
    limit = cli_json(capsys, "leaderboard", run_id, "--limit", "3", "--store", url)
    assert top == limit and [c["rank"] for c in top["candidates"]] == [1, 2, 3]
    merged = [c for c in cli_json(capsys, "leaderboard", run_id, "--top", "100", "--store", url)["candidates"]
              if c["parents"]]
    assert merged, "M2N2 children carry their parents"
    child = merged[0]
    for parent in child["parent_scores"]:
        (ev,) = store.list_evaluations(run_id, "COMPLETE", candidate_id=parent["id"])
        assert parent["tasks"]["analytic"] == ev.metrics["validation"]["analytic"]["score"]
    assert [p["id"] for p in child["parent_scores"]] == list(store.get_candidate(child["id"]).parents)
    assert set(top["parents"]) == {"base", "variant_0", "variant_1"}

    capsys.readouterr()
    assert main(["leaderboard", run_id, "--split", "test", "--top", "2", "--format", "csv", "--store", url]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["kind"] for r in rows] == ["reference"] * 3 + ["search"] * 2
    assert rows[3]["id"] == top["candidates"][0]["id"] and rows[3]["rank"] == "1"
    assert float(rows[3]["analytic"]) == pytest.approx(
        store.get_evaluation(store.list_evaluations(run_id, "COMPLETE", candidate_id=rows[3]["id"])[0].id)
        .metrics["test"]["analytic"]["score"], abs=0)

    by_task = cli_json(capsys, "leaderboard", run_id, "--task", "analytic", "--top", "5", "--store", url)
    scores = [c["tasks"]["analytic"] for c in by_task["candidates"]]
    assert scores == sorted(scores, reverse=True) and by_task["ranked_by"] == "analytic on validation"

    capsys.readouterr()
    assert main(["leaderboard", run_id, "--task", "nope", "--store", url]) == 2
    assert capsys.readouterr().err.strip() == f"error: run {run_id}: no task 'nope' (tasks: analytic)"
    assert main(["leaderboard", run_id, "--top", "0", "--store", url]) == 2


def test_table_output_shows_parents_and_task_columns(run, capsys):
    url, run_id = run
    capsys.readouterr()
    assert main(["leaderboard", run_id, "--top", "3", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "analytic" in out and "variant_0" in out and "parent" in out


def test_show_gives_recipe_per_group_samples_and_lineage(run, capsys):
    url, run_id = run
    store = Store(url)
    child = next(c for c in store.list_candidates(run_id, kind="search") if c.parents)
    data = cli_json(capsys, "show", child.id, "--store", url)
    weights = {r["model"]: r["values"] for r in data["recipe_table"] if r["parameter"] == "weight"}
    for entry in child.recipe["models"]:
        assert weights[entry["model"].rsplit("/", 1)[-1]] == entry["parameters"]["weight"]["groups"]
    assert all(len(v) == 2 for v in weights.values())  # two layer groups
    (ev,) = store.list_evaluations(run_id, "COMPLETE", candidate_id=child.id)
    assert data["samples"]["validation"] == store.get_samples(ev.id, "validation")
    assert data["tasks"]["validation"]["analytic"] == ev.fitness
    assert {a["id"] for a in data["lineage"] if a["depth"] == 1} == set(child.parents)
    assert [p["id"] for p in data["parents"]] == list(child.parents)

    capsys.readouterr()
    assert main(["show", child.id, "--store", url]) == 0
    out = capsys.readouterr().out
    assert "g0" in out and "g1" in out and "solved" in out and "lineage" in out


def test_compare_names_the_samples_each_solves_that_the_other_misses(run, capsys):
    url, run_id = run
    store = Store(url)
    board = store.leaderboard(run_id)
    best = next(e for e in board if e.candidate.kind == CandidateKind.SEARCH)
    worst = board[-1]
    data = cli_json(capsys, "compare", best.candidate.id, worst.candidate.id, "--store", url)
    sa = store.get_samples(best.evaluation.id)["analytic"]
    sb = store.get_samples(worst.evaluation.id)["analytic"]
    got = data["samples"]["validation"]["analytic"]
    assert got["only_a"] == [i for i in range(len(sa)) if sa[i] > 0 and sb[i] <= 0]
    assert got["only_b"] == [i for i in range(len(sa)) if sb[i] > 0 and sa[i] <= 0]
    assert got["only_a"], "the best solves questions the worst misses"
    assert data["tasks"]["validation"]["analytic"] == {"a": best.score, "b": worst.score}
    capsys.readouterr()
    assert main(["compare", best.candidate.id, worst.candidate.id, "--store", url]) == 0
    assert "only A solves" in capsys.readouterr().out


def test_status_of_a_finished_run_and_of_one_with_a_busy_worker(run, capsys, tmp_path):
    url, run_id = run
    data = cli_json(capsys, "status", run_id, "--store", url)
    assert data["evaluations_done"] == 12 and data["budget"] == 12 and data["failures"] == 0
    assert data["best"]["id"] == next(e for e in Store(url).leaderboard(run_id)
                                      if e.candidate.kind == CandidateKind.SEARCH).candidate.id
    assert {w["state"] for w in data["workers"]} == {"idle"} and len(data["workers"]) == 2
    assert data["evaluations_per_hour"] > 0

    live = Store(f"sqlite:///{tmp_path / 'live.db'}")
    r = live.create_run("live", {"budget": {"max_evaluations": 10}, "resources": {"workers": 2}})
    done = live.add_candidate(r.id, (0.1,), {"merge_method": "linear", "models": [{"model": "a"}]})
    busy = live.add_candidate(r.id, (0.2,), {"merge_method": "linear", "models": [{"model": "b"}]})
    live.finish_evaluation(live.start_evaluation(done.id, worker="worker-0"), 0.5, {}, None,
                           {"merge_seconds": 0.0, "eval_seconds": 0.1}, scores={"validation": 0.5})
    live.start_evaluation(busy.id, worker="worker-1")
    data = cli_json(capsys, "status", r.id, "--store", live.url)
    states = {w["worker"]: (w["state"], w["candidate"]) for w in data["workers"]}
    assert states == {"worker-0": ("idle", None), "worker-1": ("evaluating", busy.id)}
    assert data["evaluations_done"] == 1 and data["best"]["fitness"] == 0.5
    capsys.readouterr()
    assert main(["status", r.id, "--store", live.url]) == 0
    assert "evaluating" in capsys.readouterr().out
    assert EvaluationStatus.RUNNING in {e.status for e in live.list_evaluations(r.id)}


@pytest.mark.parametrize("argv", [["show", "c-nope"], ["compare", "c-nope", "c-nada"], ["status", "r-nope"],
                                  ["leaderboard", "r-nope"]])
def test_unknown_ids_are_one_line_errors(run, capsys, argv):
    url, _ = run
    capsys.readouterr()
    assert main([*argv, "--store", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "nope" in err


def test_status_watch_redraws_until_the_run_stops(tmp_path, capsys):
    import threading

    store = Store(f"sqlite:///{tmp_path / 'watch.db'}")
    r = store.create_run("watched", {"budget": {"max_evaluations": 4}, "resources": {"workers": 1}})
    cand = store.add_candidate(r.id, (0.3,), {"merge_method": "linear", "models": [{"model": "a"}]})

    def drive():
        time.sleep(0.6)
        store.finish_evaluation(store.start_evaluation(cand.id, worker="worker-0"), 0.25, {}, None,
                                {"merge_seconds": 0.0, "eval_seconds": 0.1}, scores={"validation": 0.25})
        time.sleep(0.6)
        store.set_run_status(r.id, "FINISHED")

    driver = threading.Thread(target=drive)
    driver.start()
    started = time.monotonic()
    assert main(["status", r.id, "--watch", "0.2", "--store", store.url]) == 0
    driver.join()
    assert time.monotonic() - started >= 1.2  # it kept watching until the run stopped
    out = capsys.readouterr().out
    assert "FINISHED" in out and "1/4" in out and "0.250" in out
