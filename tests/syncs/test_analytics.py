"""Error analytics: every figure checked exactly against rows built by hand, for Acme and never for Globex."""

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from syncs.analytics import (
    analytics_summary,
    error_rate,
    error_trend,
    errors_by_category,
    errors_by_code,
    resolution_time,
    retry_success,
    success_rate_per_target,
    unsynced_per_target,
)
from syncs.models import (
    ErrorLevel,
    ErrorStatus,
    RecordError,
    RecordLink,
    Resolution,
    RunStatus,
    SyncRun,
    Trigger,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 22, 12, 30, tzinfo=UTC)
SINCE = NOW - timedelta(days=7)
HOUR = timedelta(hours=1)


def make_run(mapping, *, finished_at=NOW - HOUR, trigger=Trigger.SCHEDULE, is_test=False, **counts):
    return SyncRun.objects.create(
        organization=mapping.organization, mapping=mapping, trigger=trigger, is_test=is_test,
        status=RunStatus.SUCCEEDED if finished_at else RunStatus.RUNNING, finished_at=finished_at, **counts,
    )


def make_error(mapping, *, created_at=NOW - HOUR, level=ErrorLevel.RECORD, category="validation", **fields):
    # Errors hang off an unfinished run, which no figure counts.
    run = make_run(mapping, finished_at=None)
    error = RecordError.objects.create(
        organization=mapping.organization, run=run, mapping=mapping, level=level, category=category,
        message="The record failed", fingerprint="f", **fields,
    )
    # created_at is auto_now_add: only an update can put it in the past.
    RecordError.objects.filter(pk=error.pk).update(created_at=created_at)
    return error


def make_resolved(mapping, *, seconds, resolved_at=NOW - HOUR, status=ErrorStatus.RESOLVED,
                  resolution=Resolution.AUTO_RETRY, **fields):
    return make_error(
        mapping, first_seen_at=resolved_at - timedelta(seconds=seconds), resolved_at=resolved_at, status=status,
        resolution=resolution, **fields,
    )


def make_links(mapping, **statuses):
    RecordLink.objects.bulk_create(
        RecordLink(organization=mapping.organization, mapping=mapping, source_record_id=f"{status}-{n}",
                   status=status)
        for status, count in statuses.items() for n in range(count)
    )


@pytest.fixture
def mapping(make_mapping):
    return make_mapping()


@pytest.fixture
def globex_mapping(make_mapping, other_org):
    return make_mapping(organization=other_org)


# Error rate


def test_error_rate_divides_failed_records_by_records_primary_runs_processed(mapping, globex_mapping):
    make_run(mapping, trigger=Trigger.SCHEDULE, read=100, ignored=10, failed=3)
    make_run(mapping, trigger=Trigger.MANUAL, read=40, failed=2)
    make_run(mapping, trigger=Trigger.WEBHOOK, read=10, ignored=5, finished_at=SINCE)
    # Retries and replays re-process records a primary run already counted; tests are not production.
    make_run(mapping, trigger=Trigger.RETRY, read=3, failed=1)
    make_run(mapping, trigger=Trigger.REPLAY, read=2, failed=2)
    make_run(mapping, trigger=Trigger.TEST, read=5, failed=5)
    make_run(mapping, trigger=Trigger.MANUAL, is_test=True, read=5, failed=5)
    # Outside [since, until), or not finished.
    make_run(mapping, read=7, failed=7, finished_at=SINCE - timedelta(seconds=1))
    make_run(mapping, read=7, failed=7, finished_at=NOW)
    make_run(mapping, read=7, failed=7, finished_at=None)
    make_run(globex_mapping, read=1000, failed=900)

    assert error_rate(organization=mapping.organization, since=SINCE, until=NOW) == {
        "processed": 135, "failed": 5, "rate": 5 / 135,
    }


def test_error_rate_is_none_when_nothing_was_processed(mapping, globex_mapping):
    make_run(mapping, read=4, ignored=4)
    make_run(globex_mapping, read=10, failed=1)

    assert error_rate(organization=mapping.organization, since=SINCE, until=NOW) == {
        "processed": 0, "failed": 0, "rate": None,
    }


@time_machine.travel(NOW, tick=False)
def test_error_rate_defaults_to_the_last_seven_days(mapping):
    make_run(mapping, read=10, failed=1, finished_at=NOW - timedelta(days=7))
    make_run(mapping, read=10, failed=4, finished_at=NOW - timedelta(days=7, seconds=1))

    assert error_rate(organization=mapping.organization) == {"processed": 10, "failed": 1, "rate": 1 / 10}


