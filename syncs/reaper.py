"""The reaper: runs whose worker died, and queued runs whose task was lost, go back to the workers; so do staged
batches whose worker died while the run's other workers are still alive."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from syncs.engine.claims import live_batches
from syncs.events import log_event
from syncs.models import BatchStatus, RunStatus, SyncBatch, SyncRun


def runs_reap(*, now=None):
    """Re-queue runs whose worker died (heartbeat stopped) and queued runs whose task was lost.

    The claim in the engine makes a duplicate delivery harmless, and RecordLink makes the re-run safe.
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.RESYNC_HEARTBEAT_STALE_SECONDS)
    # A run whose reader died; or, once read, whose batches no live worker is processing any more.
    alive = live_batches(stale_before).values("run_id")
    # A run canceled while its worker was dead is closed by the next one (its claims handed back).
    stale = list(SyncRun.objects.filter(
        Q(status=RunStatus.RUNNING, heartbeat_at__lt=stale_before)
        & (Q(read_finished_at__isnull=True) | ~Q(pk__in=alive))
        | Q(status=RunStatus.CANCELED, finished_at__isnull=True, heartbeat_at__lt=stale_before)
        | Q(status=RunStatus.QUEUED, queued_at__lt=stale_before)
    ).values_list("pk", flat=True))
    for run_id in stale:
        async_task("syncs.tasks.run_sync", run_id, task_name=f"sync-run-{run_id}-reaped")
    if stale:
        log_event("runs_reaped", runs=stale)
    # A batch whose worker died in a run that is otherwise alive: staged again, and a worker asked for it.
    dead = SyncBatch.objects.filter(status=BatchStatus.RUNNING, records__isnull=False, heartbeat_at__lt=stale_before,
                                    run__status=RunStatus.RUNNING).exclude(run_id__in=stale)
    rerun = sorted(set(dead.values_list("run_id", flat=True)))
    restaged = dead.filter(run_id__in=rerun).update(status=BatchStatus.STAGED)
    for run_id in rerun:
        async_task("syncs.tasks.run_batches", run_id, task_name=f"sync-run-{run_id}-batches-reaped")
    if rerun:
        log_event("batches_reaped", runs=rerun, batches=restaged)
    return stale

