"""Dashboards at scale: the indexes the errors list, the analytics, error groups and the admin read from, fewer
single-column indexes on record errors (each one costs every status change), trigram indexes for the search filter
and a livelier autovacuum for index-only scans (PostgreSQL only), bulk actions done by a worker, and the hourly
counts of record errors the analytics read (backfilled here, refreshed every five minutes)."""

import uuid
from datetime import UTC, timedelta

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Count
from django.db.models.functions import TruncHour
from django.utils import timezone

# The errors list's `search` is a case-insensitive substring of three columns (an icontains, UPPER(col) LIKE
# UPPER('%term%') on PostgreSQL): trigram indexes on exactly those expressions serve it. SQLite has none.
SEARCH_COLUMNS = {"message": "error_message_trgm_idx", "source_record_id": "error_record_id_trgm_idx",
                  "error_code": "error_code_trgm_idx"}


# Index-only scans (the analytics, error groups) skip the table only for pages the visibility map says are
# all-visible, which takes a vacuum: by default autovacuum waits for a fifth of a million-row table to change.
AUTOVACUUM = ("autovacuum_vacuum_scale_factor", "autovacuum_vacuum_insert_scale_factor",
              "autovacuum_analyze_scale_factor")


def postgresql_create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column, name in SEARCH_COLUMNS.items():
        schema_editor.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "syncs_recorderror" '
                              f'USING gin ((UPPER("{column}"::text)) gin_trgm_ops)')
    settings = ", ".join(f"{name} = 0.01" for name in AUTOVACUUM)
    schema_editor.execute(f'ALTER TABLE "syncs_recorderror" SET ({settings})')


def postgresql_drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f'ALTER TABLE "syncs_recorderror" RESET ({", ".join(AUTOVACUUM)})')
    for name in SEARCH_COLUMNS.values():
        schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')


def error_counts_backfill(apps, schema_editor):
    """Every hour of record errors so far, counted (syncs.rollups.error_rollups_refresh does the same from then on:
    an hour ended ten minutes ago is counted)."""
    RecordError = apps.get_model("syncs", "RecordError")
    ErrorCountHour = apps.get_model("syncs", "ErrorCountHour")
    RollupWatermark = apps.get_model("syncs", "RollupWatermark")
    if not RecordError.objects.exists():
        return  # nothing to count yet: the first refresh starts the rollup
    until = (timezone.now() - timedelta(minutes=10)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    counts = (RecordError.objects.filter(level="record", created_at__lt=until)
              .annotate(hour=TruncHour("created_at", tzinfo=UTC))
              .values("organization_id", "hour", "category", "error_code")
              .annotate(count=Count("created_at")).order_by())
    batch = []
    for row in counts.iterator(chunk_size=5000):
        batch.append(ErrorCountHour(**row))
        if len(batch) == 5000:
            ErrorCountHour.objects.bulk_create(batch)
            batch = []
    ErrorCountHour.objects.bulk_create(batch)
    RollupWatermark.objects.update_or_create(name="error_counts", defaults={"counted_until": until})


ROLLUP_SCHEDULE = "resync: error rollups"


def rollup_schedule_create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=ROLLUP_SCHEDULE,
        defaults={"func": "syncs.tasks.refresh_error_rollups", "args": None, "kwargs": None, "schedule_type": "I",
                  "minutes": 5, "repeats": -1, "cron": None},
    )


