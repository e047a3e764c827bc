"""Recovery: retry policies, the retry sweeper, the reaper, retries of errors and runs, the review queue.

Every retry goes through one path: errors are claimed with a conditional update (status → retrying, under a
claim token only this caller knows), grouped per mapping, and replayed in a run whose options name them. The
engine re-fetches each record from the source where the connector can (safe replay), falls back to the
snapshot, and never overwrites a target record that changed after the failure unless forced. RecordLink keeps
every replay idempotent.
"""

import dataclasses
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Max, Min, Q
from django.utils import timezone
from django_q.tasks import async_task

from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import ConnectionStatus
from integrations.services import connector_for
from mappings.models import ErrorStrategy
from mappings.validation import validate_payload
from syncs.events import log_event
from syncs.models import (
    UNRESOLVED_ERROR_STATUSES,
    BatchStatus,
    ErrorLevel,
    ErrorStatus,
    LinkStatus,
    RecordError,
    RecordLink,
    Resolution,
    RunStatus,
    SyncBatch,
    SyncRun,
    Trigger,
)
from syncs.services import mapping_active_run, sync_run_queue

# ARCHITECTURE.md's error table: ephemeral categories are retried, "unknown" only a few times, durable never.
DEFAULT_RETRY_POLICY = {
    ErrorCategory.CONNECTION: {"retry": True},
    ErrorCategory.TIMEOUT: {"retry": True},
    ErrorCategory.RATE_LIMIT: {"retry": True},
    ErrorCategory.UNKNOWN: {"retry": True, "attempts": 2},
}
RETRY_RESOLUTIONS = (Resolution.AUTO_RETRY, Resolution.REPLAY, Resolution.MANUAL_RETRY, Resolution.BULK_RETRY)
# What an operator or the sweeper may claim for a retry.
CLAIMABLE_STATUSES = (ErrorStatus.OPEN, ErrorStatus.RETRY_SCHEDULED, ErrorStatus.IN_REVIEW, ErrorStatus.EXHAUSTED)
RETRIABLE_LEVELS = (ErrorLevel.RECORD, ErrorLevel.BATCH)


# --- retry policy ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    retry: bool
    attempts: int
    delays: tuple[int, ...]


def retry_policy(mapping, category, *, retryable=None):
    """The mapping's retry policy for one error category: its own override, else the defaults.

    Without an override a category retries when the error itself is retryable (a problem-JSON body can say so),
    with the mapping's schedule and max retries.
    """
    override = (mapping.retry_policy or {}).get(str(category)) or {}
    default = DEFAULT_RETRY_POLICY.get(category, {"retry": False})
    retry = override.get("retry", default["retry"] if retryable is None else retryable)
    attempts = override.get("attempts", min(default.get("attempts", mapping.max_retries), mapping.max_retries))
    delays = tuple(override.get("delays") or mapping.retry_schedule or (60, 300, 1800))
    return RetryPolicy(retry=bool(retry), attempts=int(attempts), delays=tuple(int(d) for d in delays))


def validate_retry_policy(value):
    """Raise ValidationError unless `value` is {category: {"retry": bool, "attempts": int, "delays": [int]}}."""
    if not isinstance(value, dict):
        raise ValidationError("The retry policy must be an object keyed by error category.")
    for category, rule in value.items():
        if category not in ErrorCategory.values:
            raise ValidationError(f"Unknown error category '{category}'.")
        if not isinstance(rule, dict) or set(rule) - {"retry", "attempts", "delays"}:
            raise ValidationError(f"{category}: expected retry, attempts and delays.")
        if "retry" in rule and not isinstance(rule["retry"], bool):
            raise ValidationError(f"{category}: retry must be true or false.")
        if "attempts" in rule and (not isinstance(rule["attempts"], int) or not 0 <= rule["attempts"] <= 20):
            raise ValidationError(f"{category}: attempts must be a whole number from 0 to 20.")
        delays = rule.get("delays", [1])
        if not isinstance(delays, list) or not delays or not all(isinstance(d, int) and d > 0 for d in delays):
            raise ValidationError(f"{category}: delays must be a list of seconds above 0.")


