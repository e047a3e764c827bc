"""Recovery, each point on its own: retry schedule, replays, chains, bulk retries, review, safe replay, re-sync,
test sync, error groups and auto-pause. The clock is controlled; nothing sleeps."""

from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from integrations.connectors.sandbox import SandboxConnector, change_record, seed_records
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import Connection, ConnectionStatus
from integrations.services import connection_needs_reauth, connection_reconnect
from mappings.models import FieldMapping
from syncs.chains import sync_run_retry_failures
from syncs.groups import error_group_retry, error_groups
from syncs.models import (
    BatchStatus,
    ErrorStatus,
    LinkStatus,
    RecordError,
    RecordLink,
    Resolution,
    RunStatus,
    SyncRun,
    Trigger,
)
from syncs.pause import mapping_resume
from syncs.policy import next_retry_time, retry_policy, validate_retry_policy
from syncs.previews import errors_replay_preview, mapping_test_sync
from syncs.record_status import record_resync, record_sync_status, records_resync_unsynced, sync_status_counts
from syncs.retries import error_retry, errors_retry, retries_sweep
from syncs.review import error_edit_and_retry, error_ignore, error_resolve, review_queue
from tests.syncs.helpers import person, record_errors, records, run_mapping, set_faults

pytestmark = pytest.mark.django_db

T0 = "2026-11-22 12:00:00+00:00"


# 1. the retry schedule


@time_machine.travel(T0, tick=False)
def test_the_sweeper_replays_due_errors_in_one_run_per_mapping(make_mapping, failing_target, execute_queued):
    first = make_mapping(target=failing_target, error_strategy="retry", match_keys=[])
    second = make_mapping(target=failing_target, error_strategy="retry", match_keys=[])
    seed_records(first.source_connection, "contacts", [person(1), person(2)])
    seed_records(second.source_connection, "contacts", [person(3)])
    run_mapping(first)
    run_mapping(second)

    assert retries_sweep() == []  # nothing is due before its time

    set_faults(failing_target)  # the target is back
    with time_machine.travel(timezone.now() + timedelta(seconds=61), tick=False), execute_queued():
        runs = retries_sweep()

    assert sorted(run.mapping_id for run in runs) == [first.pk, second.pk]
    assert {run.trigger for run in runs} == {Trigger.RETRY}
    assert record_errors(status=ErrorStatus.RESOLVED, resolution=Resolution.AUTO_RETRY).count() == 3
    assert len(records(failing_target)) == 3
    # The runs whose failures the sweeper fixed are recovered.
    assert set(SyncRun.objects.filter(trigger=Trigger.MANUAL).values_list("status", flat=True)) == {
        RunStatus.RECOVERED}


@time_machine.travel(T0, tick=False)
def test_attempts_are_counted_in_the_database_and_the_last_one_exhausts_the_error(
    make_mapping, failing_target, execute_queued
):
    mapping = make_mapping(target=failing_target, error_strategy="retry", match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)

    expected = [(1, timedelta(minutes=5)), (2, timedelta(minutes=30)), (3, None)]
    for attempts, next_delay in expected:
        latest = record_errors().order_by("pk").last()
        with time_machine.travel(latest.next_retry_at, tick=False), execute_queued():
            retries_sweep()
            now = timezone.now()
        latest = record_errors().order_by("pk").last()
        assert latest.attempts == attempts
        if next_delay is None:
            assert latest.status == ErrorStatus.EXHAUSTED
            assert latest.next_retry_at is None
        else:
            assert latest.status == ErrorStatus.RETRY_SCHEDULED
            assert latest.next_retry_at == now + next_delay
    assert record_errors().exclude(status=ErrorStatus.RESOLVED).count() == 1
    assert SyncRun.objects.filter(trigger=Trigger.RETRY).count() == 3


@time_machine.travel(T0, tick=False)
def test_a_retry_is_never_sooner_than_retry_after(make_mapping, make_connection, execute_queued):
    target = make_connection("Limited", faults={"operations": ["write"], "rate_limit_every": 1, "retry_after": 900})
    mapping = make_mapping(target=target, error_strategy="retry", match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    error = record_errors().get()
    # Even if the schedule row said otherwise, the sweeper honours the target's Retry-After.
    RecordError.objects.filter(pk=error.pk).update(next_retry_at=timezone.now() + timedelta(minutes=1))

    with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=False):
        assert retries_sweep() == []
    with time_machine.travel(timezone.now() + timedelta(seconds=901), tick=False), execute_queued():
        assert len(retries_sweep()) == 1


