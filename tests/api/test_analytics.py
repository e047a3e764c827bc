"""/api/v1/analytics/: every figure of Syncs → Analytics over a window, for the caller's organization only."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from rest_framework.test import APIClient

from accounts.models import TokenRole
from integrations.connectors.sandbox import seed_records
from syncs.analytics import analytics_summary
from tests.api.test_foundation import assert_problem
from tests.syncs.helpers import person, run_mapping

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 22, 12, 30, tzinfo=UTC)


@pytest.fixture
def a_day_of_syncs(make_mapping, make_connection, failing_target):
    """Two hours ago: 3 records synced into a CRM and 2 failing into a down one (validation and 503)."""
    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        healthy = make_mapping(target=make_connection("CRM"))
        seed_records(healthy.source_connection, "contacts", [person(1), person(2), person(3)])
        run_mapping(healthy)
        down = make_mapping(target=failing_target, match_keys=[])
        seed_records(down.source_connection, "contacts", [person(4), person(5, last_name="")])
        run_mapping(down)
    return healthy, down


@time_machine.travel(NOW, tick=False)
def test_the_analytics_of_the_last_24_hours_give_every_figure(api, org, a_day_of_syncs):
    healthy, down = a_day_of_syncs

    response = api.get("/api/v1/analytics/?window=24h")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["since"] == "2026-11-21T12:30:00Z" and body["until"] == "2026-11-22T12:30:00Z"
    assert body["error_rate"] == {"processed": 5, "failed": 2, "rate": 0.4}
    assert body["errors_by_category"] == [{"category": "connection", "count": 1},
                                          {"category": "validation", "count": 1}]
    assert {(row["category"], row["code"], row["count"]) for row in body["errors_by_code"]} == {
        ("connection", "http_503", 1), ("validation", "required_missing", 1)}
    assert body["resolution_time"] == {"count": 0, "median_seconds": None, "p90_seconds": None}
    assert body["retry_success"] == {"retried": 0, "succeeded": 0, "rate": None}
    per_target = body["success_rate_per_target"]
    assert per_target["targets"] == [
        {"connection": {"id": str(healthy.target_connection.code), "name": "CRM"}, "succeeded": 3, "failed": 0,
         "rate": 1.0},
        {"connection": {"id": str(down.target_connection.code), "name": "Down CRM"}, "succeeded": 0, "failed": 2,
         "rate": 0.0},
    ]
    assert per_target["overall"] == {"succeeded": 3, "failed": 2, "rate": 0.6}
    assert body["unsynced_per_target"] == [
        {"connection": {"id": str(healthy.target_connection.code), "name": "CRM"}, "synced": 3, "failed": 0,
         "unsynced": 0},
        {"connection": {"id": str(down.target_connection.code), "name": "Down CRM"}, "synced": 0, "failed": 2,
         "unsynced": 2},
    ]
    assert len(body["error_trend"]) == 24
    assert body["error_trend"][-3] == {"hour": "2026-11-22T10:00:00Z", "count": 2}
    assert sum(bucket["count"] for bucket in body["error_trend"]) == 2


@time_machine.travel(NOW, tick=False)
def test_the_window_defaults_to_seven_days_and_follows_since_and_until(api, org, a_day_of_syncs):
    default = api.get("/api/v1/analytics/").json()
    before = api.get("/api/v1/analytics/?since=2026-11-01T00:00:00Z&until=2026-11-22T00:00:00Z").json()

    assert default["since"] == "2026-11-15T12:30:00Z" and len(default["error_trend"]) == 7 * 24
    assert default["error_rate"]["failed"] == 2
    assert before["error_rate"] == {"processed": 0, "failed": 0, "rate": None}
    assert before["errors_by_category"] == [] and len(before["error_trend"]) == 21 * 24
    summary = analytics_summary(organization=org, since=datetime(2026, 11, 1, tzinfo=UTC),
                                until=datetime(2026, 11, 22, tzinfo=UTC))
    assert before["errors_by_code"] == summary["errors_by_code"] == []


@time_machine.travel(NOW, tick=False)
def test_another_organization_sees_none_of_these_figures(other_api, a_day_of_syncs):
    body = other_api.get("/api/v1/analytics/?window=30d").json()

    assert body["error_rate"] == {"processed": 0, "failed": 0, "rate": None}
    assert body["errors_by_category"] == [] and body["unsynced_per_target"] == []
    assert body["success_rate_per_target"]["targets"] == []
    assert sum(bucket["count"] for bucket in body["error_trend"]) == 0


@pytest.mark.parametrize(("query", "field"), [
    ("window=1y", "window"),
    ("window=24h&since=2026-11-01T00:00:00Z", "window"),
    ("since=yesterday", "since"),
    ("since=2026-11-22T00:00:00Z&until=2026-11-21T00:00:00Z", "since"),
    ("since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
    ("until=0001-01-01T00:00:00Z", "until"),
])
def test_a_bad_window_answers_400_naming_the_parameter(api, query, field):
    body = assert_problem(api.get(f"/api/v1/analytics/?{query}"), 400, "validation_error")

    assert field in body["errors"]


def test_a_viewer_may_read_the_analytics(make_token):
    viewer = APIClient()
    viewer.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(role=TokenRole.VIEWER)}")

    assert viewer.get("/api/v1/analytics/?window=7d").status_code == 200
