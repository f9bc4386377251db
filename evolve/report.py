"""What the CLI and the dashboard show about runs and candidates, read from the store.

Every figure comes from the store. Source models are scored once per run as reference
candidates (``kind: reference``); they are shown beside the ranking, not in it. The
``*_data`` functions return plain JSON data (the stable ``--format json`` output, documented
in docs/inspecting.md); the ``print_*`` functions render it as rich tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evolve.pareto import pareto_front
from evolve.store import (
    CandidateKind, CandidateRecord, EvaluationRecord, EvaluationStatus, Fidelity, RunStatus, Store,
)
from search_spaces.errors import UserError

console = Console()
SPLITS = ("validation", "test")


# -- helpers ---------------------------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def _num(value: Any) -> Any:
    """JSON-safe number: NaN and infinities become None."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def primary_metric(metrics: dict[str, Any] | None) -> float | None:
    """A task's headline value: its first metric."""
    return next(iter(metrics.values()), None) if metrics else None


def task_scores(evaluation: EvaluationRecord | None, split: str) -> dict[str, float | None]:
    """{task: headline metric} of one evaluation on ``split``."""
    if evaluation is None:
        return {}
    return {t: _num(primary_metric(m)) for t, m in (evaluation.metrics or {}).get(split, {}).items()}


def short_name(path: str) -> str:
    return Path(path).name or path


def complete_evaluations(store: Store, run_id: str) -> dict[str, EvaluationRecord]:
    """{candidate id: its COMPLETE evaluation}."""
    return {e.candidate_id: e for e in store.list_evaluations(run_id, EvaluationStatus.COMPLETE)}


def samples_used(evaluations: Iterable[EvaluationRecord]) -> int:
    """Documents scored by a run's evaluations (every fidelity and kind): what
    ``budget.max_samples`` counts. A failed evaluation records none, so it counts 0."""
    return sum(e.samples_scored or 0 for e in evaluations)


def samples_cell(used: int, budget: int | None) -> str:
    """``used/budget samples`` for the tables, or nothing when the run has no ``max_samples``."""
    return f"{used}/{budget} samples" if budget else ""


def recipe_rows(recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """A recipe's values as rows: model, parameter, tensor-kind filter, and values per layer group.

    A scalar is one value for every group, ``{groups: [...]}`` one per group, and a plain list
    (mergekit's gradient) its anchor points; global parameters have model ``*``.
    """
    rows: list[dict[str, Any]] = []

    def add(model: str, name: str, value: Any, kind: str | None = None) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float | dict | list):
            rows.append({"model": model, "parameter": name, "kind": kind, "form": "value", "values": [value]})
        elif isinstance(value, int | float):
            rows.append({"model": model, "parameter": name, "kind": kind, "form": "scalar", "values": [float(value)]})
        elif isinstance(value, dict) and "groups" in value:
            rows.append({"model": model, "parameter": name, "kind": kind, "form": "groups",
                         "values": [float(v) for v in value["groups"]]})
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for entry in value:
                add(model, name, entry.get("value"), entry.get("filter"))
        elif isinstance(value, list):
            rows.append({"model": model, "parameter": name, "kind": kind, "form": "gradient",
                         "values": [float(v) for v in value]})

    for entry in recipe.get("models", []):
        for name, value in (entry.get("parameters") or {}).items():
            add(short_name(entry["model"]), name, value)
    for name, value in (recipe.get("parameters") or {}).items():
        add("*", name, value)
    return rows


# -- runs ------------------------------------------------------------------------------------------
def runs_data(store: Store) -> list[dict[str, Any]]:
    """One row per run: id, name, status, budget used (evaluations, samples), best fitness,
    created, last heartbeat."""
    return [run_row(store, run) for run in store.list_runs()]


