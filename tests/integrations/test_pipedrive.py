"""The Pipedrive connector (API v2) against recorded request and answer shapes: what it sends, what it makes of
the answers, its errors, limits, token refresh and webhooks."""

import base64
import json
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from integrations.connectors.base import (
    FieldType,
    WebhookChange,
    WebhookPayloadError,
    WebhookSignatureError,
    WriteAction,
    WriteOperation,
)
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import Connection, ConnectionStatus
from integrations.services import connection_check
from integrations.webhooks import webhook_endpoint_create, webhook_receive

pytestmark = pytest.mark.django_db

API = "https://acme.pipedrive.com"
PERSONS = f"{API}/api/v2/persons"
SEARCH = f"{API}/api/v2/persons/search"
TOKEN_URL = "https://oauth.pipedrive.com/oauth/token"
# A canary: it must never show up in a message or a detail.
API_TOKEN = "pd-token-canary-7c1e9a"
CUSTOM = "dcf558aac1ae4e8c4f849ba5e668430d8df9be12"  # a custom field's 40-character key
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class SleepRecorder:
    def __init__(self):
        self.delays = []

    def __call__(self, seconds):
        self.delays.append(seconds)


@pytest.fixture(autouse=True)
def _offline(settings):
    settings.RESYNC_ALLOW_PRIVATE_URLS = True  # no DNS here: the guard would resolve acme.pipedrive.com
    settings.RESYNC_HTTP_RETRY_DELAYS = []


@pytest.fixture
def make_connection(org):
    def make(*, credentials=None, **config):
        config.setdefault("company_domain", "acme")
        connection = Connection(organization=org, name=f"Pipedrive {Connection.objects.count()}",
                                provider="pipedrive", config=config)
        connection.credentials = credentials or {"api_token": API_TOKEN}
        connection.save()
        return connection

    return make


@pytest.fixture
def pipedrive(make_connection):
    connector = make_connection().get_connector()
    connector.sleep = SleepRecorder()
    return connector


def person(person_id, updated, *, name="Ada Lovelace", email="ada@example.org", custom="gold", **extra):
    return {
        "id": person_id, "name": name, "owner_id": 1, "org_id": 7,
        "emails": [{"value": "ada@home.example", "primary": False, "label": "home"},
                   {"value": email, "primary": True, "label": "work"}],
        "phones": [{"value": "+44 20 7946 0018", "primary": True, "label": "work"}],
        "add_time": "2026-01-01T09:00:00Z", "update_time": updated,
        "custom_fields": {CUSTOM: custom}, **extra,
    }


def listing(*items, next_cursor=None):
    return {"success": True, "data": list(items), "additional_data": {"next_cursor": next_cursor}}


def envelope(error, **extra):
    return {"success": False, "error": error, "error_info": "Please check developers.pipedrive.com", "data": None,
            "additional_data": None, **extra}


def query(call):
    return {key: values[0] for key, values in parse_qs(urlsplit(call.request.url).query).items()}


def sent_json(call):
    return json.loads(call.request.body)


# -- connection settings and authentication ---------------------------------------------------------------------


@responses.activate
def test_it_sends_the_api_token_in_the_x_api_token_header(pipedrive):
    responses.get(f"{API}/api/v1/users/me", json={"success": True, "data": {"id": 1}})

    pipedrive.check()

    headers = responses.calls[0].request.headers
    assert headers["x-api-token"] == API_TOKEN
    assert "Authorization" not in headers
    assert API_TOKEN not in responses.calls[0].request.url  # v2 takes no api_token query parameter


@responses.activate
def test_it_sends_an_oauth_access_token_as_a_bearer_token(make_connection):
    connector = make_connection(credentials={"access_token": "at-1", "refresh_token": "rt-1"}).get_connector()
    responses.get(f"{API}/api/v1/users/me", json={"success": True, "data": {"id": 1}})

    connector.check()

    headers = responses.calls[0].request.headers
    assert headers["Authorization"] == "Bearer at-1"
    assert "x-api-token" not in headers


@responses.activate
def test_a_base_url_overrides_the_company_address(make_connection):
    connector = make_connection(base_url="https://pipedrive-proxy.example/").get_connector()
    responses.get("https://pipedrive-proxy.example/api/v2/persons", json=listing())

    connector.read_page("persons")

    assert responses.calls[0].request.url.startswith("https://pipedrive-proxy.example/api/v2/persons?")


