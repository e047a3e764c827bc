"""Mapping schedules as django-q2 Schedule rows: one per scheduled mapping, named after it."""

from django_q.models import Schedule

from mappings.models import ScheduleType


def schedule_name(mapping):
    return f"mapping-{mapping.pk}"


def mapping_schedule_sync(*, mapping):
    """Create, update or delete the django-q2 schedule that runs `mapping`, to match its settings."""
    name = schedule_name(mapping)
    wanted = mapping.is_active and mapping.schedule_type != ScheduleType.NONE
    if mapping.schedule_type == ScheduleType.INTERVAL and not mapping.schedule_interval_minutes:
        wanted = False
    if mapping.schedule_type == ScheduleType.CRON and not mapping.schedule_cron:
        wanted = False
    if not wanted:
        Schedule.objects.filter(name=name).delete()
        return None
    defaults = {"func": "syncs.tasks.run_scheduled_mapping", "args": str(mapping.pk), "repeats": -1}
    if mapping.schedule_type == ScheduleType.INTERVAL:
        defaults.update(schedule_type=Schedule.MINUTES, minutes=mapping.schedule_interval_minutes, cron=None)
    else:
        defaults.update(schedule_type=Schedule.CRON, cron=mapping.schedule_cron, minutes=None)
    schedule, _created = Schedule.objects.update_or_create(name=name, defaults=defaults)
    return schedule
