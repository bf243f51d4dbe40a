"""cron jobs

User crons: a message posted to a project's own thread on a schedule. ``next_fire_at`` is indexed for the sync's
due query; ``name`` is unique (the CLI and API address crons by it).

Revision ID: e3b9c7a1f2d4
Revises: c86336c02042
Create Date: 2026-12-06 23:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "e3b9c7a1f2d4"
down_revision: str | None = "c86336c02042"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "cron_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("schedule", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("message", sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_fire_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("fire_seq", sa.Integer(), nullable=False),
        sa.Column("last_fired_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_outcome", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("cron_job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cron_job_name"), ["name"], unique=True)
        batch_op.create_index(batch_op.f("ix_cron_job_next_fire_at"), ["next_fire_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_cron_job_project_id"), ["project_id"], unique=False)


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("cron_job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cron_job_project_id"))
        batch_op.drop_index(batch_op.f("ix_cron_job_next_fire_at"))
        batch_op.drop_index(batch_op.f("ix_cron_job_name"))
    op.drop_table("cron_job")
