"""github repo id bigint; local-forge ids negative

GitHub's repository ids are 64-bit: on PostgreSQL the 32-bit ``integer`` column refused any id from 2^31 on ("value
out of int32 range") and failed the whole sync pass, so it becomes ``bigint``. SQLite's INTEGER already holds 64
bits: its column is left as it is (rebuilding the table would have to drop ``project``, which other tables reference).

The local forge's ids become negative, as the forge now hands them out (GitHub's are positive): a project made on
the local forge and synced with GitHub later is never confirmed by id against GitHub. A project whose clone URL is
not an http(s) URL has a local-forge repository.

Revision ID: 3a83d9a53da7
Revises: c5e0d9a1b2f3
Create Date: 2026-12-06 22:48:29.928454
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3a83d9a53da7"
down_revision: str | None = "c5e0d9a1b2f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOCAL = "clone_url IS NOT NULL AND clone_url NOT LIKE 'http://%' AND clone_url NOT LIKE 'https://%'"


def upgrade() -> None:
    """Apply."""
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("project", "github_repo_id", existing_type=sa.Integer(), type_=sa.BigInteger())
    op.execute(f"UPDATE project SET github_repo_id = -github_repo_id WHERE github_repo_id > 0 AND {LOCAL}")


def downgrade() -> None:
    """Revert."""
    op.execute(f"UPDATE project SET github_repo_id = -github_repo_id WHERE github_repo_id < 0 AND {LOCAL}")
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("project", "github_repo_id", existing_type=sa.BigInteger(), type_=sa.Integer())
