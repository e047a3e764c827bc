"""Recovery that finishes the job: one test (or a few) per way a failure used to be left hanging.

Each failure must end recovered, ignored on purpose, or in front of a person with a one-step fix: one retry
budget everywhere, corrections that stick, group retries that finish, chains that settle, batches that a
failed call does not sink, outages that cost no attempts, defaults that fill empty values, bulk closing.
The clock is controlled where timing matters; nothing sleeps.
"""

from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from integrations.connectors.sandbox import seed_records
from integrations.models import ConnectionStatus, SandboxCallCounter
from integrations.services import connection_reconnect
from mappings.models import FieldMapping
from mappings.services import mapping_update
from syncs.chains import connection_reconnect_and_resume, run_open_failures, sync_run_retry_failures
from syncs.engine import RunExecutor, sync_run_execute
from syncs.groups import error_group_retry
from syncs.models import (
    ErrorGroupRetry,
    ErrorLevel,
    ErrorStatus,
    GroupRetryStatus,
    LinkStatus,
    RecordError,
    RecordLink,
    Resolution,
    RunStatus,
    SyncRun,
    Trigger,
)
from syncs.recovery import sync_run_after_finish
from syncs.retries import error_retry, retries_sweep
from syncs.review import error_edit_and_retry, errors_close
from tests.syncs.helpers import person, record_errors, records, run_mapping, set_faults

pytestmark = pytest.mark.django_db

T0 = "2026-11-22 12:00:00+00:00"
WRITES_DOWN = {"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"}


def calls(connection):
    counter = SandboxCallCounter.objects.filter(connection=connection).first()
    return counter.calls if counter else 0


def emails(connection):
    return sorted(record.data["email"] for record in records(connection))


@pytest.fixture
def no_sleep(monkeypatch):
    """Waits for Retry-After are recorded instead of slept."""
    waits = []
    original_init = RunExecutor.__init__

    def init(self, run, **kwargs):
        original_init(self, run, **kwargs)
        self.sleep = waits.append

    monkeypatch.setattr(RunExecutor, "__init__", init)
    return waits


# --- a failed call does not sink its batch ------------------------------------------------------------------


def test_a_write_call_that_fails_transiently_is_split_and_every_record_still_syncs(make_mapping, make_connection):
    # Target calls: 1 check, 2 the batch's write (503), then its two halves.
    target = make_connection("Flaky", faults={"operations": ["write"], "fail_calls": [2], "failure_kind": "503"})
    mapping = make_mapping(target=target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(6)])

    run = run_mapping(mapping)

    assert (run.status, run.created, run.failed) == (RunStatus.SUCCEEDED, 6, 0)
    assert not RecordError.objects.exists()
    assert calls(target) == 4


def test_a_lookup_that_fails_transiently_is_split_too(make_mapping, make_connection):
    # Target calls: 1 check, 2 the batch's lookup by email (503), 3 and 4 its halves, 5 the write. Before,
    # one failed lookup failed every record of the batch, and a retry of them all met the same odds again.
    target = make_connection("Flaky", faults={"operations": ["find"], "fail_calls": [2], "failure_kind": "503"})
    mapping = make_mapping(target=target)
    assert mapping.match_keys
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(6)])

    run = run_mapping(mapping)

    assert (run.status, run.created, run.failed) == (RunStatus.SUCCEEDED, 6, 0)
    assert not RecordError.objects.exists()
    assert calls(target) == 5


def test_a_lookup_failure_left_after_splitting_fails_only_its_records(make_mapping, make_connection):
    # 1 check; 2 the lookup of both (fails); 3 the first (fails: a single key is not split further); 4 the
    # second; 5 the second's write. Only the first record fails, with the lookup's error.
    target = make_connection("Flaky", faults={"operations": ["find"], "fail_calls": [2, 3],
                                              "failure_kind": "connection"})
    mapping = make_mapping(target=target, error_strategy="retry")
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)], ids=["a", "b"])

    run = run_mapping(mapping)

    assert (run.created, run.failed) == (1, 1)
    (error,) = record_errors()
    assert (error.source_record_id, error.category) == ("a", "connection")
    assert emails(target) == ["person2@example.com"]


