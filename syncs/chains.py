"""Retry chains: "retry failures" runs below a run, and a root run's recovery once nothing of it is left open.

A run's chain is the run and every retry below it (parent → child). Its failures are the unresolved system,
batch and record errors of those runs, and of every later run a failure moved to: when a record fails again in
another run (the sweeper's, a bulk retry's, the next scheduled run's), its new error carries the run where it
first failed (`RecordError.origin_run`), so that run is not recovered while the failure lives on elsewhere.

Whenever errors are resolved, ignored or superseded, the chains they belong to settle (`chains_settle`): a root
run with nothing left open becomes *recovered*.
"""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.db.models.functions import Coalesce

from integrations.errors import ErrorCategory
from integrations.models import Connection, ConnectionStatus
from integrations.services import connection_reconnect
from syncs.events import log_event
from syncs.models import (
    UNRESOLVED_ERROR_STATUSES,
    ErrorLevel,
    RecordError,
    Resolution,
    RunStatus,
    SyncRun,
    Trigger,
)
from syncs.retries import CLAIMABLE_STATUSES, NO_SNAPSHOT_MESSAGE, RETRIABLE_LEVELS, retries_queue, snapshotless_errors
from syncs.services import sync_run_queue

FAILURE_LEVELS = (ErrorLevel.SYSTEM, ErrorLevel.BATCH, ErrorLevel.RECORD)


def run_and_descendants(run):
    """The primary keys of `run` and of every retry below it in its chain."""
    ids, frontier = {run.pk}, {run.pk}
    while frontier:
        frontier = set(SyncRun.objects.filter(parent_id__in=frontier).values_list("pk", flat=True)) - ids
        ids |= frontier
    return ids


def run_open_failures(run):
    """The unresolved errors that keep `run` from being recovered: those of its chain, wherever they now live."""
    chain = run_and_descendants(run)
    return RecordError.objects.for_org(run.organization).filter(
        Q(run__in=chain) | Q(origin_run__in=chain), level__in=FAILURE_LEVELS, status__in=UNRESOLVED_ERROR_STATUSES,
    )


def run_recovery_summary(run):
    """Why a run is (not yet) recovered: its open failures by status and by category, and what is running."""
    failures = run_open_failures(run)
    by_status = dict(failures.values_list("status").annotate(n=Count("pk")).order_by("status"))
    by_category = dict(failures.values_list("category").annotate(n=Count("pk")).order_by("category"))
    in_flight = SyncRun.objects.filter(pk__in=run_and_descendants(run) - {run.pk},
                                       status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).count()
    return {"open_failures": sum(by_status.values()), "by_status": by_status, "by_category": by_category,
            "retries_in_flight": in_flight}


def chain_refresh_status(root):
    """A failed root run whose chain left nothing open becomes recovered. Returns whether it did."""
    if root.status not in (RunStatus.PARTIALLY_FAILED, RunStatus.FAILED):
        return False
    chain = SyncRun.objects.filter(Q(pk=root.pk) | Q(root=root))
    if chain.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).exists():
        return False
    if run_open_failures(root).exists():
        return False
    if not SyncRun.objects.filter(pk=root.pk, status=root.status).update(status=RunStatus.RECOVERED):
        return False  # changed under us: it will be evaluated again
    root.status = RunStatus.RECOVERED
    log_event("run_recovered", run=str(root.code), mapping=str(root.mapping.code))
    return True


def chains_settle(*, run_ids):
    """Re-evaluate the root runs of these runs (runs whose errors were just resolved, ignored or superseded)."""
    run_ids = {run_id for run_id in run_ids if run_id}
    if not run_ids:
        return []
    roots = {root_id or own_id for own_id, root_id in
             SyncRun.objects.filter(pk__in=run_ids).values_list("pk", "root_id")}
    failed = set(SyncRun.objects.filter(pk__in=roots, status__in=(RunStatus.PARTIALLY_FAILED, RunStatus.FAILED))
                 .values_list("pk", flat=True))
    # A bulk close touches thousands of chains, most of which still have something open: those are found in
    # two queries, and only the rest are looked at one by one.
    recovered = []
    for root in SyncRun.objects.filter(pk__in=failed - _roots_still_failing(failed)).order_by("pk"):
        if chain_refresh_status(root):
            recovered.append(root.pk)
    return recovered


def _roots_still_failing(roots):
    """The root runs of `roots` with an unresolved failure in their chain, whether it is in one of the chain's
    runs or moved on from one (origin_run)."""
    failures = RecordError.objects.filter(level__in=FAILURE_LEVELS, status__in=UNRESOLVED_ERROR_STATUSES)
    failing = set()
    for run in ("run", "origin_run"):
        failing.update(
            failures.filter(Q(**{f"{run}_id__in": roots}) | Q(**{f"{run}__root_id__in": roots}))
            .annotate(chain_root=Coalesce(f"{run}__root_id", f"{run}_id")).order_by()
            .values_list("chain_root", flat=True).distinct()
        )
    return failing & set(roots)


