"""The reaper and the retry sweeper: the periodic tasks that recover what a killed worker or a due retry left.

The unit tests control the clock and never sleep. The last test kills a real `qcluster` with SIGKILL in the
middle of a 2,000-record run and proves the reaped run finishes with every record in the target exactly once.
"""

import importlib
import time
from datetime import timedelta

import pytest
import time_machine
from django.apps import apps
from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone
from django_q.models import Schedule

from integrations.connectors.sandbox import seed_records
from integrations.models import SandboxRecord
from syncs import reaper
from syncs.engine import sync_run_execute
from syncs.engine.bookkeeping import BatchOutcome
from syncs.models import BatchStatus, ErrorLevel, ErrorStatus, RecordError, RecordLink, RunStatus, SyncBatch, SyncRun
from syncs.services import sync_run_queue
from syncs.tasks import reap_runs, sweep_retries
from tests.syncs.conftest import qcluster_kill, wait_for_finish
from tests.syncs.helpers import person, records, run_mapping

T0 = "2026-11-22 12:00:00+00:00"

periodic = importlib.import_module("syncs.migrations.0002_periodic_schedules")


def stale_seconds():
    return timedelta(seconds=settings.RESYNC_HEARTBEAT_STALE_SECONDS)


class WorkerKilled(BaseException):
    """Stands in for SIGKILL in-process: nothing in the engine catches it, so no finish() and no cleanup."""


def kill_at_batch(monkeypatch, sequence):
    """Die when batch `sequence` is about to be saved: its records are written to the target, not yet linked.

    Returns a function that brings the worker back to life.
    """
    save = BatchOutcome.save

    def save_or_die(outcome):
        if outcome.batch.sequence == sequence:
            raise WorkerKilled
        save(outcome)

    monkeypatch.setattr(BatchOutcome, "save", save_or_die)
    return lambda: monkeypatch.setattr(BatchOutcome, "save", save)


def target_emails(mapping):
    return [row.data["email"] for row in records(mapping.target_connection)]


# --- the periodic schedules -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_migration_schedules_the_sweeper_and_the_reaper_every_minute_idempotently():
    Schedule.objects.filter(name__in=list(periodic.PERIODIC_SCHEDULES)).delete()

    periodic.create_schedules(apps, None)
    Schedule.objects.filter(name="resync: reaper").update(minutes=5)  # an older setting is put right
    periodic.create_schedules(apps, None)

    rows = Schedule.objects.filter(name__in=list(periodic.PERIODIC_SCHEDULES)).order_by("name")
    assert [(s.name, s.func, s.schedule_type, s.minutes, s.repeats) for s in rows] == [
        ("resync: reaper", "syncs.tasks.reap_runs", Schedule.MINUTES, 1, -1),
        ("resync: retry sweeper", "syncs.tasks.sweep_retries", Schedule.MINUTES, 1, -1),
    ]
    periodic.remove_schedules(apps, None)
    assert not Schedule.objects.filter(name__in=list(periodic.PERIODIC_SCHEDULES)).exists()


# --- the reaper ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@time_machine.travel(T0, tick=False)
def test_the_reaper_requeues_silent_and_lost_runs_and_leaves_live_ones_alone(make_mapping, monkeypatch):
    enqueued = []
    monkeypatch.setattr(reaper, "async_task", lambda func, *args, **kwargs: enqueued.append((func, *args)))
    now = timezone.now()

    def run(status, **times):
        created = sync_run_queue(mapping=make_mapping(), enqueue=False)
        SyncRun.objects.filter(pk=created.pk).update(status=status, **times)
        return created.pk

    dead = run(RunStatus.RUNNING, heartbeat_at=now - stale_seconds() - timedelta(seconds=1))
    alive = run(RunStatus.RUNNING, heartbeat_at=now - stale_seconds() + timedelta(seconds=1))
    lost = run(RunStatus.QUEUED, queued_at=now - stale_seconds() - timedelta(seconds=1))
    run(RunStatus.QUEUED, queued_at=now)  # its task is still on its way
    run(RunStatus.SUCCEEDED, heartbeat_at=now - timedelta(days=1))

    reaped = reap_runs()

    assert sorted(reaped) == sorted([dead, lost])
    assert sorted(enqueued) == sorted([("syncs.tasks.run_sync", dead), ("syncs.tasks.run_sync", lost)])
    assert alive not in reaped
    # `now` can be passed in: an hour later every unfinished run is silent.
    assert len(reaper.runs_reap(now=now + timedelta(hours=1))) == 4


