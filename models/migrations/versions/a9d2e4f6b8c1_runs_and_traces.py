"""runs and traces

Every run of a thread (``run``) and every node execution in it (``node_run``); each model call names its run and
node (``llmcall.run_id``, ``llmcall.node``); a thread may be archived (``thread.archived_at``).

Revision ID: a9d2e4f6b8c1
Revises: f7a1c3d5e9b2
Create Date: 2026-12-07 02:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "a9d2e4f6b8c1"
down_revision: str | None = "f7a1c3d5e9b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "run",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("thread_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_run_thread_id"), ["thread_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_run_started_at"), ["started_at"], unique=False)
    op.create_table(
        "node_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("thread_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("node", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("path", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("node_run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_node_run_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_node_run_thread_id"), ["thread_id"], unique=False)
    with op.batch_alter_table("llmcall", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column("node", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True))
        batch_op.create_index(batch_op.f("ix_llmcall_run_id"), ["run_id"], unique=False)
    with op.batch_alter_table("thread", schema=None) as batch_op:
        batch_op.add_column(sa.Column("archived_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("thread", schema=None) as batch_op:
        batch_op.drop_column("archived_at")
    with op.batch_alter_table("llmcall", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_llmcall_run_id"))
        batch_op.drop_column("node")
        batch_op.drop_column("run_id")
    with op.batch_alter_table("node_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_node_run_thread_id"))
        batch_op.drop_index(batch_op.f("ix_node_run_run_id"))
    op.drop_table("node_run")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_started_at"))
        batch_op.drop_index(batch_op.f("ix_run_thread_id"))
    op.drop_table("run")
