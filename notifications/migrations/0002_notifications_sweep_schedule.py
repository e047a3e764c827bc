"""The periodic schedule of notifications (every minute): time-based rules (daily digest, a target failing for N
minutes, failures per hour and unsynced records clearing, recoveries) and deliveries whose retry has come due."""

from django.db import migrations

NAME = "resync: notifications"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={"func": "notifications.tasks.sweep", "args": None, "kwargs": None,
                  "schedule_type": "I", "minutes": 1, "repeats": -1, "cron": None},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("notifications", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