def next_retry_time(policy, *, attempts, now, retry_after_until=None):
    """When the next automatic retry is due after `attempts` retries, or None when there is none left.

    Never sooner than the Retry-After the target asked for.
    """
    if not policy.retry or attempts >= policy.attempts:
        return None
    due = now + timedelta(seconds=policy.delays[min(attempts, len(policy.delays) - 1)])
    if retry_after_until and retry_after_until > due:
        due = retry_after_until
    return due


def error_routing(*, mapping, error, now):
    """Status and next retry time of a new record error, by the mapping's strategy and retry policy."""
    if mapping.error_strategy == ErrorStrategy.MANUAL_REVIEW:
        return ErrorStatus.IN_REVIEW, None
    if mapping.error_strategy != ErrorStrategy.RETRY:
        return ErrorStatus.OPEN, None
    policy = retry_policy(mapping, ErrorCategory(error.category), retryable=error.retryable)
    if not policy.retry:
        return ErrorStatus.OPEN, None
    due = next_retry_time(policy, attempts=error.attempts, now=now, retry_after_until=error.retry_after_until)
    if due is None:
        return ErrorStatus.EXHAUSTED, None
    return ErrorStatus.RETRY_SCHEDULED, due


# --- claiming and queueing retries ------------------------------------------------------------------------------


def _claim(queryset, *, now):
    """Claim the claimable errors of `queryset` for this caller: two concurrent callers never share one."""
    token = uuid.uuid4()
    ids = list(queryset.values_list("pk", flat=True))
    RecordError.objects.filter(pk__in=ids, status__in=CLAIMABLE_STATUSES).update(
        status=ErrorStatus.RETRYING, claim_token=token, last_retried_at=now, next_retry_at=None, updated_at=now
    )
    return RecordError.objects.filter(claim_token=token, status=ErrorStatus.RETRYING)


def _queue_replays(claimed, *, trigger, resolution, force=False, parent=None, extra_options=None):
    """One replay run per mapping for the claimed errors; returns the runs."""
    runs = []
    by_mapping = {}
    for error_id, mapping_id, level, batch_id in claimed.values_list("pk", "mapping_id", "level", "batch_id"):
        group = by_mapping.setdefault(mapping_id, {"errors": [], "batches": []})
        if level == ErrorLevel.BATCH:
            group["batches"].append(batch_id)
        group["errors"].append(error_id)
    mappings = {m.pk: m for m in _mapping_model().objects.filter(pk__in=by_mapping).select_related("organization")}
    for mapping_id, group in sorted(by_mapping.items()):
        options = {"errors": group["errors"], "batches": [b for b in group["batches"] if b],
                   "resolution": resolution, "force": force, **(extra_options or {})}
        runs.append(sync_run_queue(mapping=mappings[mapping_id], trigger=trigger, parent=parent, options=options))
    return runs


def _mapping_model():
    from mappings.models import Mapping

    return Mapping


def _snapshotless(queryset):
    """Record errors that cannot be replayed: no snapshot, no edit, and a source connector that cannot fetch."""
    blocked = []
    rows = queryset.filter(level=ErrorLevel.RECORD, snapshot_before__isnull=True, edited_payload__isnull=True)
    for error in rows.select_related("mapping__source_connection", "mapping__target_connection"):
        connection = (error.mapping.source_connection if error.direction == "forward"
                      else error.mapping.target_connection)
        if not connection.get_connector().supports_fetch:
            blocked.append(error.pk)
    return blocked


# Why errors_retry skipped errors, as the admin and the command line say it.
SKIP_REASONS = {
    "already_resolved": "already resolved or ignored",
    "already_retrying": "already being retried",
    "not_retriable": "not retriable (warnings, ignored records, system errors)",
    "no_snapshot": "without a snapshot and with a source that cannot be fetched again",
    "test_run": "from a test run (test runs write nothing to retry)",
}

NO_SNAPSHOT_MESSAGE = (
    "No snapshot of this record was kept (the mapping's logging level is none) and its source cannot be "
    "fetched again: re-sync the mapping to read it from the source."
)