def rollup_schedule_remove(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name=ROLLUP_SCHEDULE).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0002_apitoken_idempotencyrecord'),
        ('mappings', '0003_opaque_cursors_and_schema_cache'),
        ('syncs', '0006_run_plan_and_reverse_cursor'),
        ('django_q', '0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more'),
    ]

    operations = [
        migrations.CreateModel(
            name='BulkAction',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('code', models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                ('kind', models.CharField(choices=[('retry', 'Retry'), ('ignore', 'Ignore'), ('resolve', 'Resolve')], max_length=10)),
                ('selection', models.JSONField(default=dict)),
                ('options', models.JSONField(blank=True, default=dict)),
                ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed')], default='queued', max_length=10)),
                ('summary', models.JSONField(blank=True, null=True)),
                ('failure', models.TextField(blank=True, default='', help_text='Why the action stopped without being done.')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'ordering': ['-created_at', '-id'],
            },
        ),
        migrations.RemoveIndex(
            model_name='recorderror',
            name='error_org_level_created_idx',
        ),
        migrations.RemoveIndex(
            model_name='recorderror',
            name='error_org_resolved_idx',
        ),
        migrations.RemoveIndex(
            model_name='recorderror',
            name='error_org_retried_idx',
        ),
        migrations.RemoveIndex(
            model_name='recordlink',
            name='link_org_status_idx',
        ),
        migrations.AlterField(
            model_name='recorderror',
            name='claim_token',
            field=models.UUIDField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='recorderror',
            name='fingerprint',
            field=models.CharField(max_length=40),
        ),
        migrations.AlterField(
            model_name='recorderror',
            name='mapping',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='record_errors', to='mappings.mapping'),
        ),
        migrations.AlterField(
            model_name='recorderror',
            name='organization',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.organization'),
        ),
        migrations.AddIndex(
            model_name='recorderror',
            index=models.Index(fields=['organization', '-created_at', '-id', 'status', 'category', 'level', 'mapping', 'error_code'], name='error_org_recent_idx'),
        ),
        migrations.AddIndex(
            model_name='recorderror',
            index=models.Index(fields=['mapping', '-created_at', '-id', 'status', 'category', 'level', 'error_code'], name='error_mapping_recent_idx'),
        ),
        migrations.AddIndex(
            model_name='recorderror',
            index=models.Index(condition=models.Q(('claim_token__isnull', False)), fields=['claim_token'], name='error_claim_token_idx'),
        ),
        migrations.AddIndex(
            model_name='recorderror',
            index=models.Index(fields=['organization', 'level', 'created_at', 'category', 'error_code'], name='error_org_window_idx'),
        ),
        migrations.AddIndex(
            model_name='recorderror',
            index=models.Index(condition=models.Q(('level', 'record'), ('resolution__in', ('auto_retry', 'replay', 'manual_retry', 'bulk_retry', 'fixed', 'ignored')), ('status__in', ('resolved', 'ignored'))), fields=['organization', 'resolved_at', 'first_seen_at'], name='error_org_resolved_idx'),
        ),
        migrations.AddIndex(
            model_name='recorderror',
            index=models.Index(condition=models.Q(('last_retried_at__isnull', False), ('level', 'record')), fields=['organization', 'last_retried_at', 'status', 'resolution'], name='error_org_retried_idx'),
        ),
        migrations.AddIndex(
            model_name='recorderror',
            index=models.Index(condition=models.Q(('level', 'record'), ('status__in', ('open', 'retry_scheduled', 'retrying', 'in_review', 'exhausted'))), fields=['organization', 'fingerprint', 'mapping', 'category', 'error_code', 'field', 'status', 'first_seen_at', 'created_at', 'id'], name='error_org_open_group_idx'),
        ),
        migrations.AddIndex(
            model_name='recordlink',
            index=models.Index(fields=['organization', 'status', 'mapping'], name='link_org_status_mapping_idx'),
        ),
        migrations.AddField(
            model_name='bulkaction',
            name='organization',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.organization'),
        ),
        migrations.AddIndex(
            model_name='bulkaction',
            index=models.Index(fields=['organization', '-created_at'], name='bulk_action_org_recent_idx'),
        ),
        migrations.RunPython(postgresql_create, postgresql_drop),
        migrations.CreateModel(
            name='RollupWatermark',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=50, unique=True)),
                ('counted_until', models.DateTimeField()),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.CreateModel(
            name='ErrorCountHour',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('hour', models.DateTimeField()),
                ('category', models.CharField(choices=[('connection', 'Connection'), ('timeout', 'Timeout'), ('rate_limit', 'Rate limit'), ('auth', 'Authentication'), ('permission', 'Permission'), ('validation', 'Validation'), ('duplicate', 'Duplicate'), ('not_found', 'Not found'), ('mapping', 'Mapping'), ('conflict', 'Conflict'), ('unknown', 'Unknown')], max_length=20)),
                ('error_code', models.CharField(blank=True, default='', max_length=100)),
                ('count', models.PositiveIntegerField()),
                ('organization', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='accounts.organization')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('organization', 'hour', 'category', 'error_code'), name='error_count_hour_unique')],
            },
        ),
        migrations.RunPython(error_counts_backfill, migrations.RunPython.noop),
        migrations.RunPython(rollup_schedule_create, rollup_schedule_remove),
    ]