def test_failures_left_after_splitting_are_each_records_own(make_mapping, make_connection):
    # 1 check; 2 all four (fails); 3 the first half; 4 the second half (fails); 5 and 6 its records one by one,
    # the last of which fails: only that record fails, with its own error.
    target = make_connection("Flaky", faults={"operations": ["write"], "fail_calls": [2, 4, 6],
                                              "failure_kind": "connection"})
    mapping = make_mapping(target=target, match_keys=[], error_strategy="retry")
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(4)], ids=["a", "b", "c", "d"])

    run = run_mapping(mapping)

    assert (run.created, run.failed) == (3, 1)
    (error,) = record_errors()
    assert (error.source_record_id, error.category, error.status) == ("d", "connection",
                                                                      ErrorStatus.RETRY_SCHEDULED)
    assert emails(target) == ["person0@example.com", "person1@example.com", "person2@example.com"]


def test_a_target_that_is_down_is_not_hammered_with_split_calls(make_mapping, failing_target):
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(16)])

    run = run_mapping(mapping)

    assert run.failed == 16
    assert calls(failing_target) == 1 + 3  # the check, then three failed calls in a row: the target is down


def test_retry_after_is_waited_for_between_split_calls(make_mapping, make_connection, no_sleep):
    # 1 check; 2 both records (429, Retry-After 3 s); 3 the first; 4 the second (429 again: it fails with the
    # target's Retry-After and is retried no sooner).
    target = make_connection("Limited", faults={"operations": ["write"], "rate_limit_every": 2, "retry_after": 3})
    mapping = make_mapping(target=target, match_keys=[], error_strategy="retry")
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)], ids=["a", "b"])

    with time_machine.travel(T0, tick=False):
        run = run_mapping(mapping)

    assert no_sleep == [3.0]
    assert (run.created, run.failed) == (1, 1)
    (error,) = record_errors()
    assert error.category == "rate_limit"
    asked = error.created_at + timedelta(seconds=3)
    assert error.retry_after_until == asked and error.next_retry_at >= asked


def test_a_longer_retry_after_is_left_to_the_retry_schedule(make_mapping, make_connection, no_sleep, settings):
    settings.RESYNC_INLINE_RETRY_AFTER_MAX = 10
    target = make_connection("Limited", faults={"operations": ["write"], "rate_limit_every": 2, "retry_after": 600})
    mapping = make_mapping(target=target, match_keys=[], error_strategy="retry")
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])

    run = run_mapping(mapping)

    assert no_sleep == []
    assert run.failed == 2
    assert calls(target) == 2


def test_creates_whose_answer_was_lost_are_looked_up_before_they_are_sent_again(make_mapping, make_connection):
    # 1 check; 2 the lookup by email; 3 the write, carried out but its answer lost (read timeout). The records
    # exist now: they are found by their email and updated, never created twice.
    target = make_connection("Slow", faults={"operations": ["write"], "fail_calls": [3],
                                             "failure_kind": "lost_answer"})
    mapping = make_mapping(target=target)
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(4)])

    run = run_mapping(mapping)

    assert (run.status, run.failed) == (RunStatus.SUCCEEDED, 0)
    assert emails(target) == [f"person{n}@example.com" for n in range(4)]  # four, not eight
    assert RecordLink.objects.filter(status=LinkStatus.SYNCED).count() == 4


def test_without_match_keys_a_create_whose_answer_was_lost_is_not_sent_again(make_mapping, make_connection):
    target = make_connection("Slow", faults={"operations": ["write"], "fail_calls": [2],
                                             "failure_kind": "lost_answer"})
    mapping = make_mapping(target=target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])

    run = run_mapping(mapping)

    assert run.failed == 2
    assert len(records(target)) == 2  # created once, by the call whose answer was lost
    assert set(record_errors().values_list("category", flat=True)) == {"timeout"}


# --- one retry budget ----------------------------------------------------------------------------------------


