"""The Salesforce connector against recorded shapes of its REST API (query, describe, sObject Collections, OAuth)."""

import base64
import json
from datetime import UTC, datetime, timedelta
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
    webhook_signature,
)
from integrations.connectors.salesforce import SalesforceConnector
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import Connection
from integrations.services import connection_check

pytestmark = pytest.mark.django_db

INSTANCE = "https://acme.my.salesforce.com"
API = f"{INSTANCE}/services/data/v60.0"
TOKEN_URL = "https://login.salesforce.com/services/oauth2/token"
# Canaries: they must never show up in a message or a detail.
ACCESS_TOKEN = "00Dacme!canary-access-token-4f9a"
REFRESH_TOKEN = "5Aep-canary-refresh-token-4f9a"
CLIENT_SECRET = "canary-client-secret-4f9a"
CREDENTIALS = {"access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN, "client_id": "3MVG9-consumer-key",
               "client_secret": CLIENT_SECRET}
SELECT = ("SELECT Id, LastName, FirstName, Email, Phone, Description, AccountId, Birthdate, DoNotCall, Kids__c, "
          "Ext_Id__c, SystemModstamp FROM Contact")


def sf_id(number, prefix="003"):
    return f"{prefix}{number:012d}AAA"


def described(name, sf_type="string", *, label=None, length=0, nillable=True, createable=True, updateable=True,
              defaulted=False, unique=False, external_id=False):
    return {"name": name, "label": label or name, "type": sf_type, "length": length, "nillable": nillable,
            "createable": createable, "updateable": updateable, "defaultedOnCreate": defaulted, "unique": unique,
            "externalId": external_id}


CONTACT_DESCRIBE = {
    "name": "Contact",
    "label": "Contact",
    "fields": [
        described("Id", "id", label="Contact ID", length=18, nillable=False, createable=False, updateable=False,
                  defaulted=True),
        described("LastName", label="Last Name", length=80, nillable=False),
        described("FirstName", label="First Name", length=40),
        described("Email", "email", length=80),
        described("Phone", "phone", length=40),
        described("Description", "textarea", length=32000),
        described("AccountId", "reference", length=18),
        described("Birthdate", "date"),
        described("DoNotCall", "boolean", nillable=False, defaulted=True),
        described("Kids__c", "double"),
        described("Ext_Id__c", label="External ID", length=36, unique=True, external_id=True),
        described("MailingAddress", "address", createable=False, updateable=False),
        described("SystemModstamp", "datetime", label="System Modstamp", nillable=False, createable=False,
                  updateable=False, defaulted=True),
    ],
}


def contact(record_id, stamp, **data):
    return {"attributes": {"type": "Contact", "url": f"/services/data/v60.0/sobjects/Contact/{record_id}"},
            "Id": record_id, "SystemModstamp": stamp, **data}


def query_page(records, *, next_url=None):
    body = {"totalSize": 5, "done": next_url is None, "records": records}
    if next_url:
        body["nextRecordsUrl"] = next_url
    return body


def soql(call):
    return parse_qs(urlsplit(call.request.url).query)["q"][0]


def sent_json(call):
    return json.loads(call.request.body)


@pytest.fixture(autouse=True)
def _offline(settings):
    settings.RESYNC_ALLOW_PRIVATE_URLS = True
    settings.RESYNC_HTTP_RETRY_DELAYS = []


@pytest.fixture
def api():
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def make_connection(org):
    def make(credentials=CREDENTIALS, **config):
        connection = Connection(organization=org, name="Acme Salesforce", provider="salesforce",
                                config={"instance_url": INSTANCE, **config})
        connection.credentials = credentials
        connection.save()
        return connection

    return make


@pytest.fixture
def connection(make_connection):
    return make_connection()


@pytest.fixture
def connector(connection):
    return connection.get_connector()


@pytest.fixture
def describe(api):
    api.get(f"{API}/sobjects/Contact/describe/", json=CONTACT_DESCRIBE)


# -- connection, auth headers and configuration ------------------------------------------------------------------


def test_it_sends_the_access_token_as_a_bearer_header(api, connector):
    api.get(f"{API}/", json={"sobjects": "/services/data/v60.0/sobjects", "query": "/services/data/v60.0/query"})

    connector.check()

    headers = api.calls[0].request.headers
    assert headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert headers["Accept"] == "application/json"