@pytest.mark.django_db
@time_machine.travel(T0, tick=False)
def test_a_reaped_run_resumes_after_its_last_finished_batch_without_duplicates(make_mapping, monkeypatch):
    mapping = make_mapping(batch_size=100)
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(450)])
    run = sync_run_queue(mapping=mapping, enqueue=False)
    revive = kill_at_batch(monkeypatch, 3)

    with pytest.raises(WorkerKilled):
        sync_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert (run.status, run.claims) == (RunStatus.RUNNING, 1)
    assert list(SyncBatch.objects.filter(run=run).values_list("sequence", "status")) == [
        (1, BatchStatus.SUCCEEDED), (2, BatchStatus.SUCCEEDED), (3, BatchStatus.RUNNING)]
    assert len(target_emails(mapping)) == 300  # batch 3 reached the target ...
    assert RecordLink.objects.filter(mapping=mapping).count() == 200  # ... but was never linked
    revive()

    assert reap_runs() == []  # its heartbeat is not stale yet: the worker may only be slow
    with time_machine.travel(run.heartbeat_at + stale_seconds() + timedelta(seconds=1), tick=False):
        assert reap_runs() == [run.pk]  # tasks run inline in tests: the run is executed right here

    run.refresh_from_db()
    assert (run.status, run.claims) == (RunStatus.SUCCEEDED, 2)
    # Read once each: batches 1 and 2 are not read again, batch 3 is processed again from scratch.
    assert (run.read, run.created, run.updated, run.failed) == (450, 350, 100, 0)
    assert list(SyncBatch.objects.filter(run=run).values_list("sequence", "attempts")) == [
        (1, 1), (2, 1), (3, 2), (4, 1), (5, 1)
    ]
    emails = target_emails(mapping)
    assert len(emails) == len(set(emails)) == 450
    assert RecordLink.objects.filter(mapping=mapping, status="synced").count() == 450
    assert not RecordError.objects.filter(run=run).exists()
    assert reap_runs() == []  # finished: nothing left to reap


@pytest.mark.django_db
@time_machine.travel(T0, tick=False)
def test_a_second_delivery_of_a_live_run_is_skipped(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run = sync_run_queue(mapping=mapping, enqueue=False)
    SyncRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, heartbeat_at=timezone.now(), claims=1)

    assert sync_run_execute(run_id=run.pk) is None

    run.refresh_from_db()
    assert (run.status, run.claims) == (RunStatus.RUNNING, 1)
    assert records(mapping.target_connection) == []


# --- the retry sweeper ------------------------------------------------------------------------------------------


@pytest.mark.django_db
@time_machine.travel(T0, tick=False)
def test_the_sweeper_takes_only_due_errors_and_waits_for_retry_after(make_mapping, make_connection):
    down = make_connection("Down CRM", faults={"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"})
    # One mapping per error: a mapping with a retry run queued takes no more until that run has started.
    mappings = [make_mapping(target=down, error_strategy="retry", match_keys=[]) for _ in range(3)]
    for n, mapping in enumerate(mappings):
        seed_records(mapping.source_connection, "contacts", [person(n)])
        run_mapping(mapping)
    due, later, throttled = RecordError.objects.filter(level=ErrorLevel.RECORD).order_by("mapping_id")
    now = timezone.now()
    RecordError.objects.filter(pk=due.pk).update(next_retry_at=now + timedelta(minutes=1))
    RecordError.objects.filter(pk=later.pk).update(next_retry_at=now + timedelta(minutes=10))
    RecordError.objects.filter(pk=throttled.pk).update(next_retry_at=now + timedelta(minutes=1),
                                                       retry_after_until=now + timedelta(minutes=15))

    assert sweep_retries() == []  # nothing is due yet
    with time_machine.travel(now + timedelta(minutes=1), tick=False):
        (first,) = sweep_retries()
    with time_machine.travel(now + timedelta(minutes=14), tick=False):
        (second,) = sweep_retries()
    with time_machine.travel(now + timedelta(minutes=15), tick=False):
        (third,) = sweep_retries()
        assert sweep_retries() == []  # each error is claimed once

    assert [SyncRun.objects.get(pk=pk).options["errors"] for pk in (first, second, third)] == [
        [due.pk], [later.pk], [throttled.pk]]
    assert set(RecordError.objects.filter(level=ErrorLevel.RECORD).values_list("status", flat=True)) == {
        ErrorStatus.RETRYING}


@pytest.mark.django_db
@time_machine.travel(T0, tick=False)
def test_the_sweeper_leaves_errors_of_paused_mappings_and_other_statuses(make_mapping, make_connection):
    down = make_connection("Down CRM", faults={"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"})
    paused = make_mapping(target=down, error_strategy="retry", match_keys=[])
    reviewed = make_mapping(target=down, error_strategy="manual_review", match_keys=[])
    for mapping in (paused, reviewed):
        seed_records(mapping.source_connection, "contacts", [person(mapping.pk)])
        run_mapping(mapping)
    paused.is_active = False
    paused.save()
    RecordError.objects.update(next_retry_at=timezone.now())

    with time_machine.travel(timezone.now() + timedelta(hours=1), tick=False):
        assert sweep_retries() == []

    assert sorted(RecordError.objects.values_list("status", flat=True)) == sorted(
        [ErrorStatus.RETRY_SCHEDULED, ErrorStatus.IN_REVIEW])


