"""Service functions for runs: what the CLI, the admin, schedules and (later) the API call."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from django_q.tasks import async_task

from integrations.models import ConnectionStatus
from mappings.models import Mapping
from syncs.events import log_event
from syncs.models import ErrorLevel, ErrorStatus, RecordError, RunStatus, SyncRun, Trigger
from syncs.options import RunOptions
from syncs.policy import error_routing


def sync_run_queue(*, mapping, trigger=Trigger.MANUAL, parent=None, is_test=False, options=None, enqueue=True):
    """Create a queued run of `mapping` and hand it to the workers once the transaction commits.

    `enqueue=False` leaves the run for the caller to execute in its own process (`sync --inline`).
    The task carries only the run's id: the row is the truth, the worker re-reads everything. A mapping
    already queued or running is not queued twice (two runs of one mapping would race on its links); the
    active run is returned instead.
    """
    options = options if isinstance(options, RunOptions) else RunOptions.from_dict(options)
    # A second full run of a mapping would read the same delta again: the active one is returned instead. Runs
    # of named records (re-sync, retries, webhooks) are queued; sync_run_claim runs them one after the other.
    if not is_test and not options.replay and trigger in (Trigger.SCHEDULE, Trigger.MANUAL) and (
        existing := mapping_active_run(mapping)
    ):
        return existing
    if trigger == Trigger.SCHEDULE and not mapping_can_run_on_schedule(mapping):
        return None
    run = SyncRun.objects.create(
        organization=mapping.organization,
        mapping=mapping,
        trigger=trigger,
        status=RunStatus.QUEUED,
        is_test=is_test,
        parent=parent,
        root=(parent.root or parent) if parent else None,
        options=options.as_dict(),
    )
    if enqueue:
        transaction.on_commit(lambda: async_task("syncs.tasks.run_sync", run.pk, task_name=f"sync-run-{run.pk}"))
    return run


def mapping_active_run(mapping):
    """The run of `mapping` that is queued or running (test runs aside), or None."""
    return SyncRun.objects.for_org(mapping.organization).filter(
        mapping=mapping, status__in=(RunStatus.QUEUED, RunStatus.RUNNING), is_test=False
    ).order_by("pk").first()


def mapping_can_run_on_schedule(mapping):
    """Schedules stop while the mapping is paused or a connection needs attention (e.g. reauthentication)."""
    return mapping.is_active and all(
        connection.status == ConnectionStatus.ACTIVE
        for connection in (mapping.source_connection, mapping.target_connection)
    )


def sync_runs_queue_for_org(*, organization, mapping_ids=None, trigger=Trigger.MANUAL, enqueue=True):
    """Queue a run of every active mapping of the organization (or of the given ones)."""

    mappings = Mapping.objects.for_org(organization).filter(is_active=True).order_by("pk")
    if mapping_ids:
        mappings = mappings.filter(pk__in=mapping_ids)
    return [sync_run_queue(mapping=mapping, trigger=trigger, enqueue=enqueue) for mapping in mappings]


def sync_run_summary(run):
    """The run as the CLI and logs report it: id, mapping, status, counts and errors by category."""
    by_category = dict(
        run.record_errors.filter(level__in=(ErrorLevel.SYSTEM, ErrorLevel.BATCH, ErrorLevel.RECORD))
        .values_list("category")
        .annotate(n=Count("pk"))
        .order_by("category")
    )
    return {
        "run": str(run.code),
        "mapping": {"id": str(run.mapping.code), "name": run.mapping.name},
        "trigger": run.trigger,
        "status": run.status,
        "counts": run.counts(),
        "errors_by_category": by_category,
        "system_error": run.system_error or None,
    }


def sync_run_cancel(*, run):
    """Cancel a queued or running run.

    A queued run is canceled at once and the errors it had claimed for a retry go back to their queue. A
    running run is marked canceled and its worker stops before the next batch (what it wrote stays written,
    RecordLink remembers it); the engine then hands back what it did not reach.
    """
    now = timezone.now()
    canceled = SyncRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELED, finished_at=now
    )
    if not canceled and SyncRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
        status=RunStatus.CANCELED
    ):
        run.refresh_from_db()
        log_event("run_cancel_requested", run=str(run.code), mapping=str(run.mapping.code))
        return run
    run.refresh_from_db()
    if not canceled:
        raise ValidationError("This run has already finished.", code="run_finished")
    sync_run_release_claims(run)
    log_event("run_canceled", run=str(run.code), mapping=str(run.mapping.code))
    return run


def sync_run_start_next_queued(run):
    """Runs of this mapping that waited for this one (see sync_run_claim) go to a worker now."""
    waiting = SyncRun.objects.filter(mapping_id=run.mapping_id, status=RunStatus.QUEUED, is_test=False).exclude(
        pk=run.pk).order_by("pk").values_list("pk", flat=True).first()
    if waiting is not None:
        transaction.on_commit(lambda: async_task("syncs.tasks.run_sync", waiting, task_name=f"sync-run-{waiting}"))


def sync_run_release_claims(run):
    """Errors the run had claimed for a retry but never reached (a system error, a fail-fast stop, a cancel) go
    back to their queue. Not an attempt: the record was not tried, so its attempts stay as they were."""
    error_ids = RunOptions.of(run).errors
    if not error_ids:
        return
    now = timezone.now()
    for error in RecordError.objects.filter(pk__in=error_ids, status=ErrorStatus.RETRYING).select_related("mapping"):
        error.status, error.next_retry_at = error_routing(mapping=error.mapping, error=error, now=now)
        error.claim_token = None
        error.save(update_fields=["status", "next_retry_at", "claim_token", "updated_at"])
