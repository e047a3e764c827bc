"""Bulk retries and closes at scale: set-based (the queries do not grow with the errors), replays that take their
errors when they start, and chains that settle after a bulk close."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from integrations.connectors.sandbox import seed_records
from syncs.engine import sync_run_execute
from syncs.models import ErrorStatus, Resolution, RunStatus, SyncRun
from syncs.retries import errors_retry
from syncs.review import error_resolve, errors_close
from tests.syncs.helpers import person, record_errors, records, run_mapping, set_faults

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_records(make_mapping, failing_target):
    """fail(count): the run of a new mapping whose writes of `count` records all failed (503)."""

    def fail(count):
        mapping = make_mapping(target=failing_target, match_keys=[])
        seed_records(mapping.source_connection, "contacts", [person(n) for n in range(count)])
        return run_mapping(mapping)

    return fail


def queries_of(call):
    with CaptureQueriesContext(connection) as captured:
        result = call()
    return len(captured.captured_queries), result


@pytest.mark.parametrize("claim_on_start", [False, True])
def test_a_bulk_retry_costs_the_same_queries_for_3_or_30_errors(failed_records, claim_on_start):
    runs, counted = {count: failed_records(count) for count in (3, 30)}, {}
    for count, run in runs.items():
        queries, summary = queries_of(lambda run=run: errors_retry(
            organization=run.organization, queryset=record_errors(run=run), claim_on_start=claim_on_start))
        assert summary["queued"] == count
        counted[count] = queries
        SyncRun.objects.filter(trigger="retry").update(status=RunStatus.CANCELED)  # its mapping is not busy

    assert counted[30] == counted[3]


def test_a_bulk_close_costs_the_same_queries_for_3_or_30_errors(failed_records):
    runs, counted = {count: failed_records(count) for count in (3, 30)}, {}
    for count, run in runs.items():
        queries, summary = queries_of(lambda run=run: errors_close(
            organization=run.organization, queryset=record_errors(run=run), status=ErrorStatus.IGNORED,
            note="Test contacts"))
        assert summary["closed"] == count
        counted[count] = queries

    assert counted[30] == counted[3]


def test_replays_that_claim_on_start_leave_the_errors_open_until_they_start(failed_records, failing_target):
    run = failed_records(3)
    summary = errors_retry(organization=run.organization, queryset=record_errors(), claim_on_start=True)
    (replay,) = SyncRun.objects.filter(pk__in=summary["runs"])
    assert replay.options["claim_on_start"] is True
    assert set(record_errors().values_list("status", flat=True)) == {ErrorStatus.OPEN}
    set_faults(failing_target)

    sync_run_execute(run_id=replay.pk)

    assert set(record_errors().values_list("status", "resolution")) == {(ErrorStatus.RESOLVED,
                                                                         Resolution.BULK_RETRY)}
    assert len(records(failing_target)) == 3


def test_an_error_resolved_before_its_replay_starts_is_left_alone(failed_records, failing_target):
    run = failed_records(3)
    summary = errors_retry(organization=run.organization, queryset=record_errors(), claim_on_start=True)
    first = record_errors().order_by("pk").first()
    error_resolve(error=first, note="Fixed by hand")
    set_faults(failing_target)

    sync_run_execute(run_id=summary["runs"][0])

    first.refresh_from_db()
    assert (first.status, first.resolution) == (ErrorStatus.RESOLVED, Resolution.FIXED)
    assert len(records(failing_target)) == 2


def test_two_bulk_retries_of_the_same_errors_write_each_record_once(failed_records, failing_target):
    organization = failed_records(4).organization
    first = errors_retry(organization=organization, queryset=record_errors(), claim_on_start=True)
    second = errors_retry(organization=organization, queryset=record_errors(), claim_on_start=True)
    set_faults(failing_target)

    for run_id in (*first["runs"], *second["runs"]):
        sync_run_execute(run_id=run_id)

    assert len(records(failing_target)) == 4
    assert set(record_errors().values_list("status", flat=True)) == {ErrorStatus.RESOLVED}


def test_a_bulk_close_recovers_exactly_the_runs_it_leaves_nothing_open_in(failed_records):
    settled, still_failing = failed_records(2), failed_records(2)
    kept = record_errors(run=still_failing).order_by("pk").first()

    errors_close(organization=settled.organization, queryset=record_errors().exclude(pk=kept.pk),
                 status=ErrorStatus.RESOLVED)

    statuses = dict(SyncRun.objects.values_list("pk", "status"))
    assert statuses[settled.pk] == RunStatus.RECOVERED
    assert statuses[still_failing.pk] == RunStatus.PARTIALLY_FAILED