# Errors by category and code


def test_record_errors_are_counted_per_category_and_per_code_most_frequent_first(mapping, globex_mapping):
    for _ in range(3):
        make_error(mapping, category="validation", error_code="REQUIRED")
    make_error(mapping, category="validation", error_code="INVALID_EMAIL", created_at=SINCE)
    for _ in range(2):
        make_error(mapping, category="rate_limit", error_code="429")
        make_error(mapping, category="connection", error_code="503")
    # Not record errors, outside the window, or another organization's.
    make_error(mapping, category="validation", error_code="TOO_LONG", level=ErrorLevel.WARNING)
    make_error(mapping, category="connection", error_code="503", level=ErrorLevel.BATCH)
    make_error(mapping, category="auth", error_code="401", level=ErrorLevel.SYSTEM)
    make_error(mapping, category="validation", error_code="REQUIRED", created_at=SINCE - timedelta(seconds=1))
    make_error(mapping, category="timeout", error_code="", created_at=NOW)
    make_error(globex_mapping, category="duplicate", error_code="409")

    window = {"organization": mapping.organization, "since": SINCE, "until": NOW}
    assert errors_by_category(**window) == [
        {"category": "validation", "count": 4},
        {"category": "connection", "count": 2},
        {"category": "rate_limit", "count": 2},
    ]
    assert errors_by_code(**window) == [
        {"category": "validation", "error_code": "REQUIRED", "count": 3},
        {"category": "connection", "error_code": "503", "count": 2},
        {"category": "rate_limit", "error_code": "429", "count": 2},
        {"category": "validation", "error_code": "INVALID_EMAIL", "count": 1},
    ]


def test_an_organization_without_errors_has_no_categories_or_codes(mapping, globex_mapping):
    make_error(globex_mapping)

    window = {"organization": mapping.organization, "since": SINCE, "until": NOW}
    assert errors_by_category(**window) == []
    assert errors_by_code(**window) == []


# Resolution time


def test_resolution_time_is_the_nearest_rank_median_and_p90_from_first_failure(mapping, globex_mapping):
    for seconds, status, resolution in (
        (3600, ErrorStatus.RESOLVED, Resolution.FIXED),
        (30, ErrorStatus.RESOLVED, Resolution.AUTO_RETRY),
        (86400, ErrorStatus.IGNORED, Resolution.IGNORED),
        (600, ErrorStatus.RESOLVED, Resolution.REPLAY),
        (1800, ErrorStatus.RESOLVED, Resolution.MANUAL_RETRY),
        (7200, ErrorStatus.RESOLVED, Resolution.BULK_RETRY),
        (90, ErrorStatus.RESOLVED, Resolution.AUTO_RETRY),
    ):
        make_resolved(mapping, seconds=seconds, status=status, resolution=resolution)
    # A superseded error failed again, a warning never failed, an ignored-level record was filtered out.
    for _ in range(3):
        make_resolved(mapping, seconds=1, resolution=Resolution.SUPERSEDED)
        make_resolved(mapping, seconds=1, resolution=Resolution.SUCCEEDED_WITH_WARNING)
        make_resolved(mapping, seconds=0, status=ErrorStatus.IGNORED, resolution=Resolution.IGNORED,
                      level=ErrorLevel.IGNORED)
    make_resolved(mapping, seconds=1, resolved_at=SINCE - timedelta(seconds=1))
    make_resolved(mapping, seconds=1, resolved_at=NOW)
    make_resolved(mapping, seconds=1, status=ErrorStatus.OPEN)
    make_resolved(globex_mapping, seconds=1)

    assert resolution_time(organization=mapping.organization, since=SINCE, until=NOW) == {
        "count": 7, "median_seconds": 1800, "p90_seconds": 86400,
    }


def test_the_median_and_p90_of_seventy_errors_are_the_35th_and_63rd_durations(mapping):
    for seconds in range(70, 0, -1):
        make_resolved(mapping, seconds=seconds)

    assert resolution_time(organization=mapping.organization, since=SINCE, until=NOW) == {
        "count": 70, "median_seconds": 35, "p90_seconds": 63,
    }


def test_resolution_time_of_a_single_error_is_its_own_duration(mapping):
    make_resolved(mapping, seconds=42.5, resolved_at=SINCE)

    assert resolution_time(organization=mapping.organization, since=SINCE, until=NOW) == {
        "count": 1, "median_seconds": 42.5, "p90_seconds": 42.5,
    }


