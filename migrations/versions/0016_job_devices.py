"""jobs.devices: how many devices (GPUs, or CPU processes) a job trains on

Revision ID: 0016
Revises: 0015

A train job may ask for `devices: N` (data-parallel training, docs/gpu.md); the queue hands it
only to a worker that advertises at least N. The count is copied out of the params when the job
is queued so that the claim query compares a column. Every existing job needs one device.
"""

from alembic import op
import sqlalchemy as sa

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch: on SQLite a batch rebuilds jobs, and dropping the old table
    # would cascade to every job's log lines.
    op.add_column("jobs", sa.Column("devices", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    # DROP COLUMN in place (SQLite 3.35+), for the same reason.
    op.execute("ALTER TABLE jobs DROP COLUMN devices")
