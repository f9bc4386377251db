"""Worker utilisation: our steady-state loop against a generation barrier, side by side.

Four simulated workers on a local Ray cluster score candidates with the analytic scorer, which
sleeps ``delay + jitter * u`` seconds per candidate (``u`` in [0, 1] from the recipe's hash;
default 0.5-1.5 s, a 3x spread). Both drivers use the same worker pool code, scorer, CMA-ES
settings (same popsize) and budget:

- **steady-state**: the product's own run (``evolve.runner``), which asks for one candidate
  whenever a worker is free (it also scores the source models once, as every run does);
- **generation barrier**: ask a whole population, evaluate it on the pool (each candidate goes
  to the next free worker, as mergekit-evolve's ``ActorPool.map`` does), wait for all of it,
  tell it, and only then ask the next.

Busy fraction = summed candidate time (submit to result) / (wall time x workers), the
definition of ``LoopStats.busy_fraction``. Writes a PNG of both worker timelines and a JSON.

    .venv/bin/python benchmarks/utilisation.py [--evaluations 64] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project and its test fixtures

console = Console(width=150)


def run_config(family: list[Path], args) -> dict:
    from tests.fixtures.run_configs import config_dict

    return config_dict(
        family, name="utilisation",
        strategy={"name": "cma", "seed": args.seed, "settings": {"popsize": args.popsize}, "seeds": args.initial},
        budget={"max_evaluations": args.evaluations},
        evaluation={"engine_kwargs": {"delay": args.delay, "delay_jitter": args.jitter}},
        # the workers only sleep: a fraction of a CPU each lets 4 of them share 2 cores
        resources={"workers": args.workers, "cpus_per_worker": 0.25},
    )


def steady_state(checked, db: Path) -> dict:
    from evolve import runner
    from evolve.store import Store

    store = Store(f"sqlite:///{db}")
    outcome = runner.start(store, checked, progress=False)
    evaluations = [e for e in store.list_evaluations(outcome.run_id) if e.started_at and e.finished_at]
    origin = min(e.started_at for e in evaluations)
    spans = [(int(e.worker.removeprefix("worker-")), (e.started_at - origin).total_seconds(),
              (e.finished_at - origin).total_seconds()) for e in evaluations]
    return {"busy_fraction": outcome.stats.busy_fraction, "wall_seconds": outcome.stats.wall_seconds,
            "evaluations": len(evaluations), "spans": spans}


def generation_barrier(checked, budget: int, popsize: int) -> dict:
    from evolve.pool import WorkerPool, connect
    from evolve.preflight import build_strategy
    from evolve.runner import worker_spec
    from evolve.strategies.base import Result

    config, space = checked.config, checked.space
    strategy = build_strategy(config, space)
    connect(config.resources.address)
    pool = WorkerPool(config.resources.workers, worker_spec(checked))
    spans, busy, told = [], 0.0, 0
    try:
        start = time.monotonic()
        while told < budget:
            generation = strategy.ask(min(popsize, budget - told))
            queue, inflight, results = list(generation), {}, {}
            while queue or inflight:
                while queue and pool.idle():
                    cand, worker = queue.pop(0), pool.idle()[0]
                    inflight[pool.submit(worker, space.decode(cand.genome))] = (cand, worker, time.monotonic())
                for ref, outcome in pool.wait(list(inflight), timeout=1.0):
                    cand, worker, began = inflight.pop(ref)
                    pool.release(worker)
                    now = time.monotonic()
                    busy += now - began
                    spans.append((worker, began - start, now - start))
                    results[cand.id] = Result(fitness=outcome.fitness, samples=outcome.validation_samples)
            for cand in generation:  # the barrier: nothing is told until the whole generation is back
                strategy.tell(cand.id, results[cand.id])
            told += len(generation)
        wall = time.monotonic() - start
    finally:
        pool.shutdown()
    return {"busy_fraction": busy / (wall * pool.size), "wall_seconds": wall, "evaluations": told, "spans": spans}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--evaluations", type=int, default=64, help="budget of each driver")
    parser.add_argument("--popsize", type=int, default=8, help="CMA-ES population, for both drivers")
    parser.add_argument("--delay", type=float, default=0.5, help="shortest candidate, seconds")
    parser.add_argument("--jitter", type=float, default=1.0, help="added to the shortest, times u in [0, 1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--initial", default="auto", choices=["auto", "none"],
                        help="strategy.seeds; with auto, CMA-ES asks nothing until every seed is back")
    parser.add_argument("--name", default="utilisation", help="stem of the JSON and PNG files")
    parser.add_argument("--out", type=Path, default=Path("benchmarks") / "results")
    args = parser.parse_args()

    from evolve.config import RunConfig
    from evolve.preflight import check_run
    from tests.fixtures.synthetic_models import LlamaShape, write_family

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="evolve-utilisation-") as tmp:
        family = write_family(Path(tmp) / "family", LlamaShape(), n_variants=2)
        checked = check_run(RunConfig.model_validate(run_config(family, args)))
        results = {"steady-state": steady_state(checked, Path(tmp) / "runs.db"),
                   "generation barrier": generation_barrier(checked, args.evaluations, args.popsize)}

    table = Table(title=f"{args.workers} simulated workers, candidates {args.delay:g}-{args.delay + args.jitter:g} s, "
                        f"budget {args.evaluations}, popsize {args.popsize}")
    for col in ("driver", "evaluations", "wall s", "busy fraction"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, str(r["evaluations"]), f"{r['wall_seconds']:.1f}", f"{r['busy_fraction']:.1%}")
    console.print(table)
    ratio = results["steady-state"]["busy_fraction"] / results["generation barrier"]["busy_fraction"]
    console.print(f"busy ratio steady-state / barrier: {ratio:.2f}x")
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "workers": args.workers,
              "evaluations": args.evaluations, "popsize": args.popsize, "seeds": args.initial, "delay": args.delay, "jitter": args.jitter,
              "busy_ratio": ratio, "drivers": results}
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / f"{args.name}.png")
    console.print(f"results: {args.out / f'{args.name}.json'}, {args.out / f'{args.name}.png'}")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drivers = report["drivers"]
    fig, axes = plt.subplots(len(drivers), 1, figsize=(9, 1.2 + 0.5 * report["workers"] * len(drivers)), sharex=True)
    for ax, (name, r) in zip(axes, drivers.items()):
        for worker, begin, end in r["spans"]:
            ax.broken_barh([(begin, end - begin)], (worker - 0.4, 0.8), facecolor="tab:blue", edgecolor="white", lw=0.5)
        ax.set_yticks(range(report["workers"]), [f"w{i}" for i in range(report["workers"])])
        ax.set_title(f"{name}: busy {r['busy_fraction']:.1%}, {r['wall_seconds']:.1f} s", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
