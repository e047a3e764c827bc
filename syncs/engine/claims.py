"""Claims and liveness: which worker runs a run, and how the reaper can tell a live one from a dead one.

A run is claimed with a conditional update (queued → running, or a running run whose heartbeat stopped); zero
rows updated means another worker has it. Runs of one mapping are serialized. A claimed run beats its
heartbeat, and stops before its next batch when someone cancels it.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from mappings.models import Mapping
from syncs.events import log_event
from syncs.models import RunStatus, SyncBatch, SyncRun

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
        row = SyncRun.objects.filter(pk=run_id).values_list("mapping_id", "is_test").first()
        if row is None:
            return None
        mapping_id, is_test = row
        list(Mapping.objects.select_for_update().filter(pk=mapping_id).values_list("pk", flat=True))
        # Dry test runs write nothing, so they neither wait for nor hold up the mapping's real runs.
        busy = not is_test and SyncRun.objects.filter(
            mapping_id=mapping_id, status=RunStatus.RUNNING, heartbeat_at__gte=stale_before, is_test=False
        ).exclude(pk=run_id).exists()
        if busy:
            log_event("run_deferred", run_id=run_id, reason="another run of the mapping is running")
            return None
        claimed = SyncRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING, started_at=now, heartbeat_at=now, claims=F("claims") + 1
        )
        if not claimed:
            # Nothing got updated: another worker has it, unless its heartbeat stopped (killed worker).
            claimed = SyncRun.objects.filter(
                pk=run_id, status=RunStatus.RUNNING, heartbeat_at__lt=stale_before
            ).update(heartbeat_at=now, claims=F("claims") + 1)
    if not claimed:
        return None
    return SyncRun.objects.select_related(
        "organization", "mapping", "mapping__source_connection", "mapping__target_connection"
    ).get(pk=run_id)


class Heartbeat:
    """Tells the reaper a run (and the batch it is on) is alive; also beats inside long batches, at most every
    HEARTBEAT_EVERY seconds, so a slow batch is never taken for a dead worker's."""

    def __init__(self, run):
        self.run = run
        self.last = None

    def beat(self, *, batch=None, force=True):
        now = timezone.now()
        if not force and self.last and (now - self.last).total_seconds() < HEARTBEAT_EVERY:
            return
        self.last = now
        SyncRun.objects.filter(pk=self.run.pk).update(heartbeat_at=now)
        if batch is not None and batch.pk:
            SyncBatch.objects.filter(pk=batch.pk).update(heartbeat_at=now)


def cancel_requested(run):
    """Someone canceled this run (syncs.services.sync_run_cancel): it stops before its next batch."""
    return SyncRun.objects.filter(pk=run.pk, status=RunStatus.CANCELED).exists()
