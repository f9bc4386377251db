"""What the dashboard's pages plot, computed from the store (read-only) as plain JSON data."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from evolve.dashboard.front import front_view
from evolve.fidelity import FLAT_LOW_RESULTS, low_rung_dropped
from evolve.report import SPLITS, candidate_data, compare_data, run_row, runs_data, status_data, task_scores
from evolve.store import CandidateKind, EvaluationRecord, EvaluationStatus, Fidelity, RunStatus, Store
from search_spaces.parameter_space import ParameterSpace

TIMELINE_LIMIT = 2000  # most recent evaluations drawn on the worker timeline
PARALLEL_LIMIT = 1500  # lines on the parallel coordinates: the best third, then an even sample of the rest


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _r(value: float | None) -> float | None:
    """Six significant digits: what a chart can show, a third of the JSON."""
    return None if value is None else float(f"{value:.6g}")


def coordinates_of(config: dict[str, Any], dimension: int) -> list[dict[str, Any]]:
    """What each genome coordinate controls (label, model, parameter, kind, group, bounds)."""
    try:
        space = dict(config["space"])
        space["search"] = {k: list(v) for k, v in space["search"].items()}
        ps = ParameterSpace.from_dict({**space, "base_model": config["models"]["base"],
                                       "models": list(config["models"]["sources"]),
                                       "seed": config.get("strategy", {}).get("seed", 0)})
        coords = ps.coordinates
        if len(coords) == dimension:
            return [{"label": c.label, "model": c.model.rsplit("/", 1)[-1].removeprefix("zoo:") or "*",
                     "parameter": c.parameter, "kind": c.kind or "default", "group": c.group,
                     "lower": c.lower, "upper": c.upper} for c in coords]
    except Exception:  # noqa: BLE001 - an unusual config still gets generic labels
        pass
    return [{"label": f"x{i}", "model": "?", "parameter": "?", "kind": "default", "group": 0, "lower": 0.0,
             "upper": 1.0} for i in range(dimension)]


def importance(values: np.ndarray, fitness: np.ndarray, bins: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per column: |Pearson correlation| with fitness, and the share of fitness variance explained
    by binning the column (eta squared, which also sees non-monotone effects)."""
    n, d = values.shape
    corr, eta = np.zeros(d), np.zeros(d)
    if n < 3 or np.var(fitness) == 0:
        return corr, eta
    bins = max(2, min(bins, n // 10))  # a few points per bin, or eta squared only measures noise
    f = fitness - fitness.mean()
    total = float((f**2).sum())
    for j in range(d):
        x = values[:, j]
        sx = x.std()
        if sx == 0:
            continue
        corr[j] = abs(float(((x - x.mean()) * f).mean() / (sx * fitness.std())))
        edges = np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1])
        which = np.searchsorted(edges, x)
        between = sum(float((which == b).sum()) * float(f[which == b].mean()) ** 2
                      for b in np.unique(which))
        eta[j] = between / total
    return corr, eta


def _columns(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, list[Any]]:
    """Rows as one list per key: the compact JSON form charts take."""
    return {k: [r[k] for r in rows] for k in keys}


def low_rung_note(evaluations: list[EvaluationRecord], searched: set[str]) -> str:
    """What became of a multi-fidelity run's low rung (`evolve.fidelity.low_rung_flat`)."""
    flat = low_rung_dropped(evaluations, searched)
    if flat is None:
        return ""
    return (f"low rung dropped: the first {FLAT_LOW_RESULTS} low results all scored {flat:g}, "
            "so later candidates were scored in full")


