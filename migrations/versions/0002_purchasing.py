"""purchasing: supplier lead times per variant, purchase orders and their lines

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 23:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "purchaseorder",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("supplier", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("ordered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expected_arrival", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("purchaseorder", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_purchaseorder_status"), ["status"], unique=False)

    op.create_table(
        "supplieritem",
        sa.Column("variant_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("supplier", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("lead_time_min_days", sa.Integer(), nullable=False),
        sa.Column("lead_time_max_days", sa.Integer(), nullable=False),
        sa.Column("min_order_qty", sa.Integer(), nullable=False),
        sa.Column("discontinued", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["variant_id"],
            ["variant.id"],
        ),
        sa.PrimaryKeyConstraint("variant_id"),
    )
    op.create_table(
        "purchaseorderline",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("purchase_order_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("variant_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["purchase_order_id"],
            ["purchaseorder.id"],
        ),
        sa.ForeignKeyConstraint(
            ["variant_id"],
            ["variant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("purchaseorderline", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_purchaseorderline_purchase_order_id"), ["purchase_order_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_purchaseorderline_variant_id"), ["variant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("purchaseorderline", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_purchaseorderline_variant_id"))
        batch_op.drop_index(batch_op.f("ix_purchaseorderline_purchase_order_id"))

    op.drop_table("purchaseorderline")
    op.drop_table("supplieritem")
    with op.batch_alter_table("purchaseorder", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_purchaseorder_status"))

    op.drop_table("purchaseorder")
