"""keys and audit MAC: key ids on every encrypted value, a key registry, the audit chain version

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 19:00:00

Existing audit records keep ``chain`` 1 (SHA-256, still verifiable); records appended after
this migration are MAC'd (``chain`` 2) under the audit key, the first of them (written by
``facewarden init``) naming the last SHA-256 record it continues from.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "encryption_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('current', 'retiring', 'retired')", name="ck_key_state"),
        sa.PrimaryKeyConstraint("key_id"),
    )
    for table in ("face_crops", "case_searches", "subject_requests"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("chain", sa.Integer(), nullable=False, server_default="1"))

    conn = op.get_bind()
    # A crop was sealed in the same transaction, under the same key, as its face.
    conn.execute(
        sa.text(
            "UPDATE face_crops SET key_id = "
            "(SELECT faces.key_id FROM faces WHERE faces.id = face_crops.face_id)"
        )
    )
    # The keys the data is under: the newest face's key is current; any other key still
    # named by a face (the key-loss trap of earlier versions) is recorded as retiring, so
    # that start-up names it instead of failing on the first decryption.
    rows = conn.execute(
        sa.text("SELECT key_id, MAX(id) AS newest FROM faces GROUP BY key_id ORDER BY newest")
    ).all()
    now = sa.func.now()
    keys = sa.table(
        "encryption_keys",
        sa.column("key_id", sa.String),
        sa.column("state", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    for n, (key_id, _) in enumerate(rows):
        state = "current" if n == len(rows) - 1 else "retiring"
        conn.execute(sa.insert(keys).values(key_id=key_id, state=state, created_at=now))
    if len(rows) == 1:
        only = rows[0][0]
        for table, column in (
            ("case_searches", "probe_templates"),
            ("subject_requests", "suppression_template"),
        ):
            conn.execute(
                sa.text(f"UPDATE {table} SET key_id = :k WHERE {column} IS NOT NULL"), {"k": only}
            )


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("chain")
    for table in ("subject_requests", "case_searches", "face_crops"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("key_id")
    op.drop_table("encryption_keys")
