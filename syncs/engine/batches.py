"""Fanned-out batches: a run's pages, read by one worker, processed by any.

The worker that holds the run (the executor) reads its pages in the cursor's order and stages each one: the
batch row keeps the page's records until a worker has processed them, and a task (syncs.tasks.run_batches) asks
the workers for help. Any worker takes the next staged batch of the run, processes it and takes the next, while
the reader keeps at most RESYNC_READ_AHEAD staged batches ahead (it processes batches itself when the others
fall behind), so memory and the staging table stay bounded however long the run.

Batches of every run that reads from or writes to a connection are processed at most
Connection.max_concurrency at a time: a worker that would exceed it leaves the batch staged for later.

Each batch beats its own heartbeat; a batch whose worker died is staged again for the next worker (or the
reaper), and processed from scratch. The run ends when every pass has been read and no batch is left staged or
running: whichever worker sees that first closes it (sync_run_try_finish), under a lock on the run's row.
"""

import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_q.tasks import async_task

from integrations.connectors.base import SourceRecord
from integrations.models import Connection
from mappings.models import ErrorStrategy
from syncs.engine.bookkeeping import batch_errors_discard
from syncs.engine.claims import live_batches, worker_name
from syncs.events import log_event
from syncs.models import BatchStatus, RunStatus, SyncBatch, SyncRun

WAIT = 0.05  # seconds between looks while a worker waits for a slot or for the other workers' batches
HELPER_SLICE = 30  # seconds a helper task works on one run before it makes way for the queue's other tasks


def fans_out(run, options, strategy):
    """Whether a run's batches go to any worker. A test run keeps its plan in memory, a replay processes a
    known list of units, a sample stops after a few records and fail fast stops at the first error: those run
    their batches in order, in one worker."""
    return not (run.is_test or options.replay or options.sample_size or strategy == ErrorStrategy.FAIL_FAST)


def stale_before(now=None):
    return (now or timezone.now()) - timedelta(seconds=settings.RESYNC_HEARTBEAT_STALE_SECONDS)


def staged_fields(records):
    """A page's batch, staged: its records kept on it until a worker has processed them."""
    return {"status": BatchStatus.STAGED,
            "records": [{"id": r.id, "data": r.data, "modified_at": r.modified_at} for r in records]}


def announce(run):
    """Ask the workers for help with the run's staged batches (any worker's task claims whichever is next)."""
    async_task("syncs.tasks.run_batches", run.pk, task_name=f"sync-run-{run.pk}-batches")


def staged_records(batch):
    return [
        SourceRecord(id=row["id"], data=row["data"], modified_at=_when(row.get("modified_at")))
        for row in batch.records or ()
    ]


def _when(value):
    if value is None or isinstance(value, datetime):
        return value
    return parse_datetime(value)


def in_flight(run):
    """The run's batches staged or being processed by a live worker."""
    return SyncBatch.objects.filter(run=run).filter(
        Q(status=BatchStatus.STAGED) | Q(pk__in=live_batches(stale_before()).filter(run=run).values("pk")))


def batch_claim(run, *, direction=None):
    """Take the next staged batch of `run` (or one whose worker died) for this worker; None when there is none,
    or when a connection of the run has as many batches in flight as it allows."""
    mapping = run.mapping
    connection_ids = sorted({mapping.source_connection_id, mapping.target_connection_id})
    now = timezone.now()
    stale = stale_before(now)
    with transaction.atomic():
        # Claims on a connection are serialized by a lock on its row, so two workers cannot both take its last
        # slot. SQLite serializes every write transaction anyway.
        limits = dict(Connection.objects.select_for_update().filter(pk__in=connection_ids)
                      .order_by("pk").values_list("pk", "max_concurrency"))
        claimable = SyncBatch.objects.filter(run=run, records__isnull=False).filter(
            Q(status=BatchStatus.STAGED) | Q(status=BatchStatus.RUNNING, heartbeat_at__lt=stale))
        if direction is not None:
            claimable = claimable.filter(direction=direction)
        candidate = claimable.order_by("direction", "sequence").values_list("pk", flat=True).first()
        if candidate is None:
            return None
        for connection_id, limit in limits.items():
            busy = live_batches(stale).filter(
                Q(run__mapping__source_connection_id=connection_id)
                | Q(run__mapping__target_connection_id=connection_id)).count()
            if busy >= limit:
                return None
        taken = SyncBatch.objects.filter(pk=candidate).filter(
            Q(status=BatchStatus.STAGED) | Q(status=BatchStatus.RUNNING, heartbeat_at__lt=stale)
        ).update(status=BatchStatus.RUNNING, started_at=now, heartbeat_at=now, attempts=F("attempts") + 1,
                 worker=worker_name())
    if not taken:
        return None
    batch = SyncBatch.objects.defer("records").get(pk=candidate)  # read only if this worker did not stage it
    if batch.attempts > 1:
        # Its worker died half way: what it wrote down is dropped, the batch is done again from scratch.
        batch_errors_discard(batch)
        log_event("batch_taken_over", run=str(run.code), batch=batch.sequence, attempts=batch.attempts)
    return batch


def batch_work(context, passes, *, direction=None, deadline=None, limit=None):
    """Process staged batches of the context's run until none is claimable, or the deadline, or `limit` batches.
    Returns how many it processed."""
    done = 0
    while (deadline is None or time.monotonic() < deadline) and (limit is None or done < limit):
        if context.stop_requested():
            break
        batch = batch_claim(context.run, direction=direction)
        if batch is None:
            break
        sync_pass = passes[batch.direction]
        # What this worker staged itself it still has, with the records' links; another's it reads back.
        records, links = context.staged_cache.pop(batch.pk, None) or (staged_records(batch), None)
        context.process_batch(sync_pass, batch, records, links=links)
        done += 1
    return done


def release_staged(run):
    """A run that stops (canceled, or a system error) leaves its staged batches: their records were not tried,
    so they count as skipped; the cursor does not move, and the next run reads them again."""
    now = timezone.now()
    for batch in SyncBatch.objects.filter(run=run, status=BatchStatus.STAGED).only("pk", "record_count"):
        SyncBatch.objects.filter(pk=batch.pk, status=BatchStatus.STAGED).update(
            status=BatchStatus.SUCCEEDED, records=None, finished_at=now,
            counts={"read": batch.record_count, "skipped": batch.record_count},
        )


def sync_run_try_finish(context):
    """Whether this worker closes the run: every pass read, no batch staged or in flight, nobody closing it
    already. Decided under a lock on the run's row, so exactly one worker does."""
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().filter(pk=context.run.pk).first()
        if run is None or run.finished_at is not None or run.read_finished_at is None:
            return False
        if run.status not in (RunStatus.RUNNING, RunStatus.CANCELED):
            return False
        if run.status == RunStatus.CANCELED or run.system_error:
            release_staged(run)
        if in_flight(run).exists():
            return False
        if run.finishing_at is not None and run.finishing_at >= stale_before():
            return False
        SyncRun.objects.filter(pk=run.pk).update(finishing_at=timezone.now())
    # The finisher may not be the worker that read: it takes the run's state from the database.
    context.run.refresh_from_db()
    return True