def test_check_says_when_no_salesforce_api_answers_at_the_instance_url(api, make_connection):
    connector = make_connection(api_version="v9.0").get_connector()
    api.get(f"{INSTANCE}/services/data/v9.0/", status=404,
            json=[{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])

    with pytest.raises(ConnectorError) as caught:
        connector.check()

    assert caught.value.category == ErrorCategory.NOT_FOUND
    assert "instance URL" in caught.value.message


def test_the_base_url_setting_replaces_the_instance_url_for_every_call(api, make_connection):
    connector = make_connection(base_url="http://127.0.0.1:8765/sf/").get_connector()
    api.get("http://127.0.0.1:8765/sf/services/data/v60.0/query/01gQ-200",
            json=query_page([contact(sf_id(1), "2024-01-01T00:00:00.000+0000")]))

    page = connector.read_page("Contact", page_token="/services/data/v60.0/query/01gQ-200")

    assert [record.id for record in page.records] == [sf_id(1)]


def test_it_checks_the_api_version_and_requires_an_instance_url():
    problems = SalesforceConnector.validate_config({"api_version": "60", "login_url": "https://test.salesforce.com"})

    assert set(problems) == {"instance_url", "api_version"}
    assert SalesforceConnector.validate_config({"instance_url": INSTANCE, "api_version": "v61.0"}) == {}


# -- schema discovery ----------------------------------------------------------------------------------------------


def test_it_lists_the_supported_objects_the_org_offers_with_the_org_s_labels(api, connector):
    api.get(f"{API}/sobjects/", json={"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": [
        {"name": "Account", "label": "Customer", "queryable": True},
        {"name": "Contact", "label": "Contact", "queryable": True},
        {"name": "Lead", "label": "Lead", "queryable": True},
        {"name": "Opportunity", "label": "Opportunity", "queryable": True},
    ]})

    summaries = connector.list_objects()

    assert [(s.name, s.label) for s in summaries] == [("Contact", "Contact"), ("Account", "Customer"),
                                                      ("Opportunity", "Opportunity")]


def test_it_describes_an_object_with_types_lengths_and_flags(api, connector, describe):
    schema = connector.describe_object("Contact")

    fields = schema.fields
    assert next(iter(fields)) == "id" and fields["id"].read_only and fields["id"].unique
    assert "Id" not in fields and "MailingAddress" not in fields  # a compound address has no single value
    assert fields["LastName"].required and fields["LastName"].max_length == 80
    assert fields["LastName"].label == "Last Name"
    assert not fields["DoNotCall"].required  # not nillable, but Salesforce defaults it
    assert fields["SystemModstamp"].read_only and not fields["SystemModstamp"].required
    assert fields["Ext_Id__c"].unique
    assert {name: spec.type for name, spec in fields.items() if name != "id"} == {
        "LastName": FieldType.STRING, "FirstName": FieldType.STRING, "Email": FieldType.EMAIL,
        "Phone": FieldType.PHONE, "Description": FieldType.TEXT, "AccountId": FieldType.STRING,
        "Birthdate": FieldType.DATE, "DoNotCall": FieldType.BOOLEAN, "Kids__c": FieldType.NUMBER,
        "Ext_Id__c": FieldType.STRING, "SystemModstamp": FieldType.DATETIME,
    }
    assert connector.describe_object("Contact") is schema
    assert len(api.calls) == 1


def test_an_object_outside_contacts_accounts_and_opportunities_is_unknown_without_a_call(api, connector):
    with pytest.raises(ConnectorError) as caught:
        connector.describe_object("Lead")

    assert (caught.value.category, caught.value.code) == (ErrorCategory.MAPPING, "object_not_found")
    assert len(api.calls) == 0


def test_an_object_the_org_does_not_have_is_unknown(api, connector):
    api.get(f"{API}/sobjects/Opportunity/describe/", status=404,
            json=[{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])

    with pytest.raises(ConnectorError) as caught:
        connector.describe_object("Opportunity")

    assert caught.value.code == "object_not_found"


# -- reads ---------------------------------------------------------------------------------------------------------


def test_it_reads_every_page_by_following_next_records_url(api, connector, describe):
    api.get(f"{API}/query", json=query_page(
        [contact(sf_id(1), "2024-01-01T00:00:00.000+0000", LastName="Lovelace"),
         contact(sf_id(2), "2024-01-02T00:00:00.000+0000", LastName="Hopper")],
        next_url="/services/data/v60.0/query/01gQ-200"))
    api.get(f"{API}/query/01gQ-200", json=query_page(
        [contact(sf_id(3), "2024-01-03T00:00:00.000+0000", LastName="Hamilton"),
         contact(sf_id(4), "2024-01-04T00:00:00.000+0000", LastName="Liskov")],
        next_url="/services/data/v60.0/query/01gQ-400"))
    api.get(f"{API}/query/01gQ-400", json=query_page(
        [contact(sf_id(5), "2024-01-05T12:30:00.123+0000", LastName="Goldberg")]))

    pages, token = [], None
    while True:
        page = connector.read_page("Contact", page_token=token, page_size=100)
        pages.append(page)
        token = page.next_token
        if token is None:
            break

    assert [page.next_token for page in pages] == ["/services/data/v60.0/query/01gQ-200",
                                                   "/services/data/v60.0/query/01gQ-400", None]
    assert [record.id for page in pages for record in page.records] == [sf_id(n) for n in range(1, 6)]
    first = pages[0].records[0]
    assert first.data["LastName"] == "Lovelace" and "attributes" not in first.data and "Id" not in first.data
    assert first.modified_at == datetime(2024, 1, 1, tzinfo=UTC)
    assert [page.cursor for page in pages] == ["2024-01-02T00:00:00.000Z", "2024-01-04T00:00:00.000Z",
                                               "2024-01-05T12:30:00.123Z"]
    query_call = api.calls[1]  # after the describe
    assert soql(query_call) == f"{SELECT} ORDER BY SystemModstamp, Id"
    # Salesforce pages 200 records at least: a smaller page size is raised to it.
    assert {call.request.headers["Sforce-Query-Options"] for call in api.calls[1:]} == {"batchSize=200"}


@pytest.mark.parametrize(("page_size", "batch_size"), [(100, 200), (500, 500), (5000, 2000)])
def test_the_page_size_is_kept_within_what_salesforce_accepts(api, connector, page_size, batch_size):
    api.get(f"{API}/query/01gQ-200", json=query_page([]))

    connector.read_page("Contact", page_token="/services/data/v60.0/query/01gQ-200", page_size=page_size)

    assert api.calls[0].request.headers["Sforce-Query-Options"] == f"batchSize={batch_size}"


def test_an_incremental_read_filters_inclusively_and_reads_the_boundary_record_again(api, connector, describe):
    boundary = contact(sf_id(7), "2024-03-01T10:00:00.250+0000", LastName="Boundary")
    later = contact(sf_id(8), "2024-03-02T08:00:00.000+0000", LastName="Later")
    api.get(f"{API}/query", json=query_page([boundary, later]))

    page = connector.read_page("Contact", cursor="2024-03-01T10:00:00.250Z")

    assert soql(api.calls[1]) == f"{SELECT} WHERE SystemModstamp >= 2024-03-01T10:00:00Z ORDER BY SystemModstamp, Id"
    assert [record.id for record in page.records] == [sf_id(7), sf_id(8)]
    assert page.cursor == "2024-03-02T08:00:00.000Z"


def test_an_empty_incremental_page_leaves_the_cursor_where_it_was(api, connector, describe):
    api.get(f"{API}/query", json=query_page([]))

    page = connector.read_page("Contact", cursor="2024-03-01T10:00:00.000Z")

    assert page.records == [] and page.cursor is None and page.next_token is None


def test_a_cursor_that_is_not_a_timestamp_never_reaches_the_query(api, connector):
    with pytest.raises(ConnectorError) as caught:
        connector.read_page("Contact", cursor="2024-01-01T00:00:00Z OR Name != null")

    assert caught.value.code == "invalid_cursor" and not caught.value.retryable
    assert len(api.calls) == 0


def test_a_page_token_must_be_a_query_locator_on_the_org_s_instance(api, connector):
    with pytest.raises(ConnectorError) as caught:
        connector.read_page("Contact", page_token="https://evil.example/services/data/v60.0/query/01g-200")

    assert caught.value.code == "invalid_page_token"
    assert len(api.calls) == 0


def test_fetch_queries_by_id_and_leaves_missing_and_malformed_ids_out(api, connector, describe):
    api.get(f"{API}/query", json=query_page([contact(sf_id(1), "2024-01-01T00:00:00.000+0000", LastName="A")]))

    found = connector.fetch("Contact", [sf_id(1)[:15], sf_id(2), "003' OR Name != '"])

    assert soql(api.calls[1]) == f"{SELECT} WHERE Id IN ('{sf_id(1)[:15]}', '{sf_id(2)}')"
    # Asked by its 15-character id, the record answers under that id.
    assert list(found) == [sf_id(1)[:15]] and found[sf_id(1)[:15]].id == sf_id(1)


def test_find_quotes_and_escapes_values_and_keeps_only_exact_matches(api, connector, describe):
    api.get(f"{API}/query", json=query_page([
        contact(sf_id(1), "2024-01-01T00:00:00.000+0000", Email="o'brien@example.com"),
        contact(sf_id(2), "2024-01-01T00:00:00.000+0000", Email="ANN@example.com"),
    ]))

    found = connector.find("Contact", "Email", ["o'brien@example.com", "ann@example.com", 'q"b\\s@example.com'])

    assert soql(api.calls[1]) == (
        f"{SELECT} WHERE Email IN ('o\\'brien@example.com', 'ann@example.com', 'q\\\"b\\\\s@example.com')"
    )
    # SOQL compares text regardless of case; find is exact.
    assert {value: [r.id for r in records] for value, records in found.items()} == {
        "o'brien@example.com": [sf_id(1)]}


def test_find_writes_numbers_bare_and_skips_values_no_record_can_hold(api, connector, describe):
    api.get(f"{API}/query", json=query_page([contact(sf_id(3), "2024-01-01T00:00:00.000+0000", Kids__c=3.5)]))

    found = connector.find("Contact", "Kids__c", [2, "3.50", "many"])

    assert soql(api.calls[1]) == f"{SELECT} WHERE Kids__c IN (2, 3.5)"
    assert list(found) == ["3.50"]


def test_find_by_a_field_the_object_lacks_is_a_mapping_error(api, connector, describe):
    with pytest.raises(ConnectorError) as caught:
        connector.find("Contact", "Shoe_Size__c", ["42"])

    assert (caught.value.category, caught.value.field) == (ErrorCategory.MAPPING, "Shoe_Size__c")


# -- writes --------------------------------------------------------------------------------------------------------


def test_a_batch_write_sends_collections_and_answers_once_per_operation(api, connector):
    api.patch(f"{API}/composite/sobjects", json=[
        {"id": sf_id(2), "success": True, "errors": []},
        {"success": False, "errors": [{"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted",
                                       "fields": []}]},
    ])
    api.post(f"{API}/composite/sobjects", json=[
        {"id": sf_id(10), "success": True, "errors": []},
        {"success": False, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                                       "message": "Required fields are missing: [LastName]",
                                       "fields": ["LastName"]}]},
    ])
    operations = [
        WriteOperation("src-1", WriteAction.CREATE, {"LastName": "Lovelace", "Email": "ada@example.com"}),
        WriteOperation("src-2", WriteAction.UPDATE, {"Phone": "+44 20 7946 0000"}, target_id=sf_id(2)),
        WriteOperation("src-3", WriteAction.CREATE, {"Email": "nolastname@example.com"}),
        WriteOperation("src-4", WriteAction.UPDATE, {"LastName": "Hopper"}, target_id=sf_id(4)),
    ]

    results = connector.write("Contact", operations)

    assert [call.request.method for call in api.calls] == ["PATCH", "POST"]  # creates go last
    assert sent_json(api.calls[0]) == {"allOrNone": False, "records": [
        {"Phone": "+44 20 7946 0000", "attributes": {"type": "Contact"}, "id": sf_id(2)},
        {"LastName": "Hopper", "attributes": {"type": "Contact"}, "id": sf_id(4)},
    ]}
    assert sent_json(api.calls[1]) == {"allOrNone": False, "records": [
        {"LastName": "Lovelace", "Email": "ada@example.com", "attributes": {"type": "Contact"}},
        {"Email": "nolastname@example.com", "attributes": {"type": "Contact"}},
    ]}
    assert [(r.ref, r.ok, r.target_id, r.action) for r in results] == [
        ("src-1", True, sf_id(10), "create"), ("src-2", True, sf_id(2), "update"),
        ("src-3", False, None, None), ("src-4", False, sf_id(4), None),
    ]
    missing, deleted = results[2].error, results[3].error
    assert (missing.category, missing.code, missing.field) == (ErrorCategory.VALIDATION, "REQUIRED_FIELD_MISSING",
                                                               "LastName")
    assert (deleted.category, deleted.code) == (ErrorCategory.NOT_FOUND, "ENTITY_IS_DELETED")


