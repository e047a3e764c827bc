"""Claims and liveness: which worker runs a run, and how the reaper can tell a live one from a dead one.

A run is claimed with a conditional update (queued → running, or a running run whose heartbeat stopped); zero
rows updated means another worker has it. Runs of one mapping are serialized. The worker that holds a run beats
its heartbeat, every worker the heartbeat of its batch, and they stop before their next batch when someone
cancels the run.
"""

import os
import socket
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from mappings.models import Mapping
from syncs.events import log_event
from syncs.models import BatchStatus, RunStatus, SyncBatch, SyncRun

HEARTBEAT_EVERY = 10  # seconds; well inside RESYNC_HEARTBEAT_STALE_SECONDS


def sync_run_claim(*, run_id):
    """Move a queued run to running, or take over a running one whose worker died; None if someone has it.

    One run of a mapping at a time: a run whose mapping has another live run stays queued (the finishing run,
    or else the reaper, hands it to a worker later). Claims of one mapping are serialized by a row lock on the
    mapping (PostgreSQL; SQLite serializes every write transaction anyway).
    """
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.RESYNC_HEARTBEAT_STALE_SECONDS)
    with transaction.atomic():
        row = SyncRun.objects.filter(pk=run_id).values_list("mapping_id", "is_test", "code").first()
        if row is None:
            return None
        mapping_id, is_test, code = row
        list(Mapping.objects.select_for_update().filter(pk=mapping_id).values_list("pk", flat=True))
        # Dry test runs write nothing, so they neither wait for nor hold up the mapping's real runs. A run is
        # alive while its reader beats, or (once read) while a worker still processes one of its batches.
        busy = not is_test and SyncRun.objects.filter(
            Q(heartbeat_at__gte=stale_before) | Q(pk__in=live_batches(stale_before).values("run_id")),
            mapping_id=mapping_id, status=RunStatus.RUNNING, is_test=False,
        ).exclude(pk=run_id).exists()
        if busy:
            log_event("run_deferred", run=str(code), reason="another run of the mapping is running")
            return None
        claimed = SyncRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING, started_at=now, heartbeat_at=now, claims=F("claims") + 1
        )
        if not claimed:
            # Nothing got updated: another worker has it, unless its heartbeat stopped (killed worker). A run
            # canceled while its worker was dead is taken over too, to be closed: what it claimed is handed back.
            claimed = SyncRun.objects.filter(
                pk=run_id, status__in=(RunStatus.RUNNING, RunStatus.CANCELED), finished_at__isnull=True,
                heartbeat_at__lt=stale_before,
            ).update(heartbeat_at=now, claims=F("claims") + 1, finishing_at=None)
    if not claimed:
        log_event("run_claim_skipped", run=str(code))
        return None
    return SyncRun.objects.select_related(
        "organization", "mapping", "mapping__source_connection", "mapping__target_connection"
    ).get(pk=run_id)


def worker_name():
    """This worker, as a batch records who processed it."""
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


def beat_every():
    """Seconds between two beats: well inside the time after which a silent worker is taken for dead."""
    return min(HEARTBEAT_EVERY, settings.RESYNC_HEARTBEAT_STALE_SECONDS / 4)


class Heartbeat:
    """Tells the reaper a worker is alive: the worker that holds the run beats the run's heartbeat, and every
    worker the heartbeat of the batch it is on; also inside long batches, at most every beat_every() seconds,
    so a slow batch is never taken for a dead worker's."""

    def __init__(self, run, *, holds_run):
        self.run = run
        self.holds_run = holds_run
        self.last = None

    def beat(self, *, batch=None, force=True):
        now = timezone.now()
        if not force and self.last and (now - self.last).total_seconds() < beat_every():
            return
        self.last = now
        if self.holds_run:
            SyncRun.objects.filter(pk=self.run.pk).update(heartbeat_at=now)
        if batch is not None and batch.pk:
            SyncBatch.objects.filter(pk=batch.pk).update(heartbeat_at=now)


def live_batches(stale_before):
    """Batches a live worker is processing (their heartbeat is fresh)."""
    return SyncBatch.objects.filter(status=BatchStatus.RUNNING, records__isnull=False, heartbeat_at__gte=stale_before)


def stop_requested(run):
    """"canceled" when someone canceled this run (syncs.services.sync_run_cancel), "stopped" when a worker of it
    stopped it on a system error (an authentication failure in a batch): its workers stop before their next
    batch. None otherwise."""
    row = SyncRun.objects.filter(pk=run.pk).values_list("status", "system_error").first()
    if row is None or row[0] == RunStatus.CANCELED:
        return "canceled"
    return "stopped" if row[1] else None