def errors_settle(errors):
    """Settle the chains of these errors: call after resolving, ignoring or superseding them."""
    pairs = errors.order_by().values_list("run_id", "origin_run_id").distinct()
    return chains_settle(run_ids={run_id for pair in pairs for run_id in pair})


def sync_run_retry_failures(*, run, force=False):
    """A child run of `run` that retries what of it is still failing.

    The failures are those of the run's chain, wherever they now live (`run_open_failures`): retrying an
    original run whose first retry failed again takes up where that retry left off. Failed pages are fetched
    again by their page token and failing records replayed. A run that stopped on a system error (the target
    down at the start, credentials refused mid-run) reads its delta again instead, which includes its failed
    records, since the cursor never moved past them.
    """
    if run.status not in (RunStatus.PARTIALLY_FAILED, RunStatus.FAILED):
        raise ValidationError("Only a finished run with failures can be retried.", code="no_failures")
    failures = run_open_failures(run)
    if failures.filter(level=ErrorLevel.SYSTEM).exists():
        return sync_run_queue(mapping=run.mapping, trigger=Trigger.RETRY, parent=run,
                              options={"resolution": Resolution.REPLAY, "force": force})
    failures = failures.filter(level__in=RETRIABLE_LEVELS, status__in=CLAIMABLE_STATUSES)
    blocked = snapshotless_errors(failures, organization=run.organization)
    with transaction.atomic():
        runs, _queued = retries_queue(failures.exclude(pk__in=blocked), trigger=Trigger.RETRY,
                                      resolution=Resolution.REPLAY, force=force, parent=run)
        if not runs:
            raise ValidationError(NO_SNAPSHOT_MESSAGE if blocked else
                                  "This run has no failed batch or record left to retry.", code="nothing_to_retry")
    return runs[0]


def sync_run_resume_after_reconnect(run):
    """Resume `run`, stopped because a connection's credentials were refused, if that connection has been
    reconnected in the meantime. Returns the queued retry, or None.

    Called when the run finishes: a reconnect made while the run was still stopping (its other batches winding
    down) found no finished run to resume, and nothing else would read the records the run never reached. A
    reconnect made after the run finished resumes it itself (sync_runs_resume); whichever of the two comes
    second finds the other's retry, under the run's row lock, and queues nothing.
    """
    if run.is_test or run.status not in (RunStatus.PARTIALLY_FAILED, RunStatus.FAILED):
        return None
    mapping = run.mapping
    refused = RecordError.objects.filter(run=run, level=ErrorLevel.SYSTEM, category=ErrorCategory.AUTH,
                                         status__in=UNRESOLVED_ERROR_STATUSES)
    connections = Connection.objects.filter(pk__in=(mapping.source_connection_id, mapping.target_connection_id))
    if not mapping.is_active or not refused.exists() or connections.exclude(status=ConnectionStatus.ACTIVE).exists():
        return None
    return _resume(run)


def _resume(run):
    with transaction.atomic():
        SyncRun.objects.select_for_update().filter(pk=run.pk).first()
        if SyncRun.objects.filter(parent=run, trigger=Trigger.RETRY,
                                  status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).exists():
            return None
        return sync_run_retry_failures(run=run)


def sync_runs_resume(*, connection):
    """After a reconnect: retry the latest run of each active mapping of `connection` that its outage stopped
    (an unresolved system error). Returns the runs queued."""
    stopped = (RecordError.objects.for_org(connection.organization)
               .filter(level=ErrorLevel.SYSTEM, status__in=UNRESOLVED_ERROR_STATUSES, run__is_test=False,
                       mapping__is_active=True)
               .filter(Q(mapping__source_connection=connection) | Q(mapping__target_connection=connection))
               .order_by("mapping_id", "-run_id").values_list("mapping_id", "run_id"))
    latest = {}
    for mapping_id, run_id in stopped:
        latest.setdefault(mapping_id, run_id)
    queued = []
    for run in SyncRun.objects.filter(pk__in=latest.values()).select_related("mapping").order_by("pk"):
        if run.status in (RunStatus.PARTIALLY_FAILED, RunStatus.FAILED) and (resumed := _resume(run)):
            queued.append(resumed)
    if queued:
        log_event("runs_resumed", connection=str(connection.code), connection_name=connection.name,
                  runs=[str(run.code) for run in queued])
    return queued


def connection_reconnect_and_resume(*, connection, credentials=None):
    """Reconnect a connection (integrations.services.connection_reconnect) and resume the runs its outage
    stopped. Returns (connection, resumed runs); raises the check's ConnectorError when it still fails."""
    connection = connection_reconnect(connection=connection, credentials=credentials)
    return connection, sync_runs_resume(connection=connection)
