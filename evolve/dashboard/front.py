"""The run page's Pareto plot: two objectives of every ranked merge, and the front over them.

The objectives, their defaults and the merges that count (full-fidelity COMPLETE evaluations,
validation scores) are those of `evolve leaderboard --pareto`, read through `leaderboard_data`;
the front comes from `evolve.pareto`, so a highlighted point is a row of
``evolve leaderboard RUN --pareto --objectives X,Y`` and can be exported by its id.
"""

from __future__ import annotations

from typing import Any

from evolve.pareto import pareto_front
from evolve.report import leaderboard_data
from evolve.store import Store
from search_spaces.errors import UserError


def front_view(store: Store, run_id: str, x: str | None = None, y: str | None = None) -> dict[str, Any] | None:
    """Scores on objectives ``x`` and ``y`` (default: the first two the leaderboard's front uses),
    front members in x order; None when the run has fewer than two objectives to plot."""
    objectives = leaderboard_data(store, run_id, limit=0, pareto=True)["pareto"]["objectives"]
    if len(objectives) < 2:
        return None
    x = x or next(o for o in objectives if o != y)
    y = y or next(o for o in objectives if o != x)
    for name in (x, y):
        if name not in objectives:
            raise UserError(f"run {run_id}: no objective {name!r} (objectives: {', '.join(objectives)})")
    board = leaderboard_data(store, run_id)

    def plotted(items: list[dict[str, Any]]) -> list[dict[str, Any]]:  # scored on both: as the leaderboard's front
        return [r for r in items if r["tasks"].get(x) is not None and r["tasks"].get(y) is not None]

    rows = plotted(board["candidates"])
    front = pareto_front([[r["tasks"][x], r["tasks"][y]] for r in rows])
    members = sorted((rows[i] for i in front), key=lambda r: (r["tasks"][x], -r["tasks"][y]))

    def columns(items: list[dict[str, Any]]) -> dict[str, list[Any]]:
        return {"id": [r["id"] for r in items], "x": [r["tasks"][x] for r in items],
                "y": [r["tasks"][y] for r in items], "fitness": [r["fitness"] for r in items]}

    references = plotted(list(board["parents"].values()))
    return {"objectives": objectives, "x": x, "y": y, "points": columns(rows), "front": columns(members),
            "references": {**columns(references), "label": [r["label"] or r["id"] for r in references]}}