def test_resolution_time_is_none_when_nothing_was_resolved(mapping, globex_mapping):
    make_error(mapping, status=ErrorStatus.OPEN)
    make_resolved(globex_mapping, seconds=60)

    assert resolution_time(organization=mapping.organization, since=SINCE, until=NOW) == {
        "count": 0, "median_seconds": None, "p90_seconds": None,
    }


# Retry success


def test_retry_success_is_the_share_of_finished_retries_that_resolved_the_error(mapping, globex_mapping):
    retried = NOW - 2 * HOUR
    for resolution in (Resolution.AUTO_RETRY, Resolution.AUTO_RETRY, Resolution.REPLAY, Resolution.MANUAL_RETRY,
                       Resolution.BULK_RETRY):
        make_error(mapping, last_retried_at=retried, status=ErrorStatus.RESOLVED, resolution=resolution)
    # Retried and failed again, retried until exhausted, waiting for the next attempt, fixed by hand later.
    make_error(mapping, last_retried_at=retried, status=ErrorStatus.RESOLVED, resolution=Resolution.SUPERSEDED)
    make_error(mapping, last_retried_at=retried, status=ErrorStatus.EXHAUSTED)
    make_error(mapping, last_retried_at=SINCE, status=ErrorStatus.RETRY_SCHEDULED)
    make_error(mapping, last_retried_at=retried, status=ErrorStatus.RESOLVED, resolution=Resolution.FIXED)
    # Still retrying, never retried, retried outside the window, not a record error, another organization's.
    make_error(mapping, last_retried_at=retried, status=ErrorStatus.RETRYING)
    make_error(mapping, status=ErrorStatus.RESOLVED, resolution=Resolution.FIXED)
    make_error(mapping, last_retried_at=SINCE - timedelta(seconds=1), status=ErrorStatus.RESOLVED,
               resolution=Resolution.AUTO_RETRY)
    make_error(mapping, last_retried_at=NOW, status=ErrorStatus.RESOLVED, resolution=Resolution.AUTO_RETRY)
    make_error(mapping, last_retried_at=retried, status=ErrorStatus.RESOLVED, resolution=Resolution.AUTO_RETRY,
               level=ErrorLevel.BATCH)
    make_error(globex_mapping, last_retried_at=retried, status=ErrorStatus.EXHAUSTED)

    assert retry_success(organization=mapping.organization, since=SINCE, until=NOW) == {
        "retried": 9, "succeeded": 5, "rate": 5 / 9,
    }


def test_retry_success_rate_is_none_without_finished_retries(mapping, globex_mapping):
    make_error(mapping, last_retried_at=NOW - HOUR, status=ErrorStatus.RETRYING)
    make_error(globex_mapping, last_retried_at=NOW - HOUR, status=ErrorStatus.RESOLVED,
               resolution=Resolution.AUTO_RETRY)

    assert retry_success(organization=mapping.organization, since=SINCE, until=NOW) == {
        "retried": 0, "succeeded": 0, "rate": None,
    }


# Success rate per target


def test_success_rate_per_target_covers_non_test_runs_of_the_last_day_per_target_connection(
    org, make_connection, make_mapping, globex_mapping
):
    pos, crm, warehouse = make_connection("POS"), make_connection("CRM"), make_connection("Warehouse")
    pos_contacts, pos_orders = make_mapping(target=pos), make_mapping(target=pos)
    crm_contacts, warehouse_stock = make_mapping(target=crm), make_mapping(target=warehouse)
    make_run(pos_contacts, created=50, updated=40, unchanged=2, skipped=9, warned=3, failed=1)
    make_run(pos_orders, trigger=Trigger.RETRY, created=1, finished_at=NOW - timedelta(hours=24))
    make_run(crm_contacts, trigger=Trigger.MANUAL, created=10, updated=5, failed=5, finished_at=NOW - 2 * HOUR)
    make_run(warehouse_stock, read=3, skipped=3)
    # A test run, a run of more than a day ago, one finished at `now`, one still going, another organization's.
    make_run(crm_contacts, is_test=True, trigger=Trigger.TEST, failed=100)
    make_run(crm_contacts, failed=100, finished_at=NOW - timedelta(hours=24, seconds=1))
    make_run(crm_contacts, failed=100, finished_at=NOW)
    make_run(crm_contacts, failed=100, finished_at=None)
    make_run(globex_mapping, created=1000, failed=1000)

    assert success_rate_per_target(organization=org, now=NOW) == {
        "targets": [
            {"connection_id": crm.pk, "connection": "CRM", "succeeded": 15, "failed": 5, "rate": 15 / 20},
            {"connection_id": pos.pk, "connection": "POS", "succeeded": 93, "failed": 1, "rate": 93 / 94},
            {"connection_id": warehouse.pk, "connection": "Warehouse", "succeeded": 0, "failed": 0, "rate": None},
        ],
        "overall": {"succeeded": 108, "failed": 6, "rate": 108 / 114},
    }


