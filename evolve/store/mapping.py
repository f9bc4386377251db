"""Between caller values, ORM rows and frozen records.

- Rows to records: `run_record`, `candidate_record`, `evaluation_record`,
  `snapshot_record`, called inside the session so nothing is loaded lazily later.
- Caller values to column values: `to_list`, `as_float`, `recipe_and_hash`,
  `split_mapping`, `sample_scores`; they raise `TypeError` before any transaction starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from evolve.store.models import (
    CandidateModel,
    EvaluationModel,
    RunModel,
    SnapshotModel,
    decode_float,
    to_json_data,
)
from evolve.store.records import (
    CandidateKind,
    CandidateRecord,
    EvaluationRecord,
    EvaluationStatus,
    Fidelity,
    RunRecord,
    RunStatus,
    SnapshotRecord,
)
from search_spaces.recipe import recipe_hash


def recipe_hash_of(recipe: Mapping[str, Any]) -> str:
    """Hash of a recipe mapping: `search_spaces.recipe.recipe_hash`, the same as `Recipe.hash`."""
    return recipe_hash(to_json_data(recipe, "recipe"))


# -- rows to records ----------------------------------------------------------------------------


def run_record(row: RunModel) -> RunRecord:
    return RunRecord(
        id=row.id,
        name=row.name,
        config=row.config,
        status=RunStatus(row.status),
        seed=int(row.seed),
        created_at=row.created_at,
        updated_at=row.updated_at,
        heartbeat_at=row.heartbeat_at,
        error=row.error,
    )


def candidate_record(row: CandidateModel) -> CandidateRecord:
    return CandidateRecord(
        id=row.id,
        run_id=row.run_id,
        number=row.number,
        generation=row.generation,
        genome=tuple(float(x) for x in row.genome),
        recipe=row.recipe,
        recipe_hash=row.recipe_hash,
        parents=tuple(row.parents),
        strategy_info=row.strategy_info,
        created_at=row.created_at,
        kind=CandidateKind(row.kind),
        label=row.label,
    )


def evaluation_record(row: EvaluationModel) -> EvaluationRecord:
    return EvaluationRecord(
        id=row.id,
        run_id=row.run_id,
        candidate_id=row.candidate_id,
        status=EvaluationStatus(row.status),
        attempt=row.attempt,
        fitness=decode_float(row.fitness, row.fitness_kind),
        scores={k: float(v) for k, v in (row.scores or {}).items()},
        metrics=row.metrics or {},
        merge_seconds=row.merge_seconds,
        eval_seconds=row.eval_seconds,
        worker=row.worker,
        host=row.host,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.heartbeat_at,
        error_kind=row.error_kind,
        fidelity=Fidelity(row.fidelity),
        samples_scored=row.samples_scored,
    )


def snapshot_record(row: SnapshotModel) -> SnapshotRecord:
    return SnapshotRecord(
        run_id=row.run_id, sequence=row.sequence, state=row.state, created_at=row.created_at
    )


# -- caller values to column values ---------------------------------------------------------


def to_list(value: Any, where: str) -> list[Any]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, Iterable)):
        raise TypeError(f"{where} must be a sequence of numbers, got {type(value).__name__}")
    return list(value)


def as_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"{where} must be a number, got {value!r}")
    return float(value)


def recipe_and_hash(recipe: Any, recipe_hash: str | None) -> tuple[dict[str, Any], str]:
    data = recipe.to_dict() if hasattr(recipe, "to_dict") else recipe
    if not isinstance(data, Mapping):
        raise TypeError(f"recipe must be a mapping or have to_dict(), got {type(recipe).__name__}")
    data = to_json_data(dict(data), "recipe")
    if recipe_hash is None:
        own = getattr(recipe, "hash", None)
        own = own() if callable(own) else own
        recipe_hash = own if isinstance(own, str) else recipe_hash_of(data)
    if not isinstance(recipe_hash, str) or not recipe_hash:
        raise TypeError(f"recipe_hash must be a non-empty string, got {recipe_hash!r}")
    return data, recipe_hash


def split_mapping(value: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise TypeError(f"{where} must be {{split: {{task: ...}}}}, got {value!r:.200}")
    return to_json_data(dict(value), where)


def sample_scores(value: Mapping[str, Mapping[str, Sequence[float]]] | None) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for split, tasks in split_mapping(value, "samples").items():
        out[split] = {}
        for task, scores in tasks.items():
            values = to_list(scores, f"samples[{split!r}][{task!r}]")
            out[split][task] = [as_float(v, f"samples[{split!r}][{task!r}]") for v in values]
    return out
