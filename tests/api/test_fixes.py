"""/api/v1/error-groups/{fingerprint}/suggestions/ and .../apply/: an error group's suggested fixes with what they
would change, applied through the mapping service and followed by a group retry; problems as problem JSON."""

import pytest
from rest_framework.test import APIClient

from accounts.models import TokenRole
from integrations.connectors.sandbox import seed_records
from mappings.models import FieldMapping
from syncs.models import ErrorGroupRetry, ErrorStatus, RecordError, SyncRun
from tests.api.test_foundation import assert_problem
from tests.syncs.helpers import person, records, run_mapping

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_api(make_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(role=TokenRole.VIEWER)}")
    return client


@pytest.fixture
def phone_fingerprint(make_mapping):
    """Two contacts whose punctuated phones the target refuses (it wants E.164)."""
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1, phone="(415) 555-0101"),
                                                         person(2, phone="415.555.0102")])
    run_mapping(mapping)
    return RecordError.objects.get(pk=RecordError.objects.order_by("-pk").first().pk).fingerprint


@pytest.fixture
def missing_fingerprint(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1, last_name=""), person(2, last_name="")])
    run_mapping(mapping)
    return RecordError.objects.order_by("-pk").first().fingerprint


def phone_transforms():
    return FieldMapping.objects.get(target_field="phone").transforms


def test_a_groups_suggestions_say_what_they_would_change(api, phone_fingerprint):
    response = api.get(f"/api/v1/error-groups/{phone_fingerprint}/suggestions/")

    assert response.status_code == 200, response.content
    (suggestion,) = response.json()
    assert suggestion["kind"] == "add_phone_e164"
    assert suggestion["title"] and "E.164" in suggestion["explanation"]
    assert suggestion["params"] == []
    assert suggestion["changes"] == [{
        "subject": "field_mapping", "label": "phone → phone", "changed": ["transforms"],
        "before": {"source_field": "phone", "target_field": "phone", "transforms": [{"name": "trim"}],
                   "reverse_transforms": [], "required": False, "default_value": None, "skip_invalid": False},
        "after": {"source_field": "phone", "target_field": "phone",
                  "transforms": [{"name": "trim"}, {"name": "phone_e164", "args": {}}],
                  "reverse_transforms": [], "required": False, "default_value": None, "skip_invalid": False},
    }]


def test_applying_a_fix_changes_the_mapping_and_retries_the_group_first_record_first(
    api, phone_fingerprint, execute_queued
):
    with execute_queued():
        response = api.post(f"/api/v1/error-groups/{phone_fingerprint}/apply/", {"kind": "add_phone_e164"},
                            format="json")

    assert response.status_code == 202, response.content
    answer = response.json()
    group_retry = ErrorGroupRetry.objects.get()
    probe = group_retry.probe_error
    assert answer["kind"] == "add_phone_e164" and answer["changed"] is True
    assert answer["changes"][0]["after"]["transforms"][-1] == {"name": "phone_e164", "args": {}}
    assert answer["mapping"]["id"] == str(probe.mapping.code)
    assert answer["retry"]["queued"] == 1 and answer["retry"]["remaining"] == 1
    assert answer["retry"]["probe_error"] == str(probe.code)
    assert answer["retry"]["runs"] == [str(SyncRun.objects.filter(trigger="retry").order_by("pk").first().code)]
    assert answer["retry_refused"] == ""
    assert phone_transforms() == [{"name": "trim"}, {"name": "phone_e164", "args": {}}]
    # The probe synced, then the rest: the group is gone from the open groups.
    assert sorted(r.data["phone"] for r in records(probe.mapping.target_connection)) == ["+14155550101",
                                                                                         "+14155550102"]
    assert api.get("/api/v1/error-groups/").json()["results"] == []


def test_a_double_click_applies_once(api, phone_fingerprint):
    url = f"/api/v1/error-groups/{phone_fingerprint}/apply/"

    first = api.post(url, {"kind": "add_phone_e164"}, format="json")
    second = api.post(url, {"kind": "add_phone_e164", "params": {}}, format="json")

    assert first.status_code == 202, first.content
    assert second.status_code == 200, second.content
    assert second.json()["changed"] is False and second.json()["changes"] == []
    assert second.json()["retry"] is None and "already waiting" in second.json()["retry_refused"]
    assert phone_transforms() == [{"name": "trim"}, {"name": "phone_e164", "args": {}}]


