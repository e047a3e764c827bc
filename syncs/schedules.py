"""Mapping schedules as django-q2 Schedule rows: one per scheduled mapping, named after it."""

from datetime import datetime, timedelta

from croniter import croniter
from django.utils import timezone
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
    schedule = Schedule.objects.filter(name=name).first()
    if schedule is None or _timing(schedule) != _timing(Schedule(**defaults)):
        # The first tick comes one interval from now: a new schedule must not fire a run the moment the
        # cluster starts, on top of the one the operator just queued.
        defaults["next_run"] = _first_run(mapping)
    schedule, _created = Schedule.objects.update_or_create(name=name, defaults=defaults)
    return schedule


def _timing(schedule):
    return (schedule.schedule_type, schedule.minutes, schedule.cron)


def _first_run(mapping):
    now = timezone.now()
    if mapping.schedule_type == ScheduleType.INTERVAL:
        return now + timedelta(minutes=mapping.schedule_interval_minutes)
    return croniter(mapping.schedule_cron, now).get_next(datetime)
