"""The admin's record-error list on a table of millions: no count of every row, no scan for dates, and the same
handful of queries whatever the number of errors."""

import re

import pytest
from django.contrib.admin.sites import site
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integrations.connectors.sandbox import seed_records
from syncs.admin import EstimatedCountPaginator
from syncs.models import RecordError
from tests.syncs.helpers import person, run_mapping

pytestmark = pytest.mark.django_db

ERRORS_URL = reverse("admin:syncs_recorderror_changelist")
FILTERS = ["", "?status__exact=open", "?category__exact=connection&level__exact=record", "?q=503",
           "?created_at__gte=2000-01-01+00%3A00%3A00%2B00%3A00"]


@pytest.fixture
def failed(make_mapping, failing_target):
    def fail(count):
        mapping = make_mapping(target=failing_target, match_keys=[])
        seed_records(mapping.source_connection, "contacts", [person(n) for n in range(count)])
        run_mapping(mapping)

    return fail


def changelist_queries(admin_client, query):
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(ERRORS_URL + query)
    assert response.status_code == 200
    return [entry["sql"] for entry in captured.captured_queries if "syncs_recorderror" in entry["sql"]]


@pytest.mark.parametrize("query", FILTERS)
def test_the_error_list_never_counts_every_error_nor_scans_them_for_dates(admin_client, failed, query):
    failed(3)

    for sql in changelist_queries(admin_client, query):
        assert not re.search(r"\b(MIN|MAX)\(", sql), sql  # date_hierarchy's first and last dates
        assert "DATE_TRUNC" not in sql.upper() and "DISTINCT" not in sql.upper(), sql  # its years and days
        if "COUNT(" in sql:
            assert re.search(r"LIMIT \d+\)", sql), sql  # a count that stops


@pytest.mark.parametrize("query", FILTERS)
def test_the_error_list_costs_the_same_queries_for_3_or_30_errors(admin_client, failed, query):
    failed(3)
    few = len(changelist_queries(admin_client, query))
    failed(30)

    assert len(changelist_queries(admin_client, query)) == few


def test_past_the_exact_count_the_pages_come_from_the_planners_estimate(failed, monkeypatch):
    failed(5)
    monkeypatch.setattr(EstimatedCountPaginator, "EXACT_UP_TO", 2)
    errors = site._registry[RecordError].get_queryset(None).order_by("-pk")

    paginator = EstimatedCountPaginator(errors, 2)

    assert paginator.count >= 3  # at least what the stopped count saw, never a count of every row
    assert [error.pk for error in paginator.page(1)] == list(errors.values_list("pk", flat=True)[:2])