def errors_retry(*, organization, queryset=None, error_ids=None, resolution=Resolution.BULK_RETRY, force=False,
                 trigger=Trigger.RETRY, extra_options=None):
    """Retry errors (by ids, or every error of `queryset`), grouped into one replay run per mapping.

    Safe under concurrency: overlapping calls process each error once. Returns a summary:
    {"queued": n, "runs": [run ids], "skipped": {reason: n}}.
    """
    now = timezone.now()
    candidates = RecordError.objects.for_org(organization)
    if queryset is not None:
        candidates = candidates.filter(pk__in=queryset.values("pk"))
    if error_ids is not None:
        candidates = candidates.filter(pk__in=list(error_ids))
    else:
        # "Everything matching a filter" means what is still open; named ids get a reason for each skip.
        candidates = candidates.exclude(status__in=(ErrorStatus.RESOLVED, ErrorStatus.IGNORED))
    skipped = {}
    test_errors = candidates.filter(run__is_test=True).count()
    if test_errors:
        skipped["test_run"] = test_errors
    candidates = candidates.filter(run__is_test=False)
    not_errors = candidates.exclude(level__in=RETRIABLE_LEVELS).count()
    if not_errors:
        skipped["not_retriable"] = not_errors
    candidates = candidates.filter(level__in=RETRIABLE_LEVELS)
    for reason, statuses in (("already_resolved", (ErrorStatus.RESOLVED, ErrorStatus.IGNORED)),
                             ("already_retrying", (ErrorStatus.RETRYING,))):
        count = candidates.filter(status__in=statuses).count()
        if count:
            skipped[reason] = count
    claimable = candidates.filter(status__in=CLAIMABLE_STATUSES)
    blocked = _snapshotless(claimable)
    if blocked:
        skipped["no_snapshot"] = len(blocked)
        claimable = claimable.exclude(pk__in=blocked)
    claimable_ids = list(claimable.values_list("pk", flat=True))
    with transaction.atomic():
        claimed = _claim(RecordError.objects.filter(pk__in=claimable_ids), now=now)
        runs = _queue_replays(claimed, trigger=trigger, resolution=resolution, force=force,
                              extra_options=extra_options)
        queued = claimed.count()
    # A concurrent caller may have claimed some of ours between our count and our claim.
    raced = len(claimable_ids) - queued
    if raced > 0:
        skipped["already_retrying"] = skipped.get("already_retrying", 0) + raced
    log_event("errors_retry", organization=organization.slug, queued=queued, runs=[r.pk for r in runs],
              skipped=skipped)
    return {"queued": queued, "runs": [run.pk for run in runs], "skipped": skipped}


def error_retry(*, error, force=False):
    """Retry one error; raises ValidationError with a clear reason when it cannot be retried."""
    summary = errors_retry(organization=error.organization, error_ids=[error.pk], resolution=Resolution.MANUAL_RETRY,
                           force=force)
    if not summary["queued"]:
        reason = next(iter(summary["skipped"]), "not_retriable")
        raise ValidationError(NO_SNAPSHOT_MESSAGE if reason == "no_snapshot" else {
            "already_resolved": "This error is already resolved.",
            "already_retrying": "This error is already being retried.",
        }.get(reason, "Only record and batch errors can be retried."), code=reason)
    return summary


def retries_sweep(*, now=None):
    """The periodic sweeper: gather due errors (next_retry_at passed) into one retry run per mapping."""
    now = now or timezone.now()
    due = RecordError.objects.filter(
        status=ErrorStatus.RETRY_SCHEDULED, next_retry_at__lte=now, mapping__is_active=True,
        mapping__source_connection__status=ConnectionStatus.ACTIVE,
        mapping__target_connection__status=ConnectionStatus.ACTIVE,
    ).filter(Q(retry_after_until__isnull=True) | Q(retry_after_until__lte=now))
    with transaction.atomic():
        claimed = _claim(due, now=now)
        runs = _queue_replays(claimed, trigger=Trigger.RETRY, resolution=Resolution.AUTO_RETRY)
    if runs:
        log_event("retries_swept", runs=[r.pk for r in runs], errors=claimed.count())
    return runs


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


# --- runs: retry failures, automated replay, chains ---------------------------------------------------------------


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
    blocked = _snapshotless(failures)
    with transaction.atomic():
        claimed = _claim(failures.exclude(pk__in=blocked), now=timezone.now())
        if not claimed.exists():
            raise ValidationError(NO_SNAPSHOT_MESSAGE if blocked else
                                  "This run has no failed batch or record left to retry.", code="nothing_to_retry")
        (child,) = _queue_replays(claimed, trigger=Trigger.RETRY, resolution=Resolution.REPLAY, force=force,
                                  parent=run)
    return child


