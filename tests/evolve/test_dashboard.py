"""The web dashboard: a real uvicorn server (the `evolve dashboard` command in a subprocess) over a
real SQLite store holding real runs, driven by a real headless Chromium through Playwright.

Screenshots land in the pytest temp folder (`screenshots/`), or in $EVOLVE_SCREENSHOTS if set.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from evolve.pareto import pareto_front
from evolve.report import compare_data, leaderboard_data
from evolve.fidelity import FLAT_LOW_RESULTS
from evolve.store import CandidateKind, EvaluationStatus, Fidelity, RunStatus, Store, StoreError
from tests.evolve.inspect_runs import m2n2_config, shared_run

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("EVOLVE_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "s3cret-token-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`evolve dashboard` in a subprocess, ready once it answers."""

    def __init__(self, url: str, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "evolve.cli", "dashboard", "--store", url,
                                      "--port", str(self.port), "--poll", "0.5", *args],
                                     env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dashboard exited: {self.proc.stdout.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("dashboard did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


@pytest.fixture(scope="module")
def run(family, tmp_path_factory):
    return shared_run(family, tmp_path_factory)


@pytest.fixture(scope="module")
def server(run):
    s = Server(run[0])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ["EVOLVE_SCREENSHOTS"]) if os.environ.get("EVOLVE_SCREENSHOTS") else \
        tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM}: no Chromium (CI installs Debian's chromium in .ci/run)"
    with sync_playwright() as p:
        # A persistent context on a fresh, empty profile folder: the --user-data-dir of this module.
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=FLAGS, viewport={"width": 1400, "height": 1600})
        yield context
        context.close()


@pytest.fixture
def page(browser):
    p = browser.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    p.errors = errors
    yield p
    assert not errors, errors
    p.close()


def best_search(store: Store, run_id: str):
    return next(e for e in store.leaderboard(run_id) if e.candidate.kind == CandidateKind.SEARCH)


def test_run_page_draws_the_store_figures(server, run, page, shots):
    url, run_id = run
    store = Store(url)
    page.goto(f"{server.base}/runs/{run_id}")
    page.wait_for_function("document.querySelector('#parallel .parcoords') && document.getElementById('timeline').data")
    best = best_search(store, run_id)
    assert page.inner_text("#done") == "12" and page.inner_text("#budget") == "12"
    assert page.inner_text("#best") == f"{best.score:.4f}" and page.inner_text("#best-link") == best.candidate.id
    assert page.inner_text("#status") == "FINISHED"
    history = page.evaluate("document.getElementById('history-n').data[1].y")
    assert len(history) == 12 and history[-1] == pytest.approx(best.score, rel=1e-5) and history == sorted(history)
    complete = [e for e in store.list_evaluations(run_id, "COMPLETE")
                if store.get_candidate(e.candidate_id).kind == CandidateKind.SEARCH]
    scatter = page.evaluate("document.getElementById('scatter').data[0].y")
    assert sorted(scatter) == pytest.approx(sorted(e.fitness for e in complete), rel=1e-5)
    labels = page.evaluate("document.getElementById('parallel').data[0].dimensions.map(d => d.label)")
    assert labels == ["variant_0.weight[g0]", "variant_1.weight[g0]", "variant_0.weight[g1]",
                      "variant_1.weight[g1]", "fitness"]
    workers = page.evaluate("document.getElementById('timeline').data.flatMap(t => t.y)")
    assert set(workers) - {None} == {"worker-0", "worker-1"}
    importance = page.evaluate("document.getElementById('importance').data[0].x")
    assert len(importance) == 4 and all(0 <= v <= 1 for v in importance) and max(importance) > 0
    tasks = page.inner_text("#tasks")
    assert all(name in tasks for name in ("base", "variant_0", "variant_1", best.candidate.id))
    assert page.locator("#workers tr").count() == 3
    page.screenshot(path=str(shots / "run.png"), full_page=True)


