"""Best-so-far fitness against evaluations for cma, m2n2 and random on the zoo target task.

Every strategy gets the same budget and the same seeds, and every point of every curve is
read back from the store. Writes a PNG plot and a JSON of the curves, and prints a table of
final best fitness (mean ± std over seeds) and the worker busy fraction.

    .venv/bin/python benchmarks/search_efficiency.py --evaluations 30 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


def curve(store, run_id: str) -> list[float]:
    """Best validation fitness after each evaluation, in ask order (references excluded)."""
    order = {c.id: c.number for c in store.list_candidates(run_id, kind="search")}
    done = sorted((e.finished_at, e.fitness if e.fitness is not None else float("-inf"))
                  for e in store.list_evaluations(run_id) if e.candidate_id in order and e.finished_at)
    best, out = float("-inf"), []
    for _, fitness in done:
        best = max(best, fitness)
        out.append(best)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parent.parent / "examples" / "zoo_demo.yaml")
    parser.add_argument("--strategies", nargs="+", default=["cma", "m2n2", "random"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--evaluations", type=int, default=30)
    parser.add_argument("--initial", default="auto", choices=["auto", "none"],
                        help="strategy.seeds: the naive starting points (auto) or none")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out") / "search_efficiency")
    args = parser.parse_args()

    from evolve import runner
    from evolve.config import load_config
    from evolve.preflight import check_run
    from evolve.store import Store

    args.out.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{args.out / 'runs.db'}")
    base = load_config(args.config)
    results: dict[str, list[dict]] = {}
    for name in args.strategies:
        for seed in args.seeds:
            strategy = {"name": name, "seed": seed, "seeds": args.initial,
                        "settings": base.strategy.settings if name == base.strategy.name else {}}
            config = base.model_validate({
                **base.model_dump(), "name": f"efficiency-{name}-{seed}", "strategy": strategy,
                "budget": {"max_evaluations": args.evaluations},
                "evaluation": {**base.evaluation.model_dump(), "report_test": False},
                "resources": {**base.resources.model_dump(), "workers": args.workers},
            })
            outcome = runner.start(store, check_run(config), progress=True)
            results.setdefault(name, []).append({"seed": seed, "run": outcome.run_id, "curve": curve(store, outcome.run_id),
                                                 "busy_fraction": outcome.stats.busy_fraction})
            console.print(f"{name} seed {seed}: best {results[name][-1]['curve'][-1]:.3f}, "
                          f"busy {outcome.stats.busy_fraction:.0%}")
    (args.out / "curves.json").write_text(json.dumps(results, indent=2))

    table = Table(title=f"best validation fitness after {args.evaluations} evaluations")
    for col in ("strategy", "mean", "std", "per seed", "busy fraction"):
        table.add_column(col)
    for name, runs in results.items():
        finals = [r["curve"][-1] for r in runs]
        table.add_row(name, f"{statistics.mean(finals):.3f}", f"{statistics.pstdev(finals):.3f}",
                      " ".join(f"{f:.3f}" for f in finals),
                      f"{statistics.mean(r['busy_fraction'] for r in runs):.0%}")
    console.print(table)
    plot(results, args.out / "search_efficiency.png", args.evaluations)
    console.print(f"plot: {args.out / 'search_efficiency.png'}")


def plot(results: dict[str, list[dict]], path: Path, budget: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (name, runs), color in zip(results.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        for i, r in enumerate(runs):
            ax.plot(range(1, len(r["curve"]) + 1), r["curve"], color=color, alpha=0.8,
                    label=name if i == 0 else None)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best-so-far validation fitness")
    ax.set_xlim(1, budget)
    ax.set_title("search efficiency on the zoo target task")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