def run_and_descendants(run):
    """The primary keys of `run` and of every retry below it in its chain."""
    ids, frontier = {run.pk}, {run.pk}
    while frontier:
        frontier = set(SyncRun.objects.filter(parent_id__in=frontier).values_list("pk", flat=True)) - ids
        ids |= frontier
    return ids


def sync_run_after_finish(run):
    """What follows a finished run: the chain's status, automated replay, group retries, auto-pause."""
    if run.is_test:
        return
    _release_unprocessed(run)
    _start_next_queued(run)
    for root in _roots_touched(run):
        chain_refresh_status(root)
    _automated_replay(run)
    _continue_group_retry(run)
    _pause_after_failed_runs(run)


def _release_unprocessed(run):
    """Claimed errors the run never reached (a system error, a fail-fast stop) go back to their queue."""
    error_ids = run.options.get("errors") or []
    if not error_ids:
        return
    now = timezone.now()
    for error in RecordError.objects.filter(pk__in=error_ids, status=ErrorStatus.RETRYING).select_related("mapping"):
        error.attempts += 1 if run.trigger in (Trigger.RETRY, Trigger.REPLAY) else 0
        error.status, error.next_retry_at = error_routing(mapping=error.mapping, error=error, now=now)
        error.claim_token = None
        error.save(update_fields=["attempts", "status", "next_retry_at", "claim_token", "updated_at"])


def _start_next_queued(run):
    """Runs of this mapping that waited for this one (see sync_run_claim) go to a worker now."""
    waiting = SyncRun.objects.filter(mapping_id=run.mapping_id, status=RunStatus.QUEUED, is_test=False).exclude(
        pk=run.pk).order_by("pk").values_list("pk", flat=True).first()
    if waiting is not None:
        transaction.on_commit(lambda: async_task("syncs.tasks.run_sync", waiting, task_name=f"sync-run-{waiting}"))


def _roots_touched(run):
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


def _automated_replay(run):
    mapping = run.mapping
    if not mapping.automated_replay or not run.failed or run.status == RunStatus.CANCELED:
        return None
    root = run.root or run
    replays = SyncRun.objects.filter(root=root, trigger=Trigger.REPLAY).count()
    if replays >= mapping.replay_attempts:
        return None
    failures = RecordError.objects.filter(run=run, level=ErrorLevel.RECORD, status__in=CLAIMABLE_STATUSES)
    with transaction.atomic():
        claimed = _claim(failures, now=timezone.now())
        runs = _queue_replays(claimed, trigger=Trigger.REPLAY, resolution=Resolution.REPLAY, parent=run)
    return runs[0] if runs else None


# --- re-sync -------------------------------------------------------------------------------------------------


def record_resync(*, mapping, source_record_ids, force=False):
    """Sync these source records again now, read fresh from the source."""
    return sync_run_queue(mapping=mapping, trigger=Trigger.MANUAL, options={
        "records": [str(record_id) for record_id in source_record_ids], "resolution": Resolution.MANUAL_RETRY,
        "force": force,
    })


def records_resync_unsynced(*, organization, mapping=None, target_connection=None):
    """Re-sync every record not synced to a target, one run per mapping. Returns the runs."""
    links = RecordLink.objects.for_org(organization).filter(status__in=(LinkStatus.FAILED, LinkStatus.PENDING))
    if mapping is not None:
        links = links.filter(mapping=mapping)
    if target_connection is not None:
        links = links.filter(mapping__target_connection=target_connection)
    by_mapping = {}
    for mapping_id, source_id in links.values_list("mapping_id", "source_record_id"):
        by_mapping.setdefault(mapping_id, []).append(source_id)
    mappings = _mapping_model().objects.for_org(organization).in_bulk(list(by_mapping))
    return [record_resync(mapping=mappings[mapping_id], source_record_ids=ids)
            for mapping_id, ids in sorted(by_mapping.items())]


def record_sync_status(*, organization, source_connection=None, source_object=None):
    """The per-record × per-target table of seed 000: one row per (source record, mapping) with its status."""
    links = RecordLink.objects.for_org(organization).select_related("mapping__target_connection", "last_error")
    if source_connection is not None:
        links = links.filter(mapping__source_connection=source_connection)
    if source_object is not None:
        links = links.filter(mapping__source_object=source_object)
    return links.order_by("source_record_id", "mapping__target_connection__name")