def test_automated_replay_and_the_retry_schedule_share_one_budget(make_mapping, failing_target, execute_queued):
    mapping = make_mapping(target=failing_target, match_keys=[], error_strategy="retry", max_retries=3,
                           automated_replay=True, replay_attempts=10)
    seed_records(mapping.source_connection, "contacts", [person(1), person(2, last_name="")])

    with time_machine.travel(T0, tick=False) as clock:
        with execute_queued():
            run_mapping(mapping)
        for _ in range(10):  # far more sweeps than the budget allows
            clock.shift(timedelta(hours=1))
            with execute_queued():
                retries_sweep()

    transient = record_errors(category="connection")
    assert max(transient.values_list("attempts", flat=True)) == 3
    assert transient.exclude(status=ErrorStatus.RESOLVED).get().status == ErrorStatus.EXHAUSTED
    # The record the target refuses for its data was never replayed: it would fail the same way every time.
    assert record_errors(category="validation").count() == 1
    assert record_errors(category="validation").get().status == ErrorStatus.OPEN


def test_an_exhausted_error_is_not_claimed_by_automated_replay(make_mapping, failing_target, execute_queued):
    mapping = make_mapping(target=failing_target, match_keys=[], max_retries=2, automated_replay=True,
                           replay_attempts=2)
    seed_records(mapping.source_connection, "contacts", [person(1)])
    with execute_queued():
        root = run_mapping(mapping)
    last = record_errors().order_by("pk").last()
    assert last.attempts == 2

    # A person retries it once more (allowed: a person decided); it fails again; automation leaves it be.
    with execute_queued():
        error_retry(error=last)

    assert record_errors().order_by("pk").last().attempts == 3
    assert SyncRun.objects.filter(root=root, trigger=Trigger.REPLAY).count() == 2


def test_a_refusal_with_retry_after_uses_up_no_attempt(make_mapping, make_connection, execute_queued, no_sleep):
    # A throttled target (every write answered 429 with Retry-After) must not exhaust the records it throttles:
    # it asked to be called later, and the records get that, however often it asks.
    target = make_connection("CRM", faults={"operations": ["write"], "rate_limit_every": 1, "retry_after": 120})
    mapping = make_mapping(target=target, match_keys=[], error_strategy="retry", max_retries=2)
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])

    with time_machine.travel(T0, tick=False) as clock:
        with execute_queued():
            run_mapping(mapping)
        for _ in range(5):  # more retries than the budget of 2 allows
            clock.shift(timedelta(minutes=31))
            with execute_queued():
                retries_sweep()
        open_errors = record_errors().exclude(status=ErrorStatus.RESOLVED)
        assert open_errors.count() == 2
        assert set(open_errors.values_list("category", "status", "attempts")) == {
            ("rate_limit", ErrorStatus.RETRY_SCHEDULED, 0)}
        assert SyncRun.objects.filter(mapping=mapping, trigger=Trigger.RETRY).count() >= 3

        set_faults(target)  # the target has room again
        clock.shift(timedelta(minutes=31))
        with execute_queued():
            retries_sweep()

    assert emails(target) == ["person1@example.com", "person2@example.com"]
    assert not record_errors().exclude(status=ErrorStatus.RESOLVED).exists()


def test_an_outage_at_the_start_of_a_retry_costs_no_attempt(make_mapping, failing_target, execute_queued):
    mapping = make_mapping(target=failing_target, match_keys=[], error_strategy="retry")
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(3)])
    with time_machine.travel(T0, tick=False):
        run_mapping(mapping)
        set_faults(failing_target, expired_credentials=True)  # credentials expire before the retry starts
        with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=False), execute_queued():
            (retry,) = retries_sweep()

    retry.refresh_from_db()
    assert retry.status == RunStatus.FAILED and retry.system_error
    assert set(record_errors().values_list("attempts", "status")) == {(0, ErrorStatus.RETRY_SCHEDULED)}


def test_credentials_refused_mid_run_halt_it_without_failing_its_records(make_mapping, make_connection,
                                                                          execute_queued):
    # Target calls: 1 check, then one write per record (batch size 1); the key expires at call 4.
    target = make_connection("CRM", faults={"expire_after_calls": 4})
    mapping = make_mapping(target=target, match_keys=[], batch_size=1)
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(5)])

    root = run_mapping(mapping)

    target.refresh_from_db()
    assert root.status == RunStatus.FAILED and "expired" in root.system_error.lower()
    assert target.status == ConnectionStatus.NEEDS_REAUTH
    assert len(records(target)) == 2
    assert not record_errors().exists()  # nothing of the records was tried: no record failed for it

    # One person action: a reconnect with a new key, which resumes what the outage stopped.
    with execute_queued():
        _connection, (resumed,) = connection_reconnect_and_resume(connection=target, credentials={"api_key": "new"})

    root.refresh_from_db()
    resumed.refresh_from_db()
    assert (resumed.parent, resumed.status) == (root, RunStatus.SUCCEEDED)
    assert len(records(target)) == 5
    assert root.status == RunStatus.RECOVERED


