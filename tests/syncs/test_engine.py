"""The sync engine end to end against sandbox systems: lifecycle, matching, idempotency and classification."""

import pytest
import time_machine

from integrations.connectors.sandbox import change_record, seed_records
from integrations.models import ConnectionStatus
from mappings.models import FieldMapping, LoggingLevel
from syncs.chains import sync_run_retry_failures
from syncs.engine import RunExecutor, sync_run_claim, sync_run_execute
from syncs.engine.passes import build_passes
from syncs.models import (
    BatchStatus,
    ErrorLevel,
    ErrorStatus,
    LinkStatus,
    RecordError,
    RecordLink,
    RunStatus,
    SyncBatch,
)
from syncs.services import sync_run_queue
from tests.syncs.helpers import person, records, run_mapping

pytestmark = pytest.mark.django_db


def test_a_clean_run_creates_every_record_and_links_it(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(5)])

    run = run_mapping(mapping)

    assert run.status == RunStatus.SUCCEEDED
    assert (run.read, run.created, run.failed) == (5, 5, 0)
    created = records(mapping.target_connection)
    assert sorted(r.data["email"] for r in created) == [f"person{n}@example.com" for n in range(5)]
    links = RecordLink.objects.filter(mapping=mapping)
    assert links.count() == 5
    assert set(links.values_list("status", flat=True)) == {LinkStatus.SYNCED}
    assert set(links.values_list("target_record_id", flat=True)) == {r.external_id for r in created}


def test_records_are_read_page_by_page_into_batches_with_their_page_tokens(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(7)])

    run = run_mapping(mapping, options={"page_size": 3})

    batches = list(SyncBatch.objects.filter(run=run).order_by("sequence"))
    assert [b.record_count for b in batches] == [3, 3, 1]
    # The first page starts the read; each later one is fetched again by its token (a failed page can be).
    assert batches[0].page_token == "" and all(b.page_token for b in batches[1:])
    assert [b.next_page_token for b in batches[:-1]] == [b.page_token for b in batches[1:]]
    assert run.created == 7


def test_the_same_mapping_run_twice_creates_no_duplicate(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(4)])
    run_mapping(mapping)

    second = run_mapping(mapping, options={"full": True})

    assert second.status == RunStatus.SUCCEEDED
    assert (second.read, second.created, second.updated, second.unchanged) == (4, 0, 0, 4)
    assert len(records(mapping.target_connection)) == 4


def test_a_batch_processed_twice_creates_no_duplicate(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(3)])
    run = run_mapping(mapping)
    # As if a killed worker's batch were delivered again: process the very same page once more.
    page = mapping.source_connection.get_connector().read_page("contacts")
    executor = RunExecutor(run)
    sync_pass = build_passes(executor.run)[0]
    batch = SyncBatch.objects.create(organization=run.organization, run=run, sequence=99)

    executor.process_batch(sync_pass, batch, page.records)

    assert len(records(mapping.target_connection)) == 3
    assert batch.counts["unchanged"] == 3


def test_a_record_linked_by_an_earlier_run_whose_link_was_lost_is_matched_not_created_again(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    RecordLink.objects.filter(mapping=mapping).delete()

    run = run_mapping(mapping, options={"full": True})

    assert len(records(mapping.target_connection)) == 1
    assert run.updated == 1 and run.created == 0


def test_a_changed_source_record_updates_its_target_record(make_mapping):
    mapping = make_mapping()
    (source_row,) = seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)

    with time_machine.travel("2099-01-01"):
        change_record(mapping.source_connection, "contacts", source_row.external_id, {"first_name": "Renamed"})
        run = run_mapping(mapping)

    assert (run.read, run.updated, run.created) == (1, 1, 0)
    (target,) = records(mapping.target_connection)
    assert target.data["first_name"] == "Renamed"


