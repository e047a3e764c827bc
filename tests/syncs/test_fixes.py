"""Suggested fixes of error groups (syncs.fixes): each cause's fix, worked out from real runs against the sandbox,
applied through mapping_update, and the group retried until it recovers. Tasks run inline (tests/conftest.py)."""

import pytest
from django.core.exceptions import ValidationError

from integrations.connectors.sandbox import seed_records
from mappings.models import FieldMapping, Mapping
from syncs.fixes import (
    KINDS,
    ErrorGroupNotFound,
    error_group_fix_apply,
    error_group_fixes,
    error_groups_fixes,
    group_cause,
    group_retries_progress,
)
from syncs.groups import error_groups
from syncs.models import ErrorGroupRetry, ErrorStatus, GroupRetryStatus, LinkStatus, RecordLink
from tests.syncs.helpers import person, record_errors, records, run_mapping

pytestmark = pytest.mark.django_db


def only_group(mapping):
    (group,) = error_groups(organization=mapping.organization)
    return group


def suggestions_of(mapping, fingerprint):
    return {s.kind: s for s in error_group_fixes(organization=mapping.organization, fingerprint=fingerprint)}


def field_mapping(mapping, target):
    return FieldMapping.objects.get(mapping=mapping, target_field=target)


def recovered(mapping, fingerprint, count):
    assert not record_errors(fingerprint=fingerprint).exclude(status=ErrorStatus.RESOLVED).exists()
    assert RecordLink.objects.filter(mapping=mapping, status=LinkStatus.SYNCED).count() == count
    (progress,) = group_retries_progress(organization=mapping.organization)
    assert progress.state == "recovered"
    return True


@pytest.fixture
def phone_group(make_mapping):
    """Three contacts whose phones are punctuated; the target wants E.164."""
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts",
                 [person(n, phone=f"(415) 555-01{n:02d}") for n in range(1, 4)])
    run_mapping(mapping)
    return mapping, only_group(mapping)


# --- add_phone_e164 --------------------------------------------------------------------------------------------


def test_invalid_phones_suggest_phone_e164_with_the_field_mapping_before_and_after(phone_group):
    mapping, group = phone_group
    assert (group["category"], group["error_code"], group["field"], group["count"]) == (
        "validation", "invalid_phone", "phone", 3)

    (suggestion,) = suggestions_of(mapping, group["fingerprint"]).values()

    assert suggestion.kind == "add_phone_e164" and suggestion.params == ()
    (change,) = suggestion.changes
    assert change.subject == "field_mapping" and change.label == "phone → phone"
    assert change.before["transforms"] == [{"name": "trim"}]
    assert change.after["transforms"] == [{"name": "trim"}, {"name": "phone_e164", "args": {}}]
    assert change.changed == ("transforms",)
    assert "US numbers" in suggestion.explanation


def test_applying_phone_e164_changes_the_mapping_and_the_group_recovers(phone_group, execute_queued, alice,
                                                                         caplog):
    mapping, group = phone_group
    fingerprint = group["fingerprint"]

    with execute_queued(), caplog.at_level("INFO", logger="resync.sync"):
        result = error_group_fix_apply(organization=mapping.organization, fingerprint=fingerprint,
                                       kind="add_phone_e164", user=alice)

    # Who applied what, as one event line.
    (event,) = [r.fields for r in caplog.records if getattr(r, "event", "") == "error_group_fix_applied"]
    assert (event["applied_by"], event["kind"], event["changed"]) == ("alice", "add_phone_e164", True)
    assert event["changes"][0]["after"]["transforms"][-1] == {"name": "phone_e164", "args": {}}

    assert result["changed"] and result["retry"]["queued"] == 1 and result["retry"]["remaining"] == 2
    assert field_mapping(mapping, "phone").transforms == [{"name": "trim"}, {"name": "phone_e164", "args": {}}]
    assert sorted(r.data["phone"] for r in records(mapping.target_connection)) == [
        "+14155550101", "+14155550102", "+14155550103"]
    assert recovered(mapping, fingerprint, 3)
    assert ErrorGroupRetry.objects.get().status == GroupRetryStatus.RETRIED
    # Nothing is left to suggest: the transform is there.
    assert suggestions_of(mapping, fingerprint) == {}