def test_a_reconnect_made_while_the_halted_run_is_still_stopping_resumes_it_when_it_finishes(
        make_mapping, make_connection, execute_queued):
    """The person reconnects the moment the connection says it needs it, while the run's other batches are still
    winding down: the reconnect finds no finished run to resume, so the run resumes itself when it finishes,
    once; a second reconnect does not queue it again."""
    target = make_connection("CRM", faults={"expire_after_calls": 4})
    mapping = make_mapping(target=target, match_keys=[], batch_size=1, automated_replay=True)
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(5)])
    root = run_mapping(mapping)
    assert root.status == RunStatus.FAILED

    # The reconnect came first: the run was not finished then, so nothing was resumed.
    target.refresh_from_db()
    connection_reconnect(connection=target, credentials={"api_key": "new"})
    with execute_queued():
        sync_run_after_finish(root)  # the run finishing after it
        (resumed,) = SyncRun.objects.filter(parent=root)
        assert resumed.status == RunStatus.QUEUED
        # A second reconnect while the resumed run waits: it is not queued twice.
        assert connection_reconnect_and_resume(connection=target)[1] == []

    resumed.refresh_from_db()
    assert (resumed.trigger, resumed.status) == (Trigger.RETRY, RunStatus.SUCCEEDED)
    assert len(records(target)) == 5
    root.refresh_from_db()
    assert root.status == RunStatus.RECOVERED
    # While the connection waited for its reconnect, no replay was queued only to be refused.
    assert not SyncRun.objects.filter(trigger=Trigger.REPLAY).exists()


def test_the_sweeper_does_not_claim_errors_for_a_mapping_that_is_running(make_mapping, failing_target,
                                                                         execute_queued):
    mapping = make_mapping(target=failing_target, match_keys=[], error_strategy="retry")
    seed_records(mapping.source_connection, "contacts", [person(1)])
    with time_machine.travel(T0, tick=False) as clock:
        run_mapping(mapping)
        busy = SyncRun.objects.create(organization=mapping.organization, mapping=mapping, trigger=Trigger.MANUAL,
                                      status=RunStatus.RUNNING, heartbeat_at=timezone.now())
        clock.shift(timedelta(minutes=2))

        assert retries_sweep() == []
        assert record_errors().get().status == ErrorStatus.RETRY_SCHEDULED

        # The moment the running run ends, the retry it kept waiting goes.
        SyncRun.objects.filter(pk=busy.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now())
        busy.refresh_from_db()
        with execute_queued():
            sync_run_after_finish(busy)

    assert SyncRun.objects.filter(trigger=Trigger.RETRY).count() == 1
    assert record_errors().order_by("pk").last().attempts == 1


def test_a_retry_asked_for_while_the_mapping_runs_claims_its_errors_only_when_it_starts(
    make_mapping, failing_target, execute_queued
):
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])
    run_mapping(mapping)
    first, second = record_errors().order_by("pk")
    busy = SyncRun.objects.create(organization=mapping.organization, mapping=mapping, trigger=Trigger.MANUAL,
                                  status=RunStatus.RUNNING, heartbeat_at=timezone.now())

    summary = error_retry(error=first)

    (waiting,) = SyncRun.objects.filter(trigger=Trigger.RETRY)
    assert (summary["queued"], waiting.status) == (1, RunStatus.QUEUED)
    first.refresh_from_db()
    assert first.status == ErrorStatus.OPEN  # not held hostage by a run that cannot start
    # Meanwhile a person ignores it: the retry, when it starts, leaves it alone.
    errors_close(organization=mapping.organization, status=ErrorStatus.IGNORED, error_ids=[first.pk], note="Test")
    SyncRun.objects.filter(pk=busy.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now())
    set_faults(failing_target)

    with execute_queued():
        sync_run_execute(run_id=waiting.pk)

    waiting.refresh_from_db()
    assert (waiting.status, waiting.read) == (RunStatus.SUCCEEDED, 0)
    assert len(records(failing_target)) == 0
    second.refresh_from_db()
    assert second.status == ErrorStatus.OPEN