def test_candidate_page_heatmap_samples_and_lineage(server, run, page, shots):
    url, run_id = run
    store = Store(url)
    child = best_search(store, run_id).candidate
    if not child.parents:
        child = next(c for c in store.list_candidates(run_id, kind="search") if c.parents)
    page.goto(f"{server.base}/candidates/{child.id}")
    page.wait_for_function("document.getElementById('heatmap').data && document.getElementById('samples').data")
    z = page.evaluate("document.getElementById('heatmap').data[0].z")
    models = page.evaluate("document.getElementById('heatmap').data[0].y")
    expected = {m["model"].rsplit("/", 1)[-1]: m["parameters"]["weight"]["groups"] for m in child.recipe["models"]}
    assert dict(zip(models, z)) == expected
    (ev,) = store.list_evaluations(run_id, "COMPLETE", candidate_id=child.id)
    samples = store.get_samples(ev.id)["analytic"]
    assert page.evaluate("document.getElementById('samples').data[0].z") == [samples]
    assert f"{sum(1 for s in samples if s > 0)}/{len(samples)}" in page.inner_text("#sample-results")
    lineage = page.inner_text("#lineage")
    assert all(p in lineage for p in child.parents)
    page.screenshot(path=str(shots / "candidate.png"), full_page=True)
    page.click(f"#parents a[href='/candidates/{child.parents[0]}']")
    page.wait_for_url(f"**/candidates/{child.parents[0]}")
    assert page.inner_text("#cand-id") == child.parents[0]


def test_compare_and_runs_pages(server, run, page, shots):
    url, run_id = run
    store = Store(url)
    board = store.leaderboard(run_id)
    a, b = best_search(store, run_id).candidate.id, board[-1].candidate.id
    page.goto(f"{server.base}/compare?a={a}&b={b}")
    page.wait_for_function("document.getElementById('compare-chart').data")
    expected = compare_data(store, a, b)["samples"]["validation"]["analytic"]
    assert page.inner_text("#compare-samples .only-a") == f"{len(expected['only_a'])} {expected['only_a']}"
    assert page.evaluate("document.getElementById('compare-chart').data[0].y[0]") == best_search(store, run_id).score
    assert page.evaluate("document.getElementById('compare-chart').data[1].y[0]") == board[-1].score
    page.screenshot(path=str(shots / "compare.png"), full_page=True)
    page.goto(f"{server.base}/")
    assert run_id in page.inner_text("#runs") and "12/12" in page.inner_text("#runs")
    page.goto(f"{server.base}/runs/r-nope")
    assert "r-nope" in page.inner_text("#error")
    page.errors.clear()  # the 404 itself is logged as a console error