@pytest.mark.parametrize(
    ("domain", "problem"),
    [("acme", False), ("acme.pipedrive.com", False), ("https://acme.pipedrive.com/", False),
     ("", True), ("evil.example/#", True), ("acme.pipedrive.com@169.254.169.254", True)],
)
def test_it_accepts_only_a_company_name_as_the_company_domain(domain, problem):
    from integrations.connectors.pipedrive import PipedriveConnector

    problems = PipedriveConnector.validate_config({"company_domain": domain})

    assert ("company_domain" in problems) is problem


def test_it_asks_for_an_api_token_or_oauth_credentials():
    from integrations.connectors.pipedrive import PipedriveConnector

    assert "api_token" in PipedriveConnector.validate_credentials({})
    assert PipedriveConnector.validate_credentials({"api_token": "t"}) == {}
    assert PipedriveConnector.validate_credentials({"refresh_token": "r", "client_id": "c"}) == {}


@responses.activate
def test_check_tells_a_wrong_token_from_a_wrong_company_domain(pipedrive):
    responses.get(f"{API}/api/v1/users/me", status=401,
                  json=envelope("unauthorized access", errorCode=401))

    with pytest.raises(ConnectorError) as wrong_token:
        pipedrive.check()

    responses.replace(responses.GET, f"{API}/api/v1/users/me", status=404, json=envelope("Not found"))
    with pytest.raises(ConnectorError) as wrong_domain:
        pipedrive.check()

    assert wrong_token.value.category == ErrorCategory.AUTH
    assert (wrong_domain.value.category, wrong_domain.value.code) == (ErrorCategory.CONNECTION, "company_not_found")
    assert wrong_domain.value.retryable is False


# -- schema discovery ---------------------------------------------------------------------------------------------


def field(key, name, field_type, **extra):
    return {"id": abs(hash(key)) % 10000, "key": key, "name": name, "field_type": field_type, "edit_flag": False,
            "mandatory_flag": False, "active_flag": True, **extra}


def test_it_lists_persons_organizations_and_deals(pipedrive):
    assert [summary.name for summary in pipedrive.list_objects()] == ["persons", "organizations", "deals"]


@responses.activate
def test_it_describes_persons_from_the_v1_field_endpoint(pipedrive):
    fields_url = f"{API}/api/v1/personFields"
    responses.get(fields_url, json={"success": True, "data": [
        field("id", "ID", "int"),
        field("name", "Name", "varchar", mandatory_flag=True),
        field("email", "Email", "varchar"),
        field("phone", "Phone", "phone"),
        field("org_id", "Organization", "org"),
        field("label", "Label", "enum"),
    ], "additional_data": {"pagination": {"start": 0, "limit": 500, "more_items_in_collection": True,
                                          "next_start": 6}}})
    responses.get(fields_url, json={"success": True, "data": [
        field("update_time", "Update time", "date"),
        field("open_deals_count", "Open deals", "int"),
        field(CUSTOM, "Tier", "varchar", edit_flag=True),
        field("b" * 40, "Deleted field", "varchar", edit_flag=True, active_flag=False),
        field("c" * 40, "Birthday", "date", edit_flag=True),
    ], "additional_data": {"pagination": {"start": 6, "limit": 500, "more_items_in_collection": False}}})

    schema = pipedrive.describe_object("persons")

    assert [query(call) for call in responses.calls] == [{"start": "0", "limit": "500"},
                                                        {"start": "6", "limit": "500"}]
    fields = schema.fields
    assert next(iter(fields)) == "id"
    assert (fields["id"].read_only, fields["id"].unique) == (True, True)
    assert fields["name"].required and fields["name"].max_length == 255
    assert fields["email"].type == FieldType.EMAIL
    assert fields["phone"].type == FieldType.PHONE
    assert fields["org_id"].type == FieldType.INTEGER
    assert "label_ids" in fields and "label" not in fields  # v2's name for it, as in the records
    assert fields["update_time"].read_only and fields["open_deals_count"].read_only
    assert (fields[CUSTOM].label, fields[CUSTOM].type, fields[CUSTOM].required) == ("Tier", FieldType.STRING, False)
    assert ("c" * 40) in fields and fields["c" * 40].format == "%Y-%m-%d"
    assert ("b" * 40) not in fields


@responses.activate
def test_deal_schemas_use_the_v2_names_and_require_a_title(pipedrive):
    responses.get(f"{API}/api/v1/dealFields", json={"success": True, "data": [
        field("title", "Title", "varchar"), field("user_id", "Owner", "user"), field("value", "Value", "monetary"),
        field("stage_id", "Stage", "stage", mandatory_flag={"enabled": True, "stage_ids": [3]}),
    ]})

    fields = pipedrive.describe_object("deals").fields

    assert fields["title"].required
    assert "owner_id" in fields and "user_id" not in fields
    assert fields["value"].type == FieldType.NUMBER
    assert not fields["stage_id"].required  # required in some stages only


