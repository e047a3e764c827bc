"""The HubSpot connector against recorded shapes of HubSpot's CRM v3 API (connector-apis.md section 1)."""

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
import time_machine
from responses import matchers

from integrations.connectors.base import (
    FieldType,
    WebhookChange,
    WebhookPayloadError,
    WebhookSignatureError,
    WriteAction,
    WriteOperation,
)
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import Connection, ConnectionStatus, WebhookEndpoint
from integrations.services import connection_check
from integrations.webhooks import webhook_receive

pytestmark = pytest.mark.django_db

API = "https://api.hubapi.com"
CONTACTS = f"{API}/crm/v3/objects/contacts"
TOKEN_URL = f"{API}/oauth/v1/token"
PRIVATE_APP_TOKEN = "pat-na1-canary-7c1e"
CLIENT_SECRET = "hubspot-client-secret-5b2d"


@pytest.fixture(autouse=True)
def _offline_http(settings):
    settings.RESYNC_ALLOW_PRIVATE_URLS = True  # no DNS here: `responses` answers for api.hubapi.com
    settings.RESYNC_HTTP_RETRY_DELAYS = []


@pytest.fixture
def connect(org):
    def make(credentials=None, **config):
        connection = Connection(organization=org, name="HubSpot", provider="hubspot", config=config)
        connection.credentials = credentials or {"access_token": PRIVATE_APP_TOKEN}
        connection.save()
        return connection

    return make


@pytest.fixture
def hubspot(connect):
    return connect().get_connector()


class SleepRecorder:
    def __init__(self):
        self.delays = []

    def __call__(self, seconds):
        self.delays.append(seconds)


def prop(name, type_="string", field_type="text", **extra):
    return {"name": name, "label": name.title(), "type": type_, "fieldType": field_type, "hasUniqueValue": False,
            "hubspotDefined": True, "modificationMetadata": {"archivable": True, "readOnlyDefinition": True,
                                                             "readOnlyValue": False}, **extra}


CONTACT_PROPERTIES = [
    prop("email"),
    prop("firstname"),
    prop("phone", field_type="phonenumber"),
    prop("lifecyclestage", "enumeration", "radio"),
    prop("marketing_opt_in", "enumeration", "booleancheckbox"),
    prop("do_not_call", "bool", "booleancheckbox"),
    prop("num_employees", "number", "number"),
    prop("date_of_birth", "date", "date"),
    prop("message", field_type="textarea"),
    prop("customer_code", hasUniqueValue=True, hubspotDefined=False),
    prop("lastmodifieddate", "datetime", "date", modificationMetadata={"readOnlyValue": True}),
    prop("hs_object_id", "number", "number", modificationMetadata={"readOnlyValue": True}),
    prop("num_notes", "number", "number", calculated=True),
]
READ_PROPERTIES = ",".join(p["name"] for p in CONTACT_PROPERTIES)


def add_properties(object_name="contacts", properties=None):
    responses.add(responses.GET, f"{API}/crm/v3/properties/{object_name}",
                  json={"results": properties if properties is not None else CONTACT_PROPERTIES})


def ms(moment):
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def iso(moment):
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def contact(record_id, email, modified=T0, modified_property="lastmodifieddate", **properties):
    return {
        "id": str(record_id),
        "properties": {"email": email, modified_property: iso(modified), "hs_object_id": str(record_id),
                       **properties},
        "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": iso(modified), "archived": False,
    }


def query(call):
    return {key: values[0] for key, values in parse_qs(urlsplit(call.request.url).query).items()}


def sent(call):
    return json.loads(call.request.body)


def hubspot_error(category, message, **extra):
    return {"status": "error", "message": message, "correlationId": "4bf3c9a8-4f8b-4c47-a8b6-d2c1e9c0a7f1",
            "category": category, **extra}


# -- connection form, check, schema -----------------------------------------------------------------------------


def test_the_connection_form_asks_for_a_token_and_optional_oauth_secrets():
    from integrations.connectors.hubspot import HubSpotConnector

    assert [f.name for f in HubSpotConnector.config_fields] == ["base_url"]
    assert all(f.secret for f in HubSpotConnector.secret_fields)
    assert HubSpotConnector.validate_credentials({}) == {"access_token": ["Access token is required."]}
    assert HubSpotConnector.validate_credentials({"access_token": PRIVATE_APP_TOKEN}) == {}


@responses.activate
def test_check_sends_one_cheap_call_with_the_bearer_token(hubspot):
    responses.add(responses.GET, CONTACTS, json={"results": []})

    hubspot.check()

    assert len(responses.calls) == 1
    call = responses.calls[0]
    assert call.request.headers["Authorization"] == f"Bearer {PRIVATE_APP_TOKEN}"
    assert query(call) == {"limit": "1", "archived": "false"}


@responses.activate
def test_the_base_url_setting_sends_every_call_to_another_address(connect):
    responses.add(responses.GET, "https://hubspot-proxy.example/crm/v3/objects/contacts", json={"results": []})

    connect(base_url="https://hubspot-proxy.example/").get_connector().check()

    assert responses.calls[0].request.url.startswith("https://hubspot-proxy.example/crm/v3/objects/contacts?")


