"""initial schema

Revision ID: 0001
Revises: 
"""

from alembic import op
import sqlalchemy as sa

from sqlalchemy.dialects import postgresql

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_used_at', sa.DateTime(), nullable=True),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('datasets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('task', sa.String(length=20), nullable=False),
    sa.Column('classes', JSONType, nullable=False),
    sa.Column('label_version', sa.Integer(), nullable=False),
    sa.Column('settings', JSONType, nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_datasets_created_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets')),
    sa.UniqueConstraint('name', name=op.f('uq_datasets_name'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('params', JSONType, nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('result', JSONType, nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_jobs_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_jobs_dataset_id_datasets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_dataset_id'), ['dataset_id'], unique=False)
        batch_op.create_index('ix_jobs_status_id', ['status', 'id'], unique=False)

    op.create_table('samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=True),
    sa.Column('split', sa.String(length=20), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('features', JSONType, nullable=True),
    sa.Column('image_blob', sa.String(length=64), nullable=True),
    sa.Column('image_path', sa.String(length=1000), nullable=True),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.Column('original_label', sa.String(length=200), nullable=True),
    sa.Column('reviewed', sa.Boolean(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_samples_dataset_id_datasets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_samples')),
    sa.UniqueConstraint('dataset_id', 'external_id', name='uq_samples_dataset_external')
    )
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.create_index('ix_samples_dataset_split_label', ['dataset_id', 'split', 'label'], unique=False)

    op.create_table('snapshots',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('label_version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('sample_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_snapshots_created_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_snapshots_dataset_id_datasets'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_snapshots'))
    )
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_snapshots_dataset_id'), ['dataset_id'], unique=False)

    op.create_table('job_logs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('level', sa.String(length=10), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_logs_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_logs'))
    )
    with op.batch_alter_table('job_logs', schema=None) as batch_op:
        batch_op.create_index('ix_job_logs_job', ['job_id', 'id'], unique=False)

    op.create_table('label_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('sample_id', sa.Integer(), nullable=False),
    sa.Column('old_label', sa.String(length=200), nullable=True),
    sa.Column('new_label', sa.String(length=200), nullable=True),
    sa.Column('old_split', sa.String(length=20), nullable=True),
    sa.Column('new_split', sa.String(length=20), nullable=True),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('label_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_label_events_dataset_id_datasets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_label_events_sample_id_samples'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_label_events_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_label_events'))
    )
    with op.batch_alter_table('label_events', schema=None) as batch_op:
        batch_op.create_index('ix_label_events_dataset', ['dataset_id', 'id'], unique=False)
        batch_op.create_index('ix_label_events_sample', ['sample_id', 'id'], unique=False)

    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('params', JSONType, nullable=False),
    sa.Column('label_version', sa.Integer(), nullable=False),
    sa.Column('metrics', JSONType, nullable=True),
    sa.Column('history', JSONType, nullable=False),
    sa.Column('info', JSONType, nullable=False),
    sa.Column('artifact', sa.String(length=1000), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_runs_dataset_id_datasets'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_runs_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs'))
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_dataset_id', ['dataset_id', 'id'], unique=False)

    op.create_table('snapshot_items',
    sa.Column('snapshot_id', sa.Integer(), nullable=False),
    sa.Column('sample_id', sa.Integer(), nullable=False),
    sa.Column('split', sa.String(length=20), nullable=False),
    sa.Column('label', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_snapshot_items_sample_id_samples'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['snapshot_id'], ['snapshots.id'], name=op.f('fk_snapshot_items_snapshot_id_snapshots'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('snapshot_id', 'sample_id', name=op.f('pk_snapshot_items'))
    )
    # jobs and runs point at each other: the jobs -> runs key comes once both tables exist.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_foreign_key(op.f('fk_jobs_run_id_runs'), 'runs', ['run_id'], ['id'], ondelete='SET NULL')

    op.create_table('predictions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('sample_id', sa.Integer(), nullable=False),
    sa.Column('given_label', sa.String(length=200), nullable=True),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('probs', JSONType, nullable=False),
    sa.Column('loss', sa.Float(), nullable=True),
    sa.Column('self_confidence', sa.Float(), nullable=True),
    sa.Column('normalized_margin', sa.Float(), nullable=True),
    sa.Column('confusion_margin', sa.Float(), nullable=False),
    sa.Column('confusion_a', sa.String(length=200), nullable=False),
    sa.Column('confusion_b', sa.String(length=200), nullable=False),
    sa.Column('entropy', sa.Float(), nullable=False),
    sa.Column('aum', sa.Float(), nullable=True),
    sa.Column('out_of_fold', sa.Boolean(), nullable=False),
    sa.Column('fold', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_predictions_run_id_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], name=op.f('fk_predictions_sample_id_samples'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_predictions')),
    sa.UniqueConstraint('run_id', 'sample_id', name='uq_predictions_run_sample')
    )
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.create_index('ix_predictions_run_aum', ['run_id', 'aum'], unique=False)
        batch_op.create_index('ix_predictions_run_confusion_margin', ['run_id', 'confusion_margin'], unique=False)
        batch_op.create_index('ix_predictions_run_entropy', ['run_id', 'entropy'], unique=False)
        batch_op.create_index('ix_predictions_run_loss', ['run_id', 'loss'], unique=False)
        batch_op.create_index('ix_predictions_run_normalized_margin', ['run_id', 'normalized_margin'], unique=False)
        batch_op.create_index('ix_predictions_run_self_confidence', ['run_id', 'self_confidence'], unique=False)
        batch_op.create_index('ix_predictions_sample', ['sample_id'], unique=False)




def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('fk_jobs_run_id_runs'), type_='foreignkey')


    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_index('ix_predictions_sample')
        batch_op.drop_index('ix_predictions_run_self_confidence')
        batch_op.drop_index('ix_predictions_run_normalized_margin')
        batch_op.drop_index('ix_predictions_run_loss')
        batch_op.drop_index('ix_predictions_run_entropy')
        batch_op.drop_index('ix_predictions_run_confusion_margin')
        batch_op.drop_index('ix_predictions_run_aum')

    op.drop_table('predictions')
    op.drop_table('snapshot_items')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_dataset_id')

    op.drop_table('runs')
    with op.batch_alter_table('label_events', schema=None) as batch_op:
        batch_op.drop_index('ix_label_events_sample')
        batch_op.drop_index('ix_label_events_dataset')

    op.drop_table('label_events')
    with op.batch_alter_table('job_logs', schema=None) as batch_op:
        batch_op.drop_index('ix_job_logs_job')

    op.drop_table('job_logs')
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_snapshots_dataset_id'))

    op.drop_table('snapshots')
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_index('ix_samples_dataset_split_label')

    op.drop_table('samples')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_status_id')
        batch_op.drop_index(batch_op.f('ix_jobs_dataset_id'))

    op.drop_table('jobs')
    op.drop_table('datasets')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))

    op.drop_table('api_tokens')
    op.drop_table('users')