def test_it_refuses_an_object_it_does_not_know(pipedrive):
    with pytest.raises(ConnectorError) as excinfo:
        pipedrive.describe_object("leads")

    assert (excinfo.value.category, excinfo.value.code) == (ErrorCategory.MAPPING, "object_not_found")


# -- reading ------------------------------------------------------------------------------------------------------


@responses.activate
def test_it_reads_every_page_in_update_time_order_following_the_cursor(pipedrive):
    responses.get(PERSONS, json=listing(person(1, "2026-01-01T10:00:00Z"), person(2, "2026-01-02T10:00:00Z"),
                                        next_cursor="eyJpZCI6Mn0"))
    responses.get(PERSONS, json=listing(person(3, "2026-01-03T10:00:00Z"), next_cursor="eyJpZCI6M30"))
    responses.get(PERSONS, json=listing(person(4, "2026-01-04T10:00:00.250Z")))

    pages, token = [], None
    while True:
        page = pipedrive.read_page("persons", page_token=token, page_size=2)
        pages.append(page)
        token = page.next_token
        if token is None:
            break

    assert [[record.id for record in page.records] for page in pages] == [["1", "2"], ["3"], ["4"]]
    sent = [query(call) for call in responses.calls]
    assert sent[0] == {"limit": "2", "sort_by": "update_time", "sort_direction": "asc"}
    assert [q.get("cursor") for q in sent] == [None, "eyJpZCI6Mn0", "eyJpZCI6M30"]
    assert all(len(page.next_token or "") < 2000 for page in pages)
    assert [page.cursor for page in pages] == ["2026-01-02T10:00:00Z", "2026-01-03T10:00:00Z",
                                               "2026-01-04T10:00:00Z"]


@responses.activate
def test_it_exposes_the_primary_email_and_phone_and_flattens_custom_fields(pipedrive):
    responses.get(PERSONS, json=listing(person(1, "2026-01-01T10:00:00Z", custom={"value": 2300, "currency": "EUR"},
                                               postal_address={"value": "1 Main St", "country": "UK"})))

    record = pipedrive.read_page("persons").records[0]

    assert record.id == "1" and "id" not in record.data
    assert record.data["email"] == "ada@example.org"  # the primary one, not the first
    assert record.data["phone"] == "+44 20 7946 0018"
    assert record.data[CUSTOM] == 2300
    assert record.data["postal_address"] == "1 Main St"
    assert "emails" not in record.data and "custom_fields" not in record.data
    assert record.modified_at == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


@responses.activate
def test_it_asks_for_at_most_500_records_a_page(pipedrive):
    responses.get(PERSONS, json=listing())

    page = pipedrive.read_page("persons", page_size=2000)

    assert query(responses.calls[0])["limit"] == "500"
    assert (page.records, page.next_token, page.cursor) == ([], None, None)


@responses.activate
def test_an_incremental_read_filters_from_the_cursor_inclusively_and_reads_the_boundary_record_again(pipedrive):
    boundary = "2026-01-02T10:00:00Z"
    responses.get(PERSONS, json=listing(person(1, "2026-01-01T10:00:00Z"), person(2, boundary)))
    first = pipedrive.read_page("persons")
    # Person 5 was saved in the same second as person 2, after the first read: the inclusive filter still has it.
    responses.replace(responses.GET, PERSONS, json=listing(person(2, boundary), person(5, boundary),
                                                           next_cursor="bmV4dA"))
    responses.add(responses.GET, PERSONS, json=listing(person(6, "2026-01-03T08:00:00Z")))

    second = pipedrive.read_page("persons", cursor=first.cursor)
    third = pipedrive.read_page("persons", page_token=second.next_token)  # the token alone carries the filter

    assert first.cursor == boundary
    assert query(responses.calls[1])["updated_since"] == boundary
    assert query(responses.calls[2])["updated_since"] == boundary  # the next page keeps the filter
    assert query(responses.calls[2])["cursor"] == "bmV4dA"
    assert [record.id for record in second.records] == ["2", "5"]
    assert third.cursor == "2026-01-03T08:00:00Z"