def run_row(store: Store, run: Any, candidates: list[CandidateRecord] | None = None,
            evaluations: list[EvaluationRecord] | None = None) -> dict[str, Any]:
    """`runs_data`'s row of one run (from already fetched candidates and evaluations of every
    fidelity, if given). Budget used counts candidates with any complete evaluation, samples
    used every evaluation's documents (`samples_used`); the best is taken from full-fidelity
    results."""
    candidates = store.list_candidates(run.id) if candidates is None else candidates
    evaluations = store.list_evaluations(run.id, fidelity=None) if evaluations is None else evaluations
    searched = {c.id for c in candidates if c.kind == CandidateKind.SEARCH}
    used = len({e.candidate_id for e in evaluations if e.status == EvaluationStatus.COMPLETE and e.candidate_id in searched})
    samples = samples_used(evaluations)
    evaluations = [e for e in evaluations if e.fidelity == Fidelity.FULL]
    complete = [e for e in evaluations if e.status == EvaluationStatus.COMPLETE]
    fitness = [e.fitness for e in complete if e.candidate_id in searched and _num(e.fitness) is not None]
    validation = [v for e in complete if _num(v := (e.scores or {}).get("validation")) is not None]
    budget = run.config.get("budget") or {}
    return {"id": run.id, "name": run.name, "status": run.status.value,
            "created": _iso(run.created_at), "last_heartbeat": _iso(run.heartbeat_at),
            "evaluations": len(evaluations), "budget_used": used, "budget": budget.get("max_evaluations"),
            "samples_used": samples, "samples_budget": budget.get("max_samples"),
            "best_fitness": max(fitness) if fitness else None,
            "best_validation": max(validation) if validation else None}


def print_runs(store: Store, fmt: str = "table") -> list[dict[str, Any]]:
    rows = runs_data(store)
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return rows
    table = Table(title="runs")
    for col in ("id", "name", "status", "budget used", "best fitness", "created", "last heartbeat"):
        table.add_column(col, justify="right" if col in ("budget used", "best fitness") else "left")
    for row in rows:
        used = f"{row['budget_used']}/{row['budget']}" if row["budget"] else str(row["budget_used"])
        used = " · ".join(filter(None, [used, samples_cell(row["samples_used"], row["samples_budget"])]))
        table.add_row(row["id"], row["name"], row["status"], used, _fmt(row["best_fitness"]), row["created"],
                      row["last_heartbeat"] or "—")
    console.print(table)
    return rows


# -- status ----------------------------------------------------------------------------------------
def _merge_estimate(evaluations: list[EvaluationRecord], worker: str) -> float:
    """A worker's typical merge time (median of its finished evaluations; all workers' if none)."""
    own = [e.merge_seconds for e in evaluations if e.worker == worker and e.merge_seconds is not None]
    every = [e.merge_seconds for e in evaluations if e.merge_seconds is not None]
    return statistics.median(own or every or [0.0])


