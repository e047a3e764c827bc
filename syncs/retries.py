"""Retrying record and batch errors: one claim, one replay run per mapping, the periodic sweeper.

Every retry goes through one path: errors are claimed with a conditional update (status → retrying, under a
claim token only this caller knows), grouped per mapping, and replayed in a run whose options name them. The
engine re-fetches each record from the source where the connector can (safe replay), falls back to the
snapshot, and never overwrites a target record that changed after the failure unless forced. RecordLink keeps
every replay idempotent.
"""

import uuid

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from integrations.errors import ErrorCategory
from integrations.models import ConnectionStatus
from mappings.models import Mapping
from syncs.events import log_event
from syncs.models import ErrorLevel, ErrorStatus, RecordError, Resolution, RunStatus, SyncRun, Trigger
from syncs.options import RunOptions
from syncs.policy import retry_policy
from syncs.services import sync_run_queue

RETRY_RESOLUTIONS = (Resolution.AUTO_RETRY, Resolution.REPLAY, Resolution.MANUAL_RETRY, Resolution.BULK_RETRY)


CLAIMABLE_STATUSES = (ErrorStatus.OPEN, ErrorStatus.RETRY_SCHEDULED, ErrorStatus.IN_REVIEW, ErrorStatus.EXHAUSTED)


RETRIABLE_LEVELS = (ErrorLevel.RECORD, ErrorLevel.BATCH)



def claim_errors(queryset, *, now, token=None):
    """Claim the claimable errors of `queryset` for this caller: two concurrent callers never share one."""
    token = token or uuid.uuid4()
    ids = list(queryset.values_list("pk", flat=True))
    RecordError.objects.filter(pk__in=ids, status__in=CLAIMABLE_STATUSES).update(
        status=ErrorStatus.RETRYING, claim_token=token, last_retried_at=now, next_retry_at=None, updated_at=now
    )
    return RecordError.objects.filter(claim_token=token, status=ErrorStatus.RETRYING)


def sync_run_claim_errors(run, *, now):
    """A replay queued behind another run of its mapping claims its errors when it starts (see retries_queue)."""
    options = RunOptions.of(run)
    if options.claim_token and options.claim_on_start:
        claim_errors(RecordError.objects.filter(pk__in=options.errors), now=now, token=options.claim_token)


def retries_queue(errors, *, trigger, resolution, force=False, parent=None, extra_options=None, now=None):
    """Queue one replay run per mapping for the claimable errors of `errors`; returns (runs, queued).

    An error is claimed only by a run that can start now: for a mapping with no run queued or running the
    errors are claimed at once; for a busy one the replay waits in the queue and claims them when it starts
    (what someone else resolved or retried meanwhile is then left alone).
    """
    now = now or timezone.now()
    errors = errors.filter(status__in=CLAIMABLE_STATUSES)
    busy = SyncRun.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING), is_test=False)
    waiting = list(errors.filter(mapping_id__in=busy.values("mapping_id")).values_list("pk", flat=True))
    token = uuid.uuid4()
    claimed = claim_errors(errors.exclude(pk__in=waiting), now=now, token=token)
    runs = queue_replays(claimed, trigger=trigger, resolution=resolution, force=force, parent=parent,
                         extra_options={**(extra_options or {}), "claim_token": str(token)})
    queued = claimed.count()
    if waiting:
        deferred = RecordError.objects.filter(pk__in=waiting)
        runs += queue_replays(deferred, trigger=trigger, resolution=resolution, force=force, parent=parent,
                              extra_options={**(extra_options or {}), "claim_token": str(uuid.uuid4()),
                                             "claim_on_start": True})
        queued += len(waiting)
    return runs, queued


def queue_replays(errors, *, trigger, resolution, force=False, parent=None, extra_options=None):
    """One replay run per mapping for `errors`; returns the runs."""
    runs = []
    by_mapping = {}
    for error_id, mapping_id, level, batch_id in errors.values_list("pk", "mapping_id", "level", "batch_id"):
        group = by_mapping.setdefault(mapping_id, {"errors": [], "batches": []})
        if level == ErrorLevel.BATCH:
            group["batches"].append(batch_id)
        group["errors"].append(error_id)
    mappings = {m.pk: m for m in Mapping.objects.filter(pk__in=by_mapping).select_related("organization")}
    for mapping_id, group in sorted(by_mapping.items()):
        options = {"errors": group["errors"], "batches": [b for b in group["batches"] if b],
                   "resolution": resolution, "force": force, **(extra_options or {})}
        runs.append(sync_run_queue(mapping=mappings[mapping_id], trigger=trigger, parent=parent, options=options))
    return runs