def test_assets_are_local_and_the_app_is_read_only(server, run):
    status, html, _ = get(f"{server.base}/runs/{run[1]}")
    assert status == 200 and "//cdn" not in html and 'src="/static/plotly.min.js"' in html
    status, js, headers = get(f"{server.base}/static/plotly.min.js")
    assert status == 200 and len(js) > 1_000_000 and headers["content-type"].startswith("application/javascript")
    request = urllib.request.Request(f"{server.base}/api/runs", method="POST", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405
    api = json.loads(get(f"{server.base}/api/runs/{run[1]}")[1])
    assert api["status"]["evaluations_done"] == 12


def test_token_is_required_beyond_localhost_and_checked_on_every_request(run, tmp_path):
    url, run_id = run
    refused = subprocess.run([sys.executable, "-m", "evolve.cli", "dashboard", "--store", url, "--host", "0.0.0.0"],
                             capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "EVOLVE_DASHBOARD_TOKEN"})
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "token" in refused.stderr
    guarded = Server(url, "--host", "0.0.0.0", env={"EVOLVE_DASHBOARD_TOKEN": TOKEN})
    try:
        for path in ("/", f"/runs/{run_id}", f"/api/runs/{run_id}", "/static/plotly.min.js"):
            assert get(guarded.base + path)[0] == 401
            assert get(guarded.base + path + "?token=wrong-token")[0] == 401
        status, _, headers = get(f"{guarded.base}/?token={TOKEN}")
        assert status == 200 and "evolve_dashboard_token" in headers["set-cookie"]
        cookie = headers["set-cookie"].split(";")[0]
        assert get(f"{guarded.base}/api/runs/{run_id}", {"Cookie": cookie})[0] == 200
        assert get(f"{guarded.base}/api/runs", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    finally:
        guarded.stop()


def test_the_store_is_opened_read_only(run, postgres_server):
    url, run_id = run
    with Store(url, read_only=True) as ro:
        assert ro.get_run(run_id).id == run_id
        with pytest.raises(StoreError, match="readonly"):
            ro.create_run("nope", {})
    pg = postgres_server.new_database()
    Store(pg).create_run("pg", {}).id
    with Store(pg, read_only=True) as ro:
        assert [r.name for r in ro.list_runs()] == ["pg"]
        with pytest.raises(StoreError, match="read-only"):
            ro.create_run("nope", {})


def test_run_page_updates_live_while_the_run_goes(run, tmp_path, browser, shots, family):
    """A run driven by the real runner in a background thread (on the Ray cluster the shared run
    started); the open page follows it by polling, without a reload."""
    import threading

    from evolve import runner
    from evolve.config import RunConfig
    from evolve.preflight import check_run

    url = f"sqlite:///{tmp_path / 'live.db'}"
    store = Store(url)
    checked = check_run(RunConfig.model_validate(m2n2_config(family, name="live", budget={"max_evaluations": 8},
                                                             evaluation={"engine_kwargs": {"delay": 0.8}})))
    outcome: list = []
    driver = threading.Thread(target=lambda: outcome.append(runner.start(store, checked, progress=False)))
    driver.start()
    server = None
    try:
        deadline = time.monotonic() + 60
        while not store.list_runs() and time.monotonic() < deadline:
            time.sleep(0.1)
        (live,) = store.list_runs()
        server = Server(url)
        page = browser.new_page()
        page.goto(f"{server.base}/runs/{live.id}")
        first = int(page.inner_text("#done"))
        assert page.inner_text("#status") == "RUNNING" and first < 8
        page.screenshot(path=str(shots / "live-running.png"))  # the viewport: quick, while it still runs
        # Record every (done, status) the page shows, from inside the page: a reload would lose it.
        page.evaluate("""() => { window.__seen = [];
            new MutationObserver(() => window.__seen.push([+document.getElementById('done').textContent,
                                                          document.getElementById('status').textContent]))
              .observe(document.querySelector('main'), {subtree: true, childList: true, characterData: true}); }""")
        page.wait_for_function(f"+document.getElementById('done').textContent > {first}", timeout=60_000)
        page.wait_for_function("document.getElementById('status').textContent === 'FINISHED'", timeout=90_000)
        seen = page.evaluate("window.__seen")
        assert seen is not None  # updated in place, never reloaded
        assert any(first < done < 8 and status == "RUNNING" for done, status in seen), seen
        assert page.inner_text("#done") == "8"
        assert len(page.evaluate("document.getElementById('history-n').data[1].y")) == 8
        page.screenshot(path=str(shots / "live-finished.png"), full_page=True)
        page.close()
        driver.join(60)
        assert outcome and outcome[0].run_id == live.id
    finally:
        driver.join(120)
        if server is not None:
            server.stop()


def test_importance_sees_monotone_and_non_monotone_effects_and_not_noise():
    import numpy as np

    from evolve.dashboard.data import importance

    x = np.random.default_rng(0).random((400, 3))
    fitness = -((x[:, 0] - 0.5) ** 2) + 0.3 * x[:, 1]  # a peak in x0, a slope in x1, nothing from x2
    corr, eta = importance(x, fitness)
    assert corr[1] > 0.6 and corr[0] < 0.2 and corr[2] < 0.2
    assert eta[0] > 0.3 and eta[1] > 0.3 and eta[2] < 0.1


# -- Pareto front and low-fidelity results, on runs written through the store API ----------------
OBJECTIVES = ("alpha", "beta", "gamma")
PARETO_SCORES = [(0.875, 0.125, 0.5), (0.75, 0.5, 0.25), (0.5, 0.75, 0.125), (0.25, 0.875, 0.875),
                 (0.5, 0.5, 0.5), (0.625, 0.25, 1.0), (0.125, 0.125, 0.75), (0.75, 0.5, 0.0), (0.375, 0.625, 0.625)]


def _scored(store: Store, run_id: str, number: int, scores: dict[str, float], fidelity: Fidelity = Fidelity.FULL,
            kind: CandidateKind = CandidateKind.SEARCH, label: str | None = None, documents: int = 8):
    """A candidate (recipe ``number``) scored COMPLETE at ``fidelity`` with ``scores`` per validation task."""
    cand = store.add_candidate(run_id, [number / 10], {"merge_method": "linear", "models": [{"model": "m", "w": number}]},
                               kind=kind, label=label)
    evaluation = store.start_evaluation(cand.id, "worker-0", fidelity=fidelity)
    store.finish_evaluation(evaluation, sum(scores.values()) / len(scores),
                            metrics={"validation": {t: {"exact_match": v} for t, v in scores.items()}},
                            samples={"validation": {t: [v] * documents for t, v in scores.items()}},
                            timings={"merge_seconds": 0.1, "eval_seconds": 0.2})
    return cand


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Two finished runs in one store: a Pareto run on three tasks (with references, a failure and
    a never-scored candidate) and a one-task multi-fidelity run (low-only and promoted candidates)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('written') / 'runs.db'}"
    store = Store(url)
    pareto = store.create_run("pareto", {"strategy": {"name": "pareto", "seed": 0},
                                         "tasks": [{"name": t, "metric": "exact_match"} for t in OBJECTIVES]})
    _scored(store, pareto.id, 100, dict(zip(OBJECTIVES, (0.5, 0.5, 0.5))), kind=CandidateKind.REFERENCE, label="base")
    for i, scores in enumerate(PARETO_SCORES):
        _scored(store, pareto.id, i, dict(zip(OBJECTIVES, scores)))
    failed = store.add_candidate(pareto.id, [0.9], {"merge_method": "linear", "models": [{"model": "m", "w": 90}]})
    store.fail_evaluation(store.start_evaluation(failed.id, "worker-0"), "boom")
    store.add_candidate(pareto.id, [0.95], {"merge_method": "linear", "models": [{"model": "m", "w": 95}]})
    store.set_run_status(pareto.id, RunStatus.FINISHED)

    multi = store.create_run("multi", {"fidelity": {"low_limit": 2, "promote_fraction": 0.5},
                                       "tasks": [{"name": "alpha", "metric": "exact_match"}]})
    _scored(store, multi.id, 100, {"alpha": 0.3}, kind=CandidateKind.REFERENCE, label="base")
    low_only = [_scored(store, multi.id, i, {"alpha": 0.9 - i / 100}, Fidelity.LOW, documents=2).id for i in range(4)]
    promoted = []
    for i in (4, 5):
        cand = _scored(store, multi.id, i, {"alpha": 1.0}, Fidelity.LOW, documents=2)
        evaluation = store.start_evaluation(cand.id, "worker-1")
        store.finish_evaluation(evaluation, 0.5 + i / 100, metrics={"validation": {"alpha": {"exact_match": 0.5}}},
                                samples={"validation": {"alpha": [0.5] * 8}})
        promoted.append(cand.id)
    pending = store.add_candidate(multi.id, [0.99], {"merge_method": "linear", "models": [{"model": "m", "w": 99}]}).id
    store.set_run_status(multi.id, RunStatus.FINISHED)

    flat = store.create_run("flat", {"fidelity": {"low_limit": 2}, "tasks": [{"name": "alpha", "metric": "exact_match"}]})
    for i in range(FLAT_LOW_RESULTS):  # every low result 0: the loop dropped the low rung
        _scored(store, flat.id, i, {"alpha": 0.0}, Fidelity.LOW, documents=2)
    _scored(store, flat.id, 50, {"alpha": 0.25})  # then scored in full
    store.set_run_status(flat.id, RunStatus.FINISHED)
    return url, pareto.id, {"run": multi.id, "low_only": low_only, "promoted": promoted, "pending": pending,
                            "flat": flat.id}


