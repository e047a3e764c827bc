"""Error analytics of one organization over a time window: Syncs → Analytics and the dashboard.

Every figure is an aggregate query; Python only adds up hourly counts, zero-fills hourly buckets, folds mappings
into their target connections and divides two sums. Errors by category and code and the trend come from the hourly
rollup (syncs.rollups), counted live only where it has not counted yet; the other error figures read one index
each and nothing else (syncs.models.RecordError: error_org_resolved_idx, error_org_retried_idx), so they count
only what their index holds for the window: count columns the index has, never `id`, which would send each row to
the table. Windows are half-open, [since, until).
"""

import math
from datetime import UTC, timedelta

from django.contrib.postgres.fields import ArrayField
from django.db import connections
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.utils import timezone

from mappings.models import Mapping
from syncs.models import (
    RETRY_RESOLUTIONS,
    TIMED_RESOLUTIONS,
    ErrorLevel,
    ErrorStatus,
    LinkStatus,
    RecordError,
    RecordLink,
    SyncRun,
    Trigger,
)
from syncs.rollups import error_counts, error_counts_by

DEFAULT_WINDOW = timedelta(days=7)

# Retry and replay runs re-process records a primary run already counted; including them double counts.
PRIMARY_TRIGGERS = (Trigger.SCHEDULE, Trigger.MANUAL, Trigger.WEBHOOK)

UNSYNCED_LINK_STATUSES = (LinkStatus.FAILED, LinkStatus.PENDING)

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


def _by_category(rows):
    counts = {}
    for row in rows:
        counts[row["category"]] = counts.get(row["category"], 0) + row["count"]
    return [{"category": category, "count": count}
            for category, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def _by_code(rows):
    counts = {}
    for row in rows:
        key = (row["category"], row["error_code"])
        counts[key] = counts.get(key, 0) + row["count"]
    return [{"category": category, "error_code": code, "count": count}
            for (category, code), count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def errors_by_category(*, organization, since=None, until=None):
    since, until = _window(since, until)
    return _by_category(error_counts(organization=organization, since=since, until=until, by=("category",)))


def errors_by_code(*, organization, since=None, until=None):
    since, until = _window(since, until)
    return _by_code(error_counts(organization=organization, since=since, until=until,
                                 by=("category", "error_code")))


class DurationPercentiles(Aggregate):
    """PostgreSQL's discrete percentiles of a duration, all from one sort: for each fraction, the first value
    whose rank reaches ceil(fraction × count), which is the nearest rank."""

    function = "PERCENTILE_DISC"
    template = "%(function)s(ARRAY[%(fractions)s]) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, *, fractions, **extra):
        super().__init__(expression, fractions=", ".join(repr(float(fraction)) for fraction in fractions),
                         output_field=ArrayField(DurationField()), **extra)


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
    duration = ExpressionWrapper(F("resolved_at") - F("first_seen_at"), output_field=DurationField())
    if connections[resolved.db].vendor == "postgresql":
        # One pass over the window's index entries: the count and both percentiles from one sort.
        row = resolved.aggregate(count=Count("resolved_at"),
                                 percentiles=DurationPercentiles(duration, fractions=(MEDIAN, P90)))
        if not row["count"]:
            return {"count": 0, "median_seconds": None, "p90_seconds": None}
        median, p90 = row["percentiles"]
        return {"count": row["count"], "median_seconds": median.total_seconds(), "p90_seconds": p90.total_seconds()}
    count = resolved.count()
    if not count:
        return {"count": 0, "median_seconds": None, "p90_seconds": None}
    # Indexing the sliced queryset runs ORDER BY duration LIMIT 1 OFFSET rank - 1: one row per percentile.
    durations = resolved.annotate(duration=duration).order_by("duration", "pk").values_list("duration", flat=True)
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
        retried=Count("status"), succeeded=Count("status", filter=Q(resolution__in=RETRY_RESOLUTIONS)),
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
    # Links per status and mapping, grouped in the order of their index (link_org_status_mapping_idx) so the
    # groups stream out of it; mappings are folded into their target connections here, as a join per link would
    # read every link's row.
    counts = (RecordLink.objects.for_org(organization).values("status", "mapping_id")
              .annotate(count=Count("status")).order_by())
    targets = {pk: (connection_id, name) for pk, connection_id, name in Mapping.objects.for_org(organization)
               .values_list("pk", "target_connection_id", "target_connection__name")}
    rows = {}
    for count in counts:
        connection_id, name = targets[count["mapping_id"]]
        row = rows.setdefault(connection_id, {"connection_id": connection_id, "connection": name, "synced": 0,
                                              "failed": 0, "unsynced": 0})
        if count["status"] == LinkStatus.SYNCED:
            row["synced"] += count["count"]
        if count["status"] == LinkStatus.FAILED:
            row["failed"] += count["count"]
        if count["status"] in UNSYNCED_LINK_STATUSES:
            row["unsynced"] += count["count"]
    return sorted(rows.values(), key=lambda row: (row["connection"], row["connection_id"]))


def _trend_hours(until, days):
    last_hour = until.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [last_hour - timedelta(hours=offset) for offset in range(days * 24 - 1, -1, -1)]


def _trend(rows, hours):
    counts = dict.fromkeys(hours, 0)
    for row in rows:
        # An error of an hour before the trend's first (the window's partial first hour) is not in the trend.
        if row["hour"] in counts:
            counts[row["hour"]] += row["count"]
    return [{"hour": hour, "count": count} for hour, count in counts.items()]


def error_trend(*, organization, until=None, days=7):
    """Record errors per UTC hour, oldest first: days * 24 buckets, the last one the hour containing `until`."""
    until = until or timezone.now()
    hours = _trend_hours(until, days)
    if not hours:
        return []
    return _trend(error_counts(organization=organization, since=hours[0], until=until, by=("hour",)), hours)


def analytics_summary(*, organization, since=None, until=None):
    """Every figure of Syncs → Analytics for one window; the trend spans the window in whole days."""
    since, until = _window(since, until)
    window = {"organization": organization, "since": since, "until": until}
    hours = _trend_hours(until, max(1, math.ceil((until - since) / timedelta(days=1))))
    if hours[0] >= since:
        # One count of the window per code (which serves the categories too) and per hour (the trend).
        counts, hourly = error_counts_by(**window, groupings=[("category", "error_code"), ("hour",)])
    else:  # a window not in whole days: the trend starts before it
        counts = error_counts(**window, by=("category", "error_code"))
        hourly = error_counts(organization=organization, since=hours[0], until=until, by=("hour",))
    return {
        "error_rate": error_rate(**window),
        "errors_by_category": _by_category(counts),
        "errors_by_code": _by_code(counts),
        "resolution_time": resolution_time(**window),
        "retry_success": retry_success(**window),
        "success_rate_per_target": success_rate_per_target(organization=organization, now=until),
        "unsynced_per_target": unsynced_per_target(organization=organization),
        "error_trend": _trend(hourly, hours),
    }