@responses.activate
def test_it_fetches_records_by_id_and_leaves_out_missing_ones(pipedrive):
    responses.get(PERSONS, json=listing(person(1, "2026-01-01T10:00:00Z"), person(3, "2026-01-01T10:00:00Z")))

    found = pipedrive.fetch("persons", ["1", "2", "3", "not-an-id"])

    assert query(responses.calls[0])["ids"] == "1,2,3"
    assert sorted(found) == ["1", "3"]
    assert found["3"].data["name"] == "Ada Lovelace"


# -- find ---------------------------------------------------------------------------------------------------------


def search_answer(*ids):
    return {"success": True, "data": {"items": [{"result_score": 1.0, "item": {"id": i, "type": "person"}}
                                                for i in ids]}, "additional_data": {"next_cursor": None}}


@responses.activate
def test_it_finds_persons_by_exact_email_with_one_search_per_value(pipedrive):
    responses.get(SEARCH, json=search_answer(1, 2))
    responses.get(SEARCH, json=search_answer())
    # Person 2 only has the term as a secondary address, in another case: still an exact match of an email.
    responses.get(PERSONS, json=listing(person(1, "2026-01-01T10:00:00Z"),
                                        person(2, "2026-01-01T10:00:00Z", email="other@example.org") | {
                                            "emails": [{"value": "other@example.org", "primary": True},
                                                       {"value": "ADA@example.org", "primary": False}]}))

    found = pipedrive.find("persons", "email", ["ada@example.org", "nobody@example.org"])

    searches = [query(call) for call in responses.calls[:2]]
    assert searches == [
        {"term": "ada@example.org", "fields": "email", "exact_match": "true", "limit": "500"},
        {"term": "nobody@example.org", "fields": "email", "exact_match": "true", "limit": "500"},
    ]
    assert query(responses.calls[2])["ids"] == "1,2"
    assert [record.id for record in found["ada@example.org"]] == ["1", "2"]
    assert found["nobody@example.org"] == []


@responses.activate
def test_it_finds_by_a_custom_field_and_keeps_only_exact_matches(pipedrive):
    responses.get(SEARCH, json=search_answer(1, 2))
    responses.get(PERSONS, json=listing(person(1, "2026-01-01T10:00:00Z", custom="gold"),
                                        person(2, "2026-01-01T10:00:00Z", custom="silver", job_title="gold")))

    found = pipedrive.find("persons", CUSTOM, ["gold"])

    assert query(responses.calls[0])["fields"] == "custom_fields"
    assert [record.id for record in found["gold"]] == ["1"]


def test_it_refuses_to_search_a_field_pipedrive_cannot_search(pipedrive):
    with pytest.raises(ConnectorError) as excinfo:
        pipedrive.find("deals", "value", [100])

    assert (excinfo.value.category, excinfo.value.code) == (ErrorCategory.MAPPING, "field_not_searchable")


# -- writing ------------------------------------------------------------------------------------------------------


def written(raw):
    return {"success": True, "data": raw}


@responses.activate
def test_a_batch_write_reports_each_operation_with_its_own_result(pipedrive):
    responses.post(PERSONS, json=written(person(101, "2026-02-01T10:00:00Z", email="new@example.org")))
    responses.patch(f"{PERSONS}/5", json=written(person(5, "2026-02-01T10:00:00Z")))
    responses.patch(f"{PERSONS}/404", status=404, json=envelope("Person not found"))
    responses.post(PERSONS, status=400, json=envelope("Validation failed: name: Required",
                                                      code="ERR_SCHEMA_VALIDATION_FAILED"))
    responses.get(SEARCH, json=search_answer(9))
    responses.get(PERSONS, json=listing(person(9, "2026-01-01T10:00:00Z", email="known@example.org")))
    responses.patch(f"{PERSONS}/9", json=written(person(9, "2026-02-01T10:00:00Z", email="known@example.org")))
    responses.get(SEARCH, json=search_answer())
    responses.post(PERSONS, json=written(person(102, "2026-02-01T10:00:00Z", email="fresh@example.org")))

    results = pipedrive.write("persons", [
        WriteOperation("a", WriteAction.CREATE, {"name": "New", "email": "new@example.org", CUSTOM: "gold"}),
        WriteOperation("b", WriteAction.UPDATE, {"phone": "+15550100"}, target_id="5"),
        WriteOperation("c", WriteAction.UPDATE, {"name": "Gone"}, target_id="404"),
        WriteOperation("d", WriteAction.CREATE, {"email": "nameless@example.org"}),
        WriteOperation("e", WriteAction.UPSERT, {"name": "Known", "email": "known@example.org"}, match_field="email"),
        WriteOperation("f", WriteAction.UPSERT, {"name": "Fresh", "email": "fresh@example.org"}, match_field="email"),
    ])

    assert [(r.ref, r.ok, r.action, r.target_id) for r in results] == [
        ("a", True, "create", "101"), ("b", True, "update", "5"), ("c", False, "update", None),
        ("d", False, "create", None), ("e", True, "update", "9"), ("f", True, "create", "102"),
    ]
    assert results[0].record["email"] == "new@example.org"
    assert (results[2].error.category, results[2].error.retryable) == (ErrorCategory.NOT_FOUND, False)
    assert (results[3].error.category, results[3].error.field) == (ErrorCategory.VALIDATION, "name")
    assert results[3].error.code == "ERR_SCHEMA_VALIDATION_FAILED"
    calls = [(call.request.method, urlsplit(call.request.url).path) for call in responses.calls]
    assert calls == [
        ("POST", "/api/v2/persons"), ("PATCH", "/api/v2/persons/5"), ("PATCH", "/api/v2/persons/404"),
        ("POST", "/api/v2/persons"), ("GET", "/api/v2/persons/search"), ("GET", "/api/v2/persons"),
        ("PATCH", "/api/v2/persons/9"), ("GET", "/api/v2/persons/search"), ("POST", "/api/v2/persons"),
    ]
    assert sent_json(responses.calls[0]) == {
        "name": "New", "emails": [{"value": "new@example.org", "primary": True, "label": "work"}],
        "custom_fields": {CUSTOM: "gold"},
    }
    assert sent_json(responses.calls[1]) == {"phones": [{"value": "+15550100", "primary": True, "label": "work"}]}
    assert query(responses.calls[4])["term"] == "known@example.org"


