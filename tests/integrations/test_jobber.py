"""The Jobber connector against Jobber's documented GraphQL shapes (developer.getjobber.com), served by `responses`.

Fixtures follow the request and error shapes of the reference (section 4 of connector-apis.md): one POST endpoint,
Relay pages, `userErrors` per mutation, THROTTLED with extensions.cost, and the X-Jobber-Hmac-SHA256 webhook.
"""

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest
import responses
import time_machine

from integrations import services
from integrations.connectors.base import (
    FieldType,
    WebhookChange,
    WebhookPayloadError,
    WebhookSignatureError,
    WriteAction,
    WriteOperation,
)
from integrations.connectors.jobber import JobberConnector
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import Connection, ConnectionStatus

pytestmark = pytest.mark.django_db

API = "https://api.getjobber.com/api/graphql"
TOKEN_URL = "https://api.getjobber.com/api/oauth/token"
CLIENT_SECRET = "jobber_app_secret_5c1e_canary_9f27"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_network_surprises(settings):
    settings.RESYNC_ALLOW_PRIVATE_URLS = True  # the SSRF guard would resolve api.getjobber.com: no DNS here
    settings.RESYNC_HTTP_RETRY_DELAYS = []


class SleepRecorder:
    def __init__(self):
        self.delays = []

    def __call__(self, seconds):
        self.delays.append(seconds)


@pytest.fixture
def make_connection(org):
    def make(*, credentials=None, **config):
        connection = Connection(organization=org, name="Jobber", provider="jobber", config=config)
        connection.credentials = credentials or {
            "access_token": "at_live_1", "refresh_token": "rt_live_1", "client_id": "app_id_1",
            "client_secret": CLIENT_SECRET,
        }
        connection.save()
        return connection

    return make


@pytest.fixture
def connector(make_connection):
    connector = make_connection().get_connector()
    connector.sleep = SleepRecorder()
    connector.clock = lambda: 1000.0  # the bucket does not refill between two requests unless a test says so
    return connector


def cost(*, requested=100, available=9_900, rate=500, maximum=10_000):
    return {"cost": {"requestedQueryCost": requested, "actualQueryCost": requested, "throttleStatus": {
        "maximumAvailable": maximum, "currentlyAvailable": available, "restoreRate": rate}}}


def answer(data, **bucket):
    return {"data": data, "extensions": cost(**bucket)}


def sent(call):
    return json.loads(call.request.body)


def client_node(number, *, updated, emails=None, phones=None, **fields):
    return {
        "id": f"Y2xpZW50LzE{number}", "firstName": f"Ann{number}", "lastName": "Lee", "companyName": None,
        "isCompany": False, "isLead": False, "isArchived": False, "jobberWebUri": f"https://secure.getjobber.com/clients/{number}",
        "createdAt": "2024-01-01T00:00:00Z", "updatedAt": updated,
        "emails": emails if emails is not None else [{"id": f"em{number}", "address": f"ann{number}@example.org",
                                                      "primary": True}],
        "phones": phones if phones is not None else [],
        **fields,
    }


def job_node(number, *, updated):
    return {
        "id": f"am9iLz{number}", "jobNumber": number, "title": f"Hedge trim {number}", "instructions": "Side gate",
        "jobStatus": "upcoming", "startAt": "2025-03-10T09:00:00Z", "endAt": "2025-03-10T11:00:00Z",
        "total": 120.0, "jobberWebUri": f"https://secure.getjobber.com/work_orders/{number}",
        "createdAt": "2025-01-01T00:00:00Z", "updatedAt": updated,
        "client": {"id": "Y2xpZW50LzE1"}, "property": {"id": "cHJvcGVydHkvOQ"},
    }


def page(collection, nodes, *, end_cursor=None, has_next=False, **bucket):
    return answer({collection: {"nodes": nodes, "pageInfo": {"endCursor": end_cursor, "hasNextPage": has_next}}},
                  **bucket)


def jwt(claims):
    def part(value):
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


# -- connection, auth headers and schema -------------------------------------------------------------------------


@responses.activate
def test_it_sends_the_bearer_token_and_the_api_version(connector):
    responses.post(API, json=answer({"account": {"id": "YWNjb3VudC8x", "name": "Acme Lawn"}}))

    connector.check()

    request = responses.calls[0].request
    assert request.headers["Authorization"] == "Bearer at_live_1"
    assert request.headers["X-JOBBER-GRAPHQL-VERSION"] == "2025-01-20"
    assert request.headers["Content-Type"] == "application/json"
    assert "account { id name }" in sent(responses.calls[0])["query"]