# --- corrections stick ------------------------------------------------------------------------------------------


@pytest.fixture
def refused_phone(make_mapping, make_connection):
    """A record whose phone the target refuses (not E.164), waiting in review."""
    target = make_connection("CRM")
    mapping = make_mapping(target=target, error_strategy="manual_review")
    seed_records(mapping.source_connection, "contacts", [person(1, phone="call me")], ids=["ct_1"])
    run_mapping(mapping)
    return mapping, target, record_errors().get()


def test_a_correction_survives_a_retry_that_fails_transiently(refused_phone, execute_queued):
    _mapping, target, error = refused_phone
    corrected = {**error.snapshot_after, "phone": "+14155550123"}
    set_faults(target, **WRITES_DOWN)

    with execute_queued():
        error_edit_and_retry(error=error, payload=corrected)

    again = record_errors().exclude(pk=error.pk).get()
    assert (again.category, again.edited_payload) == ("connection", corrected)
    set_faults(target)
    with execute_queued():
        error_retry(error=again)  # the retry writes the correction, not the source's old value
    assert [r.data["phone"] for r in records(target)] == ["+14155550123"]
    assert not record_errors().exclude(status=ErrorStatus.RESOLVED).exists()


def test_the_next_run_writes_the_correction_while_the_source_is_unchanged(refused_phone, execute_queued):
    mapping, target, error = refused_phone
    set_faults(target, **WRITES_DOWN)
    with execute_queued():
        error_edit_and_retry(error=error, payload={**error.snapshot_after, "phone": "+14155550123"})
    set_faults(target)

    run = run_mapping(mapping, options={"full": True})

    assert (run.status, run.created) == (RunStatus.SUCCEEDED, 1)
    assert [r.data["phone"] for r in records(target)] == ["+14155550123"]


# --- group retries finish ----------------------------------------------------------------------------------------


@pytest.fixture
def missing_last_names(make_mapping, make_connection):
    """Three records the target refuses for an empty last name, fixed by a default on the field."""

    def make(**options):
        target = make_connection("CRM")
        mapping = make_mapping(target=target, match_keys=[], **options)
        seed_records(mapping.source_connection, "contacts", [person(n, last_name="") for n in range(3)])
        run_mapping(mapping)
        fingerprint = record_errors().values_list("fingerprint", flat=True).distinct().get()
        fields = [{"source_field": fm.source_field, "target_field": fm.target_field, "transforms": fm.transforms,
                   "default_value": "Unknown" if fm.target_field == "last_name" else None}
                  for fm in FieldMapping.objects.filter(mapping=mapping)]
        mapping_update(mapping=mapping, field_mappings=fields)
        return mapping, target, fingerprint

    return make


def test_a_group_retry_goes_on_when_the_probe_heals_by_its_automated_replay(missing_last_names, execute_queued):
    mapping, target, fingerprint = missing_last_names(automated_replay=True)
    # The probe's write meets a transient failure; its automated replay gets through.
    set_faults(target, operations=["write"], fail_calls=[calls(target) + 2], failure_kind="timeout")

    with execute_queued():
        error_group_retry(organization=mapping.organization, fingerprint=fingerprint)

    group_retry = ErrorGroupRetry.objects.get()
    assert (group_retry.status, group_retry.retried) == (GroupRetryStatus.RETRIED, 2)
    assert len(records(target)) == 3
    assert not record_errors().exclude(status=ErrorStatus.RESOLVED).exists()


def test_the_sweeper_moves_on_a_group_retry_whose_probe_run_ended_without_doing_so(missing_last_names,
                                                                                  execute_queued, monkeypatch):
    """A worker that dies between finishing the probe's run and moving the group on must not leave the group
    probing for good: the sweeper (every minute) moves on group retries whose probe has settled."""
    from syncs import recovery
    from syncs.tasks import sweep_retries

    mapping, target, fingerprint = missing_last_names()
    with monkeypatch.context() as patch:
        patch.setattr(recovery, "group_retries_advance", lambda **kwargs: [])  # the step the dead worker missed
        with execute_queued():
            error_group_retry(organization=mapping.organization, fingerprint=fingerprint)
    assert ErrorGroupRetry.objects.get().status == GroupRetryStatus.PROBING
    assert len(records(target)) == 1

    with execute_queued():
        sweep_retries()

    assert (ErrorGroupRetry.objects.get().status, ErrorGroupRetry.objects.get().retried) == (
        GroupRetryStatus.RETRIED, 2)
    assert len(records(target)) == 3