def test_a_second_apply_does_not_stack_a_second_transform(phone_group, execute_queued):
    mapping, group = phone_group
    apply = {"organization": mapping.organization, "fingerprint": group["fingerprint"], "kind": "add_phone_e164"}
    # The first apply's retry waits for a worker (not run here): the second comes while it is probing.
    first = error_group_fix_apply(**apply)
    second = error_group_fix_apply(**apply)

    assert first["changed"] and not second["changed"] and second["changes"] == []
    assert second["retry"] is None
    assert "already waiting for its first record" in second["retry_refused"]
    assert field_mapping(mapping, "phone").transforms == [{"name": "trim"}, {"name": "phone_e164", "args": {}}]
    assert ErrorGroupRetry.objects.count() == 1


def test_a_phone_field_that_already_has_phone_e164_gets_no_such_suggestion(make_mapping):
    mapping = make_mapping(transforms={"phone": [{"name": "phone_e164", "args": {}}]})
    seed_records(mapping.source_connection, "contacts", [person(1, phone="not a phone")])
    run_mapping(mapping)
    group = only_group(mapping)

    assert group["error_code"] == "transform_failed"
    assert suggestions_of(mapping, group["fingerprint"]) == {}
    with pytest.raises(ValidationError) as refused:
        error_group_fix_apply(organization=mapping.organization, fingerprint=group["fingerprint"],
                              kind="add_phone_e164")
    assert refused.value.code == "not_applicable"


def test_phone_e164_goes_before_a_truncate(make_mapping):
    mapping = make_mapping(transforms={"phone": [{"name": "trim"}, {"name": "truncate", "args": {"length": 20}}]})
    seed_records(mapping.source_connection, "contacts", [person(1, phone="415 555 0100")])
    run_mapping(mapping)

    (suggestion,) = suggestions_of(mapping, only_group(mapping)["fingerprint"]).values()

    assert [spec["name"] for spec in suggestion.changes[0].after["transforms"]] == ["trim", "phone_e164", "truncate"]


# --- add_truncate ----------------------------------------------------------------------------------------------


def test_too_long_values_are_truncated_to_the_limit_of_the_targets_schema(make_mapping, execute_queued):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(n, first_name="A" * 50 + str(n)) for n in (1, 2)])
    run_mapping(mapping)
    group = only_group(mapping)
    assert (group["error_code"], group["field"]) == ("too_long", "first_name")

    (suggestion,) = suggestions_of(mapping, group["fingerprint"]).values()
    assert suggestion.kind == "add_truncate"
    assert suggestion.changes[0].after["transforms"] == [{"name": "trim"}, {"name": "truncate", "args": {"length": 40}}]
    assert "at most 40 characters" in suggestion.explanation

    with execute_queued():
        error_group_fix_apply(organization=mapping.organization, fingerprint=group["fingerprint"],
                              kind="add_truncate")

    assert {r.data["first_name"] for r in records(mapping.target_connection)} == {"A" * 40}
    assert recovered(mapping, group["fingerprint"], 2)


def test_a_truncate_longer_than_the_limit_is_shortened_not_doubled(make_mapping):
    mapping = make_mapping(transforms={"first_name": [{"name": "truncate", "args": {"length": 60}}]})
    seed_records(mapping.source_connection, "contacts", [person(1, first_name="B" * 55)])
    run_mapping(mapping)
    fingerprint = only_group(mapping)["fingerprint"]

    error_group_fix_apply(organization=mapping.organization, fingerprint=fingerprint, kind="add_truncate")

    assert field_mapping(mapping, "first_name").transforms == [{"name": "truncate", "args": {"length": 40}}]
    again = error_group_fix_apply(organization=mapping.organization, fingerprint=fingerprint, kind="add_truncate")
    assert not again["changed"]


