"""Bulk actions whose worker dies: the reaper hands them on, the takeover goes on after the dead worker's last
checkpoint, and each error is acted on once.

The clock is controlled (time-machine) and nothing sleeps. A worker killed with SIGKILL is stood in for by a
BaseException raised inside the action's loop: nothing catches it, its step is rolled back, and its heartbeat
stops, as a real kill leaves things.
"""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from integrations.connectors.sandbox import seed_records
from syncs import bulk, reaper
from syncs.bulk import GIVEN_UP, MAX_ATTEMPTS, bulk_action_perform, bulk_action_request
from syncs.models import (
    BulkAction,
    BulkActionKind,
    BulkActionStatus,
    ErrorStatus,
    Resolution,
    RunStatus,
    SyncRun,
    Trigger,
)
from syncs.tasks import reap_runs
from tests.syncs.helpers import person, record_errors, records, run_mapping, set_faults

pytestmark = pytest.mark.django_db

T0 = "2026-11-22 12:00:00+00:00"


class WorkerKilled(BaseException):
    """Stands in for SIGKILL in-process: nothing in the action catches it, so no finish and no cleanup."""


def stale():
    return timedelta(seconds=settings.RESYNC_HEARTBEAT_STALE_SECONDS)


def kill_at_step(monkeypatch, step):
    """Die in step `step` (1-based) of any bulk action, after its work and before its checkpoint is committed.

    Returns a function that brings the worker back to life.
    """
    perform, calls = bulk._perform, []

    def perform_or_die(action, mapping_id):
        summary = perform(action, mapping_id)
        calls.append(mapping_id)
        if len(calls) == step:
            raise WorkerKilled
        return summary

    monkeypatch.setattr(bulk, "_perform", perform_or_die)
    return lambda: monkeypatch.setattr(bulk, "_perform", perform)


@pytest.fixture
def three_mappings(make_mapping, failing_target):
    """Three mappings into a target that is down, two failed records each: six open errors."""
    mappings = []
    for n in range(3):
        mapping = make_mapping(target=failing_target, match_keys=[])
        seed_records(mapping.source_connection, "contacts", [person(10 * n), person(10 * n + 1)])
        run_mapping(mapping)
        mappings.append(mapping)
    assert record_errors(status=ErrorStatus.OPEN).count() == 6
    return mappings


def replays():
    return SyncRun.objects.filter(trigger=Trigger.RETRY).order_by("pk")


def replayed_errors():
    """Every error id each replay run names, with repeats: a list with no duplicate means each error once."""
    return sorted(error for run in replays() for error in run.options["errors"])


