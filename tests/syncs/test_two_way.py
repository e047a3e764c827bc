"""Two-way mappings: the four conflict policies, and no echo of Resync's own writes."""

import pytest
import time_machine

from integrations.connectors.sandbox import change_record, seed_records
from syncs.models import ErrorLevel, ErrorStatus, RecordError, RecordLink, RunStatus
from tests.syncs.helpers import person, records, run_mapping

pytestmark = pytest.mark.django_db


@pytest.fixture
def synced_pair(make_mapping):
    """A two-way mapping whose one record has been synced once, at a fixed time."""

    def make(policy):
        mapping = make_mapping(direction="two_way", conflict_policy=policy)
        with time_machine.travel("2026-11-01 10:00:00+00:00"):
            (row,) = seed_records(mapping.source_connection, "contacts", [person(1)])
            run_mapping(mapping)
        link = RecordLink.objects.get(mapping=mapping)
        return mapping, row.external_id, link.target_record_id

    return make


def first_names(mapping):
    source = records(mapping.source_connection)[0].data["first_name"]
    target = records(mapping.target_connection)[0].data["first_name"]
    return source, target


def test_the_first_two_way_run_writes_each_record_once_and_does_not_echo_it_back(make_mapping):
    mapping = make_mapping(direction="two_way")
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])

    run = run_mapping(mapping)

    assert run.status == RunStatus.SUCCEEDED
    # Forward: 2 created. Reverse: the 2 records Resync just wrote are recognised as its own echo.
    assert (run.created, run.updated, run.unchanged) == (2, 0, 2)
    assert len(records(mapping.source_connection)) == 2


def test_a_change_in_the_target_flows_back_to_the_source_and_stops_there(synced_pair):
    mapping, _source_id, target_id = synced_pair("source_wins")
    with time_machine.travel("2026-11-01 11:00:00+00:00"):
        change_record(mapping.target_connection, "contacts", target_id, {"first_name": "FromTarget"})
        run = run_mapping(mapping)
    assert first_names(mapping) == ("FromTarget", "FromTarget")
    assert run.updated == 1

    # The source write is not carried back to the target as a "new" change: no ping-pong.
    with time_machine.travel("2026-11-01 12:00:00+00:00"):
        again = run_mapping(mapping, options={"full": True})
    assert (again.updated, again.created) == (0, 0)


def test_a_target_record_created_outside_resync_is_created_in_the_source(make_mapping):
    mapping = make_mapping(direction="two_way")
    seed_records(mapping.target_connection, "contacts", [person(7)])

    run = run_mapping(mapping)

    assert run.created == 1
    assert [r.data["email"] for r in records(mapping.source_connection)] == ["person7@example.com"]


def both_changed(mapping, source_id, target_id, *, source_at, target_at):
    with time_machine.travel(source_at):
        change_record(mapping.source_connection, "contacts", source_id, {"first_name": "SourceEdit"})
    with time_machine.travel(target_at):
        change_record(mapping.target_connection, "contacts", target_id, {"first_name": "TargetEdit"})


def test_source_wins_overwrites_the_target_in_a_conflict(synced_pair):
    mapping, source_id, target_id = synced_pair("source_wins")
    both_changed(mapping, source_id, target_id, source_at="2026-11-02", target_at="2026-11-03")

    run_mapping(mapping)

    assert first_names(mapping) == ("SourceEdit", "SourceEdit")


def test_target_wins_overwrites_the_source_in_a_conflict(synced_pair):
    mapping, source_id, target_id = synced_pair("target_wins")
    both_changed(mapping, source_id, target_id, source_at="2026-11-03", target_at="2026-11-02")

    run_mapping(mapping)

    assert first_names(mapping) == ("TargetEdit", "TargetEdit")


@pytest.mark.parametrize(
    ("source_at", "target_at", "winner"),
    [("2026-11-03", "2026-11-02", "SourceEdit"), ("2026-11-02", "2026-11-03", "TargetEdit")],
)
def test_newest_wins_keeps_the_later_edit(synced_pair, source_at, target_at, winner):
    mapping, source_id, target_id = synced_pair("newest_wins")
    both_changed(mapping, source_id, target_id, source_at=source_at, target_at=target_at)

    run_mapping(mapping)

    assert first_names(mapping) == (winner, winner)


def test_manual_policy_writes_neither_side_and_queues_a_conflict_for_review(synced_pair):
    mapping, source_id, target_id = synced_pair("manual")
    both_changed(mapping, source_id, target_id, source_at="2026-11-02", target_at="2026-11-03")

    run = run_mapping(mapping)

    assert first_names(mapping) == ("SourceEdit", "TargetEdit")
    conflict = RecordError.objects.get(level=ErrorLevel.RECORD)
    assert conflict.category == "conflict"
    assert conflict.status == ErrorStatus.IN_REVIEW
    assert run.status == RunStatus.PARTIALLY_FAILED


def test_every_record_of_the_reverse_pass_keeps_its_own_status(make_mapping):
    # Two records created in the target that the source refuses (no last name): neither has a source id yet,
    # and each must keep its own link and per-target status, so "re-sync unsynced" still sees both.
    mapping = make_mapping(direction="two_way")
    seed_records(mapping.target_connection, "contacts", [person(1, last_name=""), person(2, last_name="")],
                 ids=["ct_new1", "ct_new2"])

    run = run_mapping(mapping)

    assert run.failed == 2
    links = RecordLink.objects.filter(mapping=mapping).order_by("target_record_id")
    assert [(link.source_record_id, link.target_record_id, link.status) for link in links] == [
        ("", "ct_new1", "failed"), ("", "ct_new2", "failed")]
    errors = RecordError.objects.filter(level=ErrorLevel.RECORD, direction="reverse")
    assert sorted(errors.values_list("source_record_id", flat=True)) == ["ct_new1", "ct_new2"]