def test_a_group_retry_tries_its_probe_again_after_a_transient_failure(missing_last_names, execute_queued):
    mapping, target, fingerprint = missing_last_names()  # skip and continue: nothing else would retry it
    set_faults(target, operations=["write"], fail_calls=[calls(target) + 2], failure_kind="503")

    with execute_queued():
        error_group_retry(organization=mapping.organization, fingerprint=fingerprint)

    assert ErrorGroupRetry.objects.get().status == GroupRetryStatus.RETRIED
    assert len(records(target)) == 3


def test_a_probe_out_of_attempts_on_transient_errors_hands_over_to_another_record(missing_last_names,
                                                                                  execute_queued):
    mapping, target, fingerprint = missing_last_names(max_retries=1)
    set_faults(target, operations=["write"], fail_calls=[calls(target) + 2], failure_kind="503")

    with execute_queued():
        error_group_retry(organization=mapping.organization, fingerprint=fingerprint)

    group_retry = ErrorGroupRetry.objects.get()
    assert group_retry.status == GroupRetryStatus.RETRIED
    assert len(group_retry.earlier_probe_records) == 1
    assert len(records(target)) == 3  # the first probe too: it went with the rest
    assert not record_errors().exclude(status=ErrorStatus.RESOLVED).exists()


def test_a_group_retry_stops_when_its_probes_keep_running_out_of_attempts(missing_last_names, execute_queued):
    mapping, target, fingerprint = missing_last_names(max_retries=1)
    set_faults(target, **WRITES_DOWN)

    with execute_queued():
        error_group_retry(organization=mapping.organization, fingerprint=fingerprint)

    group_retry = ErrorGroupRetry.objects.get()
    assert group_retry.status == GroupRetryStatus.STOPPED
    assert len(group_retry.earlier_probe_records) == 2
    assert "503" in group_retry.reason


def test_a_probe_that_fails_durably_stops_the_group_and_says_why(make_mapping, execute_queued):
    mapping = make_mapping(match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(n, last_name="") for n in range(3)])
    run_mapping(mapping)
    fingerprint = record_errors().values_list("fingerprint", flat=True).distinct().get()

    with execute_queued():
        error_group_retry(organization=mapping.organization, fingerprint=fingerprint)  # nothing was fixed

    group_retry = ErrorGroupRetry.objects.get()
    assert group_retry.status == GroupRetryStatus.STOPPED
    assert "The first record still fails" in group_retry.reason and "last_name" in group_retry.reason
    assert SyncRun.objects.filter(trigger=Trigger.RETRY).count() == 1  # the rest were never retried
    assert record_errors().exclude(status=ErrorStatus.RESOLVED).count() == 3


# --- chains settle ----------------------------------------------------------------------------------------------


def test_a_run_whose_failures_are_all_ignored_is_recovered(make_mapping):
    mapping = make_mapping(match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2, last_name=""),
                                                         person(3, email="nope")])
    root = run_mapping(mapping)
    assert root.status == RunStatus.PARTIALLY_FAILED

    errors_close(organization=mapping.organization, queryset=record_errors(), status=ErrorStatus.IGNORED,
                 note="Test records")

    root.refresh_from_db()
    assert root.status == RunStatus.RECOVERED


def test_a_run_is_recovered_only_when_the_failure_it_handed_on_is_resolved(make_mapping, failing_target,
                                                                          execute_queued):
    mapping = make_mapping(target=failing_target, match_keys=[], error_strategy="retry")
    seed_records(mapping.source_connection, "contacts", [person(1)])
    with time_machine.travel(T0, tick=False) as clock:
        root = run_mapping(mapping)
        clock.shift(timedelta(minutes=2))
        with execute_queued():
            (first_retry,) = retries_sweep()  # outside the root's chain; the record fails again there

        root.refresh_from_db()
        moved = record_errors(run=first_retry).get()
        assert (moved.origin_run, root.status) == (root, RunStatus.PARTIALLY_FAILED)
        assert list(run_open_failures(root)) == [moved]

        # "Retry failures" of the root finds its failure where it now lives.
        set_faults(failing_target)
        with execute_queued():
            child = sync_run_retry_failures(run=root)

    child.refresh_from_db()
    root.refresh_from_db()
    assert child.status == RunStatus.SUCCEEDED
    assert root.status == RunStatus.RECOVERED
    first_retry.refresh_from_db()
    assert first_retry.status == RunStatus.RECOVERED