@time_machine.travel(T0, tick=False)
def test_a_bulk_retry_killed_midway_is_finished_by_the_reaper_with_each_error_retried_once(
        org, three_mappings, failing_target, monkeypatch):
    first, second, third = three_mappings
    action = bulk_action_request(organization=org, kind=BulkActionKind.RETRY, selection={"filter": {}})
    revive = kill_at_step(monkeypatch, 2)

    with pytest.raises(WorkerKilled):
        bulk_action_perform(action_id=action.pk)

    # The first mapping's step was committed with its checkpoint; the second died with its worker.
    action.refresh_from_db()
    assert (action.status, action.attempts, action.summary) == (BulkActionStatus.RUNNING, 1, None)
    assert action.progress["after_mapping"] == first.pk
    assert action.progress["summary"]["queued"] == 2
    assert [run.mapping_id for run in replays()] == [first.pk]
    revive()

    assert reaper.bulk_actions_reap() == []  # its heartbeat is not stale yet: the worker may only be slow
    assert bulk_action_perform(action_id=action.pk) is None  # nor is a second delivery of its task taken
    set_faults(failing_target)  # the target is back
    with time_machine.travel(action.heartbeat_at + stale() + timedelta(seconds=1), tick=False):
        # Tasks run inline in tests: the first replay (queued before the kill) and the takeover run right here.
        reap_runs()

    action.refresh_from_db()
    assert (action.status, action.attempts, action.failure) == (BulkActionStatus.SUCCEEDED, 2, "")
    assert [run.mapping_id for run in replays()] == [first.pk, second.pk, third.pk]
    assert action.summary == {"queued": 6, "skipped": {}, "runs": [str(run.code) for run in replays()]}
    assert replayed_errors() == sorted(record_errors().values_list("pk", flat=True))

    # The replays the takeover queued are handed to a worker in turn; each record is written once.
    with time_machine.travel(action.finished_at + stale() + timedelta(seconds=1), tick=False):
        reap_runs()
    assert set(replays().values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
    assert set(record_errors().values_list("status", "resolution")) == {(ErrorStatus.RESOLVED,
                                                                         Resolution.BULK_RETRY)}
    emails = [row.data["email"] for row in records(failing_target)]
    assert len(emails) == len(set(emails)) == 6


@time_machine.travel(T0, tick=False)
def test_a_bulk_ignore_killed_midway_ignores_each_error_once(org, three_mappings, monkeypatch):
    ids = list(record_errors().order_by("pk").values_list("pk", flat=True))
    action = bulk_action_request(organization=org, kind=BulkActionKind.IGNORE, selection={"ids": ids},
                                 options={"note": "Test contacts"})
    revive = kill_at_step(monkeypatch, 3)

    with pytest.raises(WorkerKilled):
        bulk_action_perform(action_id=action.pk)
    revive()
    assert record_errors(status=ErrorStatus.IGNORED).count() == 4  # the third step was rolled back

    with time_machine.travel(timezone.now() + stale() + timedelta(seconds=1), tick=False):
        assert reaper.bulk_actions_reap() == [action.pk]

    action.refresh_from_db()
    assert (action.status, action.attempts) == (BulkActionStatus.SUCCEEDED, 2)
    # Nothing "already resolved": the takeover did not act again on what the first worker had closed.
    assert action.summary == {"closed": 6, "skipped": {}}
    assert record_errors(status=ErrorStatus.IGNORED, resolution_note="Test contacts").count() == 6


@time_machine.travel(T0, tick=False)
def test_a_worker_taken_for_dead_stops_before_its_next_step(org, three_mappings, monkeypatch):
    first, second, third = three_mappings
    action = bulk_action_request(organization=org, kind=BulkActionKind.RETRY, selection={"filter": {}})
    step, tokens = bulk._step, []

    def step_then_fall_silent(action_, token, errors):
        done = step(action_, token, errors)
        tokens.append(token)
        if len(tokens) == 1:
            # The first worker stalls after its first step (a long pause, a network partition) for longer than the
            # stale threshold: a second worker takes the action over, does the next step and is killed in the one
            # after it.
            BulkAction.objects.filter(pk=action.pk).update(heartbeat_at=timezone.now() - stale() - timedelta(1))
            revive = kill_at_step(monkeypatch, 2)
            with pytest.raises(WorkerKilled):
                bulk_action_perform(action_id=action.pk)
            revive()
        return done

    monkeypatch.setattr(bulk, "_step", step_then_fall_silent)

    # The first worker wakes up, finds the second worker's token on the action, and stops without acting.
    assert bulk_action_perform(action_id=action.pk) is None

    action.refresh_from_db()
    assert (action.status, action.attempts) == (BulkActionStatus.RUNNING, 2)
    assert action.progress["after_mapping"] == second.pk
    assert [run.mapping_id for run in replays()] == [first.pk, second.pk]
    assert len(set(tokens)) == 2

    with time_machine.travel(action.heartbeat_at + stale() + timedelta(seconds=1), tick=False):
        assert reaper.bulk_actions_reap() == [action.pk]

    action.refresh_from_db()
    assert (action.status, action.attempts, action.summary["queued"]) == (BulkActionStatus.SUCCEEDED, 3, 6)
    assert [run.mapping_id for run in replays()] == [first.pk, second.pk, third.pk]
    assert replayed_errors() == sorted(record_errors().values_list("pk", flat=True))


@time_machine.travel(T0, tick=False)
def test_the_reaper_hands_on_silent_and_lost_actions_and_gives_up_on_one_that_keeps_dying(org, monkeypatch):
    enqueued = []
    monkeypatch.setattr(reaper, "async_task", lambda func, *args, **kwargs: enqueued.append((func, *args)))
    now = timezone.now()

    def action(status, **fields):
        created = BulkAction.objects.create(organization=org, kind=BulkActionKind.RESOLVE,
                                            selection={"filter": {}}, status=status)
        BulkAction.objects.filter(pk=created.pk).update(**fields)
        return created.pk

    silent = action(BulkActionStatus.RUNNING, heartbeat_at=now - stale() - timedelta(seconds=1), attempts=1)
    alive = action(BulkActionStatus.RUNNING, heartbeat_at=now - stale() + timedelta(seconds=1), attempts=1)
    lost = action(BulkActionStatus.QUEUED, created_at=now - stale() - timedelta(seconds=1))
    action(BulkActionStatus.QUEUED, created_at=now)  # its task is still on its way
    action(BulkActionStatus.SUCCEEDED, heartbeat_at=now - timedelta(days=1), attempts=1)
    dying = action(BulkActionStatus.RUNNING, heartbeat_at=now - stale() - timedelta(seconds=1),
                   attempts=MAX_ATTEMPTS)

    assert sorted(reaper.bulk_actions_reap()) == sorted([silent, lost])

    assert sorted(enqueued) == sorted([("syncs.tasks.run_bulk_action", silent),
                                       ("syncs.tasks.run_bulk_action", lost)])
    assert alive not in [args[1] for args in enqueued]
    given_up = BulkAction.objects.get(pk=dying)
    assert (given_up.status, given_up.failure, given_up.finished_at) == (BulkActionStatus.FAILED, GIVEN_UP, now)
    # The silent action's task takes it over; the one that keeps dying cannot be claimed any more.
    assert bulk.bulk_action_claim(action_id=silent) is not None
    assert bulk.bulk_action_claim(action_id=silent) is None  # a second claim finds it taken
    assert bulk.bulk_action_claim(action_id=dying) is None


@time_machine.travel(T0, tick=False)
def test_a_lost_task_of_a_queued_action_is_carried_out_by_the_reaper(org, three_mappings):
    action = bulk_action_request(organization=org, kind=BulkActionKind.RESOLVE, selection={"filter": {}})

    assert reap_runs() == []  # requested just now: its task may still be on its way
    with time_machine.travel(timezone.now() + stale() + timedelta(seconds=1), tick=False):
        reap_runs()

    action.refresh_from_db()
    assert (action.status, action.attempts, action.summary) == (BulkActionStatus.SUCCEEDED, 1,
                                                                 {"closed": 6, "skipped": {}})
    assert bulk_action_perform(action_id=action.pk) is None  # done: a late delivery of the lost task is a no-op


@time_machine.travel(T0, tick=False)
def test_an_action_that_loses_its_database_is_left_running_for_the_reaper(org, three_mappings, monkeypatch):
    action = bulk_action_request(organization=org, kind=BulkActionKind.RESOLVE, selection={"filter": {}})

    perform = bulk._perform

    def lose_database(action_, mapping_id):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(bulk, "_perform", lose_database)
    with pytest.raises(OperationalError):
        bulk_action_perform(action_id=action.pk)

    action.refresh_from_db()
    assert (action.status, action.failure) == (BulkActionStatus.RUNNING, "")  # not failed for good
    monkeypatch.setattr(bulk, "_perform", perform)
    with time_machine.travel(timezone.now() + stale() + timedelta(seconds=1), tick=False):
        assert reaper.bulk_actions_reap() == [action.pk]
    action.refresh_from_db()
    assert (action.status, action.summary["closed"]) == (BulkActionStatus.SUCCEEDED, 6)


@time_machine.travel(T0, tick=False)
def test_a_bug_fails_the_action_and_says_what_was_done_before(org, three_mappings, monkeypatch):
    action = bulk_action_request(organization=org, kind=BulkActionKind.RESOLVE, selection={"filter": {}})
    perform = bulk._perform

    def fail_second(action_, mapping_id):
        if mapping_id != three_mappings[0].pk:
            raise KeyError("a bug")
        return perform(action_, mapping_id)

    monkeypatch.setattr(bulk, "_perform", fail_second)
    with pytest.raises(KeyError):
        bulk_action_perform(action_id=action.pk)

    action.refresh_from_db()
    assert action.status == BulkActionStatus.FAILED
    assert action.failure == ("The action stopped on an unexpected internal error. Before that, 2 error(s) were "
                              "closed.")
    assert action.claim_token is None
    with time_machine.travel(timezone.now() + stale() * 10, tick=False):
        assert reaper.bulk_actions_reap() == []  # failed is final