def test_an_upsert_by_an_external_id_tells_creates_from_updates(api, connector, describe):
    api.patch(f"{API}/composite/sobjects/Contact/Ext_Id__c", json=[
        {"id": sf_id(20), "success": True, "errors": [], "created": True},
        {"id": sf_id(21), "success": True, "errors": [], "created": False},
        {"success": False, "errors": [{"statusCode": "DUPLICATE_EXTERNAL_ID",
                                       "message": "Ext_Id__c: more than one record found for external id field",
                                       "fields": ["Ext_Id__c"]}]},
    ])
    operations = [WriteOperation(f"src-{n}", WriteAction.UPSERT, {"Ext_Id__c": f"erp-{n}", "LastName": f"L{n}"},
                                 match_field="Ext_Id__c") for n in range(3)]

    results = connector.write("Contact", operations)

    assert sent_json(api.calls[1])["records"][0] == {"Ext_Id__c": "erp-0", "LastName": "L0",
                                                     "attributes": {"type": "Contact"}}
    assert [(r.ok, r.action, r.target_id) for r in results[:2]] == [(True, "create", sf_id(20)),
                                                                    (True, "update", sf_id(21))]
    assert results[2].error.category == ErrorCategory.DUPLICATE


def test_an_upsert_by_a_field_that_is_not_an_external_id_fails_its_records_without_a_write(api, connector,
                                                                                          describe):
    results = connector.write("Contact", [WriteOperation("src-1", WriteAction.UPSERT, {"Email": "a@example.com"},
                                                         match_field="Email")])

    assert (results[0].ok, results[0].error.code, results[0].error.field) == (False, "not_an_external_id", "Email")
    assert [call.request.method for call in api.calls] == ["GET"]  # the describe only


