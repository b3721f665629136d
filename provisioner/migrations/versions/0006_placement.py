"""Placement across a cluster: on ``nodes`` the PVE ``cluster`` a node
belongs to (None: standalone), ``maintenance`` (no new containers; a drain
moves its containers away) and ``max_containers`` (a cap; None: none); on
``containers`` the ``spread_group`` whose members go to different nodes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The four columns; every existing node is schedulable and uncapped."""
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("cluster", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("maintenance", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))  # fmt: skip
        batch.add_column(sa.Column("max_containers", sa.Integer(), nullable=True))
    with op.batch_alter_table("containers") as batch:
        batch.add_column(sa.Column("spread_group", sa.String(length=64), nullable=True))
        batch.create_index(op.f("ix_containers_spread_group"), ["spread_group"], unique=False)


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("containers") as batch:
        batch.drop_index(op.f("ix_containers_spread_group"))
        batch.drop_column("spread_group")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("max_containers")
        batch.drop_column("maintenance")
        batch.drop_column("cluster")