@responses.activate
def test_an_upsert_matching_several_persons_is_a_duplicate_and_writes_nothing(pipedrive):
    responses.get(SEARCH, json=search_answer(1, 2))
    responses.get(PERSONS, json=listing(person(1, "2026-01-01T10:00:00Z"), person(2, "2026-01-01T10:00:00Z")))

    [result] = pipedrive.write("persons", [
        WriteOperation("a", WriteAction.UPSERT, {"email": "ada@example.org"}, match_field="email"),
    ])

    assert (result.ok, result.error.category, result.error.code) == (False, ErrorCategory.DUPLICATE,
                                                                     "ambiguous_match")
    assert all(call.request.method == "GET" for call in responses.calls)


@responses.activate
def test_a_create_is_not_sent_again_after_a_500_but_an_update_is(pipedrive, settings):
    settings.RESYNC_HTTP_RETRY_DELAYS = [2, 4]
    responses.post(PERSONS, status=500, json=envelope("Internal server error"))
    responses.patch(f"{PERSONS}/5", status=500, json=envelope("Internal server error"))
    responses.patch(f"{PERSONS}/5", json=written(person(5, "2026-02-01T10:00:00Z")))

    create, update = pipedrive.write("persons", [
        WriteOperation("a", WriteAction.CREATE, {"name": "Ada"}),
        WriteOperation("b", WriteAction.UPDATE, {"name": "Ada"}, target_id="5"),
    ])

    assert (create.ok, create.error.category, create.error.may_have_applied) == (False, ErrorCategory.UNKNOWN, True)
    assert update.ok
    assert [call.request.method for call in responses.calls] == ["POST", "PATCH", "PATCH"]
    assert pipedrive.sleep.delays == [2]  # the update's one retry


@responses.activate
def test_a_write_whose_first_request_is_refused_for_auth_raises(pipedrive):
    responses.post(PERSONS, status=401, json=envelope("unauthorized access", errorCode=401))

    with pytest.raises(ConnectorError) as excinfo:
        pipedrive.write("persons", [WriteOperation("a", WriteAction.CREATE, {"name": "Ada"}),
                                    WriteOperation("b", WriteAction.CREATE, {"name": "Bob"})])

    assert excinfo.value.category == ErrorCategory.AUTH
    assert len(responses.calls) == 1


@responses.activate
def test_a_rate_limit_in_the_middle_of_a_batch_leaves_the_rest_unsent(pipedrive):
    responses.post(PERSONS, json=written(person(101, "2026-02-01T10:00:00Z")))
    responses.post(PERSONS, status=429, headers={"x-ratelimit-reset": "2"}, json=envelope("Too many requests"))

    results = pipedrive.write("persons", [WriteOperation(ref, WriteAction.CREATE, {"name": ref}) for ref in "abcd"])

    assert [(r.ref, r.ok) for r in results] == [("a", True), ("b", False), ("c", False), ("d", False)]
    assert {r.error.category for r in results[1:]} == {ErrorCategory.RATE_LIMIT}
    assert all(r.error.retryable and r.error.retry_after == 2 for r in results[1:])
    assert len(responses.calls) == 2