def run_view(store: Store, run_id: str) -> dict[str, Any]:
    """Everything the run page draws: progress, history, scatter, coordinates, importance, tasks, timeline.

    Evaluations of every fidelity are read (workers scoring low are busy, and a candidate with
    only a low-fidelity result is drawn as one, not as pending), but only full-fidelity results
    make the history, importance and per-task table, as they make the leaderboard.
    """
    run = store.get_run(run_id)
    listed = store.list_candidates(run_id)
    evaluations = store.list_evaluations(run_id, fidelity=None)
    status = status_data(store, run_id, listed, evaluations)
    candidates = {c.id: c for c in listed}
    start = run.created_at
    searched = [c for c in candidates.values() if c.kind == CandidateKind.SEARCH]
    finished = [e for e in evaluations if e.status == EvaluationStatus.COMPLETE]
    complete = {e.candidate_id: e for e in finished if e.fidelity == Fidelity.FULL}
    low = {e.candidate_id: e for e in finished if e.fidelity == Fidelity.LOW and e.candidate_id not in complete}

    done = sorted((e for e in complete.values() if candidates[e.candidate_id].kind == CandidateKind.SEARCH),
                  key=lambda e: (e.finished_at or e.created_at, e.id))
    history, best = [], -math.inf
    for i, e in enumerate(done, start=1):
        fit = _finite(e.fitness)
        if fit is not None and fit > best:
            best = fit
        history.append({"n": i, "t": _r(((e.finished_at or e.created_at) - start).total_seconds()), "fitness": _r(fit),
                        "best": None if best == -math.inf else _r(best)})

    failed = {e.candidate_id for e in evaluations if e.status == EvaluationStatus.FAILED}
    result = {**low, **complete}
    scatter = [{"id": c.id, "number": c.number, "generation": c.generation,
                "fitness": _r(_finite(result[c.id].fitness)) if c.id in result else None,
                "state": "complete" if c.id in complete else "low" if c.id in low else
                         "failed" if c.id in failed else "pending"}
               for c in searched]
    fidelity = None
    if settings := run.config.get("fidelity"):  # a multi-fidelity run: how many stopped low, how many went on
        scored_low = {e.candidate_id for e in finished if e.fidelity == Fidelity.LOW}
        fidelity = {"low_limit": settings.get("low_limit"), "low_only": len(low),
                    "promoted": sum(1 for c in searched if c.id in complete and c.id in scored_low),
                    "low_rung": low_rung_note(evaluations, {c.id for c in searched})}

    dimension = max((len(c.genome) for c in searched), default=0)
    coords = coordinates_of(run.config, dimension)
    scored = [c for c in searched if c.id in complete and _finite(complete[c.id].fitness) is not None
              and len(c.genome) == dimension]
    genomes = np.array([c.genome for c in scored], dtype=float).reshape(len(scored), dimension)
    lower = np.array([c["lower"] for c in coords]) if coords else np.zeros(0)
    upper = np.array([c["upper"] for c in coords]) if coords else np.zeros(0)
    values = lower + genomes * (upper - lower)
    fitness = np.array([complete[c.id].fitness for c in scored], dtype=float)
    corr, eta = importance(values, fitness)
    per_coordinate = [{**c, "correlation": float(corr[i]), "variance": float(eta[i])} for i, c in enumerate(coords)]
    shown = np.arange(len(scored))
    if len(scored) > PARALLEL_LIMIT:
        order = np.argsort(-fitness, kind="stable")
        best_part = order[: PARALLEL_LIMIT // 3]
        rest = order[PARALLEL_LIMIT // 3:]
        sample = rest[np.linspace(0, len(rest) - 1, PARALLEL_LIMIT - len(best_part)).astype(int)]
        shown = np.sort(np.concatenate([best_part, sample]))
    grouped: dict[str, dict[str, float]] = {}
    for by in ("group", "kind", "model", "parameter"):
        acc: dict[str, list[float]] = {}
        for row in per_coordinate:
            acc.setdefault(str(row[by]), []).append(row["variance"])
        grouped[by] = {k: float(np.mean(v)) for k, v in acc.items()}

    top = sorted(complete.values(), key=lambda e: -(_finite(e.fitness) if _finite(e.fitness) is not None else -1e300))
    tasks_table = []
    for e in [x for x in top if candidates[x.candidate_id].kind == CandidateKind.REFERENCE] + \
             [x for x in top if candidates[x.candidate_id].kind == CandidateKind.SEARCH][:25]:
        c = candidates[e.candidate_id]
        tasks_table.append({"id": c.id, "kind": c.kind.value, "label": c.label, "fitness": _finite(e.fitness),
                            **{s: task_scores(e, s) for s in SPLITS}})

    now = datetime.utcnow()
    timeline = []
    for e in evaluations[-TIMELINE_LIMIT:]:
        if e.worker is None or e.started_at is None:
            continue
        t0 = (e.started_at - start).total_seconds()
        if e.status == EvaluationStatus.RUNNING:
            timeline.append({"worker": e.worker, "phase": "running", "start": _r(t0),
                             "seconds": _r((now - e.started_at).total_seconds()), "id": e.candidate_id})
            continue
        merge = e.merge_seconds or 0.0
        evaluate = e.eval_seconds
        if evaluate is None and e.finished_at is not None:
            evaluate = max((e.finished_at - e.started_at).total_seconds() - merge, 0.0)
        timeline.append({"worker": e.worker, "phase": "merge", "start": _r(t0), "seconds": _r(merge),
                         "id": e.candidate_id})
        timeline.append({"worker": e.worker, "phase": "failed" if e.status != EvaluationStatus.COMPLETE else "eval",
                         "start": _r(t0 + merge), "seconds": _r(evaluate or 0.0), "id": e.candidate_id})
    return {"run": {"id": run.id, "name": run.name, "status": run.status.value, "created": run.created_at.isoformat(),
                    "strategy": (run.config.get("strategy") or {}).get("name"),
                    "method": (run.config.get("space") or {}).get("merge_method")},
            "status": status, "fidelity": fidelity, "history": _columns(history, ("n", "t", "fitness", "best")),
            "scatter": _columns(scatter, ("id", "number", "generation", "fitness", "state")),
            "coordinates": per_coordinate,
            "parallel": {"values": [[float(f"{v:.4g}") for v in col] for col in values[shown].T.tolist()],
                         "fitness": [_r(v) for v in fitness[shown].tolist()], "total": len(scored)},
            "importance": grouped, "tasks": tasks_table, "timeline": timeline,
            "version": len(evaluations) * 1000 + sum(e.status.is_finished for e in evaluations)}


def candidate_view(store: Store, candidate_id: str) -> dict[str, Any]:
    """The candidate page: `evolve show`'s data plus heatmaps (layer groups x models per parameter)."""
    data = candidate_data(store, candidate_id)
    heatmaps: dict[str, dict[str, Any]] = {}
    for row in data["recipe_table"]:
        if not all(isinstance(v, int | float) for v in row["values"]):
            continue
        name = row["parameter"] + ("" if row["kind"] is None else f" [{row['kind']}]")
        h = heatmaps.setdefault(name, {"models": [], "z": []})
        h["models"].append(row["model"])
        h["z"].append(list(row["values"]))
    for h in heatmaps.values():
        width = max(len(z) for z in h["z"])
        h["z"] = [z * width if len(z) == 1 else z + [None] * (width - len(z)) for z in h["z"]]
        h["groups"] = [f"g{g}" for g in range(width)]
    return {**data, "heatmaps": heatmaps}


class ViewCache:
    """Per-run views, recomputed only when the run can have changed.

    A run that is not RUNNING is reused until its status, update time or heartbeat moves; a
    RUNNING one at most every ``ttl`` seconds (and never more often than twice its own
    compute time), so many open pages cost one computation per interval.
    """

    def __init__(self, store: Store, ttl: float):
        self.store = store
        self.ttl = ttl
        self._entries: dict[tuple[str, str], tuple[Any, float, Any]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, kind: str, run_id: str, compute: Callable[[], Any]) -> Any:
        run = self.store.get_run(run_id)
        key = (run.status, run.updated_at, run.heartbeat_at)
        with self._guard:
            lock = self._locks.setdefault((kind, run_id), threading.Lock())
        with lock:
            hit = self._entries.get((kind, run_id))
            if hit is not None:
                value, at, (old_key, cost) = hit[0], hit[1], hit[2]
                fresh = (old_key == key if run.status != RunStatus.RUNNING
                         else time.monotonic() - at < max(self.ttl, 2 * cost))
                if fresh:
                    return value
            start = time.monotonic()
            value = compute()
            self._entries[(kind, run_id)] = (value, time.monotonic(), (key, time.monotonic() - start))
            return value

    def run_view(self, run_id: str) -> dict[str, Any]:
        return self.get("run", run_id, lambda: run_view(self.store, run_id))

    def front(self, run_id: str, x: str | None, y: str | None) -> dict[str, Any] | None:
        return self.get(f"front {x!r} {y!r}", run_id, lambda: front_view(self.store, run_id, x, y))

    def runs(self) -> list[dict[str, Any]]:
        return [self.get("row", run.id, lambda run=run: run_row(self.store, run)) for run in self.store.list_runs()]


__all__ = ["ViewCache", "candidate_view", "compare_data", "run_view", "runs_data"]