@pytest.fixture(scope="module")
def written_server(written):
    s = Server(written[0])
    yield s
    s.stop()


def expected_front(store: Store, run_id: str, x: str, y: str) -> tuple[set[str], set[str]]:
    """(every search merge with full-fidelity scores on x and y, the front over them by evolve.pareto)."""
    searched = {c.id for c in store.list_candidates(run_id, kind=CandidateKind.SEARCH)}
    rows = [(e.candidate_id, [e.metrics["validation"][t]["exact_match"] for t in (x, y)])
            for e in store.list_evaluations(run_id, EvaluationStatus.COMPLETE) if e.candidate_id in searched]
    return {cid for cid, _ in rows}, {rows[i][0] for i in pareto_front([p for _, p in rows])}


def drawn_front(page) -> tuple[set[str], set[str], list[str]]:
    page.wait_for_function("document.getElementById('pareto').data")
    data = page.evaluate("document.getElementById('pareto').data.map(t => t.customdata)")
    axes = page.evaluate("[document.getElementById('pareto').layout.xaxis.title.text, "
                         "document.getElementById('pareto').layout.yaxis.title.text]")
    return set(data[0]), set(data[1]), axes


def test_pareto_plot_highlights_exactly_the_front_and_follows_the_chosen_objectives(written, written_server, page,
                                                                                    shots):
    url, run_id, _ = written
    store = Store(url)
    page.goto(f"{written_server.base}/runs/{run_id}")
    points, front, axes = drawn_front(page)
    everyone, expected = expected_front(store, run_id, "alpha", "beta")  # the CLI's default: the first two tasks
    assert axes == ["alpha", "beta"] and points == everyone and len(everyone) == len(PARETO_SCORES)
    assert front == expected and 1 < len(front) < len(everyone)
    cli = leaderboard_data(store, run_id, pareto=True, objectives=["alpha", "beta"])["candidates"]
    assert front == {r["id"] for r in cli}  # the rows of `evolve leaderboard --pareto --objectives alpha,beta`
    xs = page.evaluate("document.getElementById('pareto').data[1].x")
    assert xs == sorted(xs)  # connected in x order
    assert page.evaluate("document.getElementById('pareto').data[2].text") == ["base"]
    table = page.inner_text("#front-table")
    assert all(f"evolve export {run_id} --candidate {cid}" in table for cid in front)
    page.screenshot(path=str(shots / "pareto.png"), full_page=True)

    page.select_option("#pareto-x", "gamma")
    page.select_option("#pareto-y", "beta")
    page.click("#pareto-form button")
    page.wait_for_url("**/runs/*x=gamma&y=beta")
    points, front, axes = drawn_front(page)
    _, other = expected_front(store, run_id, "gamma", "beta")
    assert axes == ["gamma", "beta"] and points == everyone and front == other != expected
    member = page.evaluate("document.getElementById('pareto').data[1].customdata[0]")
    position = page.evaluate("""() => { const g = document.getElementById('pareto'), l = g._fullLayout,
        t = g.data[1], r = g.getBoundingClientRect();
        return [r.left + l.xaxis._offset + l.xaxis.l2p(t.x[0]), r.top + l.yaxis._offset + l.yaxis.l2p(t.y[0])]; }""")
    page.mouse.click(*position)
    page.wait_for_url(f"**/candidates/{member}")

    status, body, _ = get(f"{written_server.base}/api/runs/{run_id}?x=nope")
    assert status == 400 and "no objective 'nope'" in body