def test_it_lists_contacts_companies_and_deals(hubspot):
    assert [(o.name, o.label) for o in hubspot.list_objects()] == [
        ("contacts", "Contacts"), ("companies", "Companies"), ("deals", "Deals"),
    ]


@responses.activate
def test_it_describes_an_object_from_its_properties(hubspot):
    add_properties()

    schema = hubspot.describe_object("contacts")

    assert query(responses.calls[0]) == {"archived": "false"}
    fields = schema.fields
    assert next(iter(fields)) == "id"
    assert fields["id"].read_only and fields["id"].unique
    assert {name: spec.type for name, spec in fields.items() if name != "id"} == {
        "email": FieldType.EMAIL,
        "firstname": FieldType.STRING,
        "phone": FieldType.PHONE,
        "lifecyclestage": FieldType.STRING,
        "marketing_opt_in": FieldType.BOOLEAN,
        "do_not_call": FieldType.BOOLEAN,
        "num_employees": FieldType.NUMBER,
        "date_of_birth": FieldType.DATE,
        "message": FieldType.TEXT,
        "customer_code": FieldType.STRING,
        "lastmodifieddate": FieldType.DATETIME,
        "hs_object_id": FieldType.NUMBER,
        "num_notes": FieldType.NUMBER,
    }
    assert {name for name, spec in fields.items() if spec.read_only} == {
        "id", "lastmodifieddate", "hs_object_id", "num_notes",
    }
    assert {name for name, spec in fields.items() if spec.unique} == {"id", "email", "customer_code"}
    assert fields["firstname"].label == "Firstname"


def test_it_refuses_an_unknown_object(hubspot):
    with pytest.raises(ConnectorError) as raised:
        hubspot.describe_object("tickets")

    assert raised.value.category == ErrorCategory.MAPPING
    assert raised.value.code == "object_not_found"


# -- reading --------------------------------------------------------------------------------------------------------


@responses.activate
@time_machine.travel(T0 + timedelta(hours=3), tick=False)
def test_a_full_read_pages_through_the_list_endpoint(hubspot):
    add_properties()
    pages = [
        ({}, {"results": [contact(1, "a@example.com"), contact(2, "b@example.com")],
              "paging": {"next": {"after": "NTI1Cg%3D%3D", "link": "?after=NTI1Cg%3D%3D"}}}),
        ({"after": "NTI1Cg%3D%3D"}, {"results": [contact(3, "c@example.com")], "paging": {"next": {"after": "Mzk5"}}}),
        ({"after": "Mzk5"}, {"results": [contact(4, "d@example.com", T0 + timedelta(minutes=5))]}),
    ]
    for params, body in pages:
        responses.add(responses.GET, CONTACTS, json=body,
                      match=[matchers.query_param_matcher({"limit": "2", **params}, strict_match=False)])

    read, token, cursors = [], None, []
    while True:
        page = hubspot.read_page("contacts", page_token=token, page_size=2)
        read += page.records
        cursors.append(page.cursor)
        token = page.next_token
        if token is None:
            break

    list_calls = [call for call in responses.calls if "/objects/" in call.request.url]
    assert len(list_calls) == 3
    assert [query(call).get("after") for call in list_calls] == [None, "NTI1Cg%3D%3D", "Mzk5"]
    assert all(query(call)["properties"] == READ_PROPERTIES for call in list_calls)
    assert all(query(call)["archived"] == "false" for call in list_calls)
    assert [record.id for record in read] == ["1", "2", "3", "4"]
    assert read[0].data["email"] == "a@example.com"
    assert "id" not in read[0].data
    assert read[3].modified_at == T0 + timedelta(minutes=5)
    # The list is in no time order: the next delta read starts where this read started.
    assert cursors == ["2024-05-01T12:00:00.000Z"] * 3


@responses.activate
def test_a_full_read_of_more_properties_than_a_url_holds_reads_them_through_batch_read(hubspot):
    many = [prop(f"custom_property_number_{n:04d}") for n in range(400)]
    add_properties(properties=[prop("email"), prop("lastmodifieddate", "datetime", "date"), *many])
    responses.add(responses.GET, CONTACTS, json={"results": [contact(1, "a@example.com"), contact(2, "b@x.org")]})
    responses.add(responses.POST, f"{CONTACTS}/batch/read", json={"status": "COMPLETE", "results": [
        contact(2, "b@x.org", custom_property_number_0001="two"), contact(1, "a@example.com"),
    ]})

    page = hubspot.read_page("contacts")

    assert query(responses.calls[1])["properties"] == "lastmodifieddate"
    batch_read = sent(responses.calls[2])
    assert batch_read["inputs"] == [{"id": "1"}, {"id": "2"}]
    assert len(batch_read["properties"]) == 402
    assert [record.id for record in page.records] == ["1", "2"]
    assert page.records[1].data["custom_property_number_0001"] == "two"