@time_machine.travel(T0, tick=False)
def test_a_per_category_policy_retries_timeouts_five_times_and_never_validation(make_mapping, make_connection):
    target = make_connection("Slow", faults={"operations": ["write"], "failure_rate": 1.0, "failure_kind": "timeout"})
    policy = {"timeout": {"retry": True, "attempts": 5, "delays": [10, 20]}, "validation": {"retry": False}}
    mapping = make_mapping(target=target, error_strategy="retry", retry_policy=policy, max_retries=5, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2, last_name="")])

    run_mapping(mapping)

    timeout = record_errors(category="timeout").get()
    assert timeout.next_retry_at == timezone.now() + timedelta(seconds=10)
    validation = record_errors(category="validation").get()
    assert (validation.status, validation.next_retry_at) == (ErrorStatus.OPEN, None)
    assert retry_policy(mapping, "timeout").attempts == 5
    assert next_retry_time(retry_policy(mapping, "timeout"), attempts=4, now=timezone.now()) == (
        timezone.now() + timedelta(seconds=20))
    assert next_retry_time(retry_policy(mapping, "timeout"), attempts=5, now=timezone.now()) is None


def test_a_policy_can_turn_off_retries_of_an_ephemeral_category(make_mapping, failing_target):
    mapping = make_mapping(target=failing_target, error_strategy="retry", match_keys=[],
                           retry_policy={"connection": {"retry": False}})
    seed_records(mapping.source_connection, "contacts", [person(1)])

    run_mapping(mapping)

    assert record_errors().get().status == ErrorStatus.OPEN


def test_retry_policies_are_validated():
    validate_retry_policy({"timeout": {"retry": True, "attempts": 5, "delays": [60]}})
    for bad in ({"nonsense": {}}, {"timeout": {"attempts": -1}}, {"timeout": {"delays": []}}, []):
        with pytest.raises(ValidationError):
            validate_retry_policy(bad)


# 2. automated replay


def test_automated_replay_retries_only_what_still_fails_up_to_n_attempts(make_mapping, make_connection, execute_queued):
    target = make_connection("Flaky", faults={"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"})
    mapping = make_mapping(target=target, automated_replay=True, replay_attempts=2, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2, last_name="")])

    with execute_queued():
        root = run_mapping(mapping)

    replays = list(SyncRun.objects.filter(trigger=Trigger.REPLAY).order_by("pk"))
    assert len(replays) == 2
    assert replays[0].parent == root and replays[1].parent == replays[0]
    assert all(r.root == root for r in replays)
    # Each replay re-processed only the record failing on a transient error, never the whole source, and never
    # the one whose data the target refuses: that one would fail the same way until someone fixes it.
    assert [r.read for r in replays] == [1, 1]


def test_automated_replay_recovers_the_root_when_the_failure_was_ephemeral(make_mapping, make_connection,
                                                                        execute_queued):
    # Target calls: 1 check, 2 write of record 1, 3 write of record 2 (503); the replay: 4 check, 5 write. A 503
    # without Retry-After: one with it is replayed by the sweeper once it has passed, not at once (tests/faults/).
    target = make_connection("Bursty", faults={"operations": ["write"], "fail_calls": [3], "failure_kind": "503"})
    mapping = make_mapping(target=target, automated_replay=True, replay_attempts=3, match_keys=[], batch_size=1)
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])

    with execute_queued():
        root = run_mapping(mapping)

    root.refresh_from_db()
    assert root.status == RunStatus.RECOVERED
    assert SyncRun.objects.filter(trigger=Trigger.REPLAY).count() == 1
    assert record_errors().get().resolution == Resolution.REPLAY
    assert len(records(target)) == 2


# 3. retry failures chains