@responses.activate
def test_it_calls_the_configured_base_url_with_the_configured_version(make_connection):
    connector = make_connection(base_url="https://jobber-proxy.example.net/", api_version="2024-06-01").get_connector()
    responses.post("https://jobber-proxy.example.net/api/graphql", json=answer({"account": {"id": "a", "name": "A"}}))

    connector.check()

    assert responses.calls[0].request.headers["X-JOBBER-GRAPHQL-VERSION"] == "2024-06-01"


def test_it_refuses_an_api_version_that_is_not_a_date():
    assert JobberConnector.validate_config({"api_version": "latest"}) == {
        "api_version": ["API version must be a date such as 2025-01-20."]}
    assert JobberConnector.validate_config({"api_version": "2025-01-20"}) == {}


def test_it_declares_clients_and_jobs_with_a_read_only_unique_id_first(connector):
    assert [summary.name for summary in connector.list_objects()] == ["clients", "jobs"]

    clients = connector.describe_object("clients")
    jobs = connector.describe_object("jobs")

    for schema in (clients, jobs):
        first = next(iter(schema.fields.values()))
        assert (first.name, first.read_only, first.unique) == ("id", True, True)
    assert clients.fields["email"].type == FieldType.EMAIL
    assert clients.fields["phone"].type == FieldType.PHONE
    assert clients.fields["updatedAt"].read_only and clients.fields["updatedAt"].type == FieldType.DATETIME
    assert not clients.fields["firstName"].read_only
    assert jobs.fields["jobNumber"].read_only and jobs.fields["jobNumber"].type == FieldType.INTEGER
    assert jobs.fields["jobStatus"].read_only and jobs.fields["clientId"].read_only
    assert jobs.fields["propertyId"].required


def test_an_unknown_object_is_a_mapping_error(connector):
    with pytest.raises(ConnectorError) as caught:
        connector.describe_object("invoices")

    assert caught.value.category == ErrorCategory.MAPPING
    assert caught.value.code == "object_not_found"


# -- reads ---------------------------------------------------------------------------------------------------------


@responses.activate
def test_it_reads_every_page_in_updated_order(connector):
    pages = {
        None: page("clients", [
            client_node(1, updated="2025-03-01T10:00:01Z", emails=[
                {"id": "em-old", "address": "old@example.org", "primary": False},
                {"id": "em-main", "address": "main@example.org", "primary": True}],
                phones=[{"id": "ph1", "number": "+1 555 0100", "primary": True}]),
            client_node(2, updated="2025-03-01T10:00:02Z")], end_cursor="MQ", has_next=True),
        "MQ": page("clients", [client_node(3, updated="2025-03-01T10:00:03Z"),
                               client_node(4, updated="2025-03-01T10:00:04Z")], end_cursor="Mg", has_next=True),
        "Mg": page("clients", [client_node(5, updated="2025-03-01T10:00:05Z", emails=[])], end_cursor="Mw"),
    }
    responses.add_callback(responses.POST, API, callback=lambda request: (
        200, {}, json.dumps(pages[json.loads(request.body)["variables"]["after"]])))

    read, token = [], None
    while True:
        result = connector.read_page("clients", page_token=token, page_size=2)
        read.append(result)
        token = result.next_token
        if token is None:
            break

    assert [call_variables["after"] for call_variables in (sent(call)["variables"] for call in responses.calls)] == [
        None, "MQ", "Mg"]
    assert all(sent(call)["variables"]["first"] == 2 for call in responses.calls)
    assert all("filter" not in sent(call)["variables"] for call in responses.calls)
    assert "sort: {key: UPDATED_AT, direction: ASCENDING}" in sent(responses.calls[0])["query"]
    records = [record for result in read for record in result.records]
    assert [record.id for record in records] == [f"Y2xpZW50LzE{n}" for n in range(1, 6)]
    first = records[0]
    assert first.data["email"] == "main@example.org"
    assert first.data["phone"] == "+1 555 0100"
    assert "emails" not in first.data and "id" not in first.data
    assert first.modified_at == datetime(2025, 3, 1, 10, 0, 1, tzinfo=UTC)
    assert records[-1].data["email"] is None
    assert [result.cursor for result in read] == [
        "2025-03-01T10:00:02+00:00", "2025-03-01T10:00:04+00:00", "2025-03-01T10:00:05+00:00"]