def test_low_fidelity_results_are_drawn_as_such_and_never_ranked(written, written_server, page, shots):
    url, _, multi = written
    store = Store(url)
    run_id = multi["run"]
    page.goto(f"{written_server.base}/runs/{run_id}")
    page.wait_for_function("document.getElementById('scatter').data")
    full, low = page.evaluate("document.getElementById('scatter').data.map(t => "
                              "({name: t.name, ids: t.text, y: t.y, symbol: t.marker.symbol}))")
    assert low["name"] == "low fidelity (2 documents per task)" and low["symbol"] == "circle-open"
    assert sorted(low["ids"]) == sorted(multi["low_only"])
    assert sorted(full["ids"]) == sorted(multi["promoted"])
    full_fitness = {e.candidate_id: e.fitness for e in store.list_evaluations(run_id, EvaluationStatus.COMPLETE)}
    assert full["y"] == pytest.approx([full_fitness[c] for c in full["ids"]])  # the full result, not the low one
    states = json.loads(get(f"{written_server.base}/api/runs/{run_id}")[1])["scatter"]
    state = dict(zip(states["id"], states["state"]))
    assert {c for c, s in state.items() if s == "pending"} == {multi["pending"]}
    assert all(state[c] == "low" for c in multi["low_only"])
    tasks = page.inner_text("#tasks")
    assert all(c in tasks for c in multi["promoted"]) and not any(c in tasks for c in multi["low_only"])
    assert page.inner_text("#low-only") == "4" and page.inner_text("#promoted") == "2"
    assert page.inner_text("#low-rung") == ""  # the lows differ: the rung ranked, and was kept
    assert page.inner_text("#best-link") in multi["promoted"]
    assert page.locator("#pareto-section").is_hidden()  # one task: no front to plot
    assert page.evaluate("document.getElementById('pareto').data") is None
    page.screenshot(path=str(shots / "fidelity.png"), full_page=True)


def test_a_dropped_low_rung_is_said_on_the_run_page(written, written_server, page):
    """A run whose first low results all tied (`evolve.fidelity.low_rung_flat`) says so, as
    `evolve run` did at its end."""
    url, _, multi = written
    page.goto(f"{written_server.base}/runs/{multi['flat']}")
    page.wait_for_function("document.getElementById('scatter').data")
    assert page.inner_text("#low-rung") == (f"low rung dropped: the first {FLAT_LOW_RESULTS} low results all scored 0, "
                                            "so later candidates were scored in full")