def test_a_retry_failures_chain_of_three_runs_ends_in_recovered(make_mapping, make_connection, execute_queued):
    source = make_connection("Shop", faults={"fail_pages": [2]})
    target = make_connection("CRM")
    mapping = make_mapping(source=source, target=target, batch_size=2)
    seed_records(source, "contacts", [person(1), person(2), person(3), person(4), person(5, last_name="")])
    root = run_mapping(mapping)
    assert root.status == RunStatus.PARTIALLY_FAILED
    assert root.batches.filter(status=BatchStatus.FAILED, record_count=0).count() == 1  # page 2 never loaded

    # Second run: page 2 still fails to load (and the read cannot get past it: cursor paging).
    with execute_queued():
        second = sync_run_retry_failures(run=root)
    second.refresh_from_db()
    assert (second.parent, second.root, second.trigger) == (root, root, Trigger.RETRY)
    assert second.status == RunStatus.FAILED
    assert second.read == 0

    # The source is repaired, and the bad record (on page 3, never read so far) fixed at the source: the chain
    # goes on from the second run, loads page 2 and reads on to the end.
    set_faults(source)
    bad = next(r for r in records(source) if r.data["last_name"] == "")
    change_record(source, "contacts", bad.external_id, {"last_name": "Fixed"})
    with execute_queued():
        third = sync_run_retry_failures(run=second)
    third.refresh_from_db()
    assert (third.parent, third.root) == (second, root)
    assert third.status == RunStatus.SUCCEEDED
    assert third.read == 3  # the re-fetched page (2 records) and the page after it

    root.refresh_from_db()
    assert root.status == RunStatus.RECOVERED
    assert sorted(r.data["email"] for r in records(target)) == [f"person{n}@example.com" for n in range(1, 6)]
    assert not RecordError.objects.filter(level__in=("record", "batch")).exclude(
        status=ErrorStatus.RESOLVED).exists()


def test_retry_failures_needs_a_run_with_failures(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run = run_mapping(mapping)

    with pytest.raises(ValidationError):
        sync_run_retry_failures(run=run)


# 4. retry one, selected, everything matching


def test_a_bulk_retry_groups_errors_into_one_replay_run_per_mapping(make_mapping, failing_target, execute_queued):
    first = make_mapping(target=failing_target, match_keys=[])
    second = make_mapping(target=failing_target, match_keys=[])
    seed_records(first.source_connection, "contacts", [person(1), person(2)])
    seed_records(second.source_connection, "contacts", [person(3)])
    run_mapping(first)
    run_mapping(second)
    set_faults(failing_target)

    with execute_queued():
        summary = errors_retry(organization=first.organization,
                                        queryset=RecordError.objects.filter(category="connection"))

    assert summary["queued"] == 3
    assert len(summary["runs"]) == 2
    assert record_errors(status=ErrorStatus.RESOLVED, resolution=Resolution.BULK_RETRY).count() == 3
    assert len(records(failing_target)) == 3


def test_a_bulk_retry_says_what_it_skipped_and_why(make_mapping, failing_target):
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2), person(3)])
    run_mapping(mapping)
    one, two, three = record_errors().order_by("pk")
    error_resolve(error=one)
    RecordError.objects.filter(pk=two.pk).update(status=ErrorStatus.RETRYING)

    summary = errors_retry(organization=mapping.organization, error_ids=[one.pk, two.pk, three.pk])

    assert summary["queued"] == 1
    assert summary["skipped"] == {"already_resolved": 1, "already_retrying": 1}


def test_two_overlapping_bulk_retries_process_each_error_once(make_mapping, failing_target):
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(6)])
    run_mapping(mapping)
    ids = list(record_errors().order_by("pk").values_list("pk", flat=True))

    first = errors_retry(organization=mapping.organization, error_ids=ids[:4])
    second = errors_retry(organization=mapping.organization, error_ids=ids[2:])

    assert (first["queued"], second["queued"]) == (4, 2)
    assert second["skipped"] == {"already_retrying": 2}
    run_a, run_b = (SyncRun.objects.get(pk=summary["runs"][0]) for summary in (first, second))
    assert set(run_a.options["errors"]).isdisjoint(run_b.options["errors"])
    assert sorted(run_a.options["errors"] + run_b.options["errors"]) == ids


def test_retrying_one_error_of_another_organization_finds_nothing(make_mapping, failing_target, other_org):
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)

    summary = errors_retry(organization=other_org, error_ids=[record_errors().get().pk])

    assert summary == {"queued": 0, "runs": [], "skipped": {}}
    assert record_errors().get().status == ErrorStatus.OPEN


# 5. manual review


def test_the_review_queue_lists_records_in_review(make_mapping):
    mapping = make_mapping(error_strategy="manual_review")
    seed_records(mapping.source_connection, "contacts", [person(1, last_name=""), person(2)])
    run_mapping(mapping)

    (error,) = review_queue(organization=mapping.organization)
    assert error.field == "last_name"


