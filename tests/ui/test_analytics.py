"""The analytics page with Django's test client: the figures of syncs.analytics over the chosen window, the data
handed to the charts and their text alternatives, the window parameter (an unknown one is the default, never a
500), empty states, tenancy and a query count that does not grow with the data."""

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, Role
from syncs.models import ErrorStatus, RecordError, Resolution

URL = reverse("analytics")


@pytest.fixture
def viewer(org, django_user_model):
    user = django_user_model.objects.create_user("victor", "victor@example.org", "victor-password")
    Membership.objects.create(user=user, organization=org, role=Role.VIEWER)
    return user


def page_of(client, user, **params):
    client.force_login(user)
    response = client.get(URL, params)
    assert response.status_code == 200, response.status_code
    return response, response.content.decode()


def chart_data(response):
    page = response.content.decode()
    start = page.index('<script id="analytics-data" type="application/json">') + len(
        '<script id="analytics-data" type="application/json">')
    return json.loads(page[start:page.index("</script>", start)])


def resolve(errors, *, took, resolution=Resolution.AUTO_RETRY, now=None):
    """Mark these errors resolved `took` after they first failed, by a retry an hour ago."""
    now = now or timezone.now()
    for error in errors:
        RecordError.objects.filter(pk=error.pk).update(
            status=ErrorStatus.RESOLVED, resolution=resolution, resolved_at=now - timedelta(hours=1),
            first_seen_at=now - timedelta(hours=1) - took, last_retried_at=now - timedelta(hours=1))


def test_anonymous_visitors_are_sent_to_the_login(client, org):
    response = client.get(URL)
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_the_page_shows_the_windows_figures_and_hands_them_to_the_charts(client, alice, org, history_of):
    history_of(org, "Acme")  # 2 mappings × 3 runs of 40 records: 0, 12 and 5 failed; 24 record errors

    response, page = page_of(client, alice)

    assert response.context["window"] == "7d"
    # 34 failed of 240 read: 14.17%, rounded down.
    assert "14.1%" in page and "34 of 240 records processed failed" in page
    assert [(row["category"], row["count"]) for row in response.context["categories"]] == [
        ("validation", 12), ("duplicate", 6), ("rate_limit", 6)]
    data = chart_data(response)
    assert len(data["trend"]) == 7 * 24 and sum(bucket["count"] for bucket in data["trend"]) == 24
    assert data["categories"] == [{"label": "Validation", "count": 12}, {"label": "Duplicate", "count": 6},
                                  {"label": "Rate limit", "count": 6}]
    # Both mappings write to Acme CRM: 2 × (40 + 30 + 35) records synced, 34 failed.
    assert data["targets"] == [{"label": "Acme CRM", "rate": 210 / 244, "succeeded": 210, "failed": 34}]
    for canvas in ("analytics-trend-chart", "analytics-categories-chart", "analytics-targets-chart"):
        assert f'id="{canvas}"' in page
    # Each chart can be read without its canvas: a summary in its label, the figures in a table.
    assert "Validation 12, Duplicate 6, Rate limit 6" in page
    assert "Acme CRM 86.0%" in page
    assert "invalid_email" in page and "already_exists" in page
    assert f'{reverse("errors")}?filtered=1&amp;category=validation' in page
    assert "<script>" not in page  # scripts are files (a strict Content-Security-Policy is coming)


def test_resolution_time_and_retry_success_come_from_resolved_and_retried_errors(client, alice, org, history_of):
    history_of(org, "Acme")
    errors = list(RecordError.objects.for_org(org).order_by("pk"))
    resolve(errors[:3], took=timedelta(minutes=10))
    resolve(errors[3:4], took=timedelta(hours=5))
    # Retried an hour ago and failed again: counted as retried, not as a success.
    RecordError.objects.filter(pk=errors[4].pk).update(last_retried_at=timezone.now() - timedelta(hours=1))

    response, page = page_of(client, alice)

    assert response.context["resolution_time"]["count"] == 4
    assert response.context["resolution_time"]["median"] == "10 min"
    assert response.context["resolution_time"]["p90"] == "5.0 h"
    assert "4 errors resolved" in page
    assert response.context["retry_success"] == {"retried": 5, "succeeded": 4, "rate": 0.8}
    assert "80.0%" in page and "4 of 5 retried errors resolved by the retry" in page


