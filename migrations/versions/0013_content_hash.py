"""samples.content_hash: a key of each sample's content, so exact duplicates are an index lookup

Revision ID: 0013
Revises: 0012

Exact duplicates (the same image bytes, the same normalised text, the same feature vector)
within a dataset and across its splits are found by grouping on the key
(app.datasets.content); imports compute it. Rows from before are keyed here with the same
functions, a dataset and a batch at a time. A plain column and index: no table rebuild on
SQLite.
"""

from alembic import op
import sqlalchemy as sa

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BATCH = 5_000


def upgrade() -> None:
    op.add_column("samples", sa.Column("content_hash", sa.String(length=64), nullable=True))
    op.create_index("ix_samples_dataset_content", "samples", ["dataset_id", "content_hash"])
    _backfill(op.get_bind())


def _backfill(conn) -> None:
    import json

    from app.datasets.content import sample_key

    datasets = conn.execute(sa.text("SELECT id, task, settings FROM datasets")).all()
    for ds_id, task, settings in datasets:
        if isinstance(settings, str):
            settings = json.loads(settings or "{}")
        names = list((settings or {}).get("features") or [])
        last = 0
        while True:
            rows = conn.execute(sa.text(
                "SELECT id, text, features, image_blob FROM samples WHERE dataset_id = :ds AND id > :last "
                "ORDER BY id LIMIT :n"), {"ds": ds_id, "last": last, "n": BATCH}).all()
            if not rows:
                break
            keys = []
            for r in rows:
                features = json.loads(r.features) if isinstance(r.features, str) else r.features
                own = names or list(features or {})
                keys.append({"id": r.id, "key": sample_key(task, own, r.text, features, r.image_blob)})
            conn.execute(sa.text("UPDATE samples SET content_hash = :key WHERE id = :id"), keys)
            last = rows[-1].id


def downgrade() -> None:
    op.drop_index("ix_samples_dataset_content", table_name="samples")
    # Plain ALTER TABLE on both (SQLite >= 3.35): a batch rebuild of samples would drop the
    # rows that point at it.
    op.execute("ALTER TABLE samples DROP COLUMN content_hash")