# -- errors -------------------------------------------------------------------------------------------------------


HTML_BLOCK = "<!DOCTYPE html><html><head><title>Access denied</title></head><body>Blocked</body></html>"


@pytest.mark.parametrize(
    ("status", "body", "category", "retryable", "code"),
    [
        (400, envelope("Bad request"), ErrorCategory.VALIDATION, False, "http_400"),
        (401, envelope("unauthorized access", errorCode=401), ErrorCategory.AUTH, False, "http_401"),
        (402, envelope("Payment required"), ErrorCategory.PERMISSION, False, "payment_required"),
        (403, envelope("You have reached the limit of open deals",
                       code="feature_capping_deals_limit"), ErrorCategory.PERMISSION, False,
         "feature_capping_deals_limit"),
        (403, envelope("Forbidden"), ErrorCategory.PERMISSION, False, "http_403"),
        (403, HTML_BLOCK, ErrorCategory.RATE_LIMIT, True, "rate_limit_block"),
        (404, envelope("Item not found"), ErrorCategory.NOT_FOUND, False, "http_404"),
        (410, envelope("Gone"), ErrorCategory.NOT_FOUND, False, "http_410"),
        (422, envelope("Unprocessable entity"), ErrorCategory.VALIDATION, False, "http_422"),
        (429, envelope("Too many requests"), ErrorCategory.RATE_LIMIT, True, "http_429"),
        (500, envelope("Internal server error"), ErrorCategory.UNKNOWN, True, "http_500"),
        (503, envelope("Scheduled maintenance"), ErrorCategory.CONNECTION, True, "http_503"),
    ],
)
@responses.activate
def test_each_documented_error_lands_in_its_category(pipedrive, status, body, category, retryable, code):
    if isinstance(body, dict):
        responses.get(PERSONS, status=status, json=body)
    else:
        responses.get(PERSONS, status=status, body=body, content_type="text/html")

    with pytest.raises(ConnectorError) as excinfo:
        pipedrive.read_page("persons")

    error = excinfo.value
    assert (error.category, error.retryable, error.code) == (category, retryable, code)
    if isinstance(body, dict):
        assert body["error"] in error.message  # Pipedrive's own words, not a bare status
    if category == ErrorCategory.RATE_LIMIT:
        assert error.retry_after and error.retry_after > 0


@responses.activate
def test_a_429_waits_as_long_as_retry_after_or_the_window_reset_says(pipedrive):
    responses.get(PERSONS, status=429, headers={"Retry-After": "7"}, json=envelope("Too many requests"))
    with pytest.raises(ConnectorError) as with_header:
        pipedrive.read_page("persons")
    responses.replace(responses.GET, PERSONS, status=429, headers={"x-ratelimit-reset": "1.2"},
                      json=envelope("Too many requests"))
    with pytest.raises(ConnectorError) as with_reset:
        pipedrive.read_page("persons")

    assert with_header.value.retry_after == 7
    assert with_reset.value.retry_after == 2


@responses.activate
def test_error_messages_never_contain_the_api_token(pipedrive):
    responses.get(PERSONS, status=400, json=envelope(f"Invalid token {API_TOKEN} for this company"))

    with pytest.raises(ConnectorError) as excinfo:
        pipedrive.read_page("persons")

    assert API_TOKEN not in excinfo.value.message
    assert API_TOKEN not in excinfo.value.detail


# -- rate limits --------------------------------------------------------------------------------------------------


@responses.activate
def test_it_waits_for_the_window_to_reset_when_the_last_answer_left_no_requests(pipedrive):
    responses.get(PERSONS, json=listing(), headers={"x-ratelimit-limit": "80", "x-ratelimit-remaining": "0",
                                                    "x-ratelimit-reset": "2"})
    responses.get(PERSONS, json=listing(), headers={"x-ratelimit-limit": "80", "x-ratelimit-remaining": "79",
                                                    "x-ratelimit-reset": "2"})

    pipedrive.read_page("persons")
    assert pipedrive.sleep.delays == []
    pipedrive.read_page("persons")
    pipedrive.read_page("persons")

    assert pipedrive.sleep.delays == [2]  # before the second request only
    assert len(responses.calls) == 3