def test_the_limit_comes_from_the_errors_words_when_the_schema_does_not_say(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1, first_name="C" * 45)])
    run_mapping(mapping)
    # The target's own answer ("…; the maximum is 40"), with no length in the cached schema.
    target = mapping.target_connection
    target.refresh_from_db()
    target.schema_cache["schemas"]["contacts"]["fields"]["first_name"]["max_length"] = None
    target.save(update_fields=["schema_cache"])
    record_errors().update(message="'first_name' is 45 characters long; the maximum is 40")

    (suggestion,) = suggestions_of(mapping, only_group(mapping)["fingerprint"]).values()

    assert suggestion.changes[0].after["transforms"][-1] == {"name": "truncate", "args": {"length": 40}}


# --- set_default and filter_out_missing ------------------------------------------------------------------------


@pytest.fixture
def missing_group(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts",
                 [person(1, last_name=""), person(2, last_name=None), person(3, last_name="  ")])
    run_mapping(mapping)
    return mapping, only_group(mapping)


def test_a_missing_required_value_suggests_a_default_or_a_filter(missing_group):
    mapping, group = missing_group
    assert (group["error_code"], group["field"], group["count"]) == ("required_missing", "last_name", 3)

    suggestions = suggestions_of(mapping, group["fingerprint"])

    assert list(suggestions) == ["set_default", "filter_out_missing"]
    default = suggestions["set_default"]
    assert [param.name for param in default.params] == ["value"]
    assert default.changes[0].changed == ("default_value",)
    assert default.changes[0].after["default_value"] is None  # the operator's to choose
    (change,) = suggestions["filter_out_missing"].changes
    assert change.subject == "mapping" and change.before == {"filters": []}
    assert change.after == {"filters": [{"field": "last_name", "op": "empty",
                                         "reason": "No last_name: Contacts requires last_name"}]}


def test_a_default_needs_a_value_and_is_checked_like_the_field(missing_group, make_mapping):
    mapping, group = missing_group
    apply = {"organization": mapping.organization, "fingerprint": group["fingerprint"], "kind": "set_default"}
    for params, message in (({}, "Give the value"), ({"value": "  "}, "Give the value"),
                            ({"value": "x" * 41}, "the target allows 40"),
                            ({"value": "Unknown", "colour": "red"}, "Unknown parameter colour")):
        with pytest.raises(ValidationError) as refused:
            error_group_fix_apply(**apply, params=params)
        assert message in str(refused.value.message_dict), params
    assert field_mapping(mapping, "last_name").default_value is None
    assert not ErrorGroupRetry.objects.exists()