@responses.activate
def test_an_incremental_read_filters_from_just_before_the_cursor_and_reads_its_timestamp_again(connector):
    cursor = "2025-03-01T10:00:05+00:00"
    responses.post(API, json=page("clients", [
        client_node(5, updated="2025-03-01T10:00:05Z"),  # shares the cursor's timestamp: read again
        client_node(6, updated="2025-03-01T10:00:09Z"),
    ]))

    result = connector.read_page("clients", cursor=cursor)

    assert sent(responses.calls[0])["variables"]["filter"] == {"updatedAt": {"after": "2025-03-01T10:00:04Z"}}
    assert "filter: $filter" in sent(responses.calls[0])["query"]
    assert [record.id for record in result.records] == ["Y2xpZW50LzE5", "Y2xpZW50LzE6"]
    assert result.cursor == "2025-03-01T10:00:09+00:00"
    assert result.next_token is None


@responses.activate
def test_jobs_have_no_updated_filter_so_older_jobs_are_dropped_on_this_side(connector):
    responses.post(API, json=page("jobs", [
        job_node(1, updated="2025-03-01T09:00:00Z"),
        job_node(2, updated="2025-03-01T10:00:05Z"),
        job_node(3, updated="2025-03-01T11:00:00Z"),
    ]))

    result = connector.read_page("jobs", cursor="2025-03-01T10:00:05Z")

    variables = sent(responses.calls[0])["variables"]
    assert "filter" not in variables and "filter" not in sent(responses.calls[0])["query"]
    assert [record.data["jobNumber"] for record in result.records] == [2, 3]
    job = result.records[0]
    assert job.data["clientId"] == "Y2xpZW50LzE1" and job.data["propertyId"] == "cHJvcGVydHkvOQ"
    assert "client" not in job.data and "property" not in job.data
    assert result.cursor == "2025-03-01T11:00:00+00:00"


@responses.activate
def test_a_page_that_costs_more_than_the_whole_bucket_is_asked_again_for_fewer_records(connector):
    too_expensive = {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                     "extensions": cost(requested=10_001, available=10_000)}
    responses.post(API, json=too_expensive)
    responses.post(API, json=page("clients", [client_node(1, updated="2025-03-01T10:00:01Z")]))

    result = connector.read_page("clients", page_size=100)

    assert [sent(call)["variables"]["first"] for call in responses.calls] == [100, 50]
    assert len(result.records) == 1
    assert connector.sleep.delays == []


@responses.activate
def test_it_fetches_records_by_id_and_leaves_out_the_missing_ones(connector):
    responses.post(API, json=answer({"r0": client_node(1, updated="2025-03-01T10:00:01Z"), "r1": None}))

    found = connector.fetch("clients", ["Y2xpZW50LzE1", "gone"])

    body = sent(responses.calls[0])
    assert body["variables"] == {"r0": "Y2xpZW50LzE1", "r1": "gone"}
    assert "r0: client(id: $r0)" in body["query"] and "r1: client(id: $r1)" in body["query"]
    assert list(found) == ["Y2xpZW50LzE1"]
    assert found["Y2xpZW50LzE1"].data["email"] == "ann1@example.org"


@responses.activate
def test_a_fetch_counts_an_id_jobber_cannot_find_as_missing_but_raises_other_errors(connector):
    responses.post(API, json={"data": {"r0": None}, "errors": [
        {"message": "Could not find Client", "path": ["r0"]}]})
    responses.post(API, json={"data": None, "errors": [
        {"message": "The field client on an object of type Query was hidden due to permissions"}]})

    assert connector.fetch("clients", ["nope"]) == {}
    with pytest.raises(ConnectorError) as caught:
        connector.fetch("clients", ["Y2xpZW50LzE1"])
    assert caught.value.category == ErrorCategory.PERMISSION


@responses.activate
def test_it_finds_clients_by_an_exact_email_among_loose_search_results(connector):
    responses.post(API, json=page("clients", [
        client_node(1, updated="2025-03-01T10:00:01Z", emails=[{"id": "e1", "address": "Ann@Example.org",
                                                                  "primary": True}]),
        client_node(2, updated="2025-03-01T10:00:02Z", emails=[{"id": "e2", "address": "joann@example.org",
                                                                  "primary": True}]),
    ]))

    found = connector.find("clients", "email", ["ann@example.org"])

    assert sent(responses.calls[0])["variables"] == {"term": "ann@example.org", "first": 100, "after": None}
    assert "searchTerm: $term" in sent(responses.calls[0])["query"]
    assert [record.id for record in found["ann@example.org"]] == ["Y2xpZW50LzE1"]


