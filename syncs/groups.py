"""Error groups: the unresolved errors of a mapping that share a fingerprint (category, code and field), so one
fix applies to all of them.

A group retry (ErrorGroupRetry) retries one record first, the probe. The rest of the group follows once the
probe's record has synced, by whichever path: the run that retried it, an automated replay, a scheduled retry.
A probe that fails on a transient error is tried again within its retry budget, and when that runs out another
record of the group becomes the probe (a transient failure says nothing about the fix); a probe that fails
durably, or MAX_PROBES probes in a row that run out of attempts, stop the group retry with the reason, so nobody
retries a thousand records into the same wall.
"""

from django.core.exceptions import ValidationError
from django.db.models import Count, Max, Min, Q

from mappings.models import Mapping
from syncs.events import log_event
from syncs.models import (
    UNRESOLVED_ERROR_STATUSES,
    ErrorGroupRetry,
    ErrorLevel,
    ErrorStatus,
    GroupRetryStatus,
    LinkStatus,
    RecordError,
    RecordLink,
    Resolution,
    RunStatus,
    SyncRun,
)
from syncs.policy import retry_policy
from syncs.retries import CLAIMABLE_STATUSES, errors_retry

# The probe's own error while a retry of it is on its way: wait for it.
PENDING_STATUSES = (ErrorStatus.RETRY_SCHEDULED, ErrorStatus.RETRYING)
MAX_PROBES = 3


def error_groups(*, organization, queryset=None):
    """Unresolved errors grouped by fingerprint: counts, first and last seen, a sample.

    Read from one index alone (error_org_open_group_idx holds every column used here, in group order), so the
    cost grows with the organization's unresolved errors, not with all of its errors.
    """
    errors = queryset if queryset is not None else RecordError.objects.for_org(organization)
    return (errors.filter(level=ErrorLevel.RECORD, status__in=UNRESOLVED_ERROR_STATUSES)
            .values("fingerprint", "mapping_id", "category", "error_code", "field")
            .annotate(count=Count("fingerprint"), first_seen=Min("first_seen_at"), last_seen=Max("created_at"),
                      sample_id=Max("pk"))
            .order_by("-count", "fingerprint"))


def group_retries_latest(*, organization, fingerprints):
    """fingerprint -> the latest ErrorGroupRetry of each of these groups."""
    latest = {}
    for group_retry in (ErrorGroupRetry.objects.for_org(organization).filter(fingerprint__in=list(fingerprints))
                        .order_by("fingerprint", "-created_at", "-pk")):
        latest.setdefault(group_retry.fingerprint, group_retry)
    return latest


def error_group_retry(*, organization, fingerprint):
    """Fix once, replay the group: retry one record first; when it has synced the rest follow.

    Returns the retry summary with the group retry, the probe error and how many wait for it. Raises
    ValidationError when nothing is left to retry or a retry of the group is already probing.
    """
    group = RecordError.objects.for_org(organization).filter(
        fingerprint=fingerprint, level=ErrorLevel.RECORD, status__in=CLAIMABLE_STATUSES
    )
    probe = group.order_by("-pk").select_related("mapping").first()
    if probe is None:
        raise ValidationError("This error group has nothing left to retry.", code="nothing_to_retry")
    if ErrorGroupRetry.objects.for_org(organization).filter(
            fingerprint=fingerprint, status=GroupRetryStatus.PROBING).exists():
        raise ValidationError("A retry of this group is already waiting for its first record.",
                              code="already_retrying")
    group_retry = ErrorGroupRetry.objects.create(
        organization=organization, mapping=probe.mapping, fingerprint=fingerprint, direction=probe.direction,
        probe_record_id=probe.source_record_id, probe_error=probe,
    )
    summary = errors_retry(organization=organization, error_ids=[probe.pk], resolution=Resolution.MANUAL_RETRY)
    if not summary["queued"]:
        reason = next(iter(summary["skipped"]), "not_retriable")
        group_retry_stop(group_retry, reason=f"The first record could not be retried ({reason.replace('_', ' ')}).")
    log_event("error_group_retry", fingerprint=fingerprint, mapping=str(probe.mapping.code), probe=str(probe.code))
    return {**summary, "group_retry": group_retry, "probe_error": probe.pk,
            "remaining": group.exclude(pk=probe.pk).count()}


def group_retries_advance(*, mapping):
    """Move the probing group retries of `mapping` on: retry the rest when the probe's record has synced, try
    the probe again after a transient failure, stop with the reason after a durable one.

    Called whenever a run of the mapping finishes and whenever errors are closed by hand.
    """
    advanced = []
    for group_retry in ErrorGroupRetry.objects.filter(mapping=mapping, status=GroupRetryStatus.PROBING):
        if _group_retry_advance(group_retry):
            advanced.append(group_retry)
    return advanced


