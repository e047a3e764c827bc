"""Batches fan out: a page's records staged on its batch for any worker, who processed it, the runs its errors
touched; a run's read and finish marks; an index for the batches in flight."""

import django.core.serializers.json
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('syncs', '0007_dashboards_at_scale'),
    ]

    operations = [
        migrations.AddField(
            model_name='syncbatch',
            name='records',
            field=models.JSONField(blank=True, encoder=django.core.serializers.json.DjangoJSONEncoder, null=True),
        ),
        migrations.AddField(
            model_name='syncbatch',
            name='touched_runs',
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name='syncbatch',
            name='worker',
            field=models.CharField(blank=True, default='', help_text='host:pid of the worker that processed the batch (last, if it was taken over).', max_length=100),
        ),
        migrations.AddField(
            model_name='syncrun',
            name='finishing_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='syncrun',
            name='read_finished_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='syncbatch',
            name='status',
            field=models.CharField(choices=[('pending', 'Pending'), ('staged', 'Read, waiting for a worker'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('partially_failed', 'Partially failed'), ('failed', 'Failed'), ('recovered', 'Recovered by a later run')], default='pending', max_length=20),
        ),
        migrations.AddIndex(
            model_name='syncbatch',
            index=models.Index(condition=models.Q(('status__in', ['staged', 'running'])), fields=['status', 'heartbeat_at'], name='batch_status_heartbeat_idx'),
        ),
    ]