def sync_status_counts(*, organization):
    """Per target connection: synced, unsynced (failed or pending) and failed records."""
    rows = (RecordLink.objects.for_org(organization)
            .values("mapping__target_connection_id", "mapping__target_connection__name")
            .annotate(synced=Count("pk", filter=Q(status=LinkStatus.SYNCED)),
                      failed=Count("pk", filter=Q(status=LinkStatus.FAILED)),
                      unsynced=Count("pk", filter=Q(status__in=(LinkStatus.FAILED, LinkStatus.PENDING))))
            .order_by("mapping__target_connection__name"))
    return [
        {"connection_id": row["mapping__target_connection_id"], "connection": row["mapping__target_connection__name"],
         "synced": row["synced"], "unsynced": row["unsynced"], "failed": row["failed"]}
        for row in rows
    ]


# --- test sync and preview ---------------------------------------------------------------------------------------


def mapping_test_sync(*, mapping, sample_size=10, write=False):
    """A run of `sample_size` records in this process. Without `write` nothing is written: the run's
    options["plan"] says, per record, what a real run would do. With it, just that sample is written.
    The cursor never moves."""
    from mappings.services import MappingBusy
    from syncs.engine import sync_run_execute

    if write and mapping_active_run(mapping) is not None:
        # Writing the sample while another run writes would race on the mapping's record links.
        raise MappingBusy("A run of this mapping is queued or running: test with write once it is done.")
    run = sync_run_queue(mapping=mapping, trigger=Trigger.TEST, is_test=not write, enqueue=False,
                         options={"sample_size": int(sample_size), "full": True})
    sync_run_execute(run_id=run.pk)
    run.refresh_from_db()
    return run


def errors_replay_preview(*, organization, error_ids):
    """What a replay of these errors would write, per record, next to the target's current values.

    Runs the replay as a test run in this process: nothing is written and no error changes state.
    """
    from syncs.engine import sync_run_execute

    errors = RecordError.objects.for_org(organization).filter(pk__in=list(error_ids), level__in=RETRIABLE_LEVELS)
    plans = []
    for mapping_id in sorted(set(errors.values_list("mapping_id", flat=True))):
        group = errors.filter(mapping_id=mapping_id)
        mapping = group.first().mapping
        run = sync_run_queue(mapping=mapping, trigger=Trigger.TEST, is_test=True, enqueue=False, options={
            "errors": list(group.filter(level=ErrorLevel.RECORD).values_list("pk", flat=True)),
            "batches": list(group.filter(level=ErrorLevel.BATCH).values_list("batch_id", flat=True)),
            "preview": True,
        })
        sync_run_execute(run_id=run.pk)
        run.refresh_from_db()
        plans.extend(run.options.get("plan", []))
    return plans


# --- review queue ------------------------------------------------------------------------------------------------


def review_queue(*, organization):
    return (RecordError.objects.for_org(organization)
            .filter(status=ErrorStatus.IN_REVIEW, level=ErrorLevel.RECORD)
            .select_related("mapping", "run").order_by("created_at", "pk"))


def error_edit_and_retry(*, error, payload, force=False):
    """Replace the transformed record of an error with an operator's correction, validate it, retry it.

    Raises ValidationError keyed by field when the correction does not fit the target's schema.
    """
    if error.level != ErrorLevel.RECORD:
        raise ValidationError("Only a record error can be edited.", code="not_a_record")
    if error.is_resolved:
        raise ValidationError("This error is already resolved.", code="already_resolved")
    if not isinstance(payload, dict):
        raise ValidationError("The record must be an object of field values.", code="invalid")
    mapping = error.mapping
    far = mapping.target_connection if error.direction == "forward" else mapping.source_connection
    far_object = mapping.target_object if error.direction == "forward" else mapping.source_object
    try:
        schema = connector_for(far).schema_for(far_object)
    except ConnectorError as exc:
        # The correction cannot be checked against a schema the target does not give: say so, change nothing.
        raise ValidationError(f"The target's schema is not available: {exc.message}", code=exc.code) from exc
    result = validate_payload(payload, schema, auto_fix=False, phone_country=mapping.default_phone_country)
    if result.errors:
        raise ValidationError({problem.field or "payload": problem.message for problem in result.errors})
    error.edited_payload = result.payload
    error.save(update_fields=["edited_payload", "updated_at"])
    return errors_retry(organization=error.organization, error_ids=[error.pk], resolution=Resolution.FIXED,
                        force=force)


