"""Hourly counts of record errors (ErrorCountHour), so the analytics count a month of errors from a few thousand
rows instead of a hundred thousand index entries.

The counts are recounts, never increments: `error_rollups_refresh` counts, from the errors themselves, every UTC
hour that ended at least SETTLE ago and moves the watermark (RollupWatermark) past them. Each refresh also counts
again the REVISIT hours before the watermark, which catches up with an error committed late by a slow transaction
or deleted by a re-run batch. The figures (`error_counts`) take the counted hours from here and count the rest of
their window live, from the index the errors list and analytics share: they are exact whatever has been counted,
and fast once it has.

Nothing has to call this module where errors are written: the periodic task "resync: error rollups" refreshes it
every few minutes. Whoever changes errors older than REVISIT (creates them with a created_at in the past, deletes
or re-classifies them) calls `error_rollups_recount` for their hours.
"""

from datetime import UTC, timedelta

from django.db import connections, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from accounts.models import Organization
from syncs.models import ErrorCountHour, ErrorLevel, RecordError, RollupWatermark

WATERMARK = "error_counts"
# An hour is counted once it ended this long ago: longer than any transaction that writes errors stays open.
SETTLE = timedelta(minutes=10)
# Counted again on every refresh, after a late commit or a deleted batch.
REVISIT = timedelta(hours=24)
HOUR = timedelta(hours=1)


def _hour_floor(moment):
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _hour_ceil(moment):
    floor = _hour_floor(moment)
    return floor if floor == moment else floor + HOUR


def _record_errors():
    return RecordError.objects.filter(level=ErrorLevel.RECORD)


def _counts(errors, by):
    """Counts of these errors per `by`, where "hour" is the UTC hour (explicitly UTC, whatever the active time
    zone) of their creation."""
    if "hour" in by:
        errors = errors.annotate(hour=TruncHour("created_at", tzinfo=UTC))
    return errors.values(*by).annotate(count=Count("created_at")).order_by()


def error_rollups_refresh(*, now=None):
    """Count every hour that ended at least SETTLE ago and is not counted yet, and the REVISIT hours before.

    The first refresh counts every hour there is (the data migration's backfill). Returns the watermark.
    """
    now = now or timezone.now()
    until = _hour_floor(now - SETTLE)
    with transaction.atomic():
        # One refresh at a time: a second waits here, then finds the hours counted.
        mark = RollupWatermark.objects.select_for_update().filter(name=WATERMARK).first()
        if mark is None:
            first = _record_errors().order_by("created_at").values_list("created_at", flat=True).first()
            since = _hour_floor(first) if first is not None else until
            mark = RollupWatermark(name=WATERMARK)
        else:
            since = min(mark.counted_until - REVISIT, until)
        _recount(since, until)
        mark.counted_until = until
        mark.save()
    return until


def error_rollups_recount(*, since, until):
    """Count again the hours from the one holding `since` to the one holding `until` (up to the watermark): for
    whoever changed errors older than REVISIT."""
    with transaction.atomic():
        mark = RollupWatermark.objects.select_for_update().filter(name=WATERMARK).first()
        if mark is None:
            return
        _recount(_hour_floor(since), min(_hour_ceil(until), mark.counted_until))


def _recount(since, until):
    """Replace the counts of the hours in [since, until) with a recount, in two statements."""
    if since >= until:
        return
    ErrorCountHour.objects.filter(hour__gte=since, hour__lt=until).delete()
    # By organization, so each one's window is a range of the index the analytics read (error_org_window_idx).
    organizations = list(Organization.objects.values_list("pk", flat=True))
    counts = _counts(_record_errors().filter(organization_id__in=organizations, created_at__gte=since,
                                             created_at__lt=until),
                     ("organization_id", "hour", "category", "error_code"))
    select_sql, params = counts.query.sql_with_params()
    # INSERT … SELECT: the counts never travel through Python. The SELECT lists its columns as values() named
    # them (Query.selected keeps that order).
    names = list(counts.query.selected)
    quote = connections[counts.db].ops.quote_name
    columns = ", ".join(quote(ErrorCountHour._meta.get_field(name.removesuffix("_id")).column) for name in names)
    with connections[counts.db].cursor() as cursor:
        cursor.execute(f"INSERT INTO {quote(ErrorCountHour._meta.db_table)} ({columns}) {select_sql}", params)


def error_counts(*, organization, since, until, by=("hour", "category", "error_code")):
    """Record errors created in [since, until), counted per `by` (of hour, category and error_code): rows of
    {*by, count}. See error_counts_by."""
    return error_counts_by(organization=organization, since=since, until=until, groupings=[by])[0]


def error_counts_by(*, organization, since, until, groupings):
    """Record errors created in [since, until), counted per each grouping of `groupings` (tuples of hour, category
    and error_code): one list of rows {*grouping, count} per grouping.

    The hours the rollup counted are summed in the database; the partial hour at the start and everything after
    the watermark are counted live, once for every grouping. An error of the window's first, partial hour has
    that hour, although the hour starts before `since`.
    """
    mark = RollupWatermark.objects.filter(name=WATERMARK).values_list("counted_until", flat=True).first()
    first = _hour_ceil(since)
    last = min(_hour_floor(until), mark) if mark is not None else first
    counted = last > first
    window = (Q(created_at__gte=since, created_at__lt=first) | Q(created_at__gte=last, created_at__lt=until)
              if counted else Q(created_at__gte=since, created_at__lt=until))
    finest = tuple(dict.fromkeys(name for by in groupings for name in by))
    live = list(_counts(_record_errors().filter(window, organization=organization), finest))
    results = []
    for by in groupings:
        totals = {}
        if counted:
            for row in (ErrorCountHour.objects.for_org(organization).filter(hour__gte=first, hour__lt=last)
                        .values(*by).annotate(total=Sum("count")).order_by()):
                key = tuple(row[name] for name in by)
                totals[key] = totals.get(key, 0) + row["total"]
        for row in live:
            key = tuple(row[name] for name in by)
            totals[key] = totals.get(key, 0) + row["count"]
        results.append([{**dict(zip(by, key, strict=True)), "count": count} for key, count in totals.items()])
    return results
