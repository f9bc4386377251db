"""Each evaluation's fidelity (multi-fidelity runs) and how many documents it scored.

Revision ID: 0003_fidelity
Revises: 0002_kinds_and_run_errors
Create Date: 2026-12-01

A multi-fidelity run scores a candidate first on a subsample (``fidelity = 'low'``) and, if
promoted, again in full (``'full'``): a candidate may then have one COMPLETE evaluation per
fidelity. Every evaluation recorded before this revision was a full one. ``samples_scored``
(the documents scored over every task and split, the cost unit) is filled in from the stored
per-sample scores of COMPLETE evaluations. Frozen, like 0001 and 0002.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_fidelity"
down_revision: str | Sequence[str] | None = "0002_kinds_and_run_errors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("fidelity", sa.String(8), nullable=False, server_default="full"))
        batch.add_column(sa.Column("samples_scored", sa.Integer(), nullable=True))
    samples = sa.table("sample_scores", sa.column("evaluation_id", sa.Integer), sa.column("scores", sa.JSON))
    evaluations = sa.table("evaluations", sa.column("id", sa.Integer), sa.column("status", sa.String),
                           sa.column("samples_scored", sa.Integer))
    connection = op.get_bind()
    counts: dict[int, int] = {}
    for row in connection.execute(sa.select(samples.c.evaluation_id, samples.c.scores)).all():
        counts[row.evaluation_id] = counts.get(row.evaluation_id, 0) + len(row.scores or [])
    complete = connection.execute(sa.select(evaluations.c.id).where(evaluations.c.status == "COMPLETE")).scalars()
    for evaluation_id in list(complete):
        connection.execute(evaluations.update().where(evaluations.c.id == evaluation_id)
                           .values(samples_scored=counts.get(evaluation_id, 0)))


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("samples_scored")
        batch.drop_column("fidelity")
