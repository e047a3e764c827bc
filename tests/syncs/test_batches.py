"""Fanned-out batches (syncs.engine.batches): a run's reader stages its pages, any worker processes them, a
connection's concurrency limit holds across runs, whoever completes the last batch closes the run, and what a
dead worker left is taken over, cleaned up or handed back.

Most tests play the other workers in this process: `announce` (the task that asks the workers for help) is
replaced, and sync_run_help is called where a helper's task would run. The last test uses two real clusters.
"""

from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from integrations.connectors.sandbox import change_record, seed_records
from integrations.models import SandboxRecord
from syncs.engine import sync_run_help
from syncs.engine.batches import batch_claim
from syncs.models import (
    BatchStatus,
    ErrorLevel,
    ErrorStatus,
    RecordError,
    RunStatus,
    SyncBatch,
    SyncRun,
    Trigger,
)
from syncs.reaper import runs_reap
from syncs.retries import errors_retry
from syncs.services import sync_run_cancel, sync_run_queue
from tests.syncs.conftest import wait_for_finish
from tests.syncs.helpers import person, record_errors, records, run_mapping, set_faults

RECORDS, PAGE = 25, 5


@pytest.fixture
def announced(monkeypatch):
    """The reader's calls for help, recorded instead of run (no other worker comes)."""
    calls = []
    monkeypatch.setattr("syncs.engine.executor.announce", lambda run: calls.append(run.pk))
    return calls


@pytest.fixture
def contacts(make_mapping):
    mapping = make_mapping(batch_size=PAGE)
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(RECORDS)])
    return mapping


def long_ago():
    return timezone.now() - timedelta(hours=1)


def test_the_reader_stays_a_bounded_number_of_pages_ahead(contacts, announced, settings, monkeypatch):
    settings.RESYNC_READ_AHEAD = 2
    staged_at_each_page = []
    monkeypatch.setattr("syncs.engine.executor.announce", lambda run: staged_at_each_page.append(
        SyncBatch.objects.filter(run=run, status=BatchStatus.STAGED).count()))

    run = run_mapping(contacts)

    assert (run.status, run.read, run.created) == (RunStatus.SUCCEEDED, RECORDS, RECORDS)
    assert len(staged_at_each_page) == RECORDS // PAGE  # one call for help per page
    assert max(staged_at_each_page) <= settings.RESYNC_READ_AHEAD
    # Processed batches keep no copy of their records.
    assert not SyncBatch.objects.filter(run=run, records__isnull=False).exists()
    assert len(records(contacts.target_connection)) == RECORDS


def test_the_worker_that_completes_the_last_batch_closes_the_run(contacts, monkeypatch):
    pages = []

    def another_worker_takes_the_last_page(run):
        pages.append(run.pk)
        if len(pages) == RECORDS // PAGE:  # the last page: taken at once by a worker that is still on it
            SyncBatch.objects.filter(run=run, sequence=len(pages)).update(
                status=BatchStatus.RUNNING, heartbeat_at=timezone.now(), attempts=1)

    monkeypatch.setattr("syncs.engine.executor.announce", another_worker_takes_the_last_page)

    run = run_mapping(contacts)

    # The reader read everything and did what it could; the run waits for the other worker's batch.
    assert run.status == RunStatus.RUNNING and run.read_finished_at is not None and run.finished_at is None
    contacts.refresh_from_db()
    assert contacts.source_cursor == ""

    # That worker completes it (here: its batch is handed to a helper as if it had been processed there).
    SyncBatch.objects.filter(run=run, status=BatchStatus.RUNNING).update(status=BatchStatus.STAGED)
    assert sync_run_help(run_id=run.pk) == 1

    run.refresh_from_db()
    contacts.refresh_from_db()
    assert (run.status, run.read, run.created) == (RunStatus.SUCCEEDED, RECORDS, RECORDS)
    assert contacts.source_cursor and run.cursor_to == contacts.source_cursor
    assert len(records(contacts.target_connection)) == RECORDS


def stage_batches(mapping, count, *, run=None):
    run = run or SyncRun.objects.create(organization=mapping.organization, mapping=mapping, status=RunStatus.RUNNING,
                                        claims=1, heartbeat_at=timezone.now(), started_at=timezone.now())
    start = run.batches.count()
    for sequence in range(start + 1, start + count + 1):
        SyncBatch.objects.create(organization=mapping.organization, run=run, sequence=sequence,
                                 status=BatchStatus.STAGED, records=[])
    return run


