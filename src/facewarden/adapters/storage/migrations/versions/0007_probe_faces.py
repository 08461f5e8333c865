"""probe faces kept with their case: the encrypted crop of each searched probe face

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 20:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "probe_faces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("face_index", sa.Integer(), nullable=False),
        sa.Column("box", sa.JSON(), nullable=False),
        sa.Column("quality", sa.JSON(), nullable=False),
        sa.Column("quality_problems", sa.JSON(), nullable=False),
        sa.Column("time_s", sa.Float(), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["search_id"], ["case_searches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("search_id", "face_index", name="uq_probe_face"),
    )
    with op.batch_alter_table("probe_faces") as batch:
        batch.create_index("ix_probe_faces_search_id", ["search_id"], unique=False)


def downgrade() -> None:
    op.drop_table("probe_faces")