def test_an_edited_record_is_validated_with_the_field_error_shown(make_mapping):
    mapping = make_mapping(error_strategy="manual_review")
    seed_records(mapping.source_connection, "contacts", [person(1, last_name="")])
    run_mapping(mapping)
    error = record_errors().get()

    with pytest.raises(ValidationError) as caught:
        error_edit_and_retry(error=error, payload={**error.snapshot_after, "email": "not an email"})

    assert set(caught.value.message_dict) == {"email", "last_name"}
    error.refresh_from_db()
    assert error.status == ErrorStatus.IN_REVIEW and error.edited_payload is None


def test_edit_and_retry_writes_the_corrected_record(make_mapping, execute_queued):
    mapping = make_mapping(error_strategy="manual_review")
    seed_records(mapping.source_connection, "contacts", [person(1, last_name="")])
    run_mapping(mapping)
    error = record_errors().get()

    with execute_queued():
        error_edit_and_retry(error=error, payload={**error.snapshot_after, "last_name": "Corrected"})

    error.refresh_from_db()
    assert (error.status, error.resolution) == (ErrorStatus.RESOLVED, Resolution.FIXED)
    assert records(mapping.target_connection)[0].data["last_name"] == "Corrected"


def test_ignoring_needs_a_reason_and_resolving_closes_the_error(make_mapping):
    mapping = make_mapping(error_strategy="manual_review")
    seed_records(mapping.source_connection, "contacts", [person(1, last_name=""), person(2, last_name="")])
    run_mapping(mapping)
    first, second = record_errors().order_by("pk")

    with pytest.raises(ValidationError):
        error_ignore(error=first, reason="  ")
    error_ignore(error=first, reason="Test customer, never sync")
    error_resolve(error=second)

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, first.resolution, first.resolution_note) == (
        ErrorStatus.IGNORED, Resolution.IGNORED, "Test customer, never sync")
    assert (second.status, second.resolution) == (ErrorStatus.RESOLVED, Resolution.FIXED)
    assert RecordLink.objects.get(source_record_id=first.source_record_id).status == LinkStatus.IGNORED
    with pytest.raises(ValidationError):
        error_resolve(error=second)


# 6. safe replay


def test_a_replay_uses_the_fresh_source_record_not_the_stale_snapshot(make_mapping, failing_target, execute_queued):
    mapping = make_mapping(target=failing_target, match_keys=[])
    (row,) = seed_records(mapping.source_connection, "contacts", [person(1, first_name="Old")])
    run_mapping(mapping)
    change_record(mapping.source_connection, "contacts", row.external_id, {"first_name": "New"})
    set_faults(failing_target)

    with execute_queued():
        error_retry(error=record_errors().get())

    assert records(failing_target)[0].data["first_name"] == "New"


@pytest.fixture
def target_changed_after_failure(make_mapping, make_connection):
    """A synced record whose update failed, and whose target record was then edited by someone else."""
    target = make_connection("CRM")
    mapping = make_mapping(target=target)
    with time_machine.travel("2026-11-01 10:00:00+00:00"):
        (row,) = seed_records(mapping.source_connection, "contacts", [person(1)])
        run_mapping(mapping)
    with time_machine.travel("2026-11-01 11:00:00+00:00"):
        change_record(mapping.source_connection, "contacts", row.external_id, {"first_name": "FromShop"})
        set_faults(target, operations=["write"], failure_rate=1.0, failure_kind="503")
        run_mapping(mapping)
    set_faults(target)
    target_id = RecordLink.objects.get(mapping=mapping).target_record_id
    with time_machine.travel("2026-11-01 12:00:00+00:00"):
        change_record(target, "contacts", target_id, {"first_name": "EditedInCrm"})
    return mapping, target, record_errors().get()


def test_a_replay_does_not_overwrite_a_target_record_changed_after_the_failure(target_changed_after_failure,
                                                                              execute_queued):
    _mapping, target, error = target_changed_after_failure

    with execute_queued():
        error_retry(error=error)

    assert records(target)[0].data["first_name"] == "EditedInCrm"
    flagged = record_errors().order_by("pk").last()
    assert (flagged.category, flagged.error_code, flagged.status) == ("conflict", "target_changed",
                                                                     ErrorStatus.IN_REVIEW)


