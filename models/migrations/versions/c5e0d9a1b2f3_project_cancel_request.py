"""project cancel request

Who asked to cancel a project's work in flight, and why: read by every engineering round and agent step, so a run in
another process stops before its next model call. (``cancelled``, the new project status, needs no DDL: statuses
are stored as plain strings.)

Revision ID: c5e0d9a1b2f3
Revises: 06208ce494d4
Create Date: 2026-12-02 06:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "c5e0d9a1b2f3"
down_revision: str | None = "06208ce494d4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancel_requested_by", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("cancel_reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.drop_column("cancel_reason")
        batch_op.drop_column("cancel_requested_by")
