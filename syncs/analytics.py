"""Error analytics of one organization over a time window: Syncs → Analytics and the dashboard.

Every figure is an aggregate query; Python only zero-fills hourly buckets and divides two sums, so the cost of a
call does not grow with the number of runs, errors or links. Windows are half-open, [since, until).
"""

import math
from datetime import UTC, timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from syncs.models import ErrorLevel, ErrorStatus, LinkStatus, RecordError, RecordLink, Resolution, SyncRun, Trigger

DEFAULT_WINDOW = timedelta(days=7)

# Retry and replay runs re-process records a primary run already counted; including them double counts.
PRIMARY_TRIGGERS = (Trigger.SCHEDULE, Trigger.MANUAL, Trigger.WEBHOOK)

RETRY_RESOLUTIONS = (Resolution.AUTO_RETRY, Resolution.REPLAY, Resolution.MANUAL_RETRY, Resolution.BULK_RETRY)

# A superseded error was not fixed (its record failed again, and the newer error carries first_seen_at
# forward), and a warning never failed: timing either would make recovery look faster than it is.
TIMED_RESOLUTIONS = (*RETRY_RESOLUTIONS, Resolution.FIXED, Resolution.IGNORED)

MEDIAN = 0.5
P90 = 0.9


def _window(since, until):
    until = until or timezone.now()
    return since or until - DEFAULT_WINDOW, until


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else None


def _record_errors(organization):
    return RecordError.objects.for_org(organization).filter(level=ErrorLevel.RECORD)


def error_rate(*, organization, since=None, until=None):
    """Failed records as a share of the records primary runs processed (read minus deliberately ignored)."""
    since, until = _window(since, until)
    totals = SyncRun.objects.for_org(organization).filter(
        is_test=False, trigger__in=PRIMARY_TRIGGERS, finished_at__gte=since, finished_at__lt=until,
    ).aggregate(processed=Sum(F("read") - F("ignored"), default=0), failed=Sum("failed", default=0))
    return {**totals, "rate": _ratio(totals["failed"], totals["processed"])}


def errors_by_category(*, organization, since=None, until=None):
    since, until = _window(since, until)
    rows = _record_errors(organization).filter(created_at__gte=since, created_at__lt=until).values(
        "category"
    ).annotate(count=Count("id")).order_by("-count", "category")
    return list(rows)


def errors_by_code(*, organization, since=None, until=None):
    since, until = _window(since, until)
    rows = _record_errors(organization).filter(created_at__gte=since, created_at__lt=until).values(
        "category", "error_code"
    ).annotate(count=Count("id")).order_by("-count", "category", "error_code")
    return list(rows)


def _nearest_rank(durations, count, percentile):
    rank = math.ceil(percentile * count)
    return durations[rank - 1].total_seconds()


def resolution_time(*, organization, since=None, until=None):
    """How long record errors resolved in the window took, from their first failure to their resolution."""
    since, until = _window(since, until)
    resolved = _record_errors(organization).filter(
        resolved_at__gte=since, resolved_at__lt=until,
        status__in=(ErrorStatus.RESOLVED, ErrorStatus.IGNORED), resolution__in=TIMED_RESOLUTIONS,
    )
    count = resolved.count()
    if not count:
        return {"count": 0, "median_seconds": None, "p90_seconds": None}
    # Indexing the sliced queryset runs ORDER BY duration LIMIT 1 OFFSET rank - 1: one row per percentile.
    durations = resolved.annotate(
        duration=ExpressionWrapper(F("resolved_at") - F("first_seen_at"), output_field=DurationField())
    ).order_by("duration", "pk").values_list("duration", flat=True)
    return {
        "count": count,
        "median_seconds": _nearest_rank(durations, count, MEDIAN),
        "p90_seconds": _nearest_rank(durations, count, P90),
    }


def retry_success(*, organization, since=None, until=None):
    """Of the record errors whose retry finished in the window, how many the retry resolved."""
    since, until = _window(since, until)
    totals = _record_errors(organization).filter(
        last_retried_at__gte=since, last_retried_at__lt=until,
    ).exclude(status=ErrorStatus.RETRYING).aggregate(
        retried=Count("id"), succeeded=Count("id", filter=Q(resolution__in=RETRY_RESOLUTIONS)),
    )
    return {**totals, "rate": _ratio(totals["succeeded"], totals["retried"])}


def success_rate_per_target(*, organization, now=None):
    """The dashboard's "success rate (last 24 hours)" per target connection, and over all of them."""
    now = now or timezone.now()
    rows = SyncRun.objects.for_org(organization).filter(
        is_test=False, finished_at__gte=now - timedelta(hours=24), finished_at__lt=now,
    ).values(
        connection_id=F("mapping__target_connection"), connection=F("mapping__target_connection__name"),
    ).annotate(
        succeeded=Sum(F("created") + F("updated") + F("unchanged"), default=0), failed=Sum("failed", default=0),
    ).order_by("connection", "connection_id")
    targets = [{**row, "rate": _ratio(row["succeeded"], row["succeeded"] + row["failed"])} for row in rows]
    # One row per target connection, already aggregated: adding them up beats a second scan of the runs.
    succeeded = sum(target["succeeded"] for target in targets)
    failed = sum(target["failed"] for target in targets)
    overall = {"succeeded": succeeded, "failed": failed, "rate": _ratio(succeeded, succeeded + failed)}
    return {"targets": targets, "overall": overall}


def unsynced_per_target(*, organization):
    """Records per target connection as they stand now: synced, failed, and unsynced (failed or pending)."""
    rows = RecordLink.objects.for_org(organization).values(
        connection_id=F("mapping__target_connection"), connection=F("mapping__target_connection__name"),
    ).annotate(
        synced=Count("id", filter=Q(status=LinkStatus.SYNCED)),
        failed=Count("id", filter=Q(status=LinkStatus.FAILED)),
        unsynced=Count("id", filter=Q(status__in=(LinkStatus.FAILED, LinkStatus.PENDING))),
    ).order_by("connection", "connection_id")
    return list(rows)


def error_trend(*, organization, until=None, days=7):
    """Record errors per UTC hour, oldest first: days * 24 buckets, the last one the hour containing `until`."""
    until = until or timezone.now()
    last_hour = until.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = [last_hour - timedelta(hours=offset) for offset in range(days * 24 - 1, -1, -1)]
    if not hours:
        return []
    # UTC explicitly: the active time zone may be a user's, and the buckets must not move with it.
    counts = dict(
        _record_errors(organization).filter(created_at__gte=hours[0], created_at__lt=until)
        .annotate(hour=TruncHour("created_at", tzinfo=UTC)).values("hour")
        .annotate(count=Count("id")).order_by("hour").values_list("hour", "count")
    )
    return [{"hour": hour, "count": counts.get(hour, 0)} for hour in hours]


def analytics_summary(*, organization, since=None, until=None):
    """Every figure of Syncs → Analytics for one window; the trend spans the window in whole days."""
    since, until = _window(since, until)
    window = {"organization": organization, "since": since, "until": until}
    return {
        "error_rate": error_rate(**window),
        "errors_by_category": errors_by_category(**window),
        "errors_by_code": errors_by_code(**window),
        "resolution_time": resolution_time(**window),
        "retry_success": retry_success(**window),
        "success_rate_per_target": success_rate_per_target(organization=organization, now=until),
        "unsynced_per_target": unsynced_per_target(organization=organization),
        "error_trend": error_trend(
            organization=organization, until=until, days=max(1, math.ceil((until - since) / timedelta(days=1))),
        ),
    }
