"""Retry chains: "retry failures" runs below a root run, and the root's recovery when nothing of it is left.

A root run's chain is the root and every retry below it (parent → child). A root becomes *recovered* when its
chain leaves nothing failed: no unresolved record or batch error, no page that never loaded.
"""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from syncs.events import log_event
from syncs.models import (
    UNRESOLVED_ERROR_STATUSES,
    BatchStatus,
    RecordError,
    Resolution,
    RunStatus,
    SyncBatch,
    SyncRun,
    Trigger,
)
from syncs.retries import (
    CLAIMABLE_STATUSES,
    NO_SNAPSHOT_MESSAGE,
    RETRIABLE_LEVELS,
    claim_errors,
    queue_replays,
    snapshotless_errors,
)


def sync_run_retry_failures(*, run, force=False):
    """A child run of `run` that re-fetches its failed batches and replays its loose failing records.

    The failures are those still open in `run` and in the retries that followed it: retrying an original run
    whose first retry failed again takes up where that retry left off.
    """
    if run.status not in (RunStatus.PARTIALLY_FAILED, RunStatus.FAILED):
        raise ValidationError("Only a finished run with failures can be retried.", code="no_failures")
    failures = RecordError.objects.for_org(run.organization).filter(
        run__in=run_and_descendants(run), level__in=RETRIABLE_LEVELS, status__in=CLAIMABLE_STATUSES
    )
    blocked = snapshotless_errors(failures)
    with transaction.atomic():
        claimed = claim_errors(failures.exclude(pk__in=blocked), now=timezone.now())
        if not claimed.exists():
            raise ValidationError(NO_SNAPSHOT_MESSAGE if blocked else
                                  "This run has no failed batch or record left to retry.", code="nothing_to_retry")
        (child,) = queue_replays(claimed, trigger=Trigger.RETRY, resolution=Resolution.REPLAY, force=force,
                                  parent=run)
    return child


def run_and_descendants(run):
    """The primary keys of `run` and of every retry below it in its chain."""
    ids, frontier = {run.pk}, {run.pk}
    while frontier:
        frontier = set(SyncRun.objects.filter(parent_id__in=frontier).values_list("pk", flat=True)) - ids
        ids |= frontier
    return ids


def roots_touched(run):
    """The root runs whose failures this run retried: its own chain, and the runs of the errors it replayed
    (the sweeper and bulk retries gather errors of several runs into one run outside their chains)."""
    run_ids = set(RecordError.objects.filter(pk__in=run.options.get("errors") or []).values_list("run_id", flat=True))
    run_ids |= set(SyncBatch.objects.filter(pk__in=run.options.get("batches") or []).values_list("run_id", flat=True))
    roots = {run.root_id} if run.root_id else set()
    for root_id, own_id in SyncRun.objects.filter(pk__in=run_ids).values_list("root_id", "pk"):
        roots.add(root_id or own_id)
    return SyncRun.objects.filter(pk__in=roots).select_related("mapping")


def chain_refresh_status(root):
    """A root run whose chain of retries left nothing failed becomes recovered."""
    if root.status not in (RunStatus.PARTIALLY_FAILED, RunStatus.FAILED) or root.system_error:
        return False
    chain = SyncRun.objects.filter(Q(pk=root.pk) | Q(root=root))
    if chain.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).exists():
        return False
    open_errors = RecordError.objects.filter(
        run__in=chain, level__in=RETRIABLE_LEVELS, status__in=UNRESOLVED_ERROR_STATUSES
    ).exists()
    # A failed batch with no records is a page that never loaded; one with records failed record by record,
    # and those records are counted above.
    open_batches = SyncBatch.objects.filter(run__in=chain, status=BatchStatus.FAILED, record_count=0).exists()
    if open_errors or open_batches:
        return False
    SyncRun.objects.filter(pk=root.pk).update(status=RunStatus.RECOVERED)
    root.status = RunStatus.RECOVERED
    log_event("run_recovered", run_id=root.pk, mapping=root.mapping.name)
    return True