def snapshotless_errors(queryset):
    """Record errors that cannot be replayed: no snapshot, no edit, and a source connector that cannot fetch."""
    blocked = []
    rows = queryset.filter(level=ErrorLevel.RECORD, snapshot_before__isnull=True, edited_payload__isnull=True)
    for error in rows.select_related("mapping__source_connection", "mapping__target_connection"):
        connection = (error.mapping.source_connection if error.direction == "forward"
                      else error.mapping.target_connection)
        if not connection.get_connector().supports_fetch:
            blocked.append(error.pk)
    return blocked


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
    blocked = snapshotless_errors(claimable)
    if blocked:
        skipped["no_snapshot"] = len(blocked)
        claimable = claimable.exclude(pk__in=blocked)
    claimable_ids = list(claimable.values_list("pk", flat=True))
    with transaction.atomic():
        runs, queued = retries_queue(RecordError.objects.filter(pk__in=claimable_ids), trigger=trigger,
                                     resolution=resolution, force=force, extra_options=extra_options, now=now)
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


def retries_sweep(*, now=None, mapping=None):
    """The periodic sweeper: gather due errors (next_retry_at passed) into one retry run per mapping.

    Only mappings that can run now take part: active, both connections active, and no run of theirs queued or
    running. Their due errors stay scheduled until then, so a claimed error is never left waiting behind
    another run. `mapping` limits the sweep to one mapping (when a run of it has just finished).
    """
    now = now or timezone.now()
    due = RecordError.objects.filter(
        status=ErrorStatus.RETRY_SCHEDULED, next_retry_at__lte=now, mapping__is_active=True,
        mapping__source_connection__status=ConnectionStatus.ACTIVE,
        mapping__target_connection__status=ConnectionStatus.ACTIVE,
    ).filter(Q(retry_after_until__isnull=True) | Q(retry_after_until__lte=now))
    if mapping is not None:
        due = due.filter(mapping=mapping)
    busy = SyncRun.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING), is_test=False)
    due = due.exclude(mapping_id__in=busy.values("mapping_id"))
    with transaction.atomic():
        runs, queued = retries_queue(due, trigger=Trigger.RETRY, resolution=Resolution.AUTO_RETRY, now=now)
    if runs:
        log_event("retries_swept", runs=[r.pk for r in runs], errors=queued)
    return runs


def automatic_retry_allowed(mapping):
    """The errors of `mapping` an automatic path may retry: those its retry policy retries, with attempts left.

    Durable errors (validation, mapping, duplicate...) are never replayed automatically: the same record would
    fail the same way until something changes, and what changes it (a mapping fix, an edit, a fix at the
    source) comes with its own retry.
    """
    allowed = Q(pk__in=[])
    for category in ErrorCategory:
        for retryable in (True, False):
            policy = retry_policy(mapping, category, retryable=retryable)
            if policy.retry and policy.attempts > 0:
                allowed |= Q(category=category, retryable=retryable, attempts__lt=policy.attempts)
    return allowed


def automated_replay(run):
    """Replay the failed records of a finished run at once (seed 003's automated replay), within the same retry
    budget as every other retry: only errors the policy retries and that have attempts left, and at most
    `replay_attempts` replays in one chain."""
    mapping = run.mapping
    if not mapping.automated_replay or not run.failed or run.status == RunStatus.CANCELED:
        return None
    root = run.root or run
    replays = SyncRun.objects.filter(root=root, trigger=Trigger.REPLAY).count()
    if replays >= mapping.replay_attempts:
        return None
    failures = RecordError.objects.filter(
        run=run, level=ErrorLevel.RECORD, status__in=(ErrorStatus.OPEN, ErrorStatus.RETRY_SCHEDULED)
    ).filter(automatic_retry_allowed(mapping))
    with transaction.atomic():
        runs, _queued = retries_queue(failures, trigger=Trigger.REPLAY, resolution=Resolution.REPLAY, parent=run)
    return runs[0] if runs else None
