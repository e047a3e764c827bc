"""The hourly error counts the analytics read: always equal to a recount of the errors, and figures that are the
same whether an hour was counted or is counted live."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db.models import Count
from django.db.models.functions import TruncHour

from integrations.connectors.sandbox import seed_records
from syncs.analytics import analytics_summary, error_trend, errors_by_category, errors_by_code
from syncs.models import ErrorCountHour, ErrorStatus, RecordError, RollupWatermark
from syncs.retries import errors_retry
from syncs.review import errors_close
from syncs.rollups import error_rollups_recount, error_rollups_refresh
from tests.syncs.helpers import person, record_errors, run_mapping

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 22, 12, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


def recount():
    """What the rollup must hold: every record error of the hours before its watermark, counted afresh."""
    until = RollupWatermark.objects.get().counted_until
    rows = (RecordError.objects.filter(level="record", created_at__lt=until)
            .annotate(hour=TruncHour("created_at", tzinfo=UTC))
            .values("organization_id", "hour", "category", "error_code").annotate(count=Count("pk")))
    return {(row["organization_id"], row["hour"], row["category"], row["error_code"]): row["count"] for row in rows}


def rolled_up():
    return {(row.organization_id, row.hour, row.category, row.error_code): row.count
            for row in ErrorCountHour.objects.all()}


@pytest.fixture
def failures(make_mapping, failing_target, other_org, make_connection):
    """fail(at, count[, organization]): a new mapping's run at `at` whose writes of `count` records failed (503);
    plus a record failing validation."""

    def fail(at, count, organization=None):
        with time_machine.travel(at, tick=False):
            target = failing_target if organization is None else make_connection(
                "Their CRM", organization=organization, faults={"operations": ["write"], "failure_rate": 1.0})
            mapping = make_mapping(target=target, match_keys=[], organization=organization)
            seed_records(mapping.source_connection, "contacts",
                         [*[person(n) for n in range(count)], person(99, last_name="")])
            return run_mapping(mapping)

    return fail


def figures(organization, *, since=NOW - timedelta(days=1), until=NOW):
    window = {"organization": organization, "since": since, "until": until}
    return {"categories": errors_by_category(**window), "codes": errors_by_code(**window),
            "trend": error_trend(organization=organization, until=until, days=1),
            "summary": {key: value for key, value in analytics_summary(**window).items()
                        if key in ("errors_by_category", "errors_by_code", "error_trend")}}


def test_the_rollup_equals_a_recount_after_creating_and_resolving_errors_through_the_services(
    failures, other_org, execute_queued
):
    first = failures(NOW - 5 * HOUR, 3)
    failures(NOW - 2 * HOUR - timedelta(minutes=20), 2)
    failures(NOW - 4 * HOUR, 1, organization=other_org)
    with time_machine.travel(NOW, tick=False):
        error_rollups_refresh()
    assert RollupWatermark.objects.get().counted_until == NOW.replace(minute=0)  # ended ten minutes ago and more
    assert rolled_up() == recount() and sum(rolled_up().values()) == 3 + 1 + 2 + 1 + 1 + 1

    with time_machine.travel(NOW + HOUR, tick=False):
        errors_close(organization=first.organization, queryset=record_errors(run=first, category="validation"),
                     status=ErrorStatus.IGNORED, note="Test contact")
        with execute_queued():  # the replay fails again: new errors, the old ones superseded
            errors_retry(organization=first.organization, queryset=record_errors(run=first))
    with time_machine.travel(NOW + 3 * HOUR, tick=False):
        error_rollups_refresh()

    assert record_errors(created_at__gte=NOW + HOUR).exists()
    assert rolled_up() == recount()


def test_the_figures_are_the_same_whether_hours_are_counted_or_counted_live(failures, org, other_org):
    failures(NOW - 20 * HOUR, 2)
    failures(NOW - 3 * HOUR - timedelta(minutes=45), 3)
    failures(NOW - 3 * HOUR, 4, organization=other_org)
    live = figures(org)

    with time_machine.travel(NOW - 2 * HOUR, tick=False):
        error_rollups_refresh()
    counted = figures(org)
    failures(NOW - timedelta(minutes=30), 1)  # after the watermark: counted live on top

    assert counted == live
    assert live["codes"] == [{"category": "connection", "error_code": "http_503", "count": 5},
                             {"category": "validation", "error_code": "required_missing", "count": 2}]
    after = figures(org)
    assert after["codes"][0] == {"category": "connection", "error_code": "http_503", "count": 6}
    assert after["summary"]["error_trend"] == after["trend"]


def test_a_refresh_counts_the_last_day_again_and_older_changes_are_recounted_on_request(failures, org):
    recent, old = failures(NOW - 3 * HOUR, 2), failures(NOW - 3 * timedelta(days=1), 2)
    with time_machine.travel(NOW, tick=False):
        error_rollups_refresh()

    # A re-run batch deletes its errors: within the day before the watermark, the next refresh catches up.
    record_errors(run=recent).first().delete()
    with time_machine.travel(NOW + timedelta(minutes=10), tick=False):
        error_rollups_refresh()
    assert rolled_up() == recount()

    # Older than that, whoever changes errors recounts their hours.
    gone = record_errors(run=old).first()
    gone.delete()
    assert rolled_up() != recount()
    error_rollups_recount(since=gone.created_at, until=gone.created_at)
    assert rolled_up() == recount()