def test_the_cursor_advances_only_when_a_run_leaves_nothing_behind(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1), person(2, last_name="")])

    failed_run = run_mapping(mapping)
    assert failed_run.status == RunStatus.PARTIALLY_FAILED
    assert mapping.source_cursor == ""
    assert mapping.last_successful_sync_at is None

    # The failing record was not skipped for good: the next run reads it again.
    rerun = run_mapping(mapping)
    assert rerun.read == 2 and rerun.failed == 1

    RecordError.objects.all().delete()
    bad = records(mapping.source_connection)[1]
    change_record(mapping.source_connection, "contacts", bad.external_id, {"last_name": "Fixed"})
    fixed_run = run_mapping(mapping)
    assert fixed_run.status == RunStatus.SUCCEEDED
    assert mapping.source_cursor and fixed_run.cursor_to == mapping.source_cursor
    assert run_mapping(mapping).read == 0


def test_a_record_fixed_at_the_source_resolves_its_open_error(make_mapping):
    mapping = make_mapping()
    (row,) = seed_records(mapping.source_connection, "contacts", [person(1, last_name="")])
    run_mapping(mapping)
    error = RecordError.objects.get(level=ErrorLevel.RECORD)

    change_record(mapping.source_connection, "contacts", row.external_id, {"last_name": "Fixed"})
    run_mapping(mapping)

    error.refresh_from_db()
    assert error.status == ErrorStatus.RESOLVED
    assert error.resolution == "fixed"
    assert error.resolved_at is not None


def test_filters_ignore_records_with_their_reason(make_mapping):
    mapping = make_mapping(filters=[{"field": "email", "op": "empty", "reason": "No email to match on"}])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2, email="")])

    run = run_mapping(mapping)

    assert (run.read, run.created, run.ignored, run.failed) == (2, 1, 1, 0)
    assert run.status == RunStatus.SUCCEEDED
    ignored = RecordError.objects.get(level=ErrorLevel.IGNORED)
    assert ignored.message == "No email to match on"
    assert ignored.status == ErrorStatus.IGNORED


def test_an_existing_target_record_with_the_same_match_key_is_linked_and_updated(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.target_connection, "contacts", [person(1, first_name="Old")])
    seed_records(mapping.source_connection, "contacts", [person(1, first_name="New")])

    run = run_mapping(mapping)

    assert (run.created, run.updated, run.failed) == (0, 1, 0)
    (target,) = records(mapping.target_connection)
    assert target.data["first_name"] == "New"


def test_a_duplicate_the_match_key_cannot_find_is_a_duplicate_error(make_mapping):
    # The target's email is unique case-insensitively, but the lookup by match key is exact.
    mapping = make_mapping()
    seed_records(mapping.target_connection, "contacts", [person(1, email="maria@example.com")])
    seed_records(mapping.source_connection, "contacts", [person(2, email="Maria@Example.com")])

    run = run_mapping(mapping)

    assert run.failed == 1
    error = RecordError.objects.get(level=ErrorLevel.RECORD)
    assert error.category == "duplicate"
    assert error.field == "email"
    assert error.snapshot_before["email"] == "Maria@Example.com"
    assert len(records(mapping.target_connection)) == 1


def test_two_source_records_with_the_same_email_sync_once_and_the_second_is_a_duplicate(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1), person(2, email="person1@example.com")])

    run = run_mapping(mapping)

    assert (run.created, run.failed) == (1, 1)
    assert RecordError.objects.get(level=ErrorLevel.RECORD).error_code == "duplicate_in_source"
    assert len(records(mapping.target_connection)) == 1


def test_an_update_of_a_record_deleted_in_the_target_recreates_it_when_create_if_missing(make_mapping):
    mapping = make_mapping()
    (row,) = seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    records(mapping.target_connection)[0].delete()
    change_record(mapping.source_connection, "contacts", row.external_id, {"first_name": "Changed"})

    run = run_mapping(mapping)

    assert (run.created, run.failed) == (1, 0)
    assert RecordLink.objects.get(mapping=mapping).target_record_id == records(mapping.target_connection)[0].external_id


