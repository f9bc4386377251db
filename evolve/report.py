"""Leaderboards and run lists, as rich tables for people and stable JSON for scripts.

Every figure comes from the store. Source models are scored once per run as reference
candidates (``kind: reference``); they are shown beside the ranking, not in it.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from evolve.store import CandidateKind, Store

console = Console()


def leaderboard_data(store: Store, run_id: str, split: str = "validation", limit: int | None = None) -> dict[str, Any]:
    """Candidates ranked by validation fitness (the test split never selects), with ``split``'s figures."""
    store.get_run(run_id)  # raises a clear error for an unknown run
    shown = {e.candidate.id: e for e in store.leaderboard(run_id, split=split)}
    parents: dict[str, Any] = {}
    ranked = []
    for entry in store.leaderboard(run_id, split="validation"):
        on_split = shown.get(entry.candidate.id)
        row = {
            "id": entry.candidate.id,
            "fitness": entry.evaluation.fitness,
            "score": on_split.score if on_split else None,
            "metrics": on_split.metrics if on_split else {},
            "recipe_hash": entry.candidate.recipe_hash,
            "parents": list(entry.candidate.parents),
        }
        if entry.candidate.kind == CandidateKind.REFERENCE:
            parents[entry.candidate.label] = row
        else:
            ranked.append(row)
    if limit is not None:
        ranked = ranked[:limit]
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank
    return {"run": run_id, "split": split, "ranked_by": "validation fitness", "candidates": ranked,
            "parents": parents}


def print_leaderboard(store: Store, run_id: str, split: str = "validation", limit: int | None = 20,
                      fmt: str = "table") -> dict[str, Any]:
    data = leaderboard_data(store, run_id, split, limit)
    if fmt == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
        return data
    tasks = sorted({t for row in [*data["candidates"], *data["parents"].values()] for t in row["metrics"]})
    table = Table(title=f"run {run_id} · {split} split · ranked by validation fitness")
    table.add_column("rank")
    table.add_column("candidate")
    table.add_column("score", justify="right")
    for task in tasks:
        table.add_column(task, justify="right")
    for name, row in data["parents"].items():
        table.add_row("parent", name, _fmt(row["score"]), *[_metric(row, t) for t in tasks], style="dim")
    for row in data["candidates"]:
        table.add_row(str(row["rank"]), row["id"], _fmt(row["score"]), *[_metric(row, t) for t in tasks])
    console.print(table)
    return data


def print_runs(store: Store, fmt: str = "table") -> list[dict[str, Any]]:
    rows = []
    for run in store.list_runs():
        board = store.leaderboard(run.id, split="validation", limit=1)
        rows.append({"id": run.id, "name": run.name, "status": run.status.value,
                     "created": run.created_at.isoformat(timespec="seconds"),
                     "evaluations": len(store.list_evaluations(run.id)),
                     "best_validation": board[0].score if board else None})
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return rows
    table = Table(title="runs")
    for col in ("id", "name", "status", "created", "evaluations", "best_validation"):
        table.add_column(col)
    for row in rows:
        table.add_row(*[_fmt(v) if isinstance(v, float) else str(v) for v in row.values()])
    console.print(table)
    return rows


def _metric(row: dict[str, Any], task: str) -> str:
    metrics = row["metrics"].get(task) or {}
    value = next(iter(metrics.values()), None) if metrics else None
    return _fmt(value)


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