def test_a_forced_replay_overwrites_the_changed_target_record(target_changed_after_failure, execute_queued):
    _mapping, target, error = target_changed_after_failure

    with execute_queued():
        error_retry(error=error, force=True)

    assert records(target)[0].data["first_name"] == "FromShop"
    error.refresh_from_db()
    assert error.status == ErrorStatus.RESOLVED


def test_the_preview_shows_what_a_replay_would_write_next_to_the_targets_values(target_changed_after_failure):
    mapping, target, error = target_changed_after_failure

    (entry,) = errors_replay_preview(organization=mapping.organization, error_ids=[error.pk])

    assert entry["action"] == "failed"  # without force the replay would stop at the changed target
    assert "changed after this record failed" in entry["errors"][0]
    assert entry["current"]["first_name"] == "EditedInCrm"
    assert entry["payload"]["first_name"] == "FromShop"
    assert records(target)[0].data["first_name"] == "EditedInCrm"  # the preview wrote nothing
    error.refresh_from_db()
    assert error.status == ErrorStatus.OPEN


def test_the_preview_of_an_unchanged_target_lists_the_changes(make_mapping, failing_target):
    mapping = make_mapping(target=failing_target)
    (row,) = seed_records(mapping.source_connection, "contacts", [person(1, first_name="Ann")])
    set_faults(failing_target)
    run_mapping(mapping)
    change_record(mapping.source_connection, "contacts", row.external_id, {"first_name": "Anne"})
    set_faults(failing_target, operations=["write"], failure_rate=1.0, failure_kind="503")
    run_mapping(mapping)

    (entry,) = errors_replay_preview(organization=mapping.organization, error_ids=[record_errors().get().pk])

    assert entry["action"] == "update"
    assert entry["changes"] == {"first_name": {"current": "Ann", "new": "Anne"}}


