"""The reaper: runs whose worker died, and queued runs whose task was lost, go back to the workers; so do staged
batches whose worker died while the run's other workers are still alive, and bulk actions whose worker died or
whose task was lost."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from syncs.bulk import GIVEN_UP, MAX_ATTEMPTS, bulk_action_stale_before
from syncs.engine.claims import live_batches
from syncs.events import log_event
from syncs.models import BatchStatus, BulkAction, BulkActionStatus, RunStatus, SyncBatch, SyncRun


def runs_reap(*, now=None):
    """Re-queue runs whose worker died (heartbeat stopped) and queued runs whose task was lost.

    The claim in the engine makes a duplicate delivery harmless, and RecordLink makes the re-run safe.
    """
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.RESYNC_HEARTBEAT_STALE_SECONDS)
    # A run whose reader died; or, once read, whose batches no live worker is processing any more.
    alive = live_batches(stale_before).values("run_id")
    # A run canceled while its worker was dead is closed by the next one (its claims handed back).
    stale = dict(SyncRun.objects.filter(
        Q(status=RunStatus.RUNNING, heartbeat_at__lt=stale_before)
        & (Q(read_finished_at__isnull=True) | ~Q(pk__in=alive))
        | Q(status=RunStatus.CANCELED, finished_at__isnull=True, heartbeat_at__lt=stale_before)
        | Q(status=RunStatus.QUEUED, queued_at__lt=stale_before)
    ).values_list("pk", "code"))
    for run_id in stale:
        async_task("syncs.tasks.run_sync", run_id, task_name=f"sync-run-{run_id}-reaped")
    if stale:
        log_event("runs_reaped", runs=[str(code) for code in stale.values()])
    # A batch whose worker died in a run that is otherwise alive: staged again, and a worker asked for it.
    dead = SyncBatch.objects.filter(status=BatchStatus.RUNNING, records__isnull=False, heartbeat_at__lt=stale_before,
                                    run__status=RunStatus.RUNNING).exclude(run_id__in=stale)
    rerun = dict(dead.order_by("run_id").values_list("run_id", "run__code").distinct())
    restaged = dead.filter(run_id__in=list(rerun)).update(status=BatchStatus.STAGED)
    for run_id in rerun:
        async_task("syncs.tasks.run_batches", run_id, task_name=f"sync-run-{run_id}-batches-reaped")
    if rerun:
        log_event("batches_reaped", runs=[str(code) for code in rerun.values()], batches=restaged)
    return list(stale)


def bulk_actions_reap(*, now=None):
    """Hand bulk actions whose worker died (heartbeat stopped) or whose task was lost (queued that long) to the
    workers; give up on one whose workers died MAX_ATTEMPTS times. Returns the pks handed on.

    The claim in syncs.bulk makes a second delivery harmless, and its checkpoint makes the takeover go on where
    the dead worker stopped. A worker in the middle of a step holds the action's row and is skipped: it is alive.
    """
    now = now or timezone.now()
    stale_before = bulk_action_stale_before(now)
    with transaction.atomic():
        silent = dict(BulkAction.objects.select_for_update(skip_locked=True).filter(
            status=BulkActionStatus.RUNNING, heartbeat_at__lt=stale_before, attempts__gte=MAX_ATTEMPTS,
        ).values_list("pk", "code"))
        BulkAction.objects.filter(pk__in=list(silent)).update(
            status=BulkActionStatus.FAILED, failure=GIVEN_UP, finished_at=now, claim_token=None)
    if silent:
        log_event("bulk_actions_given_up", level=logging.ERROR, actions=[str(code) for code in silent.values()])
    stale = dict(BulkAction.objects.filter(
        Q(status=BulkActionStatus.RUNNING, heartbeat_at__lt=stale_before, attempts__lt=MAX_ATTEMPTS)
        | Q(status=BulkActionStatus.QUEUED, created_at__lt=stale_before)
    ).values_list("pk", "code"))
    for action_id in stale:
        async_task("syncs.tasks.run_bulk_action", action_id, task_name=f"bulk-action-{action_id}-reaped")
    if stale:
        log_event("bulk_actions_reaped", level=logging.WARNING, actions=[str(code) for code in stale.values()])
    return list(stale)

