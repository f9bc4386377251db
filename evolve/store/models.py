"""ORM tables of the store, plus the small SQL helpers they need.

Nothing here is exported to callers of the store: `store.Store` turns rows into the frozen
records of `records.py` (with `mapping.py`) before its session closes.

Portability notes (SQLite and PostgreSQL):
- Every timestamp is written by the database clock (`utcnow()`), as naive UTC. Workers on
  different hosts with skewed clocks therefore agree on heartbeat ages.
- SQLite stores NaN in a REAL column as NULL, and PostgreSQL's JSON rejects NaN/Infinity.
  Fitness is therefore stored as (value, kind), like optuna's `value_type`, and JSON
  documents go through `JSONValue`, which tags non-finite floats.
- Status columns are plain strings validated in Python, so a later status needs no
  table rebuild on SQLite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.sql.expression import FunctionElement

from evolve.store.errors import NotFoundError

# -- database clock -----------------------------------------------------------------------


class utcnow(FunctionElement):
    """The database's current time as naive UTC, with sub-second precision."""

    type = sa.DateTime()
    inherit_cache = True
    name = "utcnow"


@compiles(utcnow)
def _utcnow_default(element: Any, compiler: Any, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    # CURRENT_TIMESTAMP has whole seconds on SQLite; %f gives milliseconds.
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


@compiles(utcnow, "postgresql")
def _utcnow_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    return "(statement_timestamp() AT TIME ZONE 'UTC')"


class seconds_since(FunctionElement):
    """Seconds elapsed on the database clock since a `utcnow()` timestamp column."""

    type = sa.Float()
    inherit_cache = True
    name = "seconds_since"


@compiles(seconds_since, "sqlite")
def _seconds_since_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"((julianday('now') - julianday({column})) * 86400.0)"


@compiles(seconds_since, "postgresql")
def _seconds_since_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"EXTRACT(EPOCH FROM ((statement_timestamp() AT TIME ZONE 'UTC') - {column}))"


# -- non-finite floats --------------------------------------------------------------------

FINITE, INF_POS, INF_NEG, NAN = "FINITE", "INF_POS", "INF_NEG", "NAN"


def encode_float(value: float) -> tuple[float | None, str]:
    """(column value, kind): non-finite values are stored as NULL plus their kind."""
    value = float(value)
    if math.isnan(value):
        return None, NAN
    if math.isinf(value):
        return None, INF_POS if value > 0 else INF_NEG
    return value, FINITE


def decode_float(value: float | None, kind: str | None) -> float | None:
    if kind is None:
        return None
    if kind == FINITE:
        return float(value)  # type: ignore[arg-type]
    return {NAN: math.nan, INF_POS: math.inf, INF_NEG: -math.inf}[kind]


_FLOAT_TAG = "$float"
_TAGGED = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def to_json_data(value: Any, where: str = "value") -> Any:
    """A copy of `value` made of dict/list/str/int/float/bool/None, with non-finite floats
    tagged as {"$float": "nan" | "inf" | "-inf"}. Tuples become lists; numpy scalars and
    arrays are accepted through `tolist()`. Raises TypeError naming the offending path."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return {_FLOAT_TAG: "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: JSON object keys must be strings, got {key!r}")
            out[key] = to_json_data(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [to_json_data(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy scalar or array, without importing numpy
        return to_json_data(value.tolist(), where)
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def from_json_data(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _FLOAT_TAG in value and value[_FLOAT_TAG] in _TAGGED:
            return _TAGGED[value[_FLOAT_TAG]]
        return {key: from_json_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json_data(item) for item in value]
    return value


class JSONValue(sa.types.TypeDecorator):
    """JSON that round-trips +-inf and NaN on every backend (see `to_json_data`)."""

    impl = sa.JSON(none_as_null=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else to_json_data(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else from_json_data(value)


# -- tables -------------------------------------------------------------------------------

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class RunModel(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(256))
    config: Mapped[Any] = mapped_column(JSONValue, nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16))
    seed: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime, default=utcnow())
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime, default=utcnow(), onupdate=utcnow())
    heartbeat_at: Mapped[datetime | None] = mapped_column(sa.DateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)

    @classmethod
    def find_or_raise(
        cls, session: Session, run_id: str, *, for_update: bool = False, key_share: bool = False
    ) -> RunModel:
        """`for_update` locks the row on PostgreSQL (SQLite writes are serialized anyway);
        `key_share` makes it FOR NO KEY UPDATE, which still lets other transactions insert
        rows that reference the run."""
        query = sa.select(cls).where(cls.id == run_id)
        if for_update:
            query = query.with_for_update(key_share=key_share)
        row = session.scalars(query).one_or_none()
        if row is None:
            raise NotFoundError(f"run {run_id!r} is not in the store")
        return row


class CandidateModel(Base):
    __tablename__ = "candidates"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "recipe_hash"),
        sa.UniqueConstraint("run_id", "number"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(sa.Integer)
    generation: Mapped[int] = mapped_column(sa.Integer)
    genome: Mapped[Any] = mapped_column(JSONValue, nullable=False)
    recipe: Mapped[Any] = mapped_column(JSONValue, nullable=False)
    recipe_hash: Mapped[str] = mapped_column(sa.String(64), index=True)
    parents: Mapped[Any] = mapped_column(JSONValue, nullable=False)
    strategy_info: Mapped[Any] = mapped_column(JSONValue, nullable=False)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime, default=utcnow())
    kind: Mapped[str] = mapped_column(sa.String(16), server_default="search")
    label: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)

    @classmethod
    def find_or_raise(
        cls, session: Session, candidate_id: str, *, for_update: bool = False
    ) -> CandidateModel:
        query = sa.select(cls).where(cls.id == candidate_id)
        if for_update:
            query = query.with_for_update()
        row = session.scalars(query).one_or_none()
        if row is None:
            raise NotFoundError(f"candidate {candidate_id!r} is not in the store")
        return row


class EvaluationModel(Base):
    __tablename__ = "evaluations"
    __table_args__ = (sa.Index("ix_evaluations_run_id_status", "run_id", "status"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    candidate_id: Mapped[str] = mapped_column(
        sa.ForeignKey("candidates.id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(sa.String(16))
    attempt: Mapped[int] = mapped_column(sa.Integer)
    fitness: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    fitness_kind: Mapped[str | None] = mapped_column(sa.String(8), nullable=True)
    scores: Mapped[Any] = mapped_column(JSONValue, nullable=True)
    metrics: Mapped[Any] = mapped_column(JSONValue, nullable=True)
    merge_seconds: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    eval_seconds: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    worker: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)
    host: Mapped[str | None] = mapped_column(sa.String(256), nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    error_kind: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    fidelity: Mapped[str] = mapped_column(sa.String(8), server_default="full")
    samples_scored: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime, default=utcnow())
    started_at: Mapped[datetime | None] = mapped_column(sa.DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(sa.DateTime, nullable=True)

    @classmethod
    def find_or_raise(
        cls, session: Session, evaluation_id: int, *, for_update: bool = False
    ) -> EvaluationModel:
        query = sa.select(cls).where(cls.id == evaluation_id)
        if for_update:
            query = query.with_for_update()
        row = session.scalars(query).one_or_none()
        if row is None:
            raise NotFoundError(f"evaluation {evaluation_id!r} is not in the store")
        return row


class SampleScoresModel(Base):
    """Per-sample scores of one evaluation on one task of one split, as a JSON list.

    One row per (evaluation, split, task) rather than one per sample: an archive of ~20
    candidates x a few tasks x a few hundred samples is a few dozen rows, read back whole.
    """

    __tablename__ = "sample_scores"
    __table_args__ = (sa.UniqueConstraint("evaluation_id", "split", "task"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    evaluation_id: Mapped[int] = mapped_column(sa.ForeignKey("evaluations.id", ondelete="CASCADE"))
    split: Mapped[str] = mapped_column(sa.String(64))
    task: Mapped[str] = mapped_column(sa.String(256))
    scores: Mapped[Any] = mapped_column(JSONValue, nullable=False)


class SnapshotModel(Base):
    __tablename__ = "strategy_snapshots"
    __table_args__ = (sa.UniqueConstraint("run_id", "sequence"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(sa.Integer)
    state: Mapped[Any] = mapped_column(JSONValue, nullable=False)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime, default=utcnow())
