"""the process a run runs in, and abandoned runs

``run.host`` and ``run.pid``: the machine and process of a run, so that a run whose process ended before it did can
be told from one still going, and recorded as ``lost``. ``thread.run_abandoned_at``: when the thread's stopped run
was cancelled, so that it is never continued.

Revision ID: 971f8afef8d2
Revises: a9d2e4f6b8c1
Create Date: 2026-12-07 08:42:37.364151
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "971f8afef8d2"
down_revision: str | None = "a9d2e4f6b8c1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))
        batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=True))
    with op.batch_alter_table("thread", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_abandoned_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("thread", schema=None) as batch_op:
        batch_op.drop_column("run_abandoned_at")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("pid")
        batch_op.drop_column("host")