def test_success_rate_is_none_when_no_run_finished_in_the_last_day(mapping, globex_mapping):
    make_run(mapping, created=5, finished_at=NOW - timedelta(days=2))
    make_run(globex_mapping, created=5)

    assert success_rate_per_target(organization=mapping.organization, now=NOW) == {
        "targets": [], "overall": {"succeeded": 0, "failed": 0, "rate": None},
    }


@time_machine.travel(NOW, tick=False)
def test_success_rate_defaults_to_the_day_before_now(mapping):
    make_run(mapping, created=3, failed=1, finished_at=NOW - timedelta(hours=23))
    make_run(mapping, created=3, failed=1, finished_at=NOW - timedelta(hours=25))

    assert success_rate_per_target(organization=mapping.organization)["overall"] == {
        "succeeded": 3, "failed": 1, "rate": 3 / 4,
    }


# Unsynced records per target


def test_unsynced_records_per_target_are_the_failed_and_pending_links(org, make_connection, make_mapping,
                                                                     globex_mapping):
    pos, crm = make_connection("POS"), make_connection("CRM")
    make_links(make_mapping(target=pos), synced=3, failed=2, pending=1, skipped=1, ignored=1)
    make_links(make_mapping(target=pos), synced=1, pending=4)
    make_links(make_mapping(target=crm), synced=2)
    make_links(globex_mapping, failed=5, pending=5)

    assert unsynced_per_target(organization=org) == [
        {"connection_id": crm.pk, "connection": "CRM", "synced": 2, "failed": 0, "unsynced": 0},
        {"connection_id": pos.pk, "connection": "POS", "synced": 4, "failed": 2, "unsynced": 7},
    ]


def test_an_organization_without_links_has_no_unsynced_targets(org, globex_mapping):
    make_links(globex_mapping, failed=1)

    assert unsynced_per_target(organization=org) == []


# Error trend


def hourly(first_hour, count, nonzero):
    return [{"hour": first_hour + n * HOUR, "count": nonzero.get(first_hour + n * HOUR, 0)} for n in range(count)]


def test_error_trend_counts_record_errors_per_utc_hour_zero_filled(mapping, globex_mapping):
    first_hour = datetime(2026, 11, 20, 13, tzinfo=UTC)
    last_hour = datetime(2026, 11, 22, 12, tzinfo=UTC)
    for created_at in (
        first_hour, first_hour + timedelta(minutes=59, seconds=59),
        datetime(2026, 11, 21, 4, 15, tzinfo=UTC),
        datetime(2026, 11, 22, 11, 59, 59, tzinfo=UTC),
        last_hour, last_hour + timedelta(minutes=29),
        last_hour + timedelta(minutes=29, seconds=59),
    ):
        make_error(mapping, created_at=created_at)
    # Before the first bucket, after `until`, not a record error, another organization's.
    make_error(mapping, created_at=first_hour - timedelta(seconds=1))
    make_error(mapping, created_at=NOW)
    make_error(mapping, created_at=datetime(2026, 11, 21, 4, 15, tzinfo=UTC), level=ErrorLevel.WARNING)
    make_error(globex_mapping, created_at=datetime(2026, 11, 21, 4, 15, tzinfo=UTC))

    trend = error_trend(organization=mapping.organization, until=NOW, days=2)

    assert trend == hourly(first_hour, 48, {
        first_hour: 2,
        datetime(2026, 11, 21, 4, tzinfo=UTC): 1,
        datetime(2026, 11, 22, 11, tzinfo=UTC): 1,
        last_hour: 3,
    })
    assert all(bucket["hour"].utcoffset() == timedelta(0) for bucket in trend)