@responses.activate
def test_it_stops_calling_once_the_daily_budget_is_used_up(pipedrive):
    responses.get(PERSONS, json=listing(), headers={"x-ratelimit-remaining": "50", "x-daily-requests-left": "0"})
    pipedrive.read_page("persons")

    with pytest.raises(ConnectorError) as excinfo:
        pipedrive.read_page("persons")

    assert (excinfo.value.category, excinfo.value.code) == (ErrorCategory.RATE_LIMIT, "daily_budget_exhausted")
    assert excinfo.value.retryable and excinfo.value.retry_after >= 60
    assert len(responses.calls) == 1


# -- OAuth2 -------------------------------------------------------------------------------------------------------


OAUTH = {"access_token": "at-old", "refresh_token": "rt-old", "client_id": "cid", "client_secret": "csecret"}


def token_answer(**extra):
    return {"access_token": "at-new", "token_type": "Bearer", "expires_in": 3599, "refresh_token": "rt-new",
            "scope": "base,contacts:full", "api_domain": "https://acme-eu.pipedrive.com", **extra}


@responses.activate
def test_it_refreshes_an_expired_token_once(make_connection):
    connection = make_connection(credentials={**OAUTH, "expires_at": int(time.time()) - 10})
    connector = connection.get_connector()
    responses.post(TOKEN_URL, json=token_answer())
    responses.get("https://acme-eu.pipedrive.com/api/v2/persons", json=listing())

    connector.read_page("persons")
    connector.read_page("persons")

    token_calls = [call for call in responses.calls if call.request.url == TOKEN_URL]
    assert len(token_calls) == 1
    refresh = token_calls[0].request
    assert refresh.headers["Authorization"] == "Basic " + base64.b64encode(b"cid:csecret").decode()
    assert parse_qs(refresh.body) == {"grant_type": ["refresh_token"], "refresh_token": ["rt-old"]}
    api_calls = [call for call in responses.calls if call.request.url != TOKEN_URL]
    assert [call.request.headers["Authorization"] for call in api_calls] == ["Bearer at-new", "Bearer at-new"]
    row = Connection.objects.get(pk=connection.pk)
    stored = row.credentials
    assert (stored["access_token"], stored["refresh_token"]) == ("at-new", "rt-new")
    assert stored["api_domain"] == "https://acme-eu.pipedrive.com"
    assert stored["expires_at"] > time.time() + 3000
    assert "at-new" not in row.credentials_ciphertext and "rt-new" not in row.credentials_ciphertext


@responses.activate
def test_a_401_refreshes_once_and_a_second_401_right_after_is_raised(make_connection):
    connector = make_connection(credentials=OAUTH).get_connector()
    responses.get(PERSONS, status=401, json=envelope("unauthorized access", errorCode=401))
    responses.post(TOKEN_URL, json=token_answer(api_domain=None))

    with pytest.raises(ConnectorError) as excinfo:
        connector.read_page("persons")

    assert excinfo.value.category == ErrorCategory.AUTH
    assert [call.request.url == TOKEN_URL for call in responses.calls] == [False, True, False]
    assert responses.calls[2].request.headers["Authorization"] == "Bearer at-new"


@responses.activate
def test_a_refused_refresh_is_an_auth_error_and_the_connection_needs_reauth(make_connection):
    connection = make_connection(credentials={**OAUTH, "expires_at": int(time.time()) - 10})
    responses.post(TOKEN_URL, status=400, json={"success": False, "message": "Invalid grant: refresh token is invalid",
                                                "error": "invalid_grant"})

    with pytest.raises(ConnectorError) as excinfo:
        connection.get_connector().read_page("persons")
    error = connection_check(connection=connection)

    assert (excinfo.value.category, excinfo.value.code) == (ErrorCategory.AUTH, "refresh_failed")
    assert (error.category, error.code) == (ErrorCategory.AUTH, "refresh_failed")
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    assert not any(call.request.url.startswith(API) for call in responses.calls)


# -- webhooks -----------------------------------------------------------------------------------------------------


WEBHOOK_SECRET = "resync:hook-password-canary"


def basic(credentials):
    return {"authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def event(entity="person", action="change", entity_id="42", *, attempt=1, event_id="9e7c31a2-5d1b-4c8e-a0f4",
          timestamp="2026-11-22T11:59:58.123Z"):
    meta = {"action": action, "entity": entity, "entity_id": entity_id, "company_id": "77", "correlation_id": "c-1",
            "timestamp": timestamp, "type": "general", "user_id": "5", "version": "2.0", "webhook_id": "12",
            "change_source": "app", "attempt": attempt}
    if event_id:
        meta["id"] = event_id
    return {"data": {"id": int(entity_id), "name": "Ada"} if action != "delete" else None,
            "previous": {"name": "Ada L."}, "meta": meta}