def test_a_write_that_fails_before_anything_was_carried_out_raises(api, connector):
    api.patch(f"{API}/composite/sobjects", status=503, body="<html>Down for maintenance</html>")

    with pytest.raises(ConnectorError) as caught:
        connector.write("Contact", [
            WriteOperation("src-1", WriteAction.UPDATE, {"LastName": "A"}, target_id=sf_id(1)),
            WriteOperation("src-2", WriteAction.CREATE, {"LastName": "B"}),
        ])

    assert caught.value.category == ErrorCategory.CONNECTION
    assert len(api.calls) == 1  # the creates were never sent


def test_creates_that_fail_after_the_updates_went_through_fail_alone(api, connector):
    api.patch(f"{API}/composite/sobjects", json=[{"id": sf_id(1), "success": True, "errors": []}])
    api.post(f"{API}/composite/sobjects", status=500,
             json=[{"errorCode": "UNKNOWN_EXCEPTION", "message": "An unexpected error occurred."}])

    results = connector.write("Contact", [
        WriteOperation("src-1", WriteAction.UPDATE, {"LastName": "A"}, target_id=sf_id(1)),
        WriteOperation("src-2", WriteAction.CREATE, {"LastName": "B"}),
    ])

    assert results[0].ok
    assert (results[1].ok, results[1].error.category) == (False, ErrorCategory.UNKNOWN)
    assert results[1].error.may_have_applied