def test_with_logging_level_none_a_record_retry_still_works_by_fetching_the_source(
    make_mapping, failing_target, execute_queued
):
    mapping = make_mapping(target=failing_target, logging_level="none", match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    error = record_errors().get()
    assert error.snapshot_before is None
    set_faults(failing_target)

    with execute_queued():
        error_retry(error=error)

    assert len(records(failing_target)) == 1


def test_without_a_snapshot_or_a_source_to_fetch_a_record_retry_says_so(make_mapping, failing_target, monkeypatch):
    mapping = make_mapping(target=failing_target, logging_level="none", match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    monkeypatch.setattr(SandboxConnector, "supports_fetch", False)

    with pytest.raises(ValidationError) as caught:
        error_retry(error=record_errors().get())

    assert "logging level is none" in caught.value.messages[0]


def test_a_batch_retry_works_by_refetching_even_with_logging_level_none(make_mapping, make_connection,
                                                                       execute_queued):
    source = make_connection("Shop", faults={"fail_pages": [1]})
    mapping = make_mapping(source=source, logging_level="none")
    seed_records(source, "contacts", [person(1), person(2)])
    run = run_mapping(mapping)
    set_faults(source)

    with execute_queued():
        sync_run_retry_failures(run=run)

    assert len(records(mapping.target_connection)) == 2
    run.refresh_from_db()
    assert run.status == RunStatus.RECOVERED


# 7. re-


def test_resync_of_one_record_and_of_every_unsynced_record(make_mapping, failing_target, execute_queued):
    mapping = make_mapping(target=failing_target, match_keys=[])
    rows = seed_records(mapping.source_connection, "contacts", [person(1), person(2), person(3)])
    run_mapping(mapping)
    assert sync_status_counts(organization=mapping.organization) == [
        {"connection_id": failing_target.pk, "connection": "Down CRM", "synced": 0, "unsynced": 3, "failed": 3}
    ]
    set_faults(failing_target)

    with execute_queued():
        record_resync(mapping=mapping, source_record_ids=[rows[0].external_id])
    assert sync_status_counts(organization=mapping.organization)[0]["synced"] == 1

    with execute_queued():
        runs = records_resync_unsynced(organization=mapping.organization, target_connection=failing_target)
    assert len(runs) == 1
    assert set(runs[0].options["records"]) == {row.external_id for row in rows[1:]}
    assert sync_status_counts(organization=mapping.organization)[0] == {
        "connection_id": failing_target.pk, "connection": "Down CRM", "synced": 3, "unsynced": 0, "failed": 0,
    }
    statuses = {link.source_record_id: link.status for link in
                record_sync_status(organization=mapping.organization)}
    assert statuses == {row.external_id: LinkStatus.SYNCED for row in rows}
    assert len(records(failing_target)) == 3


# 8. test sync


def test_a_test_sync_plans_a_sample_and_writes_nothing(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts",
                 [person(1), person(2, last_name=""), person(3)] + [person(n) for n in range(4, 20)])
    seed_records(mapping.target_connection, "contacts", [person(3, first_name="Old")])

    run = mapping_test_sync(mapping=mapping, sample_size=3)

    plan = {entry["record_id"]: entry for entry in run.plan}
    assert len(plan) == 3
    assert sorted(entry["action"] for entry in plan.values()) == ["create", "failed", "update"]
    failed = next(e for e in plan.values() if e["action"] == "failed")
    assert "last_name" in failed["errors"][0]
    update = next(e for e in plan.values() if e["action"] == "update")
    assert update["changes"] == {"first_name": {"current": "Old", "new": "First3"}}
    assert len(records(mapping.target_connection)) == 1
    assert not RecordLink.objects.exists() and not RecordError.objects.exists()
    mapping.refresh_from_db()
    assert mapping.source_cursor == ""


def test_a_test_sync_can_write_just_its_sample(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(10)])

    run = mapping_test_sync(mapping=mapping, sample_size=4, write=True)

    assert run.created == 4
    assert len(records(mapping.target_connection)) == 4
    mapping.refresh_from_db()
    assert mapping.source_cursor == ""


# 9. error groups


def test_errors_are_grouped_by_fingerprint(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts",
                 [person(1, last_name=""), person(2, last_name=""), person(3, email="bad")])
    run_mapping(mapping)

    groups = list(error_groups(organization=mapping.organization))

    assert [(g["field"], g["count"]) for g in groups] == [("last_name", 2), ("email", 1)]
    assert groups[0]["first_seen"] <= groups[0]["last_seen"]


def test_a_group_retry_tries_one_record_first_and_then_the_rest(make_mapping, execute_queued):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(n, last_name="") for n in range(1, 5)])
    run_mapping(mapping)
    fingerprint = record_errors().first().fingerprint
    # The operator fixes the mapping once: a default for the empty required field, with auto-fix.
    FieldMapping.objects.filter(mapping=mapping, target_field="last_name").update(default_value="Unknown")
    type(mapping).objects.filter(pk=mapping.pk).update(auto_fix=True)

    with execute_queued():
        summary = error_group_retry(organization=mapping.organization, fingerprint=fingerprint)

    assert summary["queued"] == 1 and summary["remaining"] == 3
    retry_runs = list(SyncRun.objects.filter(trigger=Trigger.RETRY).order_by("pk"))
    assert [len(r.options["errors"]) for r in retry_runs] == [1, 3]
    assert len(records(mapping.target_connection)) == 4
    assert not record_errors(fingerprint=fingerprint).exclude(status=ErrorStatus.RESOLVED).exists()


def test_a_group_retry_whose_first_record_fails_stops_there(make_mapping, execute_queued):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(n, last_name="") for n in range(1, 4)])
    run_mapping(mapping)

    with execute_queued():
        error_group_retry(organization=mapping.organization,
                                   fingerprint=record_errors().first().fingerprint)

    assert SyncRun.objects.filter(trigger=Trigger.RETRY).count() == 1


# 10. auto-


def test_an_auth_error_pauses_the_connection_until_it_is_reconnected(make_mapping, make_connection):
    target = make_connection("Expired", faults={"expired_credentials": True})
    mapping = make_mapping(target=target)
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    target.refresh_from_db()
    assert target.status == ConnectionStatus.NEEDS_REAUTH
    assert "expired" in target.status_reason.lower()

    from syncs.tasks import run_scheduled_mapping

    run_scheduled_mapping(mapping.pk)
    assert not SyncRun.objects.filter(trigger=Trigger.SCHEDULE).exists()

    with pytest.raises(ConnectorError):
        connection_reconnect(connection=target)  # still expired
    set_faults(target)
    connection_reconnect(connection=target, credentials={"api_key": "sk_new_key"})
    target.refresh_from_db()
    assert (target.status, target.status_reason) == (ConnectionStatus.ACTIVE, "")
    assert target.credentials == {"api_key": "sk_new_key"}
    run_scheduled_mapping(mapping.pk)
    assert SyncRun.objects.filter(trigger=Trigger.SCHEDULE).count() == 1