def verify(connector, headers, *, secrets=(WEBHOOK_SECRET,)):
    raw = json.dumps(event()).encode()
    connector.verify_webhook(secrets=list(secrets), method="POST", url="https://resync.example/hooks/x/",
                             headers=headers, raw_body=raw, now=NOW)


def test_it_accepts_a_webhook_with_the_endpoints_basic_credentials(pipedrive):
    verify(pipedrive, basic(WEBHOOK_SECRET))
    # During a rotation the older secret, second in the list, still works.
    verify(pipedrive, basic(WEBHOOK_SECRET), secrets=("resync:the-new-password", WEBHOOK_SECRET))


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "signature_missing"),
        (basic("resync:wrong-password"), "signature_invalid"),
        (basic("intruder:hook-password-canary"), "signature_invalid"),
        ({"authorization": "Bearer " + WEBHOOK_SECRET}, "signature_invalid"),
        ({"authorization": "Basic not base64!"}, "signature_invalid"),
    ],
)
def test_it_refuses_a_webhook_without_the_right_credentials(pipedrive, headers, code):
    with pytest.raises(WebhookSignatureError) as excinfo:
        verify(pipedrive, headers)

    assert excinfo.value.code == code
    assert "hook-password-canary" not in excinfo.value.message


def test_a_late_retry_is_not_refused_as_stale_because_nothing_signs_a_timestamp(pipedrive):
    # Pipedrive retries after 3, 30 and 150 s; Basic credentials are identical on every delivery, so a
    # timestamp check would add no protection, only lost events.
    raw = json.dumps(event(attempt=4, timestamp="2026-11-22T08:00:00Z")).encode()

    pipedrive.verify_webhook(secrets=[WEBHOOK_SECRET], method="POST", url="https://resync.example/hooks/x/",
                             headers=basic(WEBHOOK_SECRET), raw_body=raw, now=NOW)


def test_every_redelivery_of_an_event_has_the_same_event_id(pipedrive):
    ids = {pipedrive.webhook_event_id(headers={}, payload=event(attempt=n)) for n in (1, 2, 3)}
    digests = {pipedrive.webhook_event_id(headers={}, payload=event(attempt=n, event_id=None)) for n in (1, 2, 3)}
    other = pipedrive.webhook_event_id(headers={}, payload=event(action="delete", event_id=None))

    assert ids == {"9e7c31a2-5d1b-4c8e-a0f4"}
    assert len(digests) == 1 and other not in digests


@pytest.mark.parametrize(
    ("entity", "action", "object_name"),
    [("person", "create", "persons"), ("organization", "change", "organizations"), ("deal", "change", "deals"),
     ("person", "delete", "persons")],
)
def test_it_parses_the_record_an_event_names(pipedrive, entity, action, object_name):
    changes = pipedrive.parse_webhook(event(entity, action, "42"))

    assert changes == [WebhookChange(object_name=object_name, record_ids=["42"])]


def test_it_ignores_events_of_objects_it_does_not_sync(pipedrive):
    assert pipedrive.parse_webhook(event("activity")) == []


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"data": {}},
        {"meta": {"v": 1, "action": "updated", "object": "person", "id": 42}},  # webhooks v1
        {"meta": {"entity": "person", "action": "change", "version": "2.0"}, "data": None, "previous": None},
    ],
)
def test_it_refuses_payloads_of_the_wrong_shape(pipedrive, payload):
    with pytest.raises(WebhookPayloadError):
        pipedrive.parse_webhook(payload)


def test_a_delivery_is_received_once_through_the_webhook_endpoint(make_connection):
    endpoint, _secret = webhook_endpoint_create(connection=make_connection(), name="Pipedrive", secret=WEBHOOK_SECRET)

    def deliver(payload, credentials=WEBHOOK_SECRET):
        return webhook_receive(code=endpoint.code, headers={"Authorization": basic(credentials)["authorization"],
                                                            "Content-Type": "application/json"},
                               raw_body=json.dumps(payload).encode(), now=NOW)

    first = deliver(event(attempt=1))
    retry = deliver(event(attempt=2))
    forged = deliver(event(attempt=3), credentials="resync:guess")

    assert first[0] == 202
    assert retry == (200, {"status": "duplicate"})
    assert forged[0] == 401
    stored = endpoint.events.get()
    assert "authorization" not in stored.headers
