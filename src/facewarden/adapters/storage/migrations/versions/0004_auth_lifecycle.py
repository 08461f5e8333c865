"""authentication lifecycle: token issue and last use, server-side console sessions,
reviewers assigned to cases

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_issued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    # Tokens issued before this revision count from the user's creation.
    op.execute("UPDATE users SET token_issued_at = created_at WHERE token_issued_at IS NULL")
    with op.batch_alter_table("case_members") as batch:
        batch.add_column(
            sa.Column("role", sa.String(length=20), nullable=False, server_default="investigator")
        )
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    with op.batch_alter_table("console_sessions") as batch:
        batch.create_index("ix_console_sessions_user_id", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_table("console_sessions")
    with op.batch_alter_table("case_members") as batch:
        batch.drop_column("role")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("token_issued_at")
