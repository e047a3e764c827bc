"""Mapping schedules become django-q2 schedules, and a scheduled tick queues a run."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from django_q.models import Schedule

from syncs.models import SyncRun, Trigger
from syncs.schedules import mapping_schedule_sync
from syncs.tasks import run_scheduled_mapping

pytestmark = pytest.mark.django_db


def test_an_interval_mapping_gets_a_minutes_schedule(make_mapping):
    mapping = make_mapping(schedule_type="interval", schedule_interval_minutes=15)

    schedule = mapping_schedule_sync(mapping=mapping)

    assert (schedule.schedule_type, schedule.minutes) == (Schedule.MINUTES, 15)
    assert schedule.func == "syncs.tasks.run_scheduled_mapping"
    assert schedule.args == str(mapping.pk)


def test_a_cron_mapping_gets_a_cron_schedule_and_updates_in_place(make_mapping):
    mapping = make_mapping(schedule_type="interval", schedule_interval_minutes=5)
    mapping_schedule_sync(mapping=mapping)
    mapping.schedule_type, mapping.schedule_cron = "cron", "0 * * * *"

    schedule = mapping_schedule_sync(mapping=mapping)

    assert Schedule.objects.filter(name__startswith="mapping-").count() == 1
    assert (schedule.schedule_type, schedule.cron) == (Schedule.CRON, "0 * * * *")


def test_an_inactive_or_unscheduled_mapping_has_no_schedule(make_mapping):
    mapping = make_mapping(schedule_type="interval", schedule_interval_minutes=5)
    mapping_schedule_sync(mapping=mapping)
    mapping.is_active = False

    assert mapping_schedule_sync(mapping=mapping) is None
    assert not Schedule.objects.filter(name__startswith="mapping-").exists()


def test_a_scheduled_tick_queues_one_run_and_not_a_second_while_it_is_queued(make_mapping):
    mapping = make_mapping()

    run_scheduled_mapping(mapping.pk)
    run_scheduled_mapping(mapping.pk)

    run = SyncRun.objects.get()
    assert run.trigger == Trigger.SCHEDULE


def test_a_tick_for_an_inactive_mapping_queues_nothing(make_mapping):
    mapping = make_mapping(is_active=False)

    run_scheduled_mapping(mapping.pk)

    assert not SyncRun.objects.exists()


@time_machine.travel("2026-11-22 12:00:00+00:00", tick=False)
def test_a_new_schedule_first_fires_one_interval_from_now_and_keeps_its_time_when_saved_again(make_mapping):
    mapping = make_mapping(schedule_type="interval", schedule_interval_minutes=15)

    first = mapping_schedule_sync(mapping=mapping)
    assert first.next_run == timezone.now() + timedelta(minutes=15)

    with time_machine.travel("2026-11-22 12:05:00+00:00", tick=False):
        again = mapping_schedule_sync(mapping=mapping)
    assert again.next_run == first.next_run


@time_machine.travel("2026-11-22 12:10:00+00:00", tick=False)
def test_a_cron_schedule_first_fires_at_its_next_cron_time(make_mapping):
    mapping = make_mapping(schedule_type="cron", schedule_cron="0 * * * *")

    schedule = mapping_schedule_sync(mapping=mapping)

    assert schedule.next_run.isoformat() == "2026-11-22T13:00:00+00:00"