class FakeSearch:
    """HubSpot's search endpoint over `records`: GTE filter, ascending sort, offset paging, and a 400 past
    `limit` results of one query."""

    def __init__(self, records, modified="lastmodifieddate", limit=10_000):
        self.records, self.modified, self.limit = records, modified, limit
        self.bodies = []

    def __call__(self, request):
        body = json.loads(request.body)
        self.bodies.append(body)
        (condition,) = body["filterGroups"][0]["filters"]
        assert (condition["propertyName"], condition["operator"]) == (self.modified, "GTE")
        assert body["sorts"] == [{"propertyName": self.modified, "direction": "ASCENDING"}]
        since = int(condition["value"])
        matching = sorted(
            (r for r in self.records if ms(datetime.fromisoformat(r["properties"][self.modified])) >= since),
            key=lambda r: r["properties"][self.modified],
        )
        offset = int(body.get("after") or 0)
        if offset >= self.limit:
            error = hubspot_error("VALIDATION_ERROR", "Cannot page past 10000 results")
            return 400, {}, json.dumps(error)
        answer = {"total": len(matching), "results": matching[offset:offset + body["limit"]]}
        if offset + body["limit"] < len(matching):
            answer["paging"] = {"next": {"after": str(offset + body["limit"])}}
        return 200, {}, json.dumps(answer)


def read_all(connector, object_name, cursor, page_size):
    pages, token = [], None
    while True:
        page = connector.read_page(object_name, page_token=token, cursor=cursor, page_size=page_size)
        pages.append(page)
        token = page.next_token
        if token is None:
            return pages


