"""Day-two changes: ``operations`` (an asked-for change and its parameters),
``containers.environment``, ``containers.source_id`` (a clone's source) and
``containers.safe_change``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The new table and the two nullable columns (nothing to fill in)."""
    op.create_table(
        "operations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("container_id", sa.String(length=36), nullable=False),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["container_id"],
            ["containers.id"],
            name=op.f("fk_operations_container_id_containers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operations")),
    )
    op.create_index(op.f("ix_operations_container_id_created_at"), "operations",
                    ["container_id", "created_at"], unique=False)  # fmt: skip
    with op.batch_alter_table("containers") as batch:
        batch.add_column(sa.Column("environment", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("source_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("safe_change", sa.JSON(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_containers_source_id_containers"),
            "containers",
            ["source_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(op.f("ix_containers_source_id"), ["source_id"], unique=False)


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("containers") as batch:
        batch.drop_index(op.f("ix_containers_source_id"))
        batch.drop_constraint(op.f("fk_containers_source_id_containers"), type_="foreignkey")
        batch.drop_column("safe_change")
        batch.drop_column("source_id")
        batch.drop_column("environment")
    op.drop_index(op.f("ix_operations_container_id_created_at"), table_name="operations")
    op.drop_table("operations")