def test_a_create_that_may_have_gone_through_is_not_sent_again_but_an_update_is(api, connector, settings):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0]
    lost = [{"errorCode": "UNKNOWN_EXCEPTION", "message": "An unexpected error occurred."}]
    api.post(f"{API}/composite/sobjects", status=500, json=lost)
    api.patch(f"{API}/composite/sobjects", status=500, json=lost)
    api.patch(f"{API}/composite/sobjects", json=[{"id": sf_id(1), "success": True, "errors": []}])

    with pytest.raises(ConnectorError):
        connector.write("Contact", [WriteOperation("src-1", WriteAction.CREATE, {"LastName": "A"})])
    results = connector.write("Contact", [
        WriteOperation("src-2", WriteAction.UPDATE, {"LastName": "B"}, target_id=sf_id(1))])

    assert [call.request.method for call in api.calls] == ["POST", "PATCH", "PATCH"]
    assert results[0].ok


# -- errors --------------------------------------------------------------------------------------------------------

# (status, errorCode, message, fields) -> (category, retryable, field, retry_after)
WHOLE_CALL_ERRORS = [
    pytest.param(401, "INVALID_SESSION_ID", "Session expired or invalid", None,
                 ErrorCategory.AUTH, False, "", None, id="expired-session"),
    pytest.param(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", None,
                 ErrorCategory.RATE_LIMIT, True, "", 3600, id="daily-allocation"),
    pytest.param(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.", None,
                 ErrorCategory.RATE_LIMIT, True, "", 30, id="concurrent-requests"),
    pytest.param(403, "INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights on object id", [],
                 ErrorCategory.PERMISSION, False, "", None, id="no-access"),
    pytest.param(403, "API_DISABLED_FOR_ORG", "The REST API is not enabled for this Organization.", None,
                 ErrorCategory.PERMISSION, False, "", None, id="api-disabled"),
    pytest.param(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]", ["LastName"],
                 ErrorCategory.VALIDATION, False, "LastName", None, id="required"),
    pytest.param(400, "STRING_TOO_LONG", "Last Name: data value too large: xxxxx (max length=80)", ["LastName"],
                 ErrorCategory.VALIDATION, False, "LastName", None, id="too-long"),
    pytest.param(400, "INVALID_EMAIL_ADDRESS", "Email: invalid email address: not-an-email", ["Email"],
                 ErrorCategory.VALIDATION, False, "Email", None, id="email"),
    pytest.param(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Phone needs ten digits", ["Phone"],
                 ErrorCategory.VALIDATION, False, "Phone", None, id="validation-rule"),
    pytest.param(400, "INVALID_FIELD", "No such column 'Shoe_Size__c' on sobject of type Contact", [],
                 ErrorCategory.VALIDATION, False, "", None, id="invalid-field"),
    pytest.param(400, "DUPLICATE_VALUE", "duplicate value found: Ext_Id__c duplicates value on record with id: "
                 "003580000003tW4u", [], ErrorCategory.DUPLICATE, False, "", None, id="duplicate-value"),
    pytest.param(400, "DUPLICATES_DETECTED", "Use one of these records?", [],
                 ErrorCategory.DUPLICATE, False, "", None, id="duplicate-rule"),
    pytest.param(404, "NOT_FOUND", "The requested resource does not exist", None,
                 ErrorCategory.NOT_FOUND, False, "", None, id="not-found"),
    pytest.param(404, "ENTITY_IS_DELETED", "entity is deleted", [],
                 ErrorCategory.NOT_FOUND, False, "", None, id="deleted"),
    pytest.param(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId: 1-2-3",
                 None, ErrorCategory.UNKNOWN, True, "", None, id="unknown-exception"),
]