@responses.activate
def test_a_delta_read_searches_from_the_cursor_with_an_inclusive_filter_oldest_first(hubspot):
    add_properties()
    search = FakeSearch([
        contact(1, "old@example.com", T0 - timedelta(days=1)),
        contact(2, "b@example.com", T0 + timedelta(minutes=1)),
        contact(3, "c@example.com", T0 + timedelta(minutes=2)),
        contact(4, "d@example.com", T0 + timedelta(minutes=3)),
    ])
    responses.add_callback(responses.POST, f"{CONTACTS}/search", callback=search)

    pages = read_all(hubspot, "contacts", cursor=iso(T0), page_size=500)

    body = search.bodies[0]
    assert body["filterGroups"] == [{"filters": [
        {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(ms(T0) - 60_000)},
    ]}]
    assert body["sorts"] == [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
    assert body["limit"] == 200  # the search endpoint's maximum
    assert body["properties"] == READ_PROPERTIES.split(",")
    assert "after" not in body
    assert responses.calls[1].request.headers["Authorization"] == f"Bearer {PRIVATE_APP_TOKEN}"
    assert [record.id for record in pages[0].records] == ["2", "3", "4"]
    assert pages[0].cursor == iso(T0 + timedelta(minutes=3))


@responses.activate
def test_a_record_sharing_the_cursors_timestamp_is_read_again_not_skipped(hubspot):
    add_properties()
    boundary = T0 + timedelta(minutes=2, milliseconds=417)
    records = [contact(1, "a@example.com", T0 + timedelta(minutes=1)), contact(2, "b@example.com", boundary)]
    search = FakeSearch(records)
    responses.add_callback(responses.POST, f"{CONTACTS}/search", callback=search)
    first = read_all(hubspot, "contacts", cursor=iso(T0), page_size=100)
    assert first[-1].cursor == "2024-05-01T09:02:00.417Z"

    # Indexed after the first read, modified in the same millisecond as the cursor.
    records.append(contact(3, "late@example.com", boundary))
    second = read_all(hubspot, "contacts", cursor=first[-1].cursor, page_size=100)

    (condition,) = search.bodies[-1]["filterGroups"][0]["filters"]
    assert condition["operator"] == "GTE"
    assert int(condition["value"]) <= ms(boundary)
    assert {record.id for record in second[0].records} >= {"2", "3"}
    assert second[-1].cursor == "2024-05-01T09:02:00.417Z"


@pytest.mark.parametrize("object_name", ["companies", "deals"])
@responses.activate
def test_companies_and_deals_are_read_by_hs_lastmodifieddate(hubspot, object_name):
    add_properties(object_name, [prop("name"), prop("hs_lastmodifieddate", "datetime", "date")])
    search = FakeSearch([contact(7, "x", T0, modified_property="hs_lastmodifieddate")],
                        modified="hs_lastmodifieddate")
    responses.add_callback(responses.POST, f"{API}/crm/v3/objects/{object_name}/search", callback=search)

    page = hubspot.read_page(object_name, cursor=iso(T0))

    assert [record.id for record in page.records] == ["7"]
    assert page.records[0].modified_at == T0
    assert page.cursor == iso(T0)


@responses.activate
def test_a_search_that_would_pass_its_result_limit_starts_again_from_the_newest_time_seen(hubspot):
    add_properties()
    times = [T0 + timedelta(seconds=s) for s in (1, 2, 3, 4, 4, 5, 6, 7, 8)]
    search = FakeSearch([contact(n, f"c{n}@example.com", t) for n, t in enumerate(times, start=1)], limit=4)
    responses.add_callback(responses.POST, f"{CONTACTS}/search", callback=search)
    hubspot.search_result_limit = 4  # HubSpot's is 10,000

    pages = read_all(hubspot, "contacts", cursor=iso(T0 - timedelta(minutes=5)), page_size=2)

    assert all(int(body.get("after") or 0) < 4 for body in search.bodies)  # never a 400
    restart = search.bodies[2]
    assert "after" not in restart
    assert restart["filterGroups"][0]["filters"][0]["value"] == str(ms(T0 + timedelta(seconds=4)))
    assert {record.id for page in pages for record in page.records} == {str(n) for n in range(1, 10)}
    assert pages[-1].cursor == iso(T0 + timedelta(seconds=8))


@responses.activate
def test_fetch_reads_records_by_id_and_leaves_out_the_missing(hubspot):
    add_properties()
    responses.add(responses.POST, f"{CONTACTS}/batch/read", status=207, json={
        "status": "COMPLETE",
        "results": [contact(1, "a@example.com")],
        "numErrors": 1,
        "errors": [hubspot_error("OBJECT_NOT_FOUND", "Could not get some CONTACT objects", context={"ids": ["999"]})],
    })

    found = hubspot.fetch("contacts", ["1", "999"])

    assert list(found) == ["1"]
    assert found["1"].data["email"] == "a@example.com"
    call = responses.calls[1]
    assert query(call) == {"archived": "false"}
    assert sent(call) == {"inputs": [{"id": "1"}, {"id": "999"}], "properties": READ_PROPERTIES.split(","),
                          "propertiesWithHistory": []}


@responses.activate
def test_find_searches_the_field_with_IN_and_groups_records_by_value(hubspot):
    add_properties()
    responses.add(responses.POST, f"{CONTACTS}/search", json={"total": 2, "results": [
        contact(1, "ann@example.com"), contact(2, "bob@example.com"),
    ]})

    found = hubspot.find("contacts", "email", ["Ann@Example.com", "bob@example.com", "nobody@example.com"])

    (condition,) = sent(responses.calls[1])["filterGroups"][0]["filters"]
    assert condition["propertyName"] == "email"
    assert condition["operator"] == "IN"
    assert set(condition["values"]) == {"Ann@Example.com", "ann@example.com", "bob@example.com",
                                        "nobody@example.com"}
    assert [r.id for r in found["Ann@Example.com"]] == ["1"]
    assert [r.id for r in found["bob@example.com"]] == ["2"]
    assert found["nobody@example.com"] == []


# -- writing --------------------------------------------------------------------------------------------------------


def create(ref, **data):
    return WriteOperation(ref=ref, action=WriteAction.CREATE, data=data)


INVALID_EMAIL = (
    'Property values were not valid: [{"isValid":false,"message":"Email address example.lcom is invalid",'
    '"error":"INVALID_EMAIL","name":"email"}]'
)


@responses.activate
def test_a_batch_create_maps_a_multi_status_answer_back_to_each_operation(hubspot):
    responses.add(responses.POST, f"{CONTACTS}/batch/create", status=207, json={
        "status": "COMPLETE",
        "results": [
            {**contact(502, "c@example.com"), "objectWriteTraceId": "3"},
            {**contact(500, "a@example.com"), "objectWriteTraceId": "0"},
        ],
        "numErrors": 2,
        "errors": [
            hubspot_error("CONFLICT", "Contact already exists. Existing ID: 37765128953",
                          context={"objectWriteTraceId": ["2"]}),
            hubspot_error("VALIDATION_ERROR", INVALID_EMAIL, context={"objectWriteTraceId": ["1"]}),
        ],
    })
    operations = [
        create("src-1", email="a@example.com", firstname="Ann", do_not_call=True, num_employees=12),
        create("src-2", email="example.lcom", date_of_birth=date(1990, 4, 1)),
        create("src-3", email="taken@example.com", firstname=None),
        create("src-4", email="c@example.com"),
    ]

    results = hubspot.write("contacts", operations)

    (call,) = responses.calls
    assert sent(call) == {"inputs": [
        {"properties": {"email": "a@example.com", "firstname": "Ann", "do_not_call": "true", "num_employees": "12"},
         "objectWriteTraceId": "0"},
        {"properties": {"email": "example.lcom", "date_of_birth": "1990-04-01"}, "objectWriteTraceId": "1"},
        {"properties": {"email": "taken@example.com", "firstname": ""}, "objectWriteTraceId": "2"},
        {"properties": {"email": "c@example.com"}, "objectWriteTraceId": "3"},
    ]}
    assert [r.ref for r in results] == ["src-1", "src-2", "src-3", "src-4"]
    assert (results[0].ok, results[0].target_id, results[0].action) == (True, "500", "create")
    assert (results[3].ok, results[3].target_id, results[3].action) == (True, "502", "create")
    assert results[0].record["email"] == "a@example.com"
    invalid = results[1].error
    assert (results[1].ok, invalid.category, invalid.code, invalid.field) == (
        False, ErrorCategory.VALIDATION, "INVALID_EMAIL", "email")
    assert invalid.retryable is False
    assert "example.lcom is invalid" in invalid.message
    duplicate = results[2].error
    assert (duplicate.category, duplicate.code, duplicate.retryable) == (ErrorCategory.DUPLICATE, "CONFLICT", False)
    assert "37765128953" in duplicate.detail


@responses.activate
def test_creates_and_updates_go_to_their_own_batch_endpoints(hubspot):
    responses.add(responses.POST, f"{CONTACTS}/batch/create", json={"status": "COMPLETE", "results": [
        {**contact(900, "new@example.com"), "objectWriteTraceId": "0"},
    ]})
    responses.add(responses.POST, f"{CONTACTS}/batch/update", status=207, json={
        "status": "COMPLETE",
        # No trace ids here: the answer is matched by record id.
        "results": [contact(12, "twelve@example.com")],
        "errors": [hubspot_error("OBJECT_NOT_FOUND", "Could not get some CONTACT objects, they may be "
                                 "deleted or not exist.", context={"ids": ["11"]})],
    })

    results = hubspot.write("contacts", [
        WriteOperation(ref="a", action=WriteAction.UPDATE, data={"firstname": "Eleven"}, target_id="11"),
        create("b", email="new@example.com"),
        WriteOperation(ref="c", action=WriteAction.UPDATE, data={"firstname": "Twelve", "id": "12"}, target_id="12"),
    ])

    assert [call.request.url for call in responses.calls] == [f"{CONTACTS}/batch/create", f"{CONTACTS}/batch/update"]
    assert sent(responses.calls[1]) == {"inputs": [
        {"id": "11", "properties": {"firstname": "Eleven"}, "objectWriteTraceId": "0"},
        {"id": "12", "properties": {"firstname": "Twelve"}, "objectWriteTraceId": "1"},
    ]}
    assert [(r.ref, r.ok, r.target_id, r.action) for r in results if r.ok] == [
        ("b", True, "900", "create"), ("c", True, "12", "update"),
    ]
    assert results[0].error.category == ErrorCategory.NOT_FOUND
    assert results[0].error.code == "OBJECT_NOT_FOUND"


@responses.activate
def test_an_upsert_matches_on_the_id_property_and_says_whether_it_created(hubspot):
    responses.add(responses.POST, f"{CONTACTS}/batch/upsert", json={"status": "COMPLETE", "results": [
        {**contact(41, "known@example.com"), "new": False},
        {**contact(42, "fresh@example.com"), "new": True},
    ]})

    results = hubspot.write("contacts", [
        WriteOperation(ref="x", action=WriteAction.UPSERT, data={"email": "Fresh@Example.com"}, match_field="email"),
        WriteOperation(ref="y", action=WriteAction.UPSERT, data={"email": "known@example.com"}, match_field="email"),
    ])

    assert sent(responses.calls[0])["inputs"][0] == {
        "id": "Fresh@Example.com", "idProperty": "email", "properties": {"email": "Fresh@Example.com"},
        "objectWriteTraceId": "0",
    }
    assert [(r.ref, r.target_id, r.action) for r in results] == [("x", "42", "create"), ("y", "41", "update")]


@responses.activate
def test_one_refused_record_is_a_failed_result_with_the_existing_id(hubspot):
    responses.add(responses.POST, f"{CONTACTS}/batch/create", status=409,
                  json=hubspot_error("CONFLICT", "Contact already exists. Existing ID: 37765128953"))

    (result,) = hubspot.write("contacts", [create("src-1", email="taken@example.com")])

    assert not result.ok
    assert result.error.category == ErrorCategory.DUPLICATE
    assert result.error.detail.startswith("Existing ID: 37765128953.")


@responses.activate
def test_a_batch_refused_as_a_whole_raises_so_it_can_be_split(hubspot):
    responses.add(responses.POST, f"{CONTACTS}/batch/create", status=400,
                  json=hubspot_error("VALIDATION_ERROR", INVALID_EMAIL))

    with pytest.raises(ConnectorError) as raised:
        hubspot.write("contacts", [create("1", email="a@example.com"), create("2", email="example.lcom")])

    assert (raised.value.category, raised.value.field) == (ErrorCategory.VALIDATION, "email")


@responses.activate
def test_a_failed_call_after_a_written_one_is_reported_on_its_records(hubspot):
    responses.add(responses.POST, f"{CONTACTS}/batch/create", json={"status": "COMPLETE", "results": [
        {**contact(900, "new@example.com"), "objectWriteTraceId": "0"},
    ]})
    responses.add(responses.POST, f"{CONTACTS}/batch/update", status=503, body="Service Unavailable")

    results = hubspot.write("contacts", [
        create("a", email="new@example.com"),
        WriteOperation(ref="b", action=WriteAction.UPDATE, data={"firstname": "B"}, target_id="5"),
    ])

    assert results[0].ok and results[0].target_id == "900"
    assert (results[1].ok, results[1].error.category, results[1].error.retryable) == (
        False, ErrorCategory.CONNECTION, True)


def test_an_update_without_a_target_id_fails_without_a_call(hubspot):
    (result,) = hubspot.write("contacts", [WriteOperation(ref="a", action=WriteAction.UPDATE, data={"x": 1})])

    assert (result.ok, result.error.code) == (False, "target_id_missing")


# -- errors ---------------------------------------------------------------------------------------------------------

MISSING_SCOPES = hubspot_error(
    "MISSING_SCOPES",
    "This app hasn't been granted all required scopes to make this call.",
    errors=[{"message": "One or more of the following scopes are required.",
             "context": {"requiredScopes": ["crm.objects.contacts.read"]}}],
)
PROPERTY_MISSING = (
    'Property values were not valid: [{"isValid":false,"message":"Property \\"favourite\\" does not exist",'
    '"error":"PROPERTY_DOESNT_EXIST","name":"favourite"}]'
)


@pytest.mark.parametrize(
    ("status", "body", "headers", "category", "retryable", "expected"),
    [
        (401, hubspot_error("INVALID_AUTHENTICATION", "Authentication credentials not found."), {},
         ErrorCategory.AUTH, False, {"code": "INVALID_AUTHENTICATION"}),
        (401, hubspot_error("EXPIRED_AUTHENTICATION", "The OAuth token used to make this call expired 75 "
                            "second(s) ago."), {},
         ErrorCategory.AUTH, False, {"code": "EXPIRED_AUTHENTICATION"}),
        (403, MISSING_SCOPES, {}, ErrorCategory.PERMISSION, False, {"code": "MISSING_SCOPES"}),
        (400, hubspot_error("VALIDATION_ERROR", INVALID_EMAIL), {},
         ErrorCategory.VALIDATION, False, {"code": "INVALID_EMAIL", "field": "email"}),
        (400, hubspot_error("VALIDATION_ERROR", PROPERTY_MISSING), {},
         ErrorCategory.MAPPING, False, {"code": "PROPERTY_DOESNT_EXIST", "field": "favourite"}),
        (409, hubspot_error("CONFLICT", "Contact already exists. Existing ID: 37765128953"), {},
         ErrorCategory.DUPLICATE, False, {"code": "CONFLICT"}),
        (404, hubspot_error("OBJECT_NOT_FOUND", "resource not found"), {},
         ErrorCategory.NOT_FOUND, False, {"code": "OBJECT_NOT_FOUND"}),
        (429, {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
               "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING",
               "correlationId": "c0a8f1e2-1111-4a4a-9b9b-123456789abc"}, {},
         ErrorCategory.RATE_LIMIT, True, {"code": "TEN_SECONDLY_ROLLING", "retry_after": 10}),
        (429, {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
               "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}, {"Retry-After": "3"},
         ErrorCategory.RATE_LIMIT, True, {"retry_after": 3}),
        (429, {"status": "error", "message": "You have reached your daily limit.", "errorType": "RATE_LIMIT",
               "policyName": "DAILY"}, {},
         ErrorCategory.RATE_LIMIT, True, {"code": "DAILY", "retry_after": 61}),  # 23:59:00 UTC, see below
        (500, hubspot_error("INTERNAL_ERROR", "internal error"), {}, ErrorCategory.UNKNOWN, True, {}),
        (502, "<html>502 Bad Gateway</html>", {}, ErrorCategory.CONNECTION, True, {}),
        (503, "", {}, ErrorCategory.CONNECTION, True, {}),
        (504, {"status": "error", "message": "Gateway timeout"}, {}, ErrorCategory.CONNECTION, True, {}),
    ],
)
@responses.activate
@time_machine.travel(datetime(2024, 5, 1, 23, 59, tzinfo=UTC), tick=False)
def test_each_documented_error_lands_in_its_category(hubspot, status, body, headers, category, retryable, expected):
    kwargs = {"json": body} if isinstance(body, dict) else {"body": body}
    responses.add(responses.GET, CONTACTS, status=status, headers=headers, **kwargs)

    with pytest.raises(ConnectorError) as raised:
        hubspot.check()

    error = raised.value
    assert (error.category, error.retryable) == (category, retryable)
    for name, value in expected.items():
        assert getattr(error, name) == value
    assert PRIVATE_APP_TOKEN not in error.message + error.detail


@responses.activate
def test_a_missing_scope_is_named_in_the_message(hubspot):
    responses.add(responses.GET, CONTACTS, status=403, json=MISSING_SCOPES)

    with pytest.raises(ConnectorError) as raised:
        hubspot.check()

    assert "crm.objects.contacts.read" in raised.value.message


# -- OAuth refresh --------------------------------------------------------------------------------------------------


def oauth_credentials(expires_at):
    return {"access_token": "old-access", "refresh_token": "refresh-1", "client_id": "client-1",
            "client_secret": CLIENT_SECRET, "expires_at": expires_at}


@responses.activate
def test_it_refreshes_an_expired_token_once_and_stores_it_encrypted(connect):
    connection = connect(oauth_credentials(int(time.time()) - 5))
    responses.add(responses.POST, TOKEN_URL, json={"token_type": "bearer", "access_token": "new-access",
                                                   "refresh_token": "refresh-2", "expires_in": 1800})
    responses.add(responses.GET, CONTACTS, json={"results": []})
    connector = connection.get_connector()

    connector.check()
    connector.check()

    token_calls = [call for call in responses.calls if call.request.url == TOKEN_URL]
    assert len(token_calls) == 1
    form = {key: values[0] for key, values in parse_qs(token_calls[0].request.body).items()}
    assert form == {"grant_type": "refresh_token", "refresh_token": "refresh-1", "client_id": "client-1",
                    "client_secret": CLIENT_SECRET}
    api_calls = [call for call in responses.calls if call.request.url != TOKEN_URL]
    assert [call.request.headers["Authorization"] for call in api_calls] == ["Bearer new-access"] * 2
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.credentials["access_token"] == "new-access"
    assert stored.credentials["refresh_token"] == "refresh-2"
    assert stored.credentials["expires_at"] > time.time() + 1700
    assert "new-access" not in stored.credentials_ciphertext


@responses.activate
def test_a_401_right_after_a_refresh_is_raised_not_refreshed_again(connect):
    connection = connect(oauth_credentials(int(time.time()) - 5))
    responses.add(responses.POST, TOKEN_URL, json={"access_token": "new-access", "expires_in": 1800})
    responses.add(responses.GET, CONTACTS, status=401,
                  json=hubspot_error("INVALID_AUTHENTICATION", "Authentication credentials not found."))

    with pytest.raises(ConnectorError) as raised:
        connection.get_connector().check()

    assert raised.value.category == ErrorCategory.AUTH
    assert [call.request.url for call in responses.calls].count(TOKEN_URL) == 1


@responses.activate
def test_a_refreshed_token_is_refreshed_again_when_it_expires(connect):
    connection = connect(oauth_credentials(int(time.time()) - 5))
    responses.add(responses.POST, TOKEN_URL, json={"access_token": "second-access", "expires_in": 1800})
    responses.add(responses.POST, TOKEN_URL, json={"access_token": "third-access", "expires_in": 1800})
    responses.add(responses.GET, CONTACTS, json={"results": []})
    connector = connection.get_connector()

    connector.check()
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=31)):
        connector.check()

    assert [call.request.headers.get("Authorization") for call in responses.calls if call.request.url != TOKEN_URL] \
        == ["Bearer second-access", "Bearer third-access"]
    assert Connection.objects.get(pk=connection.pk).credentials["access_token"] == "third-access"