def test_an_email_default_must_be_an_email_address(make_mapping):
    mapping = make_mapping(fields=("first_name", "last_name"), match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    group = only_group(mapping)
    assert (group["error_code"], group["field"]) == ("required_missing", "email")
    # No field mapping writes email: the default comes with one.
    (suggestion,) = suggestions_of(mapping, group["fingerprint"]).values()
    assert suggestion.kind == "set_default" and suggestion.changes[0].before is None

    with pytest.raises(ValidationError) as refused:
        error_group_fix_apply(organization=mapping.organization, fingerprint=group["fingerprint"],
                              kind="set_default", params={"value": "nobody"})
    assert "not a valid email address" in refused.value.message_dict["params.value"][0]

    error_group_fix_apply(organization=mapping.organization, fingerprint=group["fingerprint"], kind="set_default",
                          params={"value": "unknown@example.com"})
    added = field_mapping(mapping, "email")
    assert (added.source_field, added.default_value) == ("", "unknown@example.com")


def test_applying_a_default_fills_the_records_and_the_group_recovers(missing_group, execute_queued):
    mapping, group = missing_group

    with execute_queued():
        result = error_group_fix_apply(organization=mapping.organization, fingerprint=group["fingerprint"],
                                       kind="set_default", params={"value": "Unknown"})

    assert result["changed"]
    assert field_mapping(mapping, "last_name").default_value == "Unknown"
    assert {r.data["last_name"] for r in records(mapping.target_connection)} == {"Unknown"}
    assert recovered(mapping, group["fingerprint"], 3)
    again = error_group_fix_apply(organization=mapping.organization, fingerprint=group["fingerprint"],
                                  kind="set_default", params={"value": "Unknown"})
    assert not again["changed"] and again["retry"] is None and "nothing left to retry" in again["retry_refused"]


def test_filtering_out_the_records_ignores_them_and_the_group_is_settled(missing_group, execute_queued):
    mapping, group = missing_group

    with execute_queued():
        error_group_fix_apply(organization=mapping.organization, fingerprint=group["fingerprint"],
                              kind="filter_out_missing")

    mapping.refresh_from_db()
    assert mapping.filters == [{"field": "last_name", "op": "empty",
                                "reason": "No last_name: Contacts requires last_name"}]
    assert records(mapping.target_connection) == []
    # Each record was read again and ignored by the filter: its error is closed as ignored, with the reason.
    closed = record_errors(fingerprint=group["fingerprint"])
    assert {(e.status, e.resolution_note) for e in closed} == {
        (ErrorStatus.IGNORED, "No last_name: Contacts requires last_name")}
    assert RecordLink.objects.filter(mapping=mapping, status=LinkStatus.IGNORED).count() == 3
    assert ErrorGroupRetry.objects.get().status == GroupRetryStatus.RETRIED
    (progress,) = group_retries_progress(organization=mapping.organization)
    assert progress.state == "recovered", progress


# --- match_and_upsert ------------------------------------------------------------------------------------------


def test_a_duplicate_in_the_target_is_matched_on_its_key_and_updated(make_mapping, execute_queued):
    mapping = make_mapping(match_keys=[], write_mode="create_only")
    seed_records(mapping.target_connection, "contacts", [person(1, first_name="Old"), person(2, first_name="Old")])
    seed_records(mapping.source_connection, "contacts", [person(1, first_name="New"), person(2, first_name="New")])
    run_mapping(mapping)
    group = only_group(mapping)
    assert (group["category"], group["error_code"], group["field"]) == ("duplicate", "DUPLICATE_VALUE", "email")

    (suggestion,) = suggestions_of(mapping, group["fingerprint"]).values()
    assert suggestion.kind == "match_and_upsert"
    (change,) = suggestion.changes
    assert change.before == {"match_keys": [], "write_mode": "create_only"}
    assert change.after == {"match_keys": [{"source": "email", "target": "email"}], "write_mode": "upsert"}

    with execute_queued():
        error_group_fix_apply(organization=mapping.organization, fingerprint=group["fingerprint"],
                              kind="match_and_upsert")

    mapping.refresh_from_db()
    assert (mapping.match_keys, mapping.write_mode) == ([{"source": "email", "target": "email"}], "upsert")
    assert [r.data["first_name"] for r in records(mapping.target_connection)] == ["New", "New"]
    assert recovered(mapping, group["fingerprint"], 2)


def test_a_duplicate_within_the_source_gets_no_match_suggestion(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1), person(1, first_name="Twin")])
    run_mapping(mapping)
    group = only_group(mapping)

    assert group["error_code"] == "duplicate_in_source"
    assert suggestions_of(mapping, group["fingerprint"]) == {}


# --- refresh_schema_and_remap ----------------------------------------------------------------------------------


@pytest.fixture
def stale_field_group(make_mapping):
    """The target's cached schema still lists `mobile`, which the target no longer has: every write fails."""
    mapping = make_mapping(fields=("email", "first_name", "last_name"))
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])
    target = mapping.target_connection
    target.schema_cache = {"schemas": {"contacts": {"name": "contacts", "label": "Contacts", "fields": {
        "email": {"name": "email", "type": "email", "required": True, "unique": True, "max_length": 100},
        "last_name": {"name": "last_name", "required": True, "max_length": 40},
        "first_name": {"name": "first_name", "max_length": 40},
        "mobile": {"name": "mobile", "type": "phone", "max_length": 20},
        "phone": {"name": "phone", "type": "phone", "max_length": 20, "format": "e164"},
    }}}}
    target.save(update_fields=["schema_cache"])
    FieldMapping.objects.create(organization=mapping.organization, mapping=mapping, source_field="phone",
                                target_field="mobile", position=9)
    run_mapping(mapping)
    return mapping, only_group(mapping)