# --- defaults ---------------------------------------------------------------------------------------------------


def test_a_field_default_fills_an_empty_value_without_auto_fix(make_mapping):
    mapping = make_mapping(match_keys=[], auto_fix=False)
    FieldMapping.objects.filter(mapping=mapping, target_field="last_name").update(default_value="Unknown")
    seed_records(mapping.source_connection, "contacts", [person(1, last_name=" ")])

    run = run_mapping(mapping)

    assert (run.status, run.created, run.warned) == (RunStatus.SUCCEEDED, 1, 0)
    assert records(mapping.target_connection)[0].data["last_name"] == "Unknown"


# --- bulk ignore and resolve -------------------------------------------------------------------------------------


@pytest.fixture
def duplicates(make_mapping):
    mapping = make_mapping()
    rows = [person(n) for n in range(4)] + [person(n, first_name="Twin") for n in range(4)]
    seed_records(mapping.source_connection, "contacts", rows)
    root = run_mapping(mapping)
    assert record_errors(error_code="duplicate_in_source").count() == 4
    return mapping, root


def test_bulk_ignore_by_filter_closes_every_match_in_one_call_and_recovers_the_run(duplicates):
    mapping, root = duplicates

    summary = errors_close(organization=mapping.organization, status=ErrorStatus.IGNORED,
                           queryset=record_errors(error_code="duplicate_in_source"), note="Same person twice")

    assert summary == {"closed": 4, "skipped": {}}
    assert set(record_errors().values_list("status", "resolution", "resolution_note")) == {
        (ErrorStatus.IGNORED, Resolution.IGNORED, "Same person twice")}
    assert RecordLink.objects.filter(status=LinkStatus.IGNORED).count() == 4
    root.refresh_from_db()
    assert root.status == RunStatus.RECOVERED


def test_bulk_resolve_skips_what_is_already_closed(duplicates):
    mapping, _root = duplicates
    first = record_errors().first()
    errors_close(organization=mapping.organization, status=ErrorStatus.IGNORED, error_ids=[first.pk], note="dup")

    summary = errors_close(organization=mapping.organization, status=ErrorStatus.RESOLVED,
                           error_ids=list(record_errors().values_list("pk", flat=True)))

    assert summary == {"closed": 3, "skipped": {"already_resolved": 1}}


def test_bulk_ignore_from_the_command_line(duplicates, capsys):
    mapping, _root = duplicates

    call_command("errors", "ignore", "--org", mapping.organization.slug, "--code", "duplicate_in_source",
                 "--reason", "Same person twice")

    assert "4 errors ignored." in capsys.readouterr().out
    assert set(record_errors().values_list("status", flat=True)) == {ErrorStatus.IGNORED}


def test_the_command_line_wants_ids_filters_or_all_before_closing_anything(duplicates):
    from django.core.management import CommandError

    mapping, _root = duplicates
    with pytest.raises(CommandError, match="--all"):
        call_command("errors", "resolve", "--org", mapping.organization.slug)
    assert not record_errors(status=ErrorStatus.RESOLVED).exists()

    call_command("errors", "resolve", "--org", mapping.organization.slug, "--all")
    assert set(record_errors().values_list("status", flat=True)) == {ErrorStatus.RESOLVED}


def test_a_level_other_than_record_is_closed_too(make_mapping, make_connection):
    target = make_connection("Broken", faults={"fail_pages": [1]})
    mapping = make_mapping(source=target)
    seed_records(target, "contacts", [person(1)])
    root = run_mapping(mapping)
    (page_error,) = RecordError.objects.filter(level=ErrorLevel.BATCH)

    errors_close(organization=mapping.organization, status=ErrorStatus.IGNORED, error_ids=[page_error.pk],
                 note="That page is test data")

    root.refresh_from_db()
    assert root.status == RunStatus.RECOVERED
