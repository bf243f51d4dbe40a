"""domain events, interrupt deadlines, double texting

The domain event journal (``domain_event``, read by ``GET /events`` by id), the deadline of each pending interrupt
(``interrupt_deadline``, unique per thread and interrupt), and three thread columns: the checkpoint a run started
from (for a ``rollback`` double text), a notice for the next turn, and the model the thread ran with.

Revision ID: f7a1c3d5e9b2
Revises: e3b9c7a1f2d4
Create Date: 2026-12-07 01:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "f7a1c3d5e9b2"
down_revision: str | None = "e3b9c7a1f2d4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "domain_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("subject_type", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("subject_id", sa.Integer(), nullable=True),
        sa.Column("thread_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("domain_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_domain_event_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_domain_event_created_at"), ["created_at"], unique=False)
    op.create_table(
        "interrupt_deadline",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("thread_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("interrupt_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("deadline_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("default_answer", sa.JSON(), nullable=False),
        sa.Column("reminders_sent", sa.JSON(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("settled_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("thread_id", "interrupt_id"),
    )
    with op.batch_alter_table("interrupt_deadline", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_interrupt_deadline_thread_id"), ["thread_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_interrupt_deadline_deadline_at"), ["deadline_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_interrupt_deadline_status"), ["status"], unique=False)
    with op.batch_alter_table("thread", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("run_base_checkpoint", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.add_column(sa.Column("notice", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("thread", schema=None) as batch_op:
        batch_op.drop_column("model")
        batch_op.drop_column("notice")
        batch_op.drop_column("run_base_checkpoint")
    with op.batch_alter_table("interrupt_deadline", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_interrupt_deadline_status"))
        batch_op.drop_index(batch_op.f("ix_interrupt_deadline_deadline_at"))
        batch_op.drop_index(batch_op.f("ix_interrupt_deadline_thread_id"))
    op.drop_table("interrupt_deadline")
    with op.batch_alter_table("domain_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_domain_event_created_at"))
        batch_op.drop_index(batch_op.f("ix_domain_event_kind"))
    op.drop_table("domain_event")