def test_error_trend_buckets_stay_utc_hours_whatever_the_time_zone(mapping):
    # India is UTC+5:30: its hours start half-way through UTC hours.
    india = ZoneInfo("Asia/Kolkata")
    make_error(mapping, created_at=datetime(2026, 11, 22, 11, 45, tzinfo=UTC))
    make_error(mapping, created_at=datetime(2026, 11, 22, 12, 15, tzinfo=UTC))

    with timezone.override(india):
        trend = error_trend(organization=mapping.organization, until=NOW.astimezone(india), days=1)

    assert trend == hourly(datetime(2026, 11, 21, 13, tzinfo=UTC), 24, {
        datetime(2026, 11, 22, 11, tzinfo=UTC): 1,
        datetime(2026, 11, 22, 12, tzinfo=UTC): 1,
    })


@time_machine.travel(NOW, tick=False)
def test_error_trend_of_an_organization_without_errors_is_a_week_of_zeros(mapping, globex_mapping):
    make_error(globex_mapping, created_at=NOW - HOUR)

    trend = error_trend(organization=mapping.organization)

    assert trend == hourly(datetime(2026, 11, 15, 13, tzinfo=UTC), 7 * 24, {})


# The summary


def populate(mapping, count):
    """`count` of every kind of row the summary reads, so that a per-row query would show in the count."""
    for n in range(count):
        make_run(mapping, read=10, failed=1)
        make_resolved(mapping, seconds=60 * (n + 1), last_retried_at=NOW - HOUR,
                      category=("validation", "timeout")[n % 2], error_code=f"E{n % 3}")
    make_links(mapping, synced=count, failed=count)


@time_machine.travel(NOW, tick=False)
def test_the_summary_holds_every_figure_of_the_window_as_json(mapping, globex_mapping):
    populate(mapping, 4)
    populate(globex_mapping, 2)
    target = mapping.target_connection

    summary = analytics_summary(organization=mapping.organization)

    assert summary == {
        "error_rate": {"processed": 40, "failed": 4, "rate": 4 / 40},
        "errors_by_category": [{"category": "timeout", "count": 2}, {"category": "validation", "count": 2}],
        "errors_by_code": [
            {"category": "timeout", "error_code": "E0", "count": 1},
            {"category": "timeout", "error_code": "E1", "count": 1},
            {"category": "validation", "error_code": "E0", "count": 1},
            {"category": "validation", "error_code": "E2", "count": 1},
        ],
        "resolution_time": {"count": 4, "median_seconds": 120, "p90_seconds": 240},
        "retry_success": {"retried": 4, "succeeded": 4, "rate": 1.0},
        "success_rate_per_target": {
            "targets": [{"connection_id": target.pk, "connection": target.name, "succeeded": 0, "failed": 4,
                         "rate": 0.0}],
            "overall": {"succeeded": 0, "failed": 4, "rate": 0.0},
        },
        "unsynced_per_target": [
            {"connection_id": target.pk, "connection": target.name, "synced": 4, "failed": 4, "unsynced": 4},
        ],
        "error_trend": hourly(datetime(2026, 11, 15, 13, tzinfo=UTC), 7 * 24, {NOW.replace(hour=11, minute=0): 4}),
    }
    # Datetimes are the one value plain json needs help with.
    json.dumps(summary, cls=DjangoJSONEncoder)


def test_the_summary_trend_spans_the_window_in_whole_days(mapping):
    make_error(mapping, created_at=NOW - 30 * HOUR)

    one_day = analytics_summary(organization=mapping.organization, since=NOW - timedelta(days=1), until=NOW)
    two_days = analytics_summary(organization=mapping.organization, since=NOW - 30 * HOUR, until=NOW)

    assert one_day["errors_by_category"] == []
    assert one_day["error_trend"] == hourly(datetime(2026, 11, 21, 13, tzinfo=UTC), 24, {})
    assert two_days["errors_by_category"] == [{"category": "validation", "count": 1}]
    assert two_days["error_trend"] == hourly(datetime(2026, 11, 20, 13, tzinfo=UTC), 48, {
        datetime(2026, 11, 21, 6, tzinfo=UTC): 1,
    })


@pytest.mark.parametrize("rows", [5, 50])
def test_the_summary_query_count_does_not_grow_with_the_rows(mapping, rows, django_assert_max_num_queries):
    populate(mapping, rows)

    # One query per figure, three for resolution time (the count, then one row per percentile).
    with django_assert_max_num_queries(10):
        summary = analytics_summary(organization=mapping.organization, since=SINCE, until=NOW)

    assert summary["error_rate"]["failed"] == rows
    assert summary["resolution_time"]["count"] == rows
    assert summary["unsynced_per_target"][0]["unsynced"] == rows
