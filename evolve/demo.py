"""`make demo`: the product's main job on the embedded zoo, end to end, on this machine.

1. builds the zoo if absent (cached by version);
2. runs a CMA-ES parameter-space search over it on a local Ray cluster (examples/zoo_demo.yaml);
3. prints the leaderboard on the test split, from the store;
4. checks, from the store, that the best merge beats every parent on the target task and keeps
   each expert's own skill;
5. exports the best model (weights, tokenizer, model card, mergekit YAML) to out/demo-best.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evolve import runner
from evolve.config import load_config, resolve_store_url
from evolve.export import export_candidate
from evolve.preflight import check_run
from evolve.report import print_leaderboard
from evolve.store import Store
from workers.offline import go_offline

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "zoo_demo.yaml"
console = Console()


def skill_report(board: dict, target: str, skills: dict[str, str]) -> tuple[Table, bool]:
    """The best merge against every parent: target gain and kept own-skill, on the board's split."""

    def value(row: dict, task: str) -> float:
        return next(iter(row["metrics"].get(task, {}).values()), float("nan"))

    best = board["candidates"][0]
    parents = board["parents"]
    table = Table(title=f"best merge {best['id']} vs its parents ({board['split']} split)")
    table.add_column("check")
    table.add_column("value", justify="right")
    table.add_column("needed", justify="right")
    table.add_column("ok")
    ok = True
    best_parent = max(value(row, target) for row in parents.values())
    gain = value(best, target) - best_parent
    passed = gain >= 0.15
    ok &= passed
    table.add_row(f"{target}: best merge − best parent", f"{gain * 100:+.1f} pts", "≥ +15 pts", "✔" if passed else "✘")
    for expert, task in skills.items():
        own = value(parents[expert], task)
        kept = value(best, task) / own if own > 0 else float("nan")
        passed = kept >= 0.8
        ok &= passed
        table.add_row(f"{task}: kept of {expert}'s {own:.2f}", f"{kept:.0%}", "≥ 80%", "✔" if passed else "✘")
    return table, ok


def main() -> int:
    go_offline()
    config = load_config(CONFIG)
    checked = check_run(config, source=CONFIG)
    store = Store(resolve_store_url(None, config))
    outcome = runner.start(store, checked)
    stats = outcome.stats
    console.print(f"run {outcome.run_id}: {stats.evaluations} evaluations ({stats.failures} failed) in "
                  f"{stats.wall_seconds / 60:.1f} min, workers busy {stats.busy_fraction:.0%} of the time")
    board = print_leaderboard(store, outcome.run_id, split="test", limit=8)
    target = config.tasks[0].name
    table, ok = skill_report(board, target, skills={"arith": "zoo_arith", "cipher": "zoo_cipher"})
    console.print(table)
    out = export_candidate(store, outcome.run_id, Path("out") / "demo-best", overwrite=True)
    console.print(f"best model exported to {out} (model card, evolve_recipe.yaml, mergekit.yaml)")
    console.print(f"inspect again: .venv/bin/evolve leaderboard {outcome.run_id} --split test")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