# -- writes --------------------------------------------------------------------------------------------------------


@responses.activate
def test_a_batch_write_sends_one_aliased_mutation_and_reports_each_record(connector):
    current = client_node(3, updated="2025-03-01T10:00:03Z", emails=[
        {"id": "em-3", "address": "old@example.org", "primary": True}], phones=[])
    responses.post(API, json=answer({"r0": current}))  # the client's email ids, read before editing them
    responses.post(API, json=answer({
        "w0": {"client": client_node(7, updated="2025-03-01T12:00:00Z", emails=[
            {"id": "em-7", "address": "new@example.org", "primary": True}]), "userErrors": []},
        "w1": {"client": None, "userErrors": [
            {"message": "Email address is invalid", "path": ["input", "emails", 0, "address"]}]},
        "w2": {"client": {**current, "emails": [{"id": "em-3", "address": "ann3@example.org", "primary": True}]},
               "userErrors": []},
        "w3": {"client": None, "userErrors": []},
    }))
    operations = [
        WriteOperation(ref="src-1", action=WriteAction.CREATE,
                       data={"firstName": "Nia", "email": "new@example.org", "phone": "+1 555 0107"}),
        WriteOperation(ref="src-2", action=WriteAction.CREATE, data={"firstName": "Bad", "email": "not-an-email"}),
        WriteOperation(ref="src-3", action=WriteAction.UPDATE, target_id="Y2xpZW50LzE3",
                       data={"lastName": "Lee", "email": "ann3@example.org", "phone": "+1 555 0103"}),
        WriteOperation(ref="src-4", action=WriteAction.UPDATE, target_id="Y2xpZW50LzE4", data={"firstName": "Gone"}),
        WriteOperation(ref="src-5", action=WriteAction.UPSERT, data={"email": "x@example.org"}, match_field="email"),
    ]

    results = connector.write("clients", operations)

    assert len(responses.calls) == 2
    assert sent(responses.calls[0])["variables"] == {"r0": "Y2xpZW50LzE3"}
    mutation = sent(responses.calls[1])
    assert mutation["query"].startswith("mutation Write(")
    assert "w0: clientCreate(input: $input0)" in mutation["query"]
    assert "w2: clientEdit(clientId: $id2, input: $input2)" in mutation["query"]
    assert "w4" not in mutation["query"]
    assert mutation["variables"]["input0"] == {
        "firstName": "Nia", "emails": [{"address": "new@example.org", "primary": True}],
        "phones": [{"number": "+1 555 0107", "primary": True}]}
    assert mutation["variables"]["id2"] == "Y2xpZW50LzE3"
    assert mutation["variables"]["input2"] == {
        "lastName": "Lee", "emailsToEdit": [{"id": "em-3", "address": "ann3@example.org"}],
        "phonesToAdd": [{"number": "+1 555 0103", "primary": True}]}

    assert [result.ref for result in results] == ["src-1", "src-2", "src-3", "src-4", "src-5"]
    created, invalid, updated, missing, upsert = results
    assert created.ok and created.action == "create" and created.target_id == "Y2xpZW50LzE7"
    assert created.record["email"] == "new@example.org"
    assert not invalid.ok
    assert (invalid.error.category, invalid.error.field) == (ErrorCategory.VALIDATION, "email")
    assert invalid.error.message == "Email address is invalid" and not invalid.error.retryable
    assert updated.ok and updated.action == "update" and updated.record["email"] == "ann3@example.org"
    assert not missing.ok and missing.error.category == ErrorCategory.NOT_FOUND
    assert not upsert.ok and upsert.error.code == "action_unsupported"


@responses.activate
def test_a_job_is_created_on_its_property_with_default_invoicing(connector):
    responses.post(API, json=answer({"w0": {"job": job_node(9, updated="2025-03-01T12:00:00Z"), "userErrors": []}}))

    results = connector.write("jobs", [
        WriteOperation(ref="job-9", action=WriteAction.CREATE,
                       data={"title": "Hedge trim 9", "propertyId": "cHJvcGVydHkvOQ", "jobNumber": 99}),
        WriteOperation(ref="job-10", action=WriteAction.CREATE, data={"title": "No property"}),
    ])

    assert sent(responses.calls[0])["variables"]["input0"] == {
        "title": "Hedge trim 9", "propertyId": "cHJvcGVydHkvOQ",
        "invoicing": {"invoicingType": "FIXED_PRICE", "invoicingSchedule": "ON_COMPLETION"}}
    assert "$input0: JobCreateAttributes!" in sent(responses.calls[0])["query"]
    assert results[0].ok and results[0].record["jobNumber"] == 9
    assert (results[1].error.category, results[1].error.field) == (ErrorCategory.VALIDATION, "propertyId")


