"""video faces: time in the video and track of each face

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("faces") as batch:
        batch.add_column(sa.Column("time_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("track", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("faces") as batch:
        batch.drop_column("track")
        batch.drop_column("time_s")
