"""The periodic django-q2 schedules every installation needs: the retry sweeper and the reaper.

Idempotent (update_or_create by name), so running it on a database that already has them changes nothing but
their settings; the reverse removes them.
"""

from django.db import migrations

PERIODIC_SCHEDULES = {
    "resync: retry sweeper": "syncs.tasks.sweep_retries",
    "resync: reaper": "syncs.tasks.reap_runs",
}


def create_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, func in PERIODIC_SCHEDULES.items():
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "args": None, "kwargs": None, "schedule_type": "I", "minutes": 1,
                      "repeats": -1, "cron": None},
        )


def remove_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name__in=list(PERIODIC_SCHEDULES)).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("syncs", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedules, remove_schedules)]
