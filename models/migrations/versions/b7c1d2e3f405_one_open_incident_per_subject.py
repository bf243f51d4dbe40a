"""one open incident per kind and subject

A partial unique index, so two writers detecting the same problem at once cannot open it twice.

Revision ID: b7c1d2e3f405
Revises: a3a2e3884369
Create Date: 2026-12-01 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7c1d2e3f405"
down_revision: str | None = "a3a2e3884369"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Close duplicates an older version may have left open: keep the oldest open row of each subject.
    op.execute(
        "UPDATE incident SET resolved_at = opened_at WHERE resolved_at IS NULL AND id NOT IN ("
        "SELECT MIN(id) FROM incident WHERE resolved_at IS NULL GROUP BY kind, subject_type, subject_id)"
    )
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.create_index(
            "uq_incident_open",
            ["kind", "subject_type", "subject_id"],
            unique=True,
            sqlite_where=sa.text("resolved_at IS NULL"),
            postgresql_where=sa.text("resolved_at IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.drop_index("uq_incident_open", sqlite_where=sa.text("resolved_at IS NULL"))