@responses.activate
def test_a_mutation_that_creates_is_not_sent_again_after_a_500(connector, settings):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0]
    responses.post(API, status=500, json={"message": "Internal Server Error"})

    with pytest.raises(ConnectorError) as caught:
        connector.write("clients", [WriteOperation(ref="s1", action=WriteAction.CREATE, data={"firstName": "A"})])

    assert len(responses.calls) == 1
    assert caught.value.may_have_applied


@responses.activate
def test_an_update_that_only_sets_fields_is_sent_again_after_a_500(connector, settings):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0]
    responses.post(API, status=500, json={"message": "Internal Server Error"})
    responses.post(API, json=answer({"w0": {"client": client_node(1, updated="2025-03-01T12:00:00Z"),
                                            "userErrors": []}}))

    results = connector.write("clients", [WriteOperation(ref="s1", action=WriteAction.UPDATE,
                                                         target_id="Y2xpZW50LzE1", data={"firstName": "Ann1"})])

    assert len(responses.calls) == 2
    assert results[0].ok


@responses.activate
def test_a_write_refused_as_a_whole_raises(connector):
    responses.post(API, json={"data": None, "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                              "extensions": cost(requested=500, available=0)})

    with pytest.raises(ConnectorError) as caught:
        connector.write("clients", [WriteOperation(ref="s1", action=WriteAction.CREATE, data={"firstName": "A"})])

    assert caught.value.category == ErrorCategory.RATE_LIMIT
    assert caught.value.retry_after == 1


# -- errors --------------------------------------------------------------------------------------------------------

PERMISSIONS = "The field jobs on an object of type Query was hidden due to permissions"
DISCONNECTED = "User has disconnected this app from their account. Please delete this token"


@pytest.mark.parametrize(
    ("status", "body", "headers", "category", "retryable", "retry_after"),
    [
        pytest.param(401, {"message": "Unauthorized"}, {}, ErrorCategory.AUTH, False, None, id="expired-token"),
        pytest.param(404, "<h1>Not Found</h1>", {}, ErrorCategory.NOT_FOUND, False, None, id="wrong-base-url"),
        pytest.param(429, "Retry later\n", {"Retry-After": "30"}, ErrorCategory.RATE_LIMIT, True, 30,
                     id="request-limit"),
        pytest.param(500, {"message": "Internal Server Error"}, {}, ErrorCategory.UNKNOWN, True, None, id="500"),
        pytest.param(502, "Bad gateway", {}, ErrorCategory.CONNECTION, True, None, id="502"),
        pytest.param(503, "Service Unavailable", {}, ErrorCategory.CONNECTION, True, None, id="503"),
        pytest.param(200, {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                           "extensions": cost(requested=1_500, available=500, rate=500)},
                     {}, ErrorCategory.RATE_LIMIT, True, 2, id="throttled"),
        pytest.param(200, {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                           "extensions": cost(requested=10_001, available=10_000)},
                     {}, ErrorCategory.UNKNOWN, False, None, id="query-costs-more-than-the-bucket"),
        pytest.param(200, {"data": None, "errors": [{"message": PERMISSIONS}]}, {}, ErrorCategory.PERMISSION, False,
                     None, id="missing-scope"),
        pytest.param(200, {"errors": [{"message": DISCONNECTED}]}, {}, ErrorCategory.AUTH, False, None,
                     id="app-disconnected"),
        pytest.param(200, {"errors": [{"message": "Service temporarily unavailable"}]}, {},
                     ErrorCategory.CONNECTION, True, None, id="outage"),
    ],
)
@responses.activate
def test_each_documented_error_lands_in_its_category(make_connection, status, body, headers, category, retryable,
                                                     retry_after):
    # No refresh token: a 401 is reported as it is, without a refresh.
    connector = make_connection(credentials={"access_token": "at_only"}).get_connector()
    payload = {"json": body} if isinstance(body, dict) else {"body": body}
    responses.post(API, status=status, headers=headers, **payload)

    with pytest.raises(ConnectorError) as caught:
        connector.check()

    assert caught.value.category == category
    assert caught.value.retryable is retryable
    assert caught.value.retry_after == retry_after


@responses.activate
def test_a_429_without_retry_after_waits_for_the_end_of_the_300_second_window(make_connection):
    connector = make_connection(credentials={"access_token": "at_only"}).get_connector()
    responses.post(API, status=429, body="Retry later\n")

    with time_machine.travel(datetime.fromtimestamp(1_740_000_090, UTC), tick=False), \
            pytest.raises(ConnectorError) as caught:
        connector.check()

    assert caught.value.category == ErrorCategory.RATE_LIMIT
    assert caught.value.retry_after == 210


@responses.activate
def test_a_credential_echoed_in_an_error_message_is_scrubbed(make_connection):
    connector = make_connection(credentials={"access_token": "at_secret_echo"}).get_connector()
    responses.post(API, json={"errors": [{"message": "Token at_secret_echo is not valid for this app"}]})

    with pytest.raises(ConnectorError) as caught:
        connector.check()

    assert "at_secret_echo" not in caught.value.message
    assert "at_secret_echo" not in caught.value.detail


# -- OAuth2 refresh ------------------------------------------------------------------------------------------------


@responses.activate
def test_it_refreshes_an_expired_token_once_and_stores_the_rotated_refresh_token(make_connection):
    connection = make_connection(credentials={
        "access_token": "at_old", "refresh_token": "rt_old", "client_id": "app_id_1",
        "client_secret": CLIENT_SECRET, "expires_at": int(time.time()) - 10})
    connector = connection.get_connector()
    responses.post(TOKEN_URL, json={"access_token": "at_new", "refresh_token": "rt_new", "expires_in": 3600})
    responses.post(API, json=answer({"account": {"id": "a", "name": "A"}}))

    connector.check()
    connector.check()

    token_calls = [call for call in responses.calls if call.request.url == TOKEN_URL]
    assert len(token_calls) == 1
    assert parse_qs(token_calls[0].request.body) == {
        "grant_type": ["refresh_token"], "refresh_token": ["rt_old"], "client_id": ["app_id_1"],
        "client_secret": [CLIENT_SECRET]}
    api_calls = [call for call in responses.calls if call.request.url == API]
    assert [call.request.headers["Authorization"] for call in api_calls] == ["Bearer at_new", "Bearer at_new"]
    stored = Connection.objects.get(pk=connection.pk)
    assert stored.credentials["refresh_token"] == "rt_new"
    assert stored.credentials["access_token"] == "at_new"
    assert stored.credentials["expires_at"] > time.time() + 3500
    assert "rt_new" not in stored.credentials_ciphertext  # encrypted at rest


@responses.activate
def test_the_token_endpoint_follows_the_configured_base_url(make_connection):
    connection = make_connection(base_url="https://jobber-proxy.example.net", credentials={
        "access_token": "at_old", "refresh_token": "rt_old", "client_id": "app_id_1",
        "client_secret": CLIENT_SECRET, "expires_at": int(time.time()) - 10})
    responses.post("https://jobber-proxy.example.net/api/oauth/token",
                   json={"access_token": "at_new", "refresh_token": "rt_new", "expires_in": 3600})
    responses.post("https://jobber-proxy.example.net/api/graphql", json=answer({"account": {"id": "a", "name": "A"}}))

    connection.get_connector().check()

    assert [call.request.url for call in responses.calls] == [
        "https://jobber-proxy.example.net/api/oauth/token", "https://jobber-proxy.example.net/api/graphql"]


@responses.activate
def test_a_second_401_right_after_a_refresh_is_raised_not_refreshed_again(connector):
    responses.post(API, status=401, json={"message": "Unauthorized"})
    responses.post(TOKEN_URL, json={"access_token": "at_live_2", "refresh_token": "rt_live_2"})

    with pytest.raises(ConnectorError) as caught:
        connector.check()

    assert caught.value.category == ErrorCategory.AUTH
    assert len([call for call in responses.calls if call.request.url == TOKEN_URL]) == 1
    api_calls = [call for call in responses.calls if call.request.url == API]
    assert [call.request.headers["Authorization"] for call in api_calls] == ["Bearer at_live_1", "Bearer at_live_2"]


@responses.activate
def test_without_expires_in_the_expiry_comes_from_the_jwt(make_connection):
    expiry = int(time.time()) + 3600
    new_token = jwt({"exp": expiry, "account_id": "YWNjb3VudC8x"})
    connection = make_connection(credentials={
        "access_token": jwt({"exp": int(time.time()) - 5}), "refresh_token": "rt_old", "client_id": "app_id_1",
        "client_secret": CLIENT_SECRET})
    responses.post(TOKEN_URL, json={"access_token": new_token, "refresh_token": "rt_new"})
    responses.post(API, json=answer({"account": {"id": "a", "name": "A"}}))

    connection.get_connector().check()  # the pasted JWT had expired: refreshed before the first request

    assert [call.request.url for call in responses.calls] == [TOKEN_URL, API]
    assert Connection.objects.get(pk=connection.pk).credentials["expires_at"] == expiry


@responses.activate
def test_a_refused_refresh_marks_the_connection_as_needing_reauthentication(make_connection):
    connection = make_connection(credentials={
        "access_token": "at_old", "refresh_token": "rt_spent", "client_id": "app_id_1",
        "client_secret": CLIENT_SECRET, "expires_at": int(time.time()) - 10})
    responses.post(TOKEN_URL, status=400, json={"error": "invalid_grant",
                                                "error_description": "The refresh token is invalid"})

    with pytest.raises(ConnectorError) as caught:
        connection.get_connector().check()
    assert (caught.value.category, caught.value.code) == (ErrorCategory.AUTH, "refresh_failed")

    error = services.connection_check(connection=connection)

    assert error.category == ErrorCategory.AUTH
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    assert not [call for call in responses.calls if call.request.url == API]


# -- the query-cost bucket -----------------------------------------------------------------------------------------


@responses.activate
def test_it_waits_for_the_bucket_to_refill_before_a_query_it_cannot_afford(connector):
    responses.post(API, json=page("clients", [], requested=3_000, available=100, rate=500))
    responses.post(API, json=page("clients", [], requested=3_000, available=7_000, rate=500))

    connector.read_page("clients", page_size=100)
    connector.read_page("clients", page_size=100)

    assert connector.sleep.delays == [6]  # (3,000 - 100) points at 500 a second


@responses.activate
def test_it_counts_the_refill_since_the_last_answer(connector):
    now = [1000.0]
    connector.clock = lambda: now[0]
    responses.post(API, json=page("clients", [], requested=3_000, available=100, rate=500))
    responses.post(API, json=page("clients", [], requested=3_000, available=7_000, rate=500))

    connector.read_page("clients", page_size=100)
    now[0] += 4  # 2,000 points back
    connector.read_page("clients", page_size=100)

    assert connector.sleep.delays == [2]


@responses.activate
def test_it_does_not_wait_when_the_bucket_holds_the_query(connector):
    responses.post(API, json=page("clients", [], requested=3_000, available=9_000))
    responses.post(API, json=page("clients", [], requested=3_000, available=6_000))

    connector.read_page("clients")
    connector.read_page("clients")

    assert connector.sleep.delays == []


# -- webhooks ------------------------------------------------------------------------------------------------------


def delivery(topic="CLIENT_UPDATE", item_id="Y2xpZW50LzE1", account_id="YWNjb3VudC8x",
             occurred_at="2025-03-01T11:59:58Z"):
    return json.dumps({"data": {"webHookEvent": {
        "topic": topic, "appId": "YXBwLzE", "accountId": account_id, "itemId": item_id,
        "occurredAt": occurred_at}}}).encode()


def signature(raw, secret=CLIENT_SECRET):
    return base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()


def verify(connector, raw, headers, *, secrets=(CLIENT_SECRET,), now=NOW):
    connector.verify_webhook(secrets=list(secrets), method="POST", url="https://resync.example/hooks/x/",
                             headers=headers, raw_body=raw, now=now)


def test_a_delivery_signed_with_the_client_secret_verifies(connector):
    raw = delivery()

    verify(connector, raw, {"x-jobber-hmac-sha256": signature(raw)})
    verify(connector, raw, {"x-jobber-hmac-sha256": signature(raw)}, secrets=("new_secret", CLIENT_SECRET))


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, "signature_missing", id="missing"),
        pytest.param({"x-jobber-hmac-sha256": signature(delivery(), secret="someone_else")}, "signature_invalid",
                     id="other-secret"),
        pytest.param({"x-jobber-hmac-sha256": signature(delivery(item_id="Y2xpZW50LzE2"))}, "signature_invalid",
                     id="tampered-body"),
        pytest.param({"x-jobber-hmac-sha256": "not base64 at all"}, "signature_invalid", id="garbled"),
    ],
)
def test_a_delivery_without_a_matching_signature_is_refused(connector, headers, code):
    with pytest.raises(WebhookSignatureError) as caught:
        verify(connector, delivery(), headers)

    assert caught.value.code == code