# --- a real worker killed with SIGKILL --------------------------------------------------------------------------

RECORDS, BATCH_SIZE = 2000, 100


def wait_until(condition, *, timeout, interval=0.01, message):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message())


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_run_whose_worker_is_killed_with_sigkill_is_reaped_and_every_record_lands_exactly_once(
    start_qcluster, real_queue, make_mapping, make_connection, settings
):
    # The test reaps by itself: a periodic reaper firing in the new cluster would make the timing its own.
    Schedule.objects.filter(name__in=list(periodic.PERIODIC_SCHEDULES)).delete()
    # The target answers each write 0.2 s after storing it: the kill lands in that window, after the writes and
    # before the batch's links, as it may in production.
    slow_target = make_connection("Slow CRM", faults={"slow_writes": 0.2})
    mapping = make_mapping(target=slow_target, batch_size=BATCH_SIZE)
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(RECORDS)])
    target = SandboxRecord.objects.filter(connection=mapping.target_connection)
    first = start_qcluster()

    run = sync_run_queue(mapping=mapping)  # autocommit: enqueued at once for the real worker
    batches = SyncBatch.objects.filter(run=run)

    def mid_batch():
        """At least 3 batches finished, and the next one has written a quarter of its records, not yet linked."""
        finished = batches.filter(status=BatchStatus.SUCCEEDED).aggregate(n=Count("pk"), records=Sum("record_count"))
        return finished["n"] >= 3 and target.count() - (finished["records"] or 0) >= BATCH_SIZE // 4

    def not_caught():
        seen = list(batches.values_list("sequence", "status"))
        return f"never caught mid-batch: batches {seen}, run {SyncRun.objects.get(pk=run.pk).status}"

    started = time.monotonic()
    wait_until(mid_batch, timeout=60, message=not_caught)
    qcluster_kill(first)
    killed_after = time.monotonic() - started

    run.refresh_from_db()
    assert (run.status, run.claims) == (RunStatus.RUNNING, 1), "the run must be left running by the kill"
    finished_at_kill = batches.filter(status=BatchStatus.SUCCEEDED).count()
    written_at_kill, linked_at_kill = target.count(), RecordLink.objects.filter(mapping=mapping).count()
    assert 3 <= finished_at_kill < RECORDS // BATCH_SIZE
    assert written_at_kill < RECORDS
    assert written_at_kill > linked_at_kill, "the kill must land between a batch's writes and its links"

    # A new cluster whose workers consider a worker silent for 3 s dead, and the reaper with the same threshold,
    # every half second as its schedule would. The new workers take over the staged batches and the killed
    # worker's batch at once; the reaper hands the dead reader's run to a worker, which reads on.
    settings.RESYNC_HEARTBEAT_STALE_SECONDS = 3
    start_qcluster(RESYNC_HEARTBEAT_STALE_SECONDS="3")
    reaped = []

    def reaped_and_finished():
        reaped.extend(reaper.runs_reap())
        return SyncRun.objects.filter(pk=run.pk, finished_at__isnull=False).exists()

    wait_until(reaped_and_finished, timeout=120, interval=0.5, message=lambda: f"never finished; reaped {reaped}")
    # Reaped until a worker took it (more than once when the new workers were busy: the claim makes that safe).
    assert set(reaped) == {run.pk}

    (finished,) = wait_for_finish([run.pk], timeout=120)

    timings = f"killed after {killed_after:.1f}s; total {time.monotonic() - started:.1f}s"
    state = (f"at the kill: {finished_at_kill} batches finished, {written_at_kill} records written, "
             f"{linked_at_kill} linked; {timings}")
    assert finished.status == RunStatus.SUCCEEDED, state
    assert finished.claims == 2, state
    assert target.count() == RECORDS, state
    assert target.values("data__email").distinct().count() == RECORDS, state
    assert sorted(row.data["email"] for row in target) == sorted(person(n)["email"] for n in range(RECORDS))
    assert RecordLink.objects.filter(mapping=mapping, status="synced").count() == RECORDS, state
    assert finished.read == RECORDS, state  # the resumed run did not count its first batches twice
    # The records the killed batch wrote but never linked are found by email and adopted, not created again.
    assert finished.updated == written_at_kill - linked_at_kill, state
    assert finished.created + finished.updated == RECORDS, state
    assert not RecordError.objects.filter(run=finished).exists(), state
    assert list(batches.values_list("sequence", flat=True)) == list(range(1, RECORDS // BATCH_SIZE + 1))
    assert set(batches.values_list("status", flat=True)) == {BatchStatus.SUCCEEDED}