def test_a_connection_takes_no_more_batches_at_once_than_its_limit_across_runs(make_mapping, make_connection):
    shared = make_connection("Rate-limited CRM")
    shared.max_concurrency = 2
    shared.save()
    first = stage_batches(make_mapping(target=shared), 2)
    second = stage_batches(make_mapping(target=shared), 2)

    taken = [batch_claim(first), batch_claim(second)]
    assert all(taken)
    assert batch_claim(first) is None and batch_claim(second) is None  # two in flight on the CRM already

    SyncBatch.objects.filter(pk=taken[0].pk).update(status=BatchStatus.SUCCEEDED)
    assert batch_claim(second) is not None

    # A batch whose worker died holds no slot, and is the next one taken, from scratch.
    SyncBatch.objects.filter(run=second, status=BatchStatus.RUNNING).update(heartbeat_at=long_ago())
    retaken = batch_claim(first)
    assert retaken is not None and retaken.run_id == first.pk and retaken.status == BatchStatus.RUNNING


def test_a_batch_taken_over_from_a_dead_worker_drops_what_it_half_wrote(contacts, announced):
    run = run_mapping(contacts)  # nobody helped: the reader did every batch itself
    assert run.status == RunStatus.SUCCEEDED

    # The next run: two records changed, one of them now invalid. A worker took the page and died after writing
    # down half of it (an error of a record it had not even reached).
    rows = records(contacts.source_connection)
    change_record(contacts.source_connection, "contacts", rows[0].external_id, {"first_name": "Renamed"})
    change_record(contacts.source_connection, "contacts", rows[1].external_id, {"last_name": ""})
    next_run = sync_run_queue(mapping=contacts, enqueue=False)
    SyncRun.objects.filter(pk=next_run.pk).update(status=RunStatus.RUNNING, claims=1, started_at=timezone.now(),
                                                  heartbeat_at=timezone.now(), read_finished_at=timezone.now())
    page = contacts.source_connection.get_connector().read_page("contacts", page_token=None,
                                                               cursor=contacts.source_cursor, page_size=PAGE)
    batch = SyncBatch.objects.create(
        organization=contacts.organization, run=next_run, sequence=1, status=BatchStatus.RUNNING, attempts=1,
        heartbeat_at=long_ago(), record_count=len(page.records),
        records=[{"id": r.id, "data": r.data, "modified_at": r.modified_at} for r in page.records])
    half_written = RecordError.objects.create(
        organization=contacts.organization, run=next_run, batch=batch, mapping=contacts, level=ErrorLevel.RECORD,
        category="validation", message="written by the dead worker", source_record_id=rows[0].external_id,
        fingerprint="x")

    assert sync_run_help(run_id=next_run.pk) == 1

    batch.refresh_from_db()
    next_run.refresh_from_db()
    assert not RecordError.objects.filter(pk=half_written.pk).exists()
    assert (batch.status, batch.attempts, batch.records) == (BatchStatus.PARTIALLY_FAILED, 2, None)
    assert (next_run.status, next_run.updated, next_run.failed) == (RunStatus.PARTIALLY_FAILED, 1, 1)
    (error,) = record_errors(run=next_run)
    assert (error.source_record_id, error.field) == (rows[1].external_id, "last_name")


def test_the_reaper_stages_a_dead_workers_batch_again_while_the_run_lives_on(contacts):
    run = stage_batches(contacts, 1)
    page = contacts.source_connection.get_connector().read_page("contacts", page_token=None, cursor=None,
                                                               page_size=PAGE)
    SyncBatch.objects.filter(run=run).update(
        status=BatchStatus.RUNNING, heartbeat_at=long_ago(), attempts=1, record_count=len(page.records),
        records=[{"id": r.id, "data": r.data, "modified_at": r.modified_at} for r in page.records])

    # The run's reader is alive (its heartbeat is fresh): only the batch goes back, to the next worker (here
    # the helper's task runs at once).
    assert runs_reap() == []

    batch = SyncBatch.objects.get(run=run)
    assert (batch.status, batch.attempts, batch.counts["created"]) == (BatchStatus.SUCCEEDED, 2, PAGE)
    assert batch.worker
    assert len(records(contacts.target_connection)) == PAGE
    assert SyncRun.objects.get(pk=run.pk).status == RunStatus.RUNNING  # the reader has more pages to read


def test_a_run_canceled_after_its_worker_died_is_closed_and_its_staged_records_handed_back(contacts):
    run = stage_batches(contacts, 3)
    SyncBatch.objects.filter(run=run, sequence=1).update(
        status=BatchStatus.SUCCEEDED, records=None, record_count=PAGE, counts={"read": PAGE, "created": PAGE})
    SyncBatch.objects.filter(run=run, sequence__gt=1).update(record_count=PAGE)
    SyncRun.objects.filter(pk=run.pk).update(read_finished_at=timezone.now())

    sync_run_cancel(run=run)  # its worker is gone: nobody stops it before a next batch
    SyncRun.objects.filter(pk=run.pk).update(heartbeat_at=long_ago())
    assert runs_reap() == [run.pk]  # a worker takes it over, only to close it

    run.refresh_from_db()
    contacts.refresh_from_db()
    assert run.status == RunStatus.CANCELED and run.finished_at is not None
    assert (run.read, run.created, run.skipped) == (3 * PAGE, PAGE, 2 * PAGE)
    assert not SyncBatch.objects.filter(run=run, records__isnull=False).exists()
    assert contacts.source_cursor == ""  # the skipped records are read again by the next run