def test_a_call_refused_with_credentials_replaced_since_does_not_undo_a_reconnect(make_connection):
    """A batch under way during a reconnect fails with the old key after the new one is saved: that says nothing
    about the new key, so the connection stays active (otherwise every retry waits for a second reconnect)."""
    target = make_connection("Expired", faults={"expired_credentials": True})
    in_flight = Connection.objects.get(pk=target.pk)  # what the running batch loaded, with the old key
    refused = ConnectorError(ErrorCategory.AUTH, "Token has expired", code="expired")
    assert connection_needs_reauth(connection=in_flight, error=refused)
    set_faults(target)
    connection_reconnect(connection=Connection.objects.get(pk=target.pk), credentials={"api_key": "sk_new_key"})

    assert not connection_needs_reauth(connection=in_flight, error=refused)
    target.refresh_from_db()
    assert (target.status, target.status_reason) == (ConnectionStatus.ACTIVE, "")
    # The new key refused is news: the connection needs a person again.
    assert connection_needs_reauth(connection=target, error=refused)
    target.refresh_from_db()
    assert target.status == ConnectionStatus.NEEDS_REAUTH


def test_n_consecutive_failed_runs_pause_a_mapping_and_say_why(make_mapping, make_connection):
    source = make_connection("Shop", faults={"fail_pages": [1]})
    mapping = make_mapping(source=source, pause_after_failed_runs=3)
    seed_records(source, "contacts", [person(1)])

    for _ in range(3):
        assert mapping.is_active
        run_mapping(mapping)

    assert not mapping.is_active
    assert "3 failed runs in a row" in mapping.paused_reason
    mapping_resume(mapping=mapping)
    assert mapping.is_active and mapping.paused_reason == ""


def test_a_success_between_failures_resets_the_count(make_mapping, make_connection):
    source = make_connection("Shop", faults={"fail_pages": [1]})
    mapping = make_mapping(source=source, pause_after_failed_runs=2)
    seed_records(source, "contacts", [person(1)])
    run_mapping(mapping)
    set_faults(source)
    run_mapping(mapping, options={"full": True})
    set_faults(source, fail_pages=[1])

    run_mapping(mapping, options={"full": True})

    assert mapping.is_active


@pytest.mark.django_db(transaction=True)
def test_two_operators_retrying_overlapping_sets_at_the_same_moment_process_each_error_once(
    make_mapping, failing_target
):
    import threading

    from django.db import connection as default_connection

    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(20)])
    run_mapping(mapping)
    set_faults(failing_target)
    ids = list(record_errors().order_by("pk").values_list("pk", flat=True))
    barrier, summaries = threading.Barrier(2), []

    def operator(error_ids):
        try:
            barrier.wait()
            summaries.append(errors_retry(organization=mapping.organization, error_ids=error_ids))
        finally:
            default_connection.close()

    threads = [threading.Thread(target=operator, args=(chosen,)) for chosen in (ids[:14], ids[6:])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(summary["queued"] for summary in summaries) == 20
    runs = SyncRun.objects.filter(trigger=Trigger.RETRY)
    retried = [error_id for run in runs for error_id in run.options["errors"]]
    assert sorted(retried) == ids  # every error in exactly one replay run
    assert len(records(failing_target)) == 20  # and every record written once
    assert not record_errors().exclude(status=ErrorStatus.RESOLVED).exists()


def test_a_test_sync_against_an_unreachable_target_reports_it_and_stores_no_error(make_mapping, make_connection):
    target = make_connection("Expired", faults={"expired_credentials": True})
    mapping = make_mapping(target=target)
    seed_records(mapping.source_connection, "contacts", [person(1)])

    run = mapping_test_sync(mapping=mapping)

    assert run.status == RunStatus.FAILED
    assert run.plan[0]["category"] == "auth"
    assert not RecordError.objects.exists()


def test_retrying_the_failures_of_the_original_run_takes_up_where_its_failed_retry_left_off(
    make_mapping, failing_target, execute_queued
):
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])
    root = run_mapping(mapping)
    with execute_queued():
        child = sync_run_retry_failures(run=root)
    child.refresh_from_db()
    assert child.status == RunStatus.PARTIALLY_FAILED
    set_faults(failing_target)

    with execute_queued():
        again = sync_run_retry_failures(run=root)

    assert again.options["errors"] == [record_errors(run=child).get().pk]
    root.refresh_from_db()
    assert root.status == RunStatus.RECOVERED
