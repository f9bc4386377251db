"""Dashboard page times over a synthetic store of 10,000 candidates (not a timed test).

Builds a SQLite store through the store's public API (one run, 10,000 scored search
candidates with per-sample scores and timings over 4 workers, 3 references), starts the real
dashboard server, and measures for each page the server's response time (HTML or JSON) and,
with headless Chromium, the time until the page has drawn its charts (server cache warm).

    .venv/bin/python benchmarks/dashboard_scale.py [--candidates 10000] [--db PATH] [--reuse] [--chromium PATH]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from evolve.store import Store  # noqa: E402

SOURCES = ["models/m0", "models/m1", "models/m2"]
GROUPS = 4
CONFIG = {
    "name": "scale", "models": {"base": "models/base", "sources": SOURCES},
    "space": {"merge_method": "task_arithmetic", "layer_groups": GROUPS, "kinds": [], "search": {"weight": [0.0, 1.0]},
              "parameters": {}, "model_parameters": {}, "dtype": None},
    "strategy": {"name": "cma", "seed": 0}, "budget": {"max_evaluations": 10_000},
    "tasks": [{"name": "target", "metric": "acc"}, {"name": "skill", "metric": "acc"}],
    "resources": {"workers": 4},
}


def build(db: Path, n: int) -> tuple[str, str, list[str]]:
    url = f"sqlite:///{db}"
    rng = random.Random(0)
    store = Store(url)
    run = store.create_run("scale", CONFIG, seed=0)
    ids = []

    def record(genome, recipe, kind="search", label=None, parents=(), worker="worker-0"):
        c = store.add_candidate(run.id, genome, recipe, kind=kind, label=label, parents=parents,
                                generation=len(ids) // 32)
        e = store.start_evaluation(c.id, worker=worker)
        target = 1 - sum((g - 0.6) ** 2 for g in genome) / max(len(genome), 1) if genome else 0.5
        samples = {s: {t: [float(rng.random() < target) for _ in range(20)] for t in ("target", "skill")}
                   for s in ("validation", "test")}
        metrics = {s: {t: {"acc": sum(v) / 20} for t, v in per.items()} for s, per in samples.items()}
        scores = {s: sum(m["acc"] for m in per.values()) for s, per in metrics.items()}
        store.finish_evaluation(e, scores["validation"], metrics, samples,
                                {"merge_seconds": rng.uniform(0.5, 2), "eval_seconds": rng.uniform(3, 9)},
                                scores=scores)
        return c.id

    for path in ["models/base", *SOURCES]:
        record((), {"merge_method": "linear", "models": [{"model": path, "parameters": {"weight": 1.0}}]},
               kind="reference", label=Path(path).name)
    with Progress() as bar:
        task = bar.add_task("writing candidates", total=n)
        for i in range(n):
            genome = tuple(rng.random() for _ in range(GROUPS * len(SOURCES)))
            recipe = {"merge_method": "task_arithmetic", "base_model": "models/base",
                      "models": [{"model": m, "parameters": {"weight": {"groups": [genome[g * 3 + j]
                                                                                   for g in range(GROUPS)]}}}
                                 for j, m in enumerate(SOURCES)]}
            parents = tuple(rng.sample(ids, 2)) if len(ids) > 2 else ()
            ids.append(record(genome, recipe, parents=parents, worker=f"worker-{i % 4}"))
            bar.advance(task)
    store.close()
    return url, run.id, ids


def timed_get(url: str, repeat: int = 3) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=300) as response:
            size = len(response.read())
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/evolve-dashboard-scale.db"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--reuse", action="store_true", help="measure an existing --db instead of writing one")
    args = parser.parse_args()
    console = Console()
    if args.reuse:
        url = f"sqlite:///{args.db}"
        with Store(url, read_only=True) as store:
            run_id = store.list_runs()[0].id
            ids = [c.id for c in store.list_candidates(run_id, kind="search")]
    else:
        if args.db.exists():
            args.db.unlink()
        start = time.perf_counter()
        url, run_id, ids = build(args.db, args.candidates)
        console.print(f"store with {len(ids)} candidates written in {time.perf_counter() - start:.0f} s ({args.db})")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "evolve.cli", "dashboard", "--store", url, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        pages = {"runs list": "/", "run page": f"/runs/{run_id}", "run JSON (live poll)": f"/api/runs/{run_id}",
                 "candidate page": f"/candidates/{ids[-1]}", "compare page": f"/compare?a={ids[-1]}&b={ids[0]}"}
        ready = {"run page": "document.querySelector('#parallel .parcoords') && document.getElementById('timeline').data",
                 "candidate page": "document.getElementById('heatmap').data",
                 "compare page": "document.getElementById('compare-chart').data", "runs list": "true"}
        table = Table(title=f"dashboard over {len(ids)} candidates")
        for col in ("page", "server, first request", "server, cached (median of 3)", "size", "browser until drawn"):
            table.add_column(col, justify="right")
        cold = {name: timed_get(base + path, repeat=1)[0] for name, path in pages.items()}
        drawn: dict[str, float] = {}
        try:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.goto(base + "/static/plotly.min.js")  # warm the cache: measure pages, not the 4.8 MB asset
                for name, cond in ready.items():
                    t0 = time.perf_counter()
                    page.goto(base + pages[name], timeout=300_000)
                    page.wait_for_function(cond, timeout=300_000)
                    drawn[name] = time.perf_counter() - t0
                browser.close()
        except Exception as exc:  # noqa: BLE001 - a missing browser still leaves the server figures
            console.print(f"[yellow]no browser timings: {exc}")
        for name, path in pages.items():
            seconds, size = timed_get(base + path)
            table.add_row(name, f"{cold[name] * 1000:.0f} ms", f"{seconds * 1000:.0f} ms", f"{size / 1024:.0f} KiB",
                          f"{drawn[name] * 1000:.0f} ms" if name in drawn else "—")
        console.print(table)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