@responses.activate
def test_a_refused_refresh_is_an_auth_error_and_the_connection_needs_reauth(connect):
    connection = connect(oauth_credentials(int(time.time()) - 5))
    responses.add(responses.POST, TOKEN_URL, status=400,
                  json={"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token",
                        "correlationId": "0d3f1b7e-0000-4000-8000-000000000000"})

    error = connection_check(connection=connection)

    assert (error.category, error.code, error.retryable) == (ErrorCategory.AUTH, "refresh_failed", False)
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    assert not [call for call in responses.calls if call.request.url != TOKEN_URL]
    assert CLIENT_SECRET not in error.message + error.detail


# -- rate limits ----------------------------------------------------------------------------------------------------


def limit_headers(remaining, daily_remaining=249_000):
    return {"X-HubSpot-RateLimit-Max": "190", "X-HubSpot-RateLimit-Remaining": str(remaining),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000", "X-HubSpot-RateLimit-Daily": "250000",
            "X-HubSpot-RateLimit-Daily-Remaining": str(daily_remaining)}


@responses.activate
def test_it_waits_out_the_interval_before_a_call_when_the_last_answer_left_none(hubspot):
    responses.add(responses.GET, CONTACTS, json={"results": []}, headers=limit_headers(1))
    responses.add(responses.GET, CONTACTS, json={"results": []}, headers=limit_headers(0))
    responses.add(responses.GET, CONTACTS, json={"results": []}, headers=limit_headers(189))
    hubspot.sleep = sleep = SleepRecorder()

    hubspot.check()
    hubspot.check()
    assert sleep.delays == []  # one call was left after the first answer
    hubspot.check()
    hubspot.check()

    assert sleep.delays == [10.0]
    assert len(responses.calls) == 4