def status_data(store: Store, run_id: str, candidates: list[CandidateRecord] | None = None,
                evaluations: list[EvaluationRecord] | None = None) -> dict[str, Any]:
    """Progress of one run: done/budget, samples used/``max_samples``, best so far, rate, ETA,
    failures and each worker's state.

    A worker is busy while it holds a RUNNING evaluation; it counts as ``merging`` until that
    evaluation is older than the worker's median merge time, then ``evaluating`` (``evaluating
    (low)`` at low fidelity). ``evaluations`` is every fidelity's rows (default: read them): a
    candidate counts as done at its first complete evaluation, as the budget counts it, while
    the best is taken from full-fidelity results only, as the leaderboard ranks.
    """
    run = store.get_run(run_id)
    kinds = {c.id: c.kind for c in (store.list_candidates(run_id) if candidates is None else candidates)}
    evaluations = store.list_evaluations(run_id, fidelity=None) if evaluations is None else evaluations
    searched = [e for e in evaluations if kinds.get(e.candidate_id) == CandidateKind.SEARCH]
    first_done: dict[str, EvaluationRecord] = {}
    for e in sorted((e for e in searched if e.status == EvaluationStatus.COMPLETE),
                    key=lambda e: e.finished_at or e.created_at):
        first_done.setdefault(e.candidate_id, e)
    done = list(first_done.values())
    failures = [e for e in evaluations if e.status in (EvaluationStatus.FAILED, EvaluationStatus.STALE)]
    ranked = [e for e in searched if e.status == EvaluationStatus.COMPLETE and e.fidelity == Fidelity.FULL
              and _num((e.scores or {}).get("validation")) is not None]
    top = max(ranked, key=lambda e: e.scores["validation"], default=None)  # first of equals, as the leaderboard
    best = None if top is None else {"id": top.candidate_id, "fitness": top.scores["validation"]}
    limits = run.config.get("budget") or {}
    budget = limits.get("max_evaluations")
    finished = [e.finished_at for e in done if e.finished_at is not None]
    rate = eta = None
    if len(finished) >= 2:
        span = (max(finished) - min(e.started_at or e.created_at for e in done)).total_seconds()
        rate = 3600.0 * len(finished) / span if span > 0 else None
    if rate and budget and run.status == RunStatus.RUNNING:
        eta = max(budget - len(done), 0) / rate * 3600.0
    now = datetime.utcnow()
    names = {f"worker-{i}" for i in range(int((run.config.get("resources") or {}).get("workers", 0)))}
    names |= {e.worker for e in evaluations if e.worker}
    workers = []
    for name in sorted(names, key=lambda n: (len(n), n)):
        running = [e for e in evaluations if e.worker == name and e.status == EvaluationStatus.RUNNING]
        row: dict[str, Any] = {"worker": name, "state": "idle", "candidate": None, "seconds": None,
                               "evaluations": sum(1 for e in evaluations if e.worker == name and e.status.is_finished)}
        if running and run.status == RunStatus.RUNNING:
            current = running[-1]
            age = (now - (current.started_at or current.created_at)).total_seconds()
            state = "merging" if age < _merge_estimate(evaluations, name) else "evaluating"
            if state == "evaluating" and current.fidelity == Fidelity.LOW:
                state = "evaluating (low)"
            row.update(candidate=current.candidate_id, seconds=round(age, 1), state=state)
        workers.append(row)
    return {"run": run.id, "name": run.name, "status": run.status.value, "evaluations_done": len(done),
            "budget": budget, "samples_used": samples_used(evaluations), "samples_budget": limits.get("max_samples"),
            "best": best,
            "evaluations_per_hour": rate, "eta_seconds": eta, "failures": len(failures),
            "last_heartbeat": _iso(run.heartbeat_at), "error": run.error, "workers": workers}


def status_renderable(data: dict[str, Any]) -> Table:
    samples = samples_cell(data["samples_used"], data["samples_budget"])
    head = (f"run {data['run']} ({data['name']}) · {data['status']} · {data['evaluations_done']}"
            f"/{data['budget'] or '∞'} evaluations{' · ' + samples if samples else ''} · best "
            f"{_fmt(data['best']['fitness']) + ' (' + data['best']['id'] + ')' if data['best'] else '—'}")
    rate = data["evaluations_per_hour"]
    eta = data["eta_seconds"]
    caption = (f"{rate:.0f} evaluations/h" if rate else "rate —") + (f" · ETA {eta:.0f} s" if eta is not None else "")
    caption += f" · {data['failures']} failed"
    table = Table(title=head, caption=caption)
    for col in ("worker", "state", "candidate", "for (s)", "done"):
        table.add_column(col)
    for w in data["workers"]:
        table.add_row(w["worker"], w["state"], w["candidate"] or "—", _fmt(w["seconds"]), str(w["evaluations"]))
    return table