def test_a_field_the_target_lost_is_remapped_after_a_schema_refresh(stale_field_group, execute_queued):
    mapping, group = stale_field_group
    assert (group["error_code"], group["field"]) == ("UNKNOWN_FIELD", "mobile")

    (suggestion,) = suggestions_of(mapping, group["fingerprint"]).values()
    assert suggestion.kind == "refresh_schema_and_remap"
    (param,) = suggestion.params
    assert param.name == "field" and "phone" in param.choices and "email" not in param.choices
    assert "still lists it" in suggestion.explanation

    with pytest.raises(ValidationError) as refused:
        error_group_fix_apply(organization=mapping.organization, fingerprint=group["fingerprint"],
                              kind="refresh_schema_and_remap", params={"field": "mobile"})
    assert "mobile does not exist in Contacts as just described" in refused.value.message_dict["params.field"][0]
    mapping.target_connection.refresh_from_db()
    assert "mobile" not in mapping.target_connection.schema_cache["schemas"]["contacts"]["fields"]

    with execute_queued():
        result = error_group_fix_apply(organization=mapping.organization, fingerprint=group["fingerprint"],
                                       kind="refresh_schema_and_remap", params={"field": "phone"})

    assert result["changes"][0].before["target_field"] == "mobile"
    assert field_mapping(mapping, "phone").source_field == "phone"
    assert not FieldMapping.objects.filter(mapping=mapping, target_field="mobile").exists()
    assert {r.data["phone"] for r in records(mapping.target_connection)} == {"+14155550100"}
    assert recovered(mapping, group["fingerprint"], 2)


# --- what every fix shares -------------------------------------------------------------------------------------


def test_an_unknown_kind_or_a_fix_for_another_cause_is_refused(phone_group):
    mapping, group = phone_group
    apply = {"organization": mapping.organization, "fingerprint": group["fingerprint"]}

    with pytest.raises(ValidationError) as unknown:
        error_group_fix_apply(**apply, kind="reboot")
    assert "Unknown fix" in unknown.value.message_dict["kind"][0]
    with pytest.raises(ValidationError) as other:
        error_group_fix_apply(**apply, kind="add_truncate")
    assert other.value.code == "not_applicable"
    assert not ErrorGroupRetry.objects.exists()
    assert set(KINDS) == {"add_phone_e164", "add_truncate", "set_default", "filter_out_missing",
                          "match_and_upsert", "refresh_schema_and_remap"}


def test_the_mapping_service_refusing_the_change_is_a_validation_error(phone_group):
    mapping, group = phone_group
    # A broken setting elsewhere in the mapping: mapping_update checks everything, and says what is wrong.
    Mapping.objects.filter(pk=mapping.pk).update(retry_schedule=[])

    with pytest.raises(ValidationError) as refused:
        error_group_fix_apply(organization=mapping.organization, fingerprint=group["fingerprint"],
                              kind="add_phone_e164")

    assert "retry_schedule" in refused.value.message_dict
    assert field_mapping(mapping, "phone").transforms == [{"name": "trim"}]
    assert not ErrorGroupRetry.objects.exists()


def test_another_organizations_group_is_not_found(phone_group, other_org):
    mapping, group = phone_group

    with pytest.raises(ErrorGroupNotFound):
        group_cause(organization=other_org, fingerprint=group["fingerprint"])
    with pytest.raises(ErrorGroupNotFound):
        error_group_fix_apply(organization=other_org, fingerprint=group["fingerprint"], kind="add_phone_e164")
    assert field_mapping(mapping, "phone").transforms == [{"name": "trim"}]


def test_a_page_of_groups_is_read_in_a_fixed_number_of_queries(make_mapping, django_assert_max_num_queries):
    for _ in range(4):
        mapping = make_mapping()
        seed_records(mapping.source_connection, "contacts", [person(1, phone="415 555 0100")])
        run_mapping(mapping)
    groups = list(error_groups(organization=mapping.organization))

    # mappings with their connections, their field mappings, the samples
    with django_assert_max_num_queries(3):
        fixes = error_groups_fixes(organization=mapping.organization, groups=groups)

    assert {kind for suggestions in fixes.values() for kind in (s.kind for s in suggestions)} == {"add_phone_e164"}
    assert len(fixes) == 4
