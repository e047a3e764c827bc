"""Error groups: the unresolved errors of a mapping that share a fingerprint (category, code and field), so
one fix applies to all of them; a group retry probes one record first and retries the rest once it succeeds."""

from django.core.exceptions import ValidationError
from django.db.models import Count, Max, Min

from syncs.models import UNRESOLVED_ERROR_STATUSES, ErrorLevel, RecordError, Resolution, RunStatus
from syncs.retries import CLAIMABLE_STATUSES, errors_retry


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


def group_retry_continue(run):
    fingerprint = run.options.get("group_fingerprint")
    if not fingerprint or run.status != RunStatus.SUCCEEDED:
        return None
    rest = RecordError.objects.for_org(run.organization).filter(
        fingerprint=fingerprint, level=ErrorLevel.RECORD, status__in=CLAIMABLE_STATUSES
    )
    return errors_retry(organization=run.organization, queryset=rest, resolution=Resolution.BULK_RETRY)