def test_an_update_of_a_deleted_record_is_a_not_found_error_without_create_if_missing(make_mapping):
    mapping = make_mapping(create_if_missing=False)
    (row,) = seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    records(mapping.target_connection)[0].delete()
    change_record(mapping.source_connection, "contacts", row.external_id, {"first_name": "Changed"})

    run = run_mapping(mapping)

    assert run.failed == 1
    assert RecordError.objects.get(level=ErrorLevel.RECORD).category == "not_found"


def test_write_modes_ignore_what_they_may_not_write_with_a_reason(make_mapping):
    update_only = make_mapping(write_mode="update_only")
    seed_records(update_only.source_connection, "contacts", [person(1)])
    run = run_mapping(update_only)
    assert (run.created, run.ignored) == (0, 1)
    assert "Update-only" in RecordError.objects.get(level=ErrorLevel.IGNORED).message


def test_a_failed_transform_is_a_mapping_error_naming_the_field(make_mapping):
    mapping = make_mapping(transforms={"phone": [{"name": "phone_e164"}]})
    seed_records(mapping.source_connection, "contacts", [person(1, phone="call me maybe"), person(2)])

    run = run_mapping(mapping)

    assert (run.created, run.failed) == (1, 1)
    error = RecordError.objects.get(level=ErrorLevel.RECORD)
    assert (error.category, error.field, error.error_code) == ("mapping", "phone", "transform_failed")
    assert "call me maybe" in error.message


def test_skip_invalid_drops_the_field_with_a_warning_and_syncs_the_record(make_mapping):
    mapping = make_mapping(transforms={"phone": [{"name": "phone_e164"}]})
    FieldMapping.objects.filter(mapping=mapping, target_field="phone").update(skip_invalid=True)
    seed_records(mapping.source_connection, "contacts", [person(1, phone="call me maybe")])

    run = run_mapping(mapping)

    assert (run.created, run.warned, run.failed) == (1, 1, 0)
    assert "phone" not in records(mapping.target_connection)[0].data
    warning = RecordError.objects.get(level=ErrorLevel.WARNING)
    assert warning.status == ErrorStatus.RESOLVED


def test_auto_fix_truncates_and_records_a_warning(make_mapping):
    mapping = make_mapping(auto_fix=True, logging_level=LoggingLevel.ALL)
    seed_records(mapping.source_connection, "contacts", [person(1, first_name="A" * 60)])

    run = run_mapping(mapping)

    assert (run.created, run.warned) == (1, 1)
    assert records(mapping.target_connection)[0].data["first_name"] == "A" * 40
    warning = RecordError.objects.get(level=ErrorLevel.WARNING)
    assert warning.error_code == "truncated"
    assert warning.snapshot_after["first_name"] == "A" * 40


def test_validation_errors_name_the_field_and_keep_both_snapshots(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1, first_name="B" * 60, email="jane@")])

    run_mapping(mapping)

    errors = {e.field: e for e in RecordError.objects.filter(level=ErrorLevel.RECORD)}
    assert set(errors) == {"first_name", "email"}
    assert {e.category for e in errors.values()} == {"validation"}
    assert errors["first_name"].snapshot_before["first_name"] == "B" * 60
    assert errors["first_name"].snapshot_after == {
        "email": "jane@", "first_name": "B" * 60, "last_name": "Last1", "phone": "+14155550100"
    }


def test_logging_level_none_keeps_no_snapshots(make_mapping):
    mapping = make_mapping(logging_level=LoggingLevel.NONE)
    seed_records(mapping.source_connection, "contacts", [person(1, last_name="")])

    run_mapping(mapping)

    error = RecordError.objects.get(level=ErrorLevel.RECORD)
    assert error.snapshot_before is None and error.snapshot_after is None


def test_an_expired_credential_is_a_system_error_that_stops_the_run_and_flags_the_connection(
    make_mapping, make_connection
):
    target = make_connection("Expired CRM", faults={"expired_credentials": True})
    mapping = make_mapping(target=target)
    seed_records(mapping.source_connection, "contacts", [person(1)])

    run = run_mapping(mapping)

    assert run.status == RunStatus.FAILED
    assert run.read == 0
    error = RecordError.objects.get(level=ErrorLevel.SYSTEM)
    assert error.category == "auth"
    target.refresh_from_db()
    assert target.status == ConnectionStatus.NEEDS_REAUTH
    assert run.system_error