@pytest.mark.parametrize(("status", "code", "message", "fields", "category", "retryable", "field", "retry_after"),
                         WHOLE_CALL_ERRORS)
def test_each_documented_error_answer_lands_in_its_category(api, make_connection, status, code, message, fields,
                                                            category, retryable, field, retry_after):
    connector = make_connection(credentials={"access_token": ACCESS_TOKEN}).get_connector()  # nothing to refresh
    entry = {"message": message, "errorCode": code}
    if fields is not None:
        entry["fields"] = fields
    api.get(f"{API}/query/01gQ-200", status=status, json=[entry])

    with pytest.raises(ConnectorError) as caught:
        connector.read_page("Contact", page_token="/services/data/v60.0/query/01gQ-200")

    error = caught.value
    assert (error.category, error.retryable, error.code, error.field) == (category, retryable, code, field)
    assert error.retry_after == retry_after
    assert error.message == message


def test_a_maintenance_page_is_a_connection_error_worth_retrying(api, connector):
    api.get(f"{API}/query/01gQ-200", status=503, body="<html>Salesforce is down for maintenance</html>")

    with pytest.raises(ConnectorError) as caught:
        connector.read_page("Contact", page_token="/services/data/v60.0/query/01gQ-200")

    assert (caught.value.category, caught.value.retryable) == (ErrorCategory.CONNECTION, True)


def test_an_external_id_matching_several_records_is_a_duplicate(api, connector):
    api.get(f"{API}/query/01gQ-200", status=300,
            json=[f"/services/data/v60.0/sobjects/Contact/{sf_id(1)}",
                  f"/services/data/v60.0/sobjects/Contact/{sf_id(2)}"])

    with pytest.raises(ConnectorError) as caught:
        connector.read_page("Contact", page_token="/services/data/v60.0/query/01gQ-200")

    assert (caught.value.category, caught.value.retryable) == (ErrorCategory.DUPLICATE, False)


RECORD_ERRORS = [
    ("REQUIRED_FIELD_MISSING", ["LastName"], ErrorCategory.VALIDATION, False),
    ("INVALID_EMAIL_ADDRESS", ["Email"], ErrorCategory.VALIDATION, False),
    ("FIELD_CUSTOM_VALIDATION_EXCEPTION", [], ErrorCategory.VALIDATION, False),
    ("INVALID_FIELD", [], ErrorCategory.VALIDATION, False),
    ("DUPLICATE_VALUE", [], ErrorCategory.DUPLICATE, False),
    ("DUPLICATES_DETECTED", [], ErrorCategory.DUPLICATE, False),
    ("ENTITY_IS_DELETED", [], ErrorCategory.NOT_FOUND, False),
    ("INSUFFICIENT_ACCESS_OR_READONLY", [], ErrorCategory.PERMISSION, False),
    ("UNKNOWN_EXCEPTION", [], ErrorCategory.UNKNOWN, True),
    ("UNABLE_TO_LOCK_ROW", [], ErrorCategory.TIMEOUT, True),
    # A code of a trigger or a flow: about the record's data, not worth retrying unchanged.
    ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", [], ErrorCategory.VALIDATION, False),
]