def test_errors_a_killed_retry_had_claimed_but_not_reached_are_handed_back(make_mapping, failing_target,
                                                                           execute_queued):
    mapping = make_mapping(target=failing_target, match_keys=[], error_strategy="retry", batch_size=2)
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(4)])
    run_mapping(mapping)
    errors = list(record_errors().order_by("pk"))
    assert [e.status for e in errors] == [ErrorStatus.RETRY_SCHEDULED] * 4
    attempts = [e.attempts for e in errors]

    # A retry claims the four errors; its worker is killed before it reaches any (the task never ran), and an
    # operator cancels the retry in the meantime.
    summary = errors_retry(organization=mapping.organization, error_ids=[e.pk for e in errors])
    retry = SyncRun.objects.get(pk__in=summary["runs"])
    assert set(record_errors().values_list("status", flat=True)) == {ErrorStatus.RETRYING}
    SyncRun.objects.filter(pk=retry.pk).update(status=RunStatus.RUNNING, claims=1, heartbeat_at=long_ago(),
                                               started_at=long_ago())
    sync_run_cancel(run=SyncRun.objects.get(pk=retry.pk))

    with execute_queued():
        assert retry.pk in runs_reap()

    retry.refresh_from_db()
    assert retry.status == RunStatus.CANCELED and retry.finished_at is not None
    after = list(record_errors().order_by("pk"))
    assert [e.status for e in after] == [ErrorStatus.RETRY_SCHEDULED] * 4
    assert [e.attempts for e in after] == attempts  # not tried: no attempt used up
    assert not any(e.claim_token for e in after)


def test_the_cursor_does_not_move_after_a_replay(make_mapping, make_connection, execute_queued):
    target = make_connection("CRM")
    mapping = make_mapping(target=target, match_keys=[], error_strategy="retry")
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])
    run_mapping(mapping)
    cursor = mapping.source_cursor
    assert cursor

    # Two new records fail (the CRM is down); the failed run leaves the cursor where it was.
    seed_records(mapping.source_connection, "contacts", [person(3), person(4)])
    set_faults(target, operations=["write"], failure_rate=1.0, failure_kind="503")
    failed = run_mapping(mapping)
    assert failed.status == RunStatus.PARTIALLY_FAILED and mapping.source_cursor == cursor

    # The replay of those two records succeeds: it read a subset, so the cursor still does not move.
    set_faults(target)
    with execute_queued():
        summary = errors_retry(organization=mapping.organization, error_ids=list(record_errors().values_list("pk",
                                                                                                           flat=True)))
    replay = SyncRun.objects.get(pk__in=summary["runs"], trigger=Trigger.RETRY)
    mapping.refresh_from_db()
    assert replay.status == RunStatus.SUCCEEDED and replay.created == 2
    assert mapping.source_cursor == cursor and replay.cursor_to == ""

    # The next full read moves it, past the records the replay synced (now unchanged).
    after = run_mapping(mapping)
    assert (after.status, after.read, after.unchanged) == (RunStatus.SUCCEEDED, 2, 2)
    assert mapping.source_cursor != cursor


# -- real workers ------------------------------------------------------------------------------------------------

@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_two_clusters_share_one_runs_batches(start_qcluster, real_queue, make_mapping, make_connection):
    # Each write call takes 50 ms at the target, so a batch lasts long enough for the second cluster to help.
    slow = make_connection("Slow CRM", faults={"slow_writes": 0.05})
    mapping = make_mapping(target=slow, batch_size=10)
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(300)])
    start_qcluster()
    start_qcluster()

    run = sync_run_queue(mapping=mapping)
    (finished,) = wait_for_finish([run.pk], timeout=120)

    assert (finished.status, finished.read, finished.created) == (RunStatus.SUCCEEDED, 300, 300)
    workers = dict(SyncBatch.objects.filter(run=run).values("worker").annotate(n=Count("pk"))
                   .values_list("worker", "n"))
    assert len(workers) >= 2, f"one worker did every batch: {workers}"
    target = SandboxRecord.objects.filter(connection=slow)
    assert target.count() == 300 and target.values("data__email").distinct().count() == 300
