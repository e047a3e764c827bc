"""Retrying record and batch errors: one claim, one replay run per mapping, the periodic sweeper.

Every retry goes through one path: errors are claimed with a conditional update (status → retrying, under a
claim token only this caller knows), grouped per mapping, and replayed in a run whose options name them. The
engine re-fetches each record from the source where the connector can (safe replay), falls back to the
snapshot, and never overwrites a target record that changed after the failure unless forced. RecordLink keeps
every replay idempotent.

Everything here is set-based: errors are counted, claimed and grouped by a few statements whatever their number,
never one by one; a bulk retry of a hundred thousand errors costs a handful of queries.
"""

import uuid

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Aggregate, Count, JSONField, Q
from django.utils import timezone

from integrations.errors import ErrorCategory
from integrations.models import ConnectionStatus
from mappings.models import Mapping
from syncs.events import log_event
from syncs.models import ErrorLevel, ErrorStatus, RecordError, Resolution, RunStatus, SyncRun, Trigger
from syncs.options import RunOptions
from syncs.policy import retry_policy
from syncs.services import sync_run_queue

CLAIMABLE_STATUSES = (ErrorStatus.OPEN, ErrorStatus.RETRY_SCHEDULED, ErrorStatus.IN_REVIEW, ErrorStatus.EXHAUSTED)

RETRIABLE_LEVELS = (ErrorLevel.RECORD, ErrorLevel.BATCH)

CLOSED_STATUSES = (ErrorStatus.RESOLVED, ErrorStatus.IGNORED)

# What a claim answers of each error it took: enough to group them into replay runs.
CLAIMED_FIELDS = ("id", "mapping_id", "level", "batch_id")


class IdList(Aggregate):
    """The values of a group as one JSON list: the ids of a hundred thousand errors come back as a row per
    mapping, not a row each."""

    function = "JSON_GROUP_ARRAY"
    output_field = JSONField()

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, function="JSONB_AGG", **extra)


def claim_errors(queryset, *, now, token=None):
    """Claim the claimable errors of `queryset` for this caller: two concurrent callers never share one."""
    token = token or uuid.uuid4()
    _claim(queryset, now=now, token=token)
    return RecordError.objects.filter(claim_token=token, status=ErrorStatus.RETRYING)


def _claim(queryset, *, now, token):
    """One conditional UPDATE … RETURNING: the rows (CLAIMED_FIELDS) this caller claimed, and no other."""
    return RecordError.objects.filter(pk__in=queryset.values("pk"), status__in=CLAIMABLE_STATUSES).update_returning(
        CLAIMED_FIELDS, status=ErrorStatus.RETRYING, claim_token=token, last_retried_at=now, next_retry_at=None,
        updated_at=now,
    )


def sync_run_claim_errors(run, *, now):
    """A replay queued behind another run of its mapping claims its errors when it starts (see retries_queue)."""
    options = RunOptions.of(run)
    if options.claim_token and options.claim_on_start:
        claim_errors(RecordError.objects.filter(pk__in=options.errors), now=now, token=options.claim_token)


def retries_queue(errors, *, trigger, resolution, force=False, parent=None, extra_options=None, now=None,
                  claim_on_start=False):
    """Queue one replay run per mapping for the claimable errors of `errors`; returns (runs, queued).

    An error is claimed only by a run that can start now: for a mapping with no run queued or running the
    errors are claimed at once; for a busy one the replay waits in the queue and claims them when it starts
    (what someone else resolved or retried meanwhile is then left alone). `claim_on_start` makes every replay
    wait like that: a bulk action's replays claim their errors where they run, a mapping at a time, instead of
    one statement rewriting every error before any replay can start.
    """
    now = now or timezone.now()
    errors = errors.filter(status__in=CLAIMABLE_STATUSES)
    options = {**(extra_options or {}), "resolution": resolution, "force": force}
    runs, queued = [], 0
    if not claim_on_start:
        busy = SyncRun.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING), is_test=False)
        waiting = errors.filter(mapping_id__in=list(busy.values_list("mapping_id", flat=True)))
        token = uuid.uuid4()
        claimed = _claim(errors.exclude(pk__in=waiting.values("pk")), now=now, token=token)
        runs += queue_replays(_grouped(claimed), trigger=trigger, parent=parent,
                              options={**options, "claim_token": str(token)})
        queued += len(claimed)
        errors = waiting
    groups = {row["mapping_id"]: {"errors": row["errors"], "batches": row["batches"] or []}
              for row in errors.order_by().values("mapping_id").annotate(
                  errors=IdList("pk"), batches=IdList("batch_id", filter=Q(level=ErrorLevel.BATCH,
                                                                           batch_id__isnull=False)))}
    for mapping_id, group in groups.items():
        runs += queue_replays({mapping_id: group}, trigger=trigger, parent=parent,
                              options={**options, "claim_token": str(uuid.uuid4()), "claim_on_start": True})
        queued += len(group["errors"])
    return runs, queued


