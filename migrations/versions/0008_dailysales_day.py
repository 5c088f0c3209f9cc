"""dailysales.day indexed on its own: the last day the sales feed reached, without a table scan

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dailysales", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dailysales_day"), ["day"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dailysales", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dailysales_day"))