def test_a_stale_delivery_still_verifies_because_jobber_signs_no_time_but_keeps_its_event_id(connector):
    raw = delivery(occurred_at="2025-01-01T00:00:00Z")
    headers = {"x-jobber-hmac-sha256": signature(raw)}

    verify(connector, raw, headers, now=NOW + timedelta(days=60))

    payload = json.loads(raw)
    assert connector.webhook_event_id(headers=headers, payload=payload) == \
        connector.webhook_event_id(headers={}, payload=json.loads(raw)) == \
        "CLIENT_UPDATE:Y2xpZW50LzE1:2025-01-01T00:00:00Z"


def test_a_replayed_delivery_is_stored_once(make_connection):
    from integrations.webhooks import webhook_endpoint_create, webhook_receive

    connection = make_connection()
    endpoint, _secret = webhook_endpoint_create(connection=connection, name="Jobber", secret=CLIENT_SECRET)
    raw = delivery()
    headers = {"X-Jobber-Hmac-SHA256": signature(raw), "Content-Type": "application/json"}

    first = webhook_receive(code=endpoint.code, headers=headers, raw_body=raw, now=NOW)
    replay = webhook_receive(code=endpoint.code, headers=headers, raw_body=raw, now=NOW + timedelta(days=1))
    forged = webhook_receive(code=endpoint.code, headers={"X-Jobber-Hmac-SHA256": signature(raw, "x" * 16)},
                             raw_body=raw, now=NOW)

    assert first[0] == 202
    assert replay == (200, {"status": "duplicate"})
    assert forged[0] == 401