@responses.activate
def test_it_raises_without_calling_once_the_daily_budget_is_spent(hubspot):
    responses.add(responses.GET, CONTACTS, json={"results": []}, headers=limit_headers(150, daily_remaining=0))
    hubspot.check()

    with time_machine.travel(datetime(2024, 5, 1, 22, 0, tzinfo=UTC), tick=False), \
            pytest.raises(ConnectorError) as raised:
        hubspot.check()

    error = raised.value
    assert (error.category, error.code, error.retryable) == (ErrorCategory.RATE_LIMIT, "DAILY", True)
    assert error.retry_after == 7201  # two hours to midnight UTC, and a second to be past it
    assert len(responses.calls) == 1


# -- webhooks -------------------------------------------------------------------------------------------------------

HOOK_URL = "https://resync.example/hooks/3f9a/?portal=62515%3Aeu"
SIGNED_URI = "https://resync.example/hooks/3f9a/?portal=62515:eu"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def event(event_id, subscription_type, object_id, attempt=0, **extra):
    return {"eventId": event_id, "subscriptionId": 25, "portalId": 62515, "appId": 54321,
            "occurredAt": 1714564800000, "subscriptionType": subscription_type, "attemptNumber": attempt,
            "objectId": object_id, "changeSource": "CRM", **extra}


