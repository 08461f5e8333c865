"""indexes for the receipts list: audit records by action, rights requests by audit record

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 02:00:00

The DPO's receipts list reads the few receipt records among what may be millions of search
records: by action (and ``seq`` for the order) instead of a scan of the whole log.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.create_index("ix_audit_action_seq", ["action", "seq"], unique=False)
    with op.batch_alter_table("subject_requests") as batch:
        batch.create_index("ix_subject_requests_audit_seq", ["audit_seq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("subject_requests") as batch:
        batch.drop_index("ix_subject_requests_audit_seq")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_action_seq")