def print_status(store: Store, run_id: str, fmt: str = "table", watch: float | None = None) -> dict[str, Any]:
    """Print a run's status; with ``watch`` (seconds), refresh until the run stops."""
    data = status_data(store, run_id)
    if fmt == "json":
        print(json.dumps(data, indent=2))
        return data
    if not watch:
        console.print(status_renderable(data))
        return data
    from rich.live import Live

    with Live(status_renderable(data), console=console, auto_refresh=False) as live:
        while data["status"] == RunStatus.RUNNING.value:
            time.sleep(watch)
            data = status_data(store, run_id)
            live.update(status_renderable(data), refresh=True)
    return data


# -- leaderboard -----------------------------------------------------------------------------------
def leaderboard_data(store: Store, run_id: str, split: str = "validation", limit: int | None = None,
                     task: str | None = None, pareto: bool = False,
                     objectives: Sequence[str] | None = None) -> dict[str, Any]:
    """Candidates ranked on validation (the test split never selects), with ``split``'s figures.

    Ranked by validation fitness, or by ``task``'s validation score when a task is given.
    Each row has per-task scores (``tasks``) and its parents' ids; ``parents`` holds the
    reference models (base and sources) with the same figures. With ``pareto``, only the
    merges no other merge dominates on the validation scores of ``objectives`` (default: the
    run's tasks) are kept, before ranking and ``limit``; merges lacking one of those scores
    take no part.
    """
    run = store.get_run(run_id)  # raises a clear error for an unknown run
    complete = complete_evaluations(store, run_id)
    candidates = {c.id: c for c in store.list_candidates(run_id)}
    known_tasks = {t for e in complete.values() for s in SPLITS for t in (e.metrics or {}).get(s, {})}
    if task is not None:
        _check_task(run_id, task, known_tasks)
    if objectives is not None and not pareto:
        raise UserError("--objectives: only with --pareto (the objectives of a Pareto front)")
    if pareto:
        objectives = list(objectives or [t["name"] for t in run.config.get("tasks", []) if t["name"] in known_tasks]
                          or sorted(known_tasks))
        for name in objectives:
            _check_task(run_id, name, known_tasks)
    parents: dict[str, Any] = {}
    ranked = []
    for entry in store.leaderboard(run_id, split="validation"):
        ev, cand = entry.evaluation, entry.candidate
        key = entry.score if task is None else task_scores(ev, "validation").get(task)
        row = {
            "id": cand.id,
            "kind": cand.kind.value,
            "label": cand.label,
            "number": cand.number,
            "generation": cand.generation,
            "fitness": _num(ev.fitness),
            "validation": _num((ev.scores or {}).get("validation")),
            "score": _num((ev.scores or {}).get(split)),
            "tasks": task_scores(ev, split),
            "metrics": (ev.metrics or {}).get(split, {}),
            "recipe_hash": cand.recipe_hash,
            "parents": list(cand.parents),
            "parent_scores": [{"id": p, "label": candidates[p].label if p in candidates else None,
                               "tasks": task_scores(complete.get(p), split)} for p in cand.parents],
            "_key": key,
            "_objectives": [task_scores(ev, "validation").get(t) for t in objectives or ()],
        }
        if cand.kind == CandidateKind.REFERENCE:
            parents[cand.label or cand.id] = row
        else:
            ranked.append(row)
    if pareto:
        scored = [r for r in ranked if None not in r["_objectives"]]
        ranked = [scored[i] for i in pareto_front([r["_objectives"] for r in scored])]
    if task is not None:
        ranked.sort(key=lambda r: (r["_key"] is None, -(r["_key"] or 0.0)))
    if limit is not None:
        ranked = ranked[:limit]
    for rank, row in enumerate(ranked, start=1):
        row["rank"] = rank
    for row in [*ranked, *parents.values()]:
        row.pop("_key")
        row.pop("_objectives")
    return {"run": run_id, "status": run.status.value, "error": run.error, "split": split, "task": task,
            "ranked_by": "validation fitness" if task is None else f"{task} on validation",
            "pareto": {"objectives": objectives, "split": "validation"} if pareto else None,
            "candidates": ranked, "parents": parents}


