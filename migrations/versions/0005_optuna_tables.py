"""Optuna's tables, made when the database is migrated

Revision ID: 0005
Revises: 0004

A search job keeps its study in Optuna's tables on Curate's own database. Optuna would make
them itself the first time a storage is opened, which could be under a web request (a
search page) while SQLite's write lock is held elsewhere. Made here, opening a storage only
reads. The tables are Optuna's own models (optuna is pinned below 6), made if absent, so a
database whose first search already made them keeps them.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    import optuna
    from optuna.storages._rdb import models

    bind = op.get_bind()
    models.BaseModel.metadata.create_all(bind, checkfirst=True)
    table = models.VersionInfoModel.__table__
    if bind.execute(table.select().limit(1)).first() is None:
        bind.execute(table.insert().values(schema_version=models.SCHEMA_VERSION, library_version=optuna.__version__))


def downgrade() -> None:
    from optuna.storages._rdb import models

    models.BaseModel.metadata.drop_all(op.get_bind(), checkfirst=True)