def error_ignore(*, error, reason):
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why this record is ignored."})
    _close(error, status=ErrorStatus.IGNORED, resolution=Resolution.IGNORED, note=reason)
    RecordLink.objects.filter(mapping=error.mapping, source_record_id=error.source_record_id,
                              status=LinkStatus.FAILED).update(status=LinkStatus.IGNORED)


def error_resolve(*, error, note=""):
    _close(error, status=ErrorStatus.RESOLVED, resolution=Resolution.FIXED, note=note)


def _close(error, *, status, resolution, note):
    if error.is_resolved:
        raise ValidationError("This error is already resolved.", code="already_resolved")
    now = timezone.now()
    error.status, error.resolution, error.resolved_at = status, resolution, now
    error.resolution_note = note
    # Closed by a person even while a retry has it: the replay then leaves this error alone.
    error.next_retry_at, error.claim_token = None, None
    error.save(update_fields=["status", "resolution", "resolved_at", "resolution_note", "next_retry_at",
                              "claim_token", "updated_at"])


# --- error groups -----------------------------------------------------------------------------------------------


def error_groups(*, organization, queryset=None):
    """Unresolved errors grouped by fingerprint: counts, first and last seen, a sample."""
    errors = queryset if queryset is not None else RecordError.objects.for_org(organization)
    return (errors.filter(level=ErrorLevel.RECORD, status__in=UNRESOLVED_ERROR_STATUSES)
            .values("fingerprint", "mapping_id", "mapping__name", "category", "error_code", "field")
            .annotate(count=Count("pk"), first_seen=Min("first_seen_at"), last_seen=Max("created_at"),
                      sample_id=Max("pk"))
            .order_by("-count", "fingerprint"))


def error_group_retry(*, organization, fingerprint):
    """Fix once, replay the group: retry one record first; when it succeeds the rest follow."""
    group = RecordError.objects.for_org(organization).filter(
        fingerprint=fingerprint, level=ErrorLevel.RECORD, status__in=CLAIMABLE_STATUSES
    )
    probe = group.order_by("-pk").first()
    if probe is None:
        raise ValidationError("This error group has nothing left to retry.", code="nothing_to_retry")
    summary = errors_retry(organization=organization, error_ids=[probe.pk], resolution=Resolution.MANUAL_RETRY,
                           extra_options={"group_fingerprint": fingerprint})
    return {**summary, "probe_error": probe.pk, "remaining": group.exclude(pk=probe.pk).count()}


def _continue_group_retry(run):
    fingerprint = run.options.get("group_fingerprint")
    if not fingerprint or run.status != RunStatus.SUCCEEDED:
        return None
    rest = RecordError.objects.for_org(run.organization).filter(
        fingerprint=fingerprint, level=ErrorLevel.RECORD, status__in=CLAIMABLE_STATUSES
    )
    return errors_retry(organization=run.organization, queryset=rest, resolution=Resolution.BULK_RETRY)


# --- auto-pause -------------------------------------------------------------------------------------------------


def _pause_after_failed_runs(run):
    mapping = run.mapping
    limit = mapping.pause_after_failed_runs
    if not limit or run.status != RunStatus.FAILED or not mapping.is_active:
        return False
    recent = list(SyncRun.objects.filter(mapping=mapping, is_test=False, finished_at__isnull=False)
                  .order_by("-finished_at", "-pk").values_list("status", flat=True)[:limit])
    if len(recent) < limit or any(status != RunStatus.FAILED for status in recent):
        return False
    last = run.system_error or f"see run {run.pk}"
    mapping_pause(mapping=mapping, reason=f"Paused after {limit} failed runs in a row; last: {last}")
    return True


def mapping_pause(*, mapping, reason):
    from syncs.schedules import mapping_schedule_sync

    mapping.is_active = False
    mapping.paused_reason = reason[:500]
    mapping.save(update_fields=["is_active", "paused_reason", "updated_at"])
    mapping_schedule_sync(mapping=mapping)
    log_event("mapping_paused", mapping=mapping.name, reason=reason)


def mapping_resume(*, mapping):
    from syncs.schedules import mapping_schedule_sync

    mapping.is_active = True
    mapping.paused_reason = ""
    mapping.save(update_fields=["is_active", "paused_reason", "updated_at"])
    mapping_schedule_sync(mapping=mapping)