def test_a_default_is_given_as_a_parameter_and_checked(api, missing_fingerprint, execute_queued):
    url = f"/api/v1/error-groups/{missing_fingerprint}/apply/"
    suggestions = api.get(f"/api/v1/error-groups/{missing_fingerprint}/suggestions/").json()
    assert [s["kind"] for s in suggestions] == ["set_default", "filter_out_missing"]
    assert suggestions[0]["params"][0]["name"] == "value" and suggestions[0]["params"][0]["suggested"] is None

    missing = assert_problem(api.post(url, {"kind": "set_default"}, format="json"), 400, "validation_error")
    assert "params.value" in missing["errors"]
    too_long = assert_problem(api.post(url, {"kind": "set_default", "params": {"value": "x" * 41}}, format="json"),
                              400)
    assert "allows 40" in too_long["errors"]["params.value"][0]
    unknown = assert_problem(api.post(url, {"kind": "set_default", "params": {"valeu": "Unknown"}}, format="json"),
                             400)
    assert "Unknown parameter valeu" in unknown["errors"]["params"][0]
    assert FieldMapping.objects.get(target_field="last_name").default_value is None

    with execute_queued():
        response = api.post(url, {"kind": "set_default", "params": {"value": "Unknown"}}, format="json")

    assert response.status_code == 202, response.content
    assert FieldMapping.objects.get(target_field="last_name").default_value == "Unknown"
    assert not RecordError.objects.filter(fingerprint=missing_fingerprint).exclude(
        status=ErrorStatus.RESOLVED).exists()


def test_bad_requests_answer_problem_json(api, phone_fingerprint):
    url = f"/api/v1/error-groups/{phone_fingerprint}/apply/"

    unknown_kind = assert_problem(api.post(url, {"kind": "reboot"}, format="json"), 400, "validation_error")
    assert "kind" in unknown_kind["errors"]
    unknown_field = assert_problem(api.post(url, {"kind": "add_phone_e164", "force": True}, format="json"), 400)
    assert unknown_field["errors"] == {"force": ["Unknown field."]}
    assert_problem(api.post(url, {"kind": "add_phone_e164", "params": "x"}, format="json"), 400)
    other_cause = assert_problem(api.post(url, {"kind": "add_truncate"}, format="json"), 409, "not_applicable")
    assert "does not fix validation errors with code invalid_phone" in other_cause["detail"]
    assert_problem(api.post(f"/api/v1/error-groups/{'0' * 40}/apply/", {"kind": "add_phone_e164"}, format="json"),
                   404)
    assert_problem(api.get(f"/api/v1/error-groups/{'0' * 40}/suggestions/"), 404)
    assert phone_transforms() == [{"name": "trim"}]
    assert not ErrorGroupRetry.objects.exists()


def test_the_mapping_service_refusing_the_change_answers_400_keyed_by_field(api, phone_fingerprint):
    from mappings.models import Mapping

    Mapping.objects.update(retry_schedule=[])  # a broken setting the service refuses to save

    body = assert_problem(api.post(f"/api/v1/error-groups/{phone_fingerprint}/apply/", {"kind": "add_phone_e164"},
                                   format="json"), 400, "validation_error")

    assert "retry_schedule" in body["errors"]
    assert phone_transforms() == [{"name": "trim"}]


def test_another_organizations_group_answers_404_like_a_missing_one(other_api, phone_fingerprint):
    foreign = assert_problem(other_api.get(f"/api/v1/error-groups/{phone_fingerprint}/suggestions/"), 404)
    missing = assert_problem(other_api.get(f"/api/v1/error-groups/{'0' * 40}/suggestions/"), 404)
    assert foreign["detail"].replace(phone_fingerprint, "") == missing["detail"].replace("0" * 40, "")

    assert_problem(other_api.post(f"/api/v1/error-groups/{phone_fingerprint}/apply/", {"kind": "add_phone_e164"},
                                  format="json"), 404)
    assert phone_transforms() == [{"name": "trim"}]


def test_a_viewer_reads_suggestions_but_cannot_apply_them(viewer_api, phone_fingerprint):
    assert viewer_api.get(f"/api/v1/error-groups/{phone_fingerprint}/suggestions/").status_code == 200

    assert_problem(viewer_api.post(f"/api/v1/error-groups/{phone_fingerprint}/apply/", {"kind": "add_phone_e164"},
                                   format="json"), 403)
    assert phone_transforms() == [{"name": "trim"}]


def test_the_schema_documents_both_operations(api):
    schema = api.get("/api/v1/schema/?format=json").json()
    paths = schema["paths"]

    apply = paths["/api/v1/error-groups/{fingerprint}/apply/"]["post"]
    assert set(apply["responses"]) >= {"200", "202"}
    body = apply["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][body]["properties"]) == {"kind", "params"}
    suggestions = paths["/api/v1/error-groups/{fingerprint}/suggestions/"]["get"]
    assert suggestions["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
