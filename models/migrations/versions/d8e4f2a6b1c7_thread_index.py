"""thread index

Each thread's pending interrupts and run state beside it, written when a run starts and ends, so listings read one
table instead of every thread's checkpoint; ``updated_at`` indexed for the newest-first pages. Existing threads get
``pending`` NULL: they are indexed from their checkpoint the first time a listing meets them.

Revision ID: d8e4f2a6b1c7
Revises: 3a83d9a53da7
Create Date: 2026-12-06 23:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d8e4f2a6b1c7"
down_revision: str | None = "3a83d9a53da7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    with op.batch_alter_table("thread", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("stopped_mid_run", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index(batch_op.f("ix_thread_updated_at"), ["updated_at"], unique=False)


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("thread", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_thread_updated_at"))
        batch_op.drop_column("stopped_mid_run")
        batch_op.drop_column("pending")