def signed_headers(raw_body, *, secret=CLIENT_SECRET, timestamp=None, uri=SIGNED_URI):
    timestamp = str(ms(NOW) if timestamp is None else timestamp)
    message = b"POST" + uri.encode() + raw_body + timestamp.encode()
    signature = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
    return {"x-hubspot-signature-v3": signature, "x-hubspot-request-timestamp": timestamp,
            "content-type": "application/json"}


RAW_BODY = json.dumps([event(101, "contact.propertyChange", 512, propertyName="email",
                             propertyValue="a@example.com")]).encode()


def verify(hubspot, headers, secrets=(CLIENT_SECRET,), raw_body=RAW_BODY):
    hubspot.verify_webhook(secrets=list(secrets), method="POST", url=HOOK_URL, headers=headers, raw_body=raw_body,
                           now=NOW)


def test_a_v3_signature_over_the_decoded_uri_is_accepted(hubspot):
    verify(hubspot, signed_headers(RAW_BODY))


def test_a_signature_by_a_rotated_out_secret_is_still_accepted(hubspot):
    verify(hubspot, signed_headers(RAW_BODY, secret="previous-secret"), secrets=["current-secret", "previous-secret"])


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (signed_headers(RAW_BODY, secret="someone-else"), "signature_invalid"),
        (signed_headers(b"[]"), "signature_invalid"),  # signed over another body
        (signed_headers(RAW_BODY, uri=HOOK_URL.replace("resync", "evil")), "signature_invalid"),
        (signed_headers(RAW_BODY, timestamp=ms(NOW - timedelta(minutes=6))), "timestamp_out_of_tolerance"),
        (signed_headers(RAW_BODY, timestamp=ms(NOW + timedelta(minutes=6))), "timestamp_out_of_tolerance"),
        ({**signed_headers(RAW_BODY), "x-hubspot-request-timestamp": "yesterday"}, "timestamp_invalid"),
        ({"x-hubspot-request-timestamp": str(ms(NOW))}, "signature_missing"),
        ({"x-hubspot-signature": "v1-style-signature"}, "signature_missing"),
    ],
)
def test_a_bad_signature_is_refused(hubspot, headers, code):
    with pytest.raises(WebhookSignatureError) as raised:
        verify(hubspot, headers)

    assert raised.value.code == code
    assert CLIENT_SECRET not in raised.value.message