def _grouped(claimed):
    """{mapping id: {"errors": [ids], "batches": [batch ids]}} of claimed rows (CLAIMED_FIELDS)."""
    groups = {}
    for error_id, mapping_id, level, batch_id in claimed:
        group = groups.setdefault(mapping_id, {"errors": [], "batches": []})
        group["errors"].append(error_id)
        if level == ErrorLevel.BATCH and batch_id:
            group["batches"].append(batch_id)
    return groups


def queue_replays(groups, *, trigger, parent=None, options):
    """One replay run per mapping of `groups` ({mapping id: {"errors": [...], "batches": [...]}}); the runs."""
    mappings = Mapping.objects.filter(pk__in=groups).select_related("organization").in_bulk()
    return [sync_run_queue(mapping=mappings[mapping_id], trigger=trigger, parent=parent,
                           options={**options, "errors": group["errors"], "batches": group["batches"]})
            for mapping_id, group in sorted(groups.items())]


def snapshotless(organization):
    """A filter of the record errors of `organization` that cannot be replayed: no snapshot, no edit, and a
    connector on the record's side that cannot fetch it again; None when every connection can fetch."""
    cannot_fetch = {}
    blocked = {"forward": [], "reverse": []}
    for mapping in Mapping.objects.for_org(organization).select_related("source_connection", "target_connection"):
        for direction, connection in (("forward", mapping.source_connection), ("reverse", mapping.target_connection)):
            if connection.pk not in cannot_fetch:
                cannot_fetch[connection.pk] = not connection.get_connector().supports_fetch
            if cannot_fetch[connection.pk]:
                blocked[direction].append(mapping.pk)
    if not blocked["forward"] and not blocked["reverse"]:
        return None
    side = Q(direction="forward", mapping_id__in=blocked["forward"]) | (
        ~Q(direction="forward") & Q(mapping_id__in=blocked["reverse"]))
    return Q(level=ErrorLevel.RECORD, snapshot_before__isnull=True, edited_payload__isnull=True) & side


def snapshotless_errors(queryset, *, organization):
    """The primary keys of the errors of `queryset` that cannot be replayed (see snapshotless)."""
    blocked = snapshotless(organization)
    return [] if blocked is None else list(queryset.filter(blocked).values_list("pk", flat=True))


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
                 trigger=Trigger.RETRY, extra_options=None, claim_on_start=False):
    """Retry errors (by ids, or every error of `queryset`), grouped into one replay run per mapping.

    Safe under concurrency: overlapping calls process each error once. `claim_on_start` leaves the claims to
    the replays (see retries_queue): what a replay finds taken by then it leaves alone. Returns a summary:
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
        candidates = candidates.exclude(status__in=CLOSED_STATUSES)
    retriable = Q(run__is_test=False, level__in=RETRIABLE_LEVELS)
    claimable = retriable & Q(status__in=CLAIMABLE_STATUSES)
    blocked = snapshotless(organization)
    # Every reason to skip, counted in one pass over the candidates.
    reasons = {
        "test_run": Q(run__is_test=True),
        "not_retriable": Q(run__is_test=False) & ~Q(level__in=RETRIABLE_LEVELS),
        "already_resolved": retriable & Q(status__in=CLOSED_STATUSES),
        "already_retrying": retriable & Q(status=ErrorStatus.RETRYING),
    }
    if blocked is not None:
        reasons["no_snapshot"] = claimable & blocked
        claimable &= ~blocked
    counts = candidates.aggregate(claimable=Count("pk", filter=claimable),
                                  **{reason: Count("pk", filter=condition) for reason, condition in reasons.items()})
    skipped = {reason: counts[reason] for reason in reasons if counts[reason]}
    with transaction.atomic():
        runs, queued = retries_queue(candidates.filter(claimable), trigger=trigger, resolution=resolution,
                                     force=force, extra_options=extra_options, now=now,
                                     claim_on_start=claim_on_start)
    # A concurrent caller may have claimed some of ours between our count and our claim.
    raced = counts["claimable"] - queued
    if raced > 0:
        skipped["already_retrying"] = skipped.get("already_retrying", 0) + raced
    log_event("errors_retry", organization=organization.slug, queued=queued, runs=[str(r.code) for r in runs],
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
        log_event("retries_swept", runs=[str(r.code) for r in runs], errors=queued)
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
    if RecordError.objects.filter(run=run, level=ErrorLevel.SYSTEM, category=ErrorCategory.AUTH).exists():
        return None  # the credentials were refused: the run resumes in full after the reconnect (syncs.chains)
    root = run.root or run
    replays = SyncRun.objects.filter(root=root, trigger=Trigger.REPLAY).count()
    if replays >= mapping.replay_attempts:
        return None
    # Not sooner than the target asked: a record refused with a Retry-After still running is left to the sweeper,
    # which takes it once that has passed (its next_retry_at is never earlier).
    failures = RecordError.objects.filter(
        run=run, level=ErrorLevel.RECORD, status__in=(ErrorStatus.OPEN, ErrorStatus.RETRY_SCHEDULED)
    ).filter(automatic_retry_allowed(mapping)).filter(
        Q(retry_after_until__isnull=True) | Q(retry_after_until__lte=timezone.now()))
    with transaction.atomic():
        runs, _queued = retries_queue(failures, trigger=Trigger.REPLAY, resolution=Resolution.REPLAY, parent=run)
    return runs[0] if runs else None
