from django.db import migrations, models


class Migration(migrations.Migration):
    """Delta cursors become the connectors' opaque cursors. Datetime cursors are not that: they start over (the
    next run reads everything once; unchanged records cost a hash comparison)."""

    dependencies = [
        ('mappings', '0002_recovery_budget'),
    ]

    operations = [
        migrations.RemoveField(model_name='mapping', name='source_cursor'),
        migrations.RemoveField(model_name='mapping', name='target_cursor'),
        migrations.AddField(
            model_name='mapping',
            name='source_cursor',
            field=models.TextField(blank=True, default=''),
        ),
        migrations.AddField(
            model_name='mapping',
            name='target_cursor',
            field=models.TextField(blank=True, default=''),
        ),
    ]
