"""match strength and subjects: a case's threshold policy (fixed distance or target FPIR);
subjects of the source system (ingest manifests) and the faces linked to them

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 20:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("threshold_policy", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("target_fpir", sa.Float(), nullable=True))
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("subject_fields", sa.JSON(), nullable=True))
    op.create_table(
        "subjects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source_id", "reference"),
    )
    with op.batch_alter_table("subjects") as batch:
        batch.create_index("ix_subjects_source_id", ["source_id"], unique=False)
    # A plain ADD COLUMN (with its reference) on both databases: a batch re-creation of the
    # faces table on SQLite would be slow on a large gallery.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE faces ADD COLUMN subject_id INTEGER "
            "REFERENCES subjects (id) ON DELETE SET NULL"
        )
    else:
        op.add_column(
            "faces",
            sa.Column(
                "subject_id",
                sa.Integer(),
                sa.ForeignKey("subjects.id", name="fk_faces_subject_id", ondelete="SET NULL"),
                nullable=True,
            ),
        )
    op.create_index("ix_faces_subject_id", "faces", ["subject_id"], unique=False)


def downgrade() -> None:
    # On SQLite a batch re-creation of sources or cases would drop the old table with
    # foreign keys on, and its ON DELETE CASCADE would empty media, faces and case records:
    # plain DROP COLUMN instead (SQLite 3.35+).
    op.drop_index("ix_faces_subject_id", table_name="faces")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE faces DROP COLUMN subject_id")
        op.drop_table("subjects")
        op.execute("ALTER TABLE sources DROP COLUMN subject_fields")
        op.execute("ALTER TABLE cases DROP COLUMN target_fpir")
        op.execute("ALTER TABLE cases DROP COLUMN threshold_policy")
        return
    op.drop_column("faces", "subject_id")
    op.drop_table("subjects")
    op.drop_column("sources", "subject_fields")
    op.drop_column("cases", "target_fpir")
    op.drop_column("cases", "threshold_policy")