def _check_task(run_id: str, task: str, known_tasks: set[str]) -> None:
    if task not in known_tasks:
        raise UserError(f"run {run_id}: no task {task!r} (tasks: {', '.join(sorted(known_tasks)) or 'none'})")


def print_leaderboard(store: Store, run_id: str, split: str = "validation", limit: int | None = 20,
                      fmt: str = "table", task: str | None = None, pareto: bool = False,
                      objectives: Sequence[str] | None = None) -> dict[str, Any]:
    data = leaderboard_data(store, run_id, split, limit, task, pareto, objectives)
    rows = [*data["parents"].values(), *data["candidates"]]
    tasks = [task] if task else sorted({t for row in rows for t in row["tasks"]})
    if fmt == "json":
        out = {**data, "candidates": [_public(r) for r in data["candidates"]],
               "parents": {k: _public(r) for k, r in data["parents"].items()}}
        print(json.dumps(out, indent=2, sort_keys=True))
        return data
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["rank", "id", "kind", "label", "fitness", f"score_{split}", *tasks, "parents"])
        for row in rows:
            writer.writerow([row.get("rank", ""), row["id"], row["kind"], row["label"] or "", _csv(row["fitness"]),
                             _csv(row["score"]), *[_csv(row["tasks"].get(t)) for t in tasks],
                             " ".join(row["parents"])])
        print(buf.getvalue(), end="")
        return data
    front = f" · Pareto front over {', '.join(data['pareto']['objectives'])} on validation" if pareto else ""
    status = "" if data["status"] == RunStatus.FINISHED else f" · {data['status']}"
    table = Table(title=f"run {run_id}{status} · {split} split · ranked by {data['ranked_by']}{front}",
                  caption=_leaderboard_caption(data))
    table.add_column("rank")
    table.add_column("candidate")
    table.add_column("score", justify="right")
    for t in tasks:
        table.add_column(t, justify="right")
    table.add_column("parents")
    for name, row in data["parents"].items():
        table.add_row("parent", name, _fmt(row["score"]), *[_fmt(row["tasks"].get(t)) for t in tasks], "",
                      style="dim")
    for row in data["candidates"]:
        parent_text = ", ".join(
            f"{p['label'] or p['id']} ({' '.join(_fmt(p['tasks'].get(t)) for t in tasks)})" for p in row["parent_scores"])
        table.add_row(str(row["rank"]), row["id"], _fmt(row["score"]), *[_fmt(row["tasks"].get(t)) for t in tasks],
                      parent_text or "—")
    console.print(table)
    return data


def _leaderboard_caption(data: dict[str, Any]) -> str | None:
    """Why a table may be empty or not final: a failed run's error, or that nothing finished."""
    if data["status"] == RunStatus.FAILED:
        return f"the run FAILED: {data['error'] or 'no error recorded'}"
    if not data["candidates"]:
        return "no merge has a complete evaluation yet"
    return None


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


# -- one candidate ---------------------------------------------------------------------------------
def lineage(store: Store, candidate: CandidateRecord, depth: int = 6, limit: int = 64) -> list[dict[str, Any]]:
    """Ancestors breadth-first (parents, grandparents, ...), each with its generation and parents;
    at most ``depth`` levels and ``limit`` ancestors."""
    out, seen, frontier = [], {candidate.id}, list(candidate.parents)
    for level in range(1, depth + 1):
        following: list[str] = []
        for cid in frontier:
            if cid in seen or len(out) >= limit:
                continue
            seen.add(cid)
            c = store.get_candidate(cid)
            out.append({"id": c.id, "depth": level, "generation": c.generation, "kind": c.kind.value,
                        "label": c.label, "parents": list(c.parents)})
            following.extend(c.parents)
        frontier = following
        if not frontier:
            break
    return out


