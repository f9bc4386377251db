"""SQL store of search runs: runs, candidates, evaluations and strategy snapshots.

    from evolve.store import Store, default_store_url

    store = Store(default_store_url())          # sqlite:///runs/evolve.db unless $EVOLVE_STORE
    run = store.create_run("demo", config)
    cand = store.add_candidate(run.id, genome, recipe)
    eid = store.start_evaluation(cand.id, worker="gpu-0")
    store.finish_evaluation(eid, fitness, metrics, samples, timings)

URLs: `sqlite:///path.db`, `sqlite://` (in memory), `postgresql+psycopg://user:pw@host/db`.
The invariants are documented on `Store`. This package never imports torch.

Modules: `store` (the `Store` class: sessions, retries, queries), `engine` (URLs, engines,
the Alembic schema), `mapping` (rows to frozen records, caller values to columns),
`records` (the frozen records), `models` (the ORM tables), `errors`.
"""

from evolve.store.engine import DEFAULT_URL, ENV_VAR, default_store_url, head_revision
from evolve.store.errors import (
    EvaluationStateError,
    FinishedEvaluationError,
    NotFoundError,
    SchemaVersionError,
    StoreConfigError,
    StoreError,
    StoreUnreachableError,
)
from evolve.store.mapping import recipe_hash_of
from evolve.store.records import (
    CandidateKind,
    CandidateRecord,
    EvaluationRecord,
    EvaluationStatus,
    Fidelity,
    LeaderboardEntry,
    RunRecord,
    RunStatus,
    SnapshotRecord,
    Timings,
)
from evolve.store.store import Store, upgrade_schema

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "CandidateKind",
    "CandidateRecord",
    "EvaluationRecord",
    "EvaluationStateError",
    "EvaluationStatus",
    "Fidelity",
    "FinishedEvaluationError",
    "LeaderboardEntry",
    "NotFoundError",
    "RunRecord",
    "RunStatus",
    "SchemaVersionError",
    "SnapshotRecord",
    "Store",
    "StoreConfigError",
    "StoreError",
    "StoreUnreachableError",
    "Timings",
    "default_store_url",
    "head_revision",
    "recipe_hash_of",
    "upgrade_schema",
]