@pytest.mark.parametrize(("code", "fields", "category", "retryable"), RECORD_ERRORS)
def test_each_record_error_of_a_batch_lands_in_its_category(api, connector, code, fields, category, retryable):
    api.post(f"{API}/composite/sobjects", json=[
        {"success": False, "errors": [{"statusCode": code, "message": "refused", "fields": fields}]}])

    [result] = connector.write("Contact", [WriteOperation("src-1", WriteAction.CREATE, {"LastName": "A"})])

    assert (result.ok, result.error.category, result.error.retryable, result.error.code) == (
        False, category, retryable, code)
    assert result.error.field == (fields[0] if fields else "")


def test_a_too_long_value_named_by_its_label_points_at_the_field(api, connector, describe):
    api.post(f"{API}/composite/sobjects", json=[{"success": False, "errors": [
        {"statusCode": "STRING_TOO_LONG", "message": f"Last Name: data value too large: {'x' * 90} (max length=80)",
         "fields": []}]}])
    connector.describe_object("Contact")

    [result] = connector.write("Contact", [WriteOperation("src-1", WriteAction.CREATE, {"LastName": "x" * 90})])

    assert (result.error.category, result.error.field) == (ErrorCategory.VALIDATION, "LastName")


def test_credentials_echoed_in_an_error_never_reach_its_message_or_detail(api, connector):
    api.get(f"{API}/query/01gQ-200", status=400,
            json=[{"errorCode": "INVALID_FIELD", "message": f"Bad value {ACCESS_TOKEN} near {CLIENT_SECRET}"}])

    with pytest.raises(ConnectorError) as caught:
        connector.read_page("Contact", page_token="/services/data/v60.0/query/01gQ-200")

    for text in (caught.value.message, caught.value.detail):
        assert ACCESS_TOKEN not in text and CLIENT_SECRET not in text


# -- token refresh -------------------------------------------------------------------------------------------------

EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
MOVED_INSTANCE = "https://acme2.my.salesforce.com"


def token_answer(access_token="00Dacme!fresh-token-7c1e"):
    return {"access_token": access_token, "instance_url": MOVED_INSTANCE,
            "id": "https://login.salesforce.com/id/00Dxx0000001gPL/005xx000001Sv6e", "token_type": "Bearer",
            "issued_at": "1700000000000", "signature": "c2lnbmF0dXJl"}


def test_it_refreshes_an_expired_token_once_and_keeps_the_instance_it_names(api, connection, connector):
    api.get(f"{API}/", status=401, json=EXPIRED)
    api.post(TOKEN_URL, json=token_answer())
    api.get(f"{MOVED_INSTANCE}/services/data/v60.0/", json={})

    connector.check()

    assert [call.request.url for call in api.calls] == [f"{API}/", TOKEN_URL, f"{MOVED_INSTANCE}/services/data/v60.0/"]
    assert parse_qs(api.calls[1].request.body) == {
        "grant_type": ["refresh_token"], "refresh_token": [REFRESH_TOKEN], "client_id": ["3MVG9-consumer-key"],
        "client_secret": [CLIENT_SECRET]}
    assert api.calls[2].request.headers["Authorization"] == "Bearer 00Dacme!fresh-token-7c1e"
    row = Connection.objects.get(pk=connection.pk)
    assert row.credentials == {**CREDENTIALS, "access_token": "00Dacme!fresh-token-7c1e",
                               "instance_url": MOVED_INSTANCE}
    assert "fresh-token" not in row.credentials_ciphertext


def test_a_second_401_right_after_a_refresh_is_not_refreshed_again(api, connector):
    api.get(f"{API}/", status=401, json=EXPIRED)
    api.post(TOKEN_URL, json=token_answer())
    api.get(f"{MOVED_INSTANCE}/services/data/v60.0/", status=401, json=EXPIRED)

    with pytest.raises(ConnectorError) as caught:
        connector.check()

    assert caught.value.category == ErrorCategory.AUTH
    assert [call.request.url for call in api.calls].count(TOKEN_URL) == 1