def candidate_data(store: Store, candidate_id: str) -> dict[str, Any]:
    """Everything about one candidate: recipe table, per-task and per-sample results, lineage."""
    cand = store.get_candidate(candidate_id)
    evaluations = store.list_evaluations(cand.run_id, candidate_id=cand.id)
    complete = next((e for e in reversed(evaluations) if e.status == EvaluationStatus.COMPLETE), None)
    samples = {s: store.get_samples(complete.id, s) for s in SPLITS} if complete else {}
    parents_complete = {p: next((e for e in store.list_evaluations(cand.run_id, EvaluationStatus.COMPLETE,
                                                                    candidate_id=p)), None) for p in cand.parents}
    return {
        "id": cand.id, "run": cand.run_id, "kind": cand.kind.value, "label": cand.label, "number": cand.number,
        "generation": cand.generation, "recipe_hash": cand.recipe_hash, "recipe": cand.recipe,
        "recipe_table": recipe_rows(cand.recipe), "genome": list(cand.genome), "strategy_info": cand.strategy_info,
        "status": complete.status.value if complete else (evaluations[-1].status.value if evaluations else None),
        "fitness": _num(complete.fitness) if complete else None,
        "scores": {s: _num(v) for s, v in (complete.scores or {}).items()} if complete else {},
        "tasks": {s: task_scores(complete, s) for s in SPLITS} if complete else {},
        "metrics": complete.metrics if complete else {},
        "samples": {s: v for s, v in samples.items() if v},
        "evaluations": [{"id": e.id, "status": e.status.value, "attempt": e.attempt, "worker": e.worker,
                         "merge_seconds": e.merge_seconds, "eval_seconds": e.eval_seconds,
                         "started_at": _iso(e.started_at), "finished_at": _iso(e.finished_at), "error": e.error}
                        for e in evaluations],
        "parents": [{"id": p, "label": store.get_candidate(p).label,
                     "tasks": {s: task_scores(ev, s) for s in SPLITS}} for p, ev in parents_complete.items()],
        "lineage": lineage(store, cand),
    }


def _values_text(values: list[Any]) -> str:
    return " ".join(_fmt(v) for v in values)


def print_candidate(store: Store, candidate_id: str, fmt: str = "table") -> dict[str, Any]:
    data = candidate_data(store, candidate_id)
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str))
        return data
    console.print(f"[bold]{data['id']}[/] · run {data['run']} · {data['kind']}"
                  f"{' ' + data['label'] if data['label'] else ''} · #{data['number']} gen {data['generation']} · "
                  f"{data['recipe']['merge_method']} · {data['status'] or 'not evaluated'} · fitness "
                  f"{_fmt(data['fitness'])}")
    groups = max((len(r["values"]) for r in data["recipe_table"] if r["form"] == "groups"), default=1)
    recipe = Table(title="recipe (values per layer group)")
    for col in ("model", "parameter", "kind"):
        recipe.add_column(col)
    for g in range(groups):
        recipe.add_column(f"g{g}", justify="right")
    for r in data["recipe_table"]:
        vals = r["values"] if r["form"] == "groups" else (r["values"] * groups if r["form"] == "scalar" else
                                                          [_values_text(r["values"])] + [""] * (groups - 1))
        recipe.add_row(r["model"], r["parameter"], r["kind"] or "", *[_fmt(v) for v in vals])
    console.print(recipe)
    tasks = Table(title="per-task results")
    tasks.add_column("task")
    for s in SPLITS:
        tasks.add_column(s, justify="right")
    for t in sorted({t for s in SPLITS for t in data["tasks"].get(s, {})}):
        tasks.add_row(t, *[_fmt(data["tasks"].get(s, {}).get(t)) for s in SPLITS])
    console.print(tasks)
    for split, per_task in data["samples"].items():
        for t, scores in per_task.items():
            solved = sum(1 for v in scores if v > 0)
            console.print(f"samples {split}/{t}: {solved}/{len(scores)} solved  "
                          + "".join("█" if v > 0 else "·" for v in scores))
    if data["parents"]:
        pt = Table(title="parents")
        pt.add_column("parent")
        pt.add_column("validation tasks")
        for p in data["parents"]:
            pt.add_row(p["label"] or p["id"], " ".join(f"{t}={_fmt(v)}" for t, v in p["tasks"]["validation"].items()))
        console.print(pt)
    if data["lineage"]:
        console.print("lineage: " + "; ".join(f"{'  ' * (a['depth'] - 1)}{a['id']} (gen {a['generation']}, depth "
                                              f"{a['depth']})" for a in data["lineage"]))
    return data


