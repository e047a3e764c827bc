"""The periodic schedule that re-queues webhook events whose processing task was lost (every 5 minutes)."""

from django.db import migrations

NAME = "resync: lost webhook events"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={"func": "integrations.tasks.requeue_lost_webhook_events", "args": None, "kwargs": None,
                  "schedule_type": "I", "minutes": 5, "repeats": -1, "cron": None},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("integrations", "0002_webhookendpoint_webhookevent"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