def test_a_page_that_fails_to_load_is_a_batch_error_and_its_retry_reads_on_to_the_end(
    make_mapping, make_connection, execute_queued
):
    source = make_connection("Flaky shop", faults={"fail_pages": [2]})
    mapping = make_mapping(source=source)
    seed_records(source, "contacts", [person(n) for n in range(6)])

    run = run_mapping(mapping, options={"page_size": 2})

    # Cursor paging cannot skip a page: the read stops at the one that failed, and says so.
    assert run.status == RunStatus.PARTIALLY_FAILED
    assert run.created == 2
    batches = list(SyncBatch.objects.filter(run=run).order_by("sequence"))
    assert [b.status for b in batches] == [BatchStatus.SUCCEEDED, BatchStatus.FAILED]
    assert batches[1].page_token
    batch_error = RecordError.objects.get(level=ErrorLevel.BATCH)
    assert batch_error.batch == batches[1]

    source.config = {}
    source.save()
    with execute_queued():
        child = sync_run_retry_failures(run=run)

    child.refresh_from_db()
    run.refresh_from_db()
    assert (child.read, child.created) == (4, 4)  # the failed page, then every page after it
    assert len(records(mapping.target_connection)) == 6
    assert run.status == RunStatus.RECOVERED


@pytest.mark.parametrize(
    ("faults", "category"),
    [
        ({"rate_limit_every": 1, "retry_after": 30}, "rate_limit"),
        ({"failure_rate": 1.0, "failure_kind": "503"}, "connection"),
        ({"failure_rate": 1.0, "failure_kind": "retry_later"}, "connection"),
        ({"failure_rate": 1.0, "failure_kind": "timeout"}, "timeout"),
        ({"failure_rate": 1.0, "failure_kind": "500"}, "unknown"),
        ({"permission_denied": True}, "permission"),
    ],
)
def test_a_failing_target_produces_classified_record_errors(make_mapping, make_connection, faults, category):
    target = make_connection("Faulty CRM", faults={"operations": ["write"], **faults})
    mapping = make_mapping(target=target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])

    run = run_mapping(mapping)

    errors = RecordError.objects.filter(run=run, level=ErrorLevel.RECORD)
    assert errors.count() == 2
    assert set(errors.values_list("category", flat=True)) == {category}
    assert all(e.snapshot_before and e.snapshot_after for e in errors)
    assert records(target) == []


def test_no_credential_ever_reaches_an_error_snapshot_or_detail(make_mapping, make_connection):
    target = make_connection("Expired", faults={"operations": ["write"], "failure_rate": 1.0, "failure_kind": "500"},
                             api_key="sk_live_canary_do_not_store")
    mapping = make_mapping(target=target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1, notes="my token=sk_live_canary_do_not_store")])

    run_mapping(mapping)

    for error in RecordError.objects.all():
        flattened = f"{error.message} {error.detail} {error.snapshot_before} {error.snapshot_after}"
        assert "sk_live_canary_do_not_store" not in flattened


def test_a_missing_field_in_the_target_schema_is_a_mapping_system_error(make_mapping):
    mapping = make_mapping()
    FieldMapping.objects.create(organization=mapping.organization, mapping=mapping, source_field="email",
                                target_field="no_such_field", position=9)
    seed_records(mapping.source_connection, "contacts", [person(1)])

    run = run_mapping(mapping)

    assert run.status == RunStatus.FAILED
    error = RecordError.objects.get(level=ErrorLevel.SYSTEM)
    assert (error.category, error.field) == ("mapping", "no_such_field")


def test_a_run_is_claimed_once(make_mapping):
    mapping = make_mapping()
    run = sync_run_queue(mapping=mapping, enqueue=False)

    assert sync_run_claim(run_id=run.pk) is not None
    assert sync_run_claim(run_id=run.pk) is None
    assert sync_run_execute(run_id=run.pk) is None


