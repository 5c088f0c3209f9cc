"""fraud: address-change history, fraud labels, risk assessments; orders get a recipient name and a zip index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 23:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "riskassessment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("decision", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=True),
        sa.Column("model_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("rules_only", sa.Boolean(), nullable=False),
        sa.Column("conversation_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("riskassessment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_riskassessment_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index("ix_riskassessment_order_time", ["order_id", "created_at"], unique=False)

    op.create_table(
        "addresschange",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("order_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("old_address1", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("old_zip", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("address1", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("address2", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("city", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("zip", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("country", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("recipient_name", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"]),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("addresschange", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_addresschange_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_addresschange_order_id"), ["order_id"], unique=False)

    op.create_table(
        "fraudlabel",
        sa.Column("order_id", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("customer_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("pattern", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("case_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"]),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.PrimaryKeyConstraint("order_id"),
    )
    with op.batch_alter_table("fraudlabel", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_fraudlabel_case_id"), ["case_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_fraudlabel_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_fraudlabel_pattern"), ["pattern"], unique=False)

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ship_name", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.create_index(batch_op.f("ix_orders_ship_zip"), ["ship_zip"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_ship_zip"))
        batch_op.drop_column("ship_name")

    with op.batch_alter_table("fraudlabel", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_fraudlabel_pattern"))
        batch_op.drop_index(batch_op.f("ix_fraudlabel_customer_id"))
        batch_op.drop_index(batch_op.f("ix_fraudlabel_case_id"))
    op.drop_table("fraudlabel")

    with op.batch_alter_table("addresschange", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_addresschange_order_id"))
        batch_op.drop_index(batch_op.f("ix_addresschange_customer_id"))
    op.drop_table("addresschange")

    with op.batch_alter_table("riskassessment", schema=None) as batch_op:
        batch_op.drop_index("ix_riskassessment_order_time")
        batch_op.drop_index(batch_op.f("ix_riskassessment_customer_id"))
    op.drop_table("riskassessment")