# -- two candidates --------------------------------------------------------------------------------
def compare_data(store: Store, a: str, b: str) -> dict[str, Any]:
    """Two candidates side by side: recipe values, per-task scores, and the samples only one solves."""
    da, db = candidate_data(store, a), candidate_data(store, b)
    key = lambda r: (r["model"], r["parameter"], r["kind"])  # noqa: E731
    ra, rb = {key(r): r["values"] for r in da["recipe_table"]}, {key(r): r["values"] for r in db["recipe_table"]}
    recipe = [{"model": k[0], "parameter": k[1], "kind": k[2], "a": ra.get(k), "b": rb.get(k)}
              for k in sorted(set(ra) | set(rb), key=lambda k: tuple(str(x) for x in k))]
    tasks = {s: {t: {"a": da["tasks"].get(s, {}).get(t), "b": db["tasks"].get(s, {}).get(t)}
                 for t in sorted(set(da["tasks"].get(s, {})) | set(db["tasks"].get(s, {})))} for s in SPLITS}
    samples: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        for t in sorted(set(da["samples"].get(split, {})) & set(db["samples"].get(split, {}))):
            sa, sb = da["samples"][split][t], db["samples"][split][t]
            samples.setdefault(split, {})[t] = {
                "n": min(len(sa), len(sb)),
                "only_a": [i for i, (x, y) in enumerate(zip(sa, sb)) if x > 0 >= y],
                "only_b": [i for i, (x, y) in enumerate(zip(sa, sb)) if y > 0 >= x],
                "both": sum(1 for x, y in zip(sa, sb) if x > 0 and y > 0)}
    return {"a": _summary(da), "b": _summary(db), "recipe": recipe, "tasks": tasks, "samples": samples}


def _summary(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in ("id", "run", "kind", "label", "fitness", "scores", "recipe_hash")} | {
        "merge_method": d["recipe"]["merge_method"]}


def print_compare(store: Store, a: str, b: str, fmt: str = "table") -> dict[str, Any]:
    data = compare_data(store, a, b)
    if fmt == "json":
        print(json.dumps(data, indent=2))
        return data
    name = {k: data[k]["label"] or data[k]["id"] for k in ("a", "b")}
    head = Table(title=f"A = {name['a']}  vs  B = {name['b']}")
    head.add_column("")
    head.add_column("A", justify="right")
    head.add_column("B", justify="right")
    head.add_row("method", data["a"]["merge_method"], data["b"]["merge_method"])
    head.add_row("fitness", _fmt(data["a"]["fitness"]), _fmt(data["b"]["fitness"]))
    for split, per_task in data["tasks"].items():
        for t, v in per_task.items():
            head.add_row(f"{t} ({split})", _fmt(v["a"]), _fmt(v["b"]))
    console.print(head)
    recipe = Table(title="recipe values (per layer group)")
    for col in ("model", "parameter", "kind", "A", "B"):
        recipe.add_column(col)
    for r in data["recipe"]:
        recipe.add_row(r["model"], r["parameter"], r["kind"] or "", _values_text(r["a"] or ["—"]),
                       _values_text(r["b"] or ["—"]))
    console.print(recipe)
    for split, per_task in data["samples"].items():
        for t, s in per_task.items():
            console.print(f"{split}/{t}: both solve {s['both']}/{s['n']}; only A solves {_ids(s['only_a'])}; "
                          f"only B solves {_ids(s['only_b'])}")
    return data


def _ids(items: Iterable[int]) -> str:
    items = list(items)
    return f"{len(items)} {items}" if items else "0"


def _csv(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
