"""The four error strategies, each with its exact semantics."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from integrations.connectors.sandbox import seed_records
from syncs.models import ErrorLevel, ErrorStatus, LinkStatus, RecordError, RecordLink, RunStatus
from syncs.retries import error_retry
from tests.syncs.helpers import person, records, run_mapping

pytestmark = pytest.mark.django_db

NOW = "2026-11-22 12:00:00+00:00"


def test_skip_records_the_error_and_syncs_the_others(make_mapping):
    mapping = make_mapping(error_strategy="skip")
    seed_records(mapping.source_connection, "contacts", [person(1), person(2, last_name=""), person(3)])

    run = run_mapping(mapping)

    assert run.status == RunStatus.PARTIALLY_FAILED
    assert (run.created, run.failed) == (2, 1)
    error = RecordError.objects.get(level=ErrorLevel.RECORD)
    assert error.status == ErrorStatus.OPEN
    assert error.next_retry_at is None


@time_machine.travel(NOW, tick=False)
def test_retry_schedules_ephemeral_errors_from_the_mapping_schedule(make_mapping, make_connection):
    target = make_connection("503 CRM", faults={"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"})
    mapping = make_mapping(target=target, error_strategy="retry", match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])

    run_mapping(mapping)

    error = RecordError.objects.get(level=ErrorLevel.RECORD)
    assert (error.category, error.retryable, error.durability) == ("connection", True, "ephemeral")
    assert error.status == ErrorStatus.RETRY_SCHEDULED
    assert error.next_retry_at == timezone.now() + timedelta(minutes=1)
    assert error.attempts == 0


@time_machine.travel(NOW, tick=False)
def test_retry_is_never_sooner_than_the_retry_after_the_target_asked_for(make_mapping, make_connection):
    target = make_connection("Limited", faults={"operations": ["write"], "rate_limit_every": 1, "retry_after": 600})
    mapping = make_mapping(target=target, error_strategy="retry", match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])

    run_mapping(mapping)

    error = RecordError.objects.get(level=ErrorLevel.RECORD)
    assert error.category == "rate_limit"
    assert error.next_retry_at == timezone.now() + timedelta(seconds=600)
    assert error.retry_after_until == timezone.now() + timedelta(seconds=600)


@time_machine.travel(NOW, tick=False)
def test_retry_uses_the_mappings_own_schedule(make_mapping, make_connection):
    target = make_connection("Timeouts", faults={"operations": ["write"], "failure_rate": 1.0,
                                                  "failure_kind": "timeout"})
    mapping = make_mapping(target=target, error_strategy="retry", retry_schedule=[15, 45], match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])

    run_mapping(mapping)

    assert RecordError.objects.get().next_retry_at == timezone.now() + timedelta(seconds=15)


def test_retry_leaves_durable_errors_open(make_mapping):
    mapping = make_mapping(error_strategy="retry")
    seed_records(mapping.source_connection, "contacts", [person(1, email="not-an-email")])

    run_mapping(mapping)

    error = RecordError.objects.get(level=ErrorLevel.RECORD)
    assert (error.category, error.durability) == ("validation", "durable")
    assert error.status == ErrorStatus.OPEN
    assert error.next_retry_at is None


def test_a_retry_run_that_fails_again_counts_an_attempt_and_stops_after_the_last(make_mapping, make_connection,
                                                                                execute_queued):
    target = make_connection("Down", faults={"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"})
    mapping = make_mapping(target=target, error_strategy="retry", max_retries=2, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    first = RecordError.objects.filter(level=ErrorLevel.RECORD).get()

    with execute_queued():
        error_retry(error=first)
    second = RecordError.objects.filter(level=ErrorLevel.RECORD).order_by("pk").last()
    assert (second.attempts, second.status) == (1, ErrorStatus.RETRY_SCHEDULED)

    with execute_queued():
        error_retry(error=second)
    exhausted = RecordError.objects.filter(level=ErrorLevel.RECORD).order_by("pk").last()
    assert exhausted.attempts == 2
    assert exhausted.status == ErrorStatus.EXHAUSTED
    assert exhausted.next_retry_at is None
    # Earlier rows of the same record are closed, so one open error stands for the record.
    assert RecordError.objects.filter(level=ErrorLevel.RECORD).exclude(status=ErrorStatus.RESOLVED).count() == 1


def test_fail_fast_stops_at_the_first_error_and_writes_nothing_after_it(make_mapping):
    mapping = make_mapping(error_strategy="fail_fast")
    seed_records(
        mapping.source_connection, "contacts",
        [person(1), person(2), person(3, last_name=""), person(4), person(5)],
    )

    run = run_mapping(mapping, options={"page_size": 2})

    assert run.status == RunStatus.FAILED
    assert [r.data["email"] for r in records(mapping.target_connection)] == [
        "person1@example.com", "person2@example.com",
    ]
    assert run.failed == 1
    assert run.created == 2
    # Nothing after the error was processed: record 4 was skipped in its batch, record 5's page never read.
    assert run.skipped == 1
    assert run.read == 4
    assert mapping.source_cursor == ""


def test_fail_fast_on_a_write_error_writes_nothing_after_it(make_mapping, make_connection):
    # Calls to the target: check, then one write per record; the fourth call (third write) is rate limited.
    target = make_connection("Third write fails", faults={"operations": ["write"], "rate_limit_every": 4})
    mapping = make_mapping(target=target, error_strategy="fail_fast", match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(1, 6)])

    run = run_mapping(mapping)

    assert run.status == RunStatus.FAILED
    assert len(records(target)) == 2
    assert RecordError.objects.get(level=ErrorLevel.RECORD).category == "rate_limit"


def test_manual_review_puts_record_errors_in_the_review_queue(make_mapping):
    mapping = make_mapping(error_strategy="manual_review")
    seed_records(mapping.source_connection, "contacts", [person(1, last_name=""), person(2)])

    run = run_mapping(mapping)

    assert run.created == 1
    error = RecordError.objects.get(level=ErrorLevel.RECORD)
    assert error.status == ErrorStatus.IN_REVIEW
    assert error.snapshot_after["last_name"] == ""
    link = RecordLink.objects.get(mapping=mapping, source_record_id=error.source_record_id)
    assert link.status == LinkStatus.FAILED
    assert link.last_error == error
