"""Candidate kinds (search or reference) as a column, why a run stopped, a failure's kind.

Revision ID: 0002_kinds_and_run_errors
Revises: 0001_initial
Create Date: 2026-12-01

Source models scored beside a search used to be marked by a ``reference`` key inside
``strategy_info``; they now have ``kind = 'reference'`` and their name in ``label``. Runs that
stop on their own (fail-fast) keep the reason in ``runs.error``. A failed evaluation keeps its
kind in ``evaluations.error_kind`` (a lost worker used to be told by an ``error`` prefix).
Frozen, like 0001.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_kinds_and_run_errors"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="search"))
        batch.add_column(sa.Column("label", sa.String(256), nullable=True))
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("error_kind", sa.String(32), nullable=True))
    # Carry over the references recorded the old way.
    candidates = sa.table("candidates", sa.column("id", sa.String), sa.column("strategy_info", sa.JSON),
                          sa.column("kind", sa.String), sa.column("label", sa.String))
    connection = op.get_bind()
    for row in connection.execute(sa.select(candidates.c.id, candidates.c.strategy_info)).all():
        info = row.strategy_info if isinstance(row.strategy_info, dict) else {}
        if "reference" in info:
            rest = {k: v for k, v in info.items() if k != "reference"}
            connection.execute(candidates.update().where(candidates.c.id == row.id)
                               .values(kind="reference", label=str(info["reference"]), strategy_info=rest))


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("error_kind")
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("label")
        batch.drop_column("kind")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("error")
