"""The reaper: runs whose worker died, and queued runs whose task was lost, go back to the workers."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from syncs.events import log_event
from syncs.models import RunStatus, SyncRun


def runs_reap(*, now=None):
    """Re-queue runs whose worker died (heartbeat stopped) and queued runs whose task was lost.

    The claim in the engine makes a duplicate delivery harmless, and RecordLink makes the re-run safe.
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.RESYNC_HEARTBEAT_STALE_SECONDS)
    stale = list(SyncRun.objects.filter(
        Q(status=RunStatus.RUNNING, heartbeat_at__lt=stale_before)
        | Q(status=RunStatus.QUEUED, queued_at__lt=stale_before)
    ).values_list("pk", flat=True))
    for run_id in stale:
        async_task("syncs.tasks.run_sync", run_id, task_name=f"sync-run-{run_id}-reaped")
    if stale:
        log_event("runs_reaped", runs=stale)
    return stale