def test_a_refused_refresh_needs_a_reconnect(api, make_connection):
    connection = make_connection(login_url="https://test.salesforce.com")
    api.get(f"{API}/", status=401, json=EXPIRED)
    api.post("https://test.salesforce.com/services/oauth2/token", status=400,
             json={"error": "invalid_grant", "error_description": "expired access/refresh token"})

    error = connection_check(connection=connection)

    assert (error.category, error.code, error.retryable) == (ErrorCategory.AUTH, "refresh_failed", False)
    connection.refresh_from_db()
    assert connection.status == "needs_reauth"


# -- the daily API allocation --------------------------------------------------------------------------------------


def test_it_stops_short_of_the_daily_allocation_without_calling(api, connector):
    api.get(f"{API}/", json={}, headers={"Sforce-Limit-Info": "api-usage=98000/100000"})

    connector.check()
    with pytest.raises(ConnectorError) as caught:
        connector.check()

    assert len(api.calls) == 1
    error = caught.value
    assert (error.category, error.code, error.retryable) == (ErrorCategory.RATE_LIMIT, "api_allocation_reserve", True)
    assert error.retry_after == 3600


def test_it_learns_the_usage_from_error_answers_too(api, connector):
    api.get(f"{API}/query/01gQ-200", status=400, json=[{"errorCode": "INVALID_FIELD", "message": "bad"}],
            headers={"Sforce-Limit-Info": "api-usage=99990/100000"})

    with pytest.raises(ConnectorError):
        connector.read_page("Contact", page_token="/services/data/v60.0/query/01gQ-200")
    with pytest.raises(ConnectorError) as caught:
        connector.check()

    assert caught.value.code == "api_allocation_reserve" and len(api.calls) == 1


@pytest.mark.parametrize("limit_info", ["api-usage=97999/100000",
                                        "per-app-api-usage=250/250(appName=resync); api-usage=12/100000"])
def test_it_keeps_calling_below_the_reserve(api, connector, limit_info):
    api.get(f"{API}/", json={}, headers={"Sforce-Limit-Info": limit_info})

    connector.check()
    connector.check()

    assert len(api.calls) == 2


# -- webhooks through a relay (the base's generic scheme) ----------------------------------------------------------

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"salesforce-relay-signing-key").decode()
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
CHANGED = json.dumps({"type": "records.changed", "object": "Contact", "ids": [sf_id(1), sf_id(2)]}).encode()


def signed(raw, *, secret=WEBHOOK_SECRET, at=NOW, webhook_id="msg_2f1"):
    timestamp = str(int(at.timestamp()))
    return {"webhook-id": webhook_id, "webhook-timestamp": timestamp,
            "webhook-signature": webhook_signature(secret, webhook_id=webhook_id, timestamp=timestamp, raw_body=raw)}


def verify(connector, headers, raw=CHANGED):
    connector.verify_webhook(secrets=[WEBHOOK_SECRET], method="POST", url="https://resync.example/hooks/abc",
                             headers=headers, raw_body=raw, now=NOW)


def test_a_relay_s_signed_delivery_is_verified_and_names_the_changed_contacts(connector):
    headers = signed(CHANGED)

    verify(connector, headers)

    assert connector.webhook_event_id(headers=headers, payload=json.loads(CHANGED)) == "msg_2f1"
    assert connector.parse_webhook(json.loads(CHANGED)) == [WebhookChange("Contact", [sf_id(1), sf_id(2)])]


@pytest.mark.parametrize(("headers", "code"), [
    pytest.param(signed(CHANGED, secret="whsec_" + base64.b64encode(b"someone-else").decode()),
                 "signature_invalid", id="wrong-secret"),
    pytest.param(signed(b'{"type": "records.changed", "object": "Contact", "ids": []}'),
                 "signature_invalid", id="other-body"),
    pytest.param(signed(CHANGED, at=NOW - timedelta(minutes=10)), "timestamp_out_of_tolerance", id="stale"),
    pytest.param({}, "signature_missing", id="missing"),
])
def test_an_untrustworthy_delivery_is_refused(connector, headers, code):
    with pytest.raises(WebhookSignatureError) as caught:
        verify(connector, headers)

    assert caught.value.code == code


def test_a_payload_of_the_wrong_shape_is_refused_and_other_events_are_ignored(connector):
    with pytest.raises(WebhookPayloadError):
        connector.parse_webhook({"type": "records.changed", "object": "Contact", "ids": "003"})

    assert connector.parse_webhook({"type": "ping"}) == []