@pytest.mark.parametrize(("window", "buckets"), [("24h", 24), ("7d", 7 * 24), ("30d", 30 * 24)])
def test_the_window_parameter_picks_the_window(client, alice, org, history_of, window, buckets):
    history_of(org, "Acme")

    response, page = page_of(client, alice, window=window)

    assert response.context["window"] == window
    assert len(chart_data(response)["trend"]) == buckets
    assert f'href="?window={window}" aria-current="page"' in page
    # The trend's table: an hour per row for a day, a UTC day per row for longer windows (the first and last
    # days partial unless the window ends at midnight).
    table = response.context["trend_table"]
    assert len(table) == 24 if window == "24h" else len(table) in (buckets // 24, buckets // 24 + 1)
    assert sum(row["count"] for row in table) == 24


@pytest.mark.parametrize("window", ["bogus", "", "365d", "24H", "7d' OR 1=1"])
def test_an_unknown_window_is_the_default_not_an_error(client, alice, org, history_of, window):
    history_of(org, "Acme")

    response, page = page_of(client, alice, window=window)

    assert response.context["window"] == "7d"
    assert len(chart_data(response)["trend"]) == 7 * 24
    assert 'href="?window=7d" aria-current="page"' in page


def test_a_window_without_activity_says_so_and_offers_a_longer_one(client, alice, org, history_of):
    history_of(org, "Acme", now=timezone.now() - timedelta(days=3))

    response, page = page_of(client, alice, window="24h")

    assert not response.context["has_data"]
    assert "Nothing happened in the last 24 hours" in page
    assert "<canvas" not in page

    response, page = page_of(client, alice, window="7d")
    assert response.context["has_data"] and "<canvas" in page
    # The success rate per target covers the last 24 hours whatever the window: none there.
    assert "No run finished in the last 24 hours" in page
    assert 'id="analytics-targets-chart"' not in page


def test_an_organization_that_never_synced_is_told_what_to_do_next(client, alice, org):
    response, page = page_of(client, alice)

    assert not response.context["has_data"]
    assert "No sync has run yet" in page
    assert reverse("mappings:list") in page and "manage.py sync --org acme" in page
    assert "<canvas" not in page
    data = chart_data(response)
    assert (data["categories"], data["targets"], sum(bucket["count"] for bucket in data["trend"])) == ([], [], 0)


def test_another_organizations_history_is_not_counted(client, alice, org, other_org, history_of):
    history_of(other_org, "Globex")

    response, page = page_of(client, alice)

    assert not response.context["has_data"] and "Globex" not in page
    assert "No sync has run yet" in page


def test_viewers_see_the_page_and_the_nav_links_to_it(client, viewer, org, history_of):
    history_of(org, "Acme")

    response, page = page_of(client, viewer)

    assert f'<a href="{URL}" aria-current="page">Analytics</a>' in page
    assert response.context["has_data"]


def queries_for(client, user, **params):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(URL, params)
    assert response.status_code == 200
    return len(captured.captured_queries)


@pytest.mark.parametrize("window", ["24h", "30d"])
def test_the_query_count_does_not_grow_with_the_data(client, alice, org, history_of, make_mapping, window,
                                                     django_assert_max_num_queries):
    history_of(org, "Acme", failed_records=1)
    # On SQLite a percentile is one query when there is anything to rank: give both measures something.
    resolve(RecordError.objects.for_org(org).order_by("pk")[:1], took=timedelta(minutes=3))
    client.force_login(alice)
    small = queries_for(client, alice, window=window)

    # Ten times the errors, more mappings and targets, resolved and retried errors.
    history_of(org, "Bigger", failed_records=10)
    for _ in range(3):
        make_mapping()
    resolve(RecordError.objects.for_org(org).order_by("pk")[:20], took=timedelta(minutes=3))

    assert queries_for(client, alice, window=window) == small
    with django_assert_max_num_queries(14):
        client.get(URL, {"window": window})
