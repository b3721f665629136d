"""Client sandboxes: ``sandboxes`` and ``sandbox_items``, and on
``containers`` the ``plan`` its runs follow and its ``owner``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The two tables; every existing container follows the ``provision`` plan."""
    op.create_table(
        "sandboxes",
        sa.Column("container_id", sa.String(length=36), nullable=False),
        sa.Column("client", sa.String(length=40), nullable=False),
        sa.Column("source_url", sa.String(length=2048), nullable=False),
        sa.Column("source_user", sa.String(length=128), nullable=False),
        sa.Column("source_secret_ciphertext", sa.Text(), nullable=False),
        sa.Column("source_ca_file", sa.String(length=1024), nullable=True),
        sa.Column("source_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("target_secret_ciphertext", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("warned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["container_id"],
            ["containers.id"],
            name=op.f("fk_sandboxes_container_id_containers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("container_id", name=op.f("pk_sandboxes")),
    )
    op.create_index(op.f("ix_sandboxes_client"), "sandboxes", ["client"], unique=False)
    op.create_index(op.f("ix_sandboxes_expires_at"), "sandboxes", ["expires_at"], unique=False)
    op.create_table(
        "sandbox_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("container_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["container_id"],
            ["containers.id"],
            name=op.f("fk_sandbox_items_container_id_containers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_items")),
        sa.UniqueConstraint(
            "container_id",
            "kind",
            "source_id",
            name=op.f("uq_sandbox_items_container_id_kind_source_id"),
        ),
    )
    with op.batch_alter_table("containers") as batch:
        batch.add_column(sa.Column("plan", sa.String(length=16), nullable=False,
                                   server_default="provision"))  # fmt: skip
        batch.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
        batch.create_index(op.f("ix_containers_owner"), ["owner"], unique=False)


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("containers") as batch:
        batch.drop_index(op.f("ix_containers_owner"))
        batch.drop_column("owner")
        batch.drop_column("plan")
    op.drop_table("sandbox_items")
    op.drop_index(op.f("ix_sandboxes_expires_at"), table_name="sandboxes")
    op.drop_index(op.f("ix_sandboxes_client"), table_name="sandboxes")
    op.drop_table("sandboxes")