def test_the_event_id_is_the_same_on_every_redelivery_of_a_batch(hubspot):
    first = [event(101, "contact.creation", 1), event(102, "deal.propertyChange", 2)]
    again = [event(102, "deal.propertyChange", 2, attempt=3), event(101, "contact.creation", 1, attempt=3)]
    other = [event(103, "contact.creation", 1)]

    event_id = hubspot.webhook_event_id(headers={}, payload=first)

    assert event_id == hubspot.webhook_event_id(headers={}, payload=again)
    assert event_id != hubspot.webhook_event_id(headers={}, payload=other)
    assert len(event_id) < 100


@pytest.mark.parametrize("payload", [[], [{"objectId": 1}], {"not": "events"}, "text", [1, 2]])
def test_a_delivery_without_event_ids_has_no_event_id(hubspot, payload):
    with pytest.raises(WebhookPayloadError):
        hubspot.webhook_event_id(headers={}, payload=payload)


def test_parse_webhook_names_the_changed_records_per_object(hubspot):
    payload = [
        event(1, "contact.creation", 512),
        event(2, "contact.propertyChange", 512, propertyName="firstname", propertyValue="Ann"),
        event(3, "company.propertyChange", 77, propertyName="name", propertyValue="Acme"),
        event(4, "contact.merge", 513, mergedObjectIds=[600]),
        event(5, "deal.deletion", 9),
        event(6, "ticket.creation", 31),
        event(7, "object.propertyChange", 1001, objectTypeId="0-3", propertyName="amount", propertyValue="9"),
        event(8, "contact.associationChange", 512),
    ]

    assert hubspot.parse_webhook(payload) == [
        WebhookChange("contacts", ["512", "513"]),
        WebhookChange("companies", ["77"]),
        WebhookChange("deals", ["1001"]),
    ]


def test_parse_webhook_ignores_events_that_name_no_records_to_sync(hubspot):
    assert hubspot.parse_webhook([event(5, "contact.deletion", 9), event(6, "ticket.creation", 1)]) == []


@pytest.mark.parametrize("payload", [
    "text",
    [1],
    [event(1, "contact.creation", None)],
    [event(1, "contact.creation", True)],
])
def test_parse_webhook_refuses_a_payload_of_the_wrong_shape(hubspot, payload):
    with pytest.raises(WebhookPayloadError):
        hubspot.parse_webhook(payload)


def test_a_signed_delivery_is_accepted_once_and_a_redelivery_is_a_duplicate(org, connect):
    endpoint = WebhookEndpoint(organization=org, connection=connect(), name="HubSpot app")
    endpoint.secrets = [CLIENT_SECRET]
    endpoint.save()
    redelivered = json.dumps([{**json.loads(RAW_BODY)[0], "attemptNumber": 1}]).encode()

    first = webhook_receive(code=endpoint.code, headers=signed_headers(RAW_BODY), raw_body=RAW_BODY, method="POST",
                            url=HOOK_URL, now=NOW)
    second = webhook_receive(code=endpoint.code, headers=signed_headers(redelivered), raw_body=redelivered,
                             method="POST", url=HOOK_URL, now=NOW)

    assert first[0] == 202
    assert second == (200, {"status": "duplicate"})