def group_retries_sweep():
    """The sweeper's share (every minute): move on the probing group retries of mappings with no run queued or
    running. A run's end moves them on (group_retries_advance); this catches a run whose worker died between
    finishing it and doing so, so a group retry never waits for good."""
    busy = SyncRun.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING), is_test=False)
    mapping_ids = (ErrorGroupRetry.objects.filter(status=GroupRetryStatus.PROBING)
                   .exclude(mapping_id__in=busy.values("mapping_id")).values_list("mapping_id", flat=True).distinct())
    advanced = []
    for mapping in Mapping.objects.filter(pk__in=list(mapping_ids)):
        advanced += group_retries_advance(mapping=mapping)
    return advanced


def _group_retry_advance(group_retry):
    mapping = group_retry.mapping
    organization = group_retry.organization
    record_errors = RecordError.objects.for_org(organization).filter(
        mapping=mapping, direction=group_retry.direction, source_record_id=group_retry.probe_record_id,
        level=ErrorLevel.RECORD,
    )
    current = record_errors.filter(status__in=UNRESOLVED_ERROR_STATUSES).order_by("-pk").first()
    if current is None:
        if _probe_synced(group_retry) or _probe_filtered(group_retry):
            rest = RecordError.objects.for_org(organization).filter(
                Q(fingerprint=group_retry.fingerprint)
                | Q(direction=group_retry.direction, source_record_id__in=group_retry.earlier_probe_records),
                mapping=mapping, level=ErrorLevel.RECORD, status__in=CLAIMABLE_STATUSES,
            )
            summary = errors_retry(organization=organization, queryset=rest, resolution=Resolution.BULK_RETRY)
            group_retry.status, group_retry.retried = GroupRetryStatus.RETRIED, summary["queued"]
            group_retry.save(update_fields=["status", "retried", "updated_at"])
            log_event("error_group_retry_continued", fingerprint=group_retry.fingerprint, queued=summary["queued"])
            return True
        last = record_errors.order_by("-pk").first()
        why = "it was ignored" if last is not None and last.status == ErrorStatus.IGNORED else "it was closed by hand"
        group_retry_stop(group_retry, reason=f"The first record did not sync: {why}. Retry the group again.")
        return True
    if current.status in PENDING_STATUSES:
        return False
    policy = retry_policy(mapping, current.category, retryable=current.retryable)
    if policy.retry and current.attempts < policy.attempts:
        # A transient failure with nothing scheduled to retry it (skip strategy): the group retry tries again.
        if _probe(group_retry, current):
            return False
    elif policy.retry and len(group_retry.earlier_probe_records) + 1 < MAX_PROBES:
        # Out of attempts on transient errors: that says nothing about the fix, so another record goes first.
        other = RecordError.objects.for_org(organization).filter(
            mapping=mapping, fingerprint=group_retry.fingerprint, level=ErrorLevel.RECORD,
            status__in=CLAIMABLE_STATUSES,
        ).exclude(source_record_id=group_retry.probe_record_id).order_by("-pk").first()
        if other is not None and _probe(group_retry, other, again=True):
            return False
    attempts = f" after {current.attempts + 1} attempts" if current.attempts else ""
    group_retry_stop(group_retry, reason=f"The first record still fails{attempts}: {current.message}",
                     probe_error=current)
    return True


def _probe(group_retry, error, *, again=False):
    """Retry `error` as the group's probe; whether it was queued."""
    summary = errors_retry(organization=group_retry.organization, error_ids=[error.pk],
                           resolution=Resolution.MANUAL_RETRY)
    if not summary["queued"]:
        return False
    if again:
        group_retry.earlier_probe_records = [*group_retry.earlier_probe_records, group_retry.probe_record_id]
    group_retry.probe_error, group_retry.probe_record_id = error, error.source_record_id
    group_retry.save(update_fields=["probe_error", "probe_record_id", "earlier_probe_records", "updated_at"])
    return True


def _probe_synced(group_retry):
    link = RecordLink.objects.filter(mapping=group_retry.mapping).filter(**{
        "source_record_id" if group_retry.direction == "forward" else "target_record_id":
            group_retry.probe_record_id,
    }).first()
    return (link is not None and link.status == LinkStatus.SYNCED and link.last_synced_at is not None
            and link.last_synced_at >= group_retry.created_at)


def _probe_filtered(group_retry):
    """The probe's record was read again and a filter of the mapping ignored it (the fix was a filter): the rest
    follows, each synced or ignored the same way. An operator's ignore of the probe is not this: it stops."""
    return RecordError.objects.filter(
        mapping=group_retry.mapping, direction=group_retry.direction, source_record_id=group_retry.probe_record_id,
        level=ErrorLevel.IGNORED, created_at__gte=group_retry.created_at,
    ).exists()


def group_retry_stop(group_retry, *, reason, probe_error=None):
    group_retry.status, group_retry.reason = GroupRetryStatus.STOPPED, reason[:2000]
    fields = ["status", "reason", "updated_at"]
    if probe_error is not None:
        group_retry.probe_error = probe_error
        fields.append("probe_error")
    group_retry.save(update_fields=fields)
    log_event("error_group_retry_stopped", fingerprint=group_retry.fingerprint, reason=reason)