@pytest.mark.parametrize(
    ("topic", "item_id", "changes"),
    [
        ("CLIENT_CREATE", "Y2xpZW50LzE1", [WebhookChange("clients", ["Y2xpZW50LzE1"])]),
        ("CLIENT_UPDATE", "Y2xpZW50LzE1", [WebhookChange("clients", ["Y2xpZW50LzE1"])]),
        ("CLIENT_DESTROY", "Y2xpZW50LzE1", [WebhookChange("clients", ["Y2xpZW50LzE1"])]),
        ("JOB_CREATE", "am9iLzk", [WebhookChange("jobs", ["am9iLzk"])]),
        ("JOB_UPDATE", "am9iLzk", [WebhookChange("jobs", ["am9iLzk"])]),
        ("JOB_DESTROY", "am9iLzk", [WebhookChange("jobs", ["am9iLzk"])]),
        ("APP_DISCONNECT", "YXBwLzE", []),
        ("QUOTE_CREATE", "cXVvdGUvMw", []),
    ],
)
def test_a_webhook_names_the_records_to_fetch_again(connector, topic, item_id, changes):
    assert connector.parse_webhook(json.loads(delivery(topic=topic, item_id=item_id))) == changes


def test_a_webhook_for_another_account_is_ignored_when_the_account_is_known(make_connection):
    connector = make_connection(account_id="YWNjb3VudC8x").get_connector()

    assert connector.parse_webhook(json.loads(delivery(account_id="YWNjb3VudC8y"))) == []
    assert connector.parse_webhook(json.loads(delivery())) == [WebhookChange("clients", ["Y2xpZW50LzE1"])]


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"topic": "CLIENT_UPDATE", "itemId": "x"},
        {"data": {"webHookEvent": {"itemId": "x", "occurredAt": "2025-03-01T00:00:00Z"}}},
        {"data": {"webHookEvent": {"topic": "CLIENT_UPDATE", "occurredAt": "2025-03-01T00:00:00Z"}}},
    ],
)
def test_a_payload_of_the_wrong_shape_is_refused(connector, payload):
    with pytest.raises(WebhookPayloadError):
        connector.parse_webhook(payload)


def test_an_event_without_occurred_at_has_no_event_id(connector):
    payload = {"data": {"webHookEvent": {"topic": "CLIENT_UPDATE", "itemId": "x", "accountId": "a"}}}

    with pytest.raises(WebhookPayloadError) as caught:
        connector.webhook_event_id(headers={}, payload=payload)

    assert caught.value.code == "event_id_missing"