def test_a_run_whose_worker_died_is_taken_over_and_finishes_without_duplicates(make_mapping, settings):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(6)])
    run = sync_run_queue(mapping=mapping, enqueue=False, options={"page_size": 2})
    claimed = sync_run_claim(run_id=run.pk)
    # The first worker got through one batch, then died without finishing the run.
    executor = RunExecutor(claimed)
    sync_pass = build_passes(executor.run)[0]
    page = sync_pass.near.read_page("contacts", page_size=2)
    batch = SyncBatch.objects.create(organization=run.organization, run=run, sequence=1, page_token="",
                                     next_page_token=page.next_token, status=BatchStatus.RUNNING)
    executor.process_batch(sync_pass, batch, page.records)

    with time_machine.travel(run.heartbeat_at if run.heartbeat_at else "2099-01-01", tick=False) as clock:
        clock.shift(settings.RESYNC_HEARTBEAT_STALE_SECONDS + 1)
        taken_over = sync_run_execute(run_id=run.pk)

    assert taken_over is not None
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.claims == 2
    assert (run.read, run.created) == (6, 6)
    assert len(records(mapping.target_connection)) == 6


def test_one_organization_never_sees_anothers_links_or_errors(make_mapping, other_org):
    mine = make_mapping()
    theirs = make_mapping(organization=other_org)
    seed_records(mine.source_connection, "contacts", [person(1, last_name="")])
    seed_records(theirs.source_connection, "contacts", [person(1, last_name="")])
    run_mapping(mine)
    run_mapping(theirs)

    assert set(RecordError.objects.for_org(mine.organization).values_list("mapping", flat=True)) == {mine.pk}
    assert set(RecordLink.objects.for_org(other_org).values_list("mapping", flat=True)) == {theirs.pk}
    with pytest.raises(ValueError):
        RecordError.objects.for_org(None)


def test_runs_of_one_mapping_never_overlap_and_a_waiting_run_starts_when_the_first_ends(
    make_mapping, django_capture_on_commit_callbacks
):
    mapping = make_mapping()
    (row,) = seed_records(mapping.source_connection, "contacts", [person(1)])
    first = sync_run_queue(mapping=mapping, enqueue=False)
    claimed = sync_run_claim(run_id=first.pk)
    resync = sync_run_queue(mapping=mapping, enqueue=False, options={"records": [row.external_id]})

    assert sync_run_execute(run_id=resync.pk) is None  # the mapping is busy: the re-sync waits, still queued

    with django_capture_on_commit_callbacks(execute=True):
        RunExecutor(claimed).execute()  # the first run ends and hands the waiting run to a worker

    resync.refresh_from_db()
    assert (resync.status, resync.read, resync.claims) == (RunStatus.SUCCEEDED, 1, 1)
    assert len(records(mapping.target_connection)) == 1


def test_a_dry_test_run_neither_waits_for_nor_holds_up_the_mappings_real_runs(make_mapping):
    from syncs.previews import mapping_test_sync

    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1)])
    real = sync_run_queue(mapping=mapping, enqueue=False)
    assert sync_run_claim(run_id=real.pk) is not None  # a real run is under way

    test_run = mapping_test_sync(mapping=mapping, sample_size=5)

    assert test_run.status == RunStatus.SUCCEEDED
    assert [entry["action"] for entry in test_run.plan] == ["create"]


def test_records_sharing_a_timestamp_across_pages_and_runs_are_all_synced(make_mapping):
    # A cursor kept as a timestamp compared with ">" would skip the records stored after the first run at the
    # very same instant: the connector's keyset cursor (modified_at, sequence) does not.
    mapping = make_mapping()
    with time_machine.travel("2026-11-22 12:00:00+00:00", tick=False):
        seed_records(mapping.source_connection, "contacts", [person(n) for n in range(5)])
        first = run_mapping(mapping, options={"page_size": 2})
        seed_records(mapping.source_connection, "contacts", [person(n) for n in range(5, 8)])
        second = run_mapping(mapping, options={"page_size": 2})

    assert (first.read, first.created, second.read, second.created) == (5, 5, 3, 3)
    assert len(records(mapping.target_connection)) == 8
