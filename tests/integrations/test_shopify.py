"""The Shopify connector against the Admin GraphQL API's documented shapes (responses stands in for Shopify)."""

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

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
from integrations.models import Connection, ConnectionStatus, WebhookEvent, WebhookEventStatus
from integrations.services import connection_check
from integrations.webhooks import webhook_endpoint_create, webhook_event_process, webhook_receive

pytestmark = pytest.mark.django_db

SHOP = "acme.myshopify.com"
API = f"https://{SHOP}/admin/api/2025-01/graphql.json"
TOKEN_URL = f"https://{SHOP}/admin/oauth/access_token"
# Canaries: they must never show up in an error message or detail.
TOKEN = "shpat_canary_4f9a"
CLIENT_SECRET = "shpss_canary_client_secret_77"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _offline_http(settings):
    settings.RESYNC_ALLOW_PRIVATE_URLS = True  # no DNS here: the SSRF guard would resolve the shop's host
    settings.RESYNC_HTTP_RETRY_DELAYS = []


@pytest.fixture
def api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def make_connection(org):
    def make(credentials=None, **config):
        connection = Connection(organization=org, name=f"Shop {Connection.objects.count()}", provider="shopify",
                                config={"shop": SHOP, **config})
        connection.credentials = credentials or {"access_token": TOKEN}
        connection.save()
        return connection

    return make


def connector_of(connection):
    """The connection's connector with a recorded sleep and a clock that stands still."""
    connector = connection.get_connector()
    connector.waits = []
    connector.sleep = connector.waits.append
    connector.clock = lambda: 1000.0
    return connector


@pytest.fixture
def shopify(make_connection):
    return connector_of(make_connection())


def cost(requested=12, available=988.0, maximum=1000.0, rate=50.0):
    return {"cost": {"requestedQueryCost": requested, "actualQueryCost": requested,
                     "throttleStatus": {"maximumAvailable": maximum, "currentlyAvailable": available,
                                        "restoreRate": rate}}}


def answer(data, **bucket):
    return {"data": data, "extensions": cost(**bucket)}


def customer(number, updated="2025-01-02T00:00:00Z", **fields):
    return {
        "id": f"gid://shopify/Customer/{number}", "email": f"c{number}@example.com", "phone": None,
        "firstName": "Ann", "lastName": f"Number {number}", "note": None, "tags": ["vip", "wholesale"],
        "taxExempt": False, "state": "ENABLED", "verifiedEmail": True, "numberOfOrders": "3",
        "createdAt": "2024-12-01T09:00:00Z", "updatedAt": updated, **fields,
    }


def customers_page(nodes, *, end_cursor=None, **bucket):
    page_info = {"hasNextPage": end_cursor is not None, "endCursor": end_cursor}
    return answer({"customers": {"nodes": nodes, "pageInfo": page_info}}, **bucket)


def sent(call):
    return json.loads(call.request.body)


def throttled(requested=252, available=100.0, rate=50.0):
    return {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED",
                                                                "documentation": "https://shopify.dev/api/usage/limits"}}],
            "extensions": cost(requested=requested, available=available, rate=rate)}


# --- connection and auth ------------------------------------------------------------------------------------------


def test_it_sends_the_access_token_in_the_shopify_header(api, shopify):
    api.post(API, json=answer({"shop": {"name": "Acme"}}))

    shopify.check()

    request = api.calls[0].request
    assert request.url == API
    assert request.headers["X-Shopify-Access-Token"] == TOKEN
    assert "Authorization" not in request.headers
    assert "shop" in sent(api.calls[0])["query"]


def test_the_base_url_and_api_version_settings_move_the_endpoint(api, make_connection):
    connector = connector_of(make_connection(base_url="https://proxy.example.com/", api_version="2025-04"))
    api.post("https://proxy.example.com/admin/api/2025-04/graphql.json", json=answer({"shop": {"name": "Acme"}}))

    connector.check()

    assert len(api.calls) == 1


@pytest.mark.parametrize(
    ("config", "problem_field"),
    [
        ({"shop": ""}, "shop"),
        ({"shop": "https://acme.myshopify.com/admin"}, "shop"),
        ({"shop": SHOP, "api_version": "January"}, "api_version"),
    ],
)
def test_the_connection_form_refuses_a_shop_that_is_not_a_domain(config, problem_field):
    from integrations.connectors.shopify import ShopifyConnector

    assert problem_field in ShopifyConnector.validate_config(config)
    assert ShopifyConnector.validate_config({"shop": SHOP, "api_version": "2025-01"}) == {}


def test_the_connection_form_declares_its_settings_and_secrets():
    from integrations.connectors.shopify import ShopifyConnector

    assert [field.name for field in ShopifyConnector.config_fields] == ["base_url", "shop", "api_version"]
    secrets = {field.name: field for field in ShopifyConnector.secret_fields}
    assert secrets["access_token"].required and secrets["access_token"].type == "password"
    assert all(field.secret for field in secrets.values())


# --- schema -------------------------------------------------------------------------------------------------------


def test_it_lists_customers_and_orders_and_describes_them_without_a_call(api, shopify):
    assert [summary.name for summary in shopify.list_objects()] == ["customers", "orders"]

    customers = shopify.describe_object("customers").fields
    assert next(iter(customers)) == "id"
    assert customers["id"].read_only and customers["id"].unique
    assert customers["email"].type == FieldType.EMAIL and customers["email"].unique
    assert customers["phone"].type == FieldType.PHONE
    assert customers["state"].read_only and customers["updatedAt"].read_only
    assert not customers["firstName"].read_only
    orders = shopify.describe_object("orders").fields
    assert next(iter(orders)) == "id"
    assert all(spec.read_only for spec in orders.values())
    assert orders["totalPrice"].type == FieldType.NUMBER
    assert len(api.calls) == 0


def test_an_unknown_object_is_a_mapping_error(shopify):
    with pytest.raises(ConnectorError) as caught:
        shopify.describe_object("products")

    assert caught.value.category == ErrorCategory.MAPPING
    assert caught.value.code == "object_not_found"


# --- reading ------------------------------------------------------------------------------------------------------


def test_it_reads_every_page_in_update_order(api, shopify):
    api.post(API, json=customers_page([customer(1), customer(2)], end_cursor="c-2"))
    api.post(API, json=customers_page([customer(3)], end_cursor="c-3"))
    api.post(API, json=customers_page([customer(4, updated="2025-01-03T08:00:00Z")]))

    pages, token = [], None
    while True:
        page = shopify.read_page("customers", page_token=token, page_size=2)
        pages.append(page)
        token = page.next_token
        if token is None:
            break

    assert [[r.id for r in page.records] for page in pages] == [
        ["gid://shopify/Customer/1", "gid://shopify/Customer/2"], ["gid://shopify/Customer/3"],
        ["gid://shopify/Customer/4"],
    ]
    variables = [sent(call)["variables"] for call in api.calls]
    assert [v["after"] for v in variables] == [None, "c-2", "c-3"]
    assert all(v["first"] == 2 and v["query"] is None for v in variables)
    assert "sortKey: UPDATED_AT" in sent(api.calls[0])["query"]
    first = pages[0].records[0]
    assert "id" not in first.data
    assert first.data["tags"] == "vip, wholesale"
    assert first.data["numberOfOrders"] == 3
    assert first.modified_at == datetime(2025, 1, 2, tzinfo=UTC)


def test_a_page_asks_for_at_most_250_records(api, shopify):
    api.post(API, json=customers_page([]))

    page = shopify.read_page("customers", page_size=1000)

    assert sent(api.calls[0])["variables"]["first"] == 250
    assert page.records == [] and page.next_token is None and page.cursor is None


def test_an_incremental_read_filters_inclusively_and_resumes_at_the_latest_update(api, shopify):
    api.post(API, json=customers_page([customer(1, updated="2025-01-05T10:00:00Z"),
                                       customer(2, updated="2025-01-05T11:30:00Z")]))

    page = shopify.read_page("customers", cursor="2025-01-05T10:00:00Z")

    assert sent(api.calls[0])["variables"]["query"] == "updated_at:>='2025-01-05T10:00:00Z'"
    assert page.cursor == "2025-01-05T11:30:00Z"


def test_a_record_sharing_the_cursor_timestamp_is_read_again_not_skipped(api, shopify):
    boundary = "2025-01-05T11:30:00Z"
    api.post(API, json=customers_page([customer(1, updated="2025-01-05T10:00:00Z"), customer(2, updated=boundary)]))
    # Customer 3 was saved in the same second as customer 2, after the first read.
    api.post(API, json=customers_page([customer(2, updated=boundary), customer(3, updated=boundary)]))

    first = shopify.read_page("customers", cursor="2025-01-01T00:00:00Z")
    second = shopify.read_page("customers", cursor=first.cursor)

    assert first.cursor == boundary
    assert sent(api.calls[1])["variables"]["query"] == f"updated_at:>='{boundary}'"
    assert [r.id for r in second.records] == ["gid://shopify/Customer/2", "gid://shopify/Customer/3"]
    assert second.cursor == boundary


def test_a_cursor_that_is_not_a_time_is_refused_before_it_reaches_the_search(api, shopify):
    with pytest.raises(ConnectorError) as caught:
        shopify.read_page("customers", cursor="2025' OR email:x")

    assert caught.value.code == "invalid_cursor"
    assert len(api.calls) == 0


def test_orders_are_read_with_their_totals_and_customer(api, shopify):
    order = {
        "id": "gid://shopify/Order/500", "name": "#1001", "email": "c1@example.com", "phone": None,
        "currencyCode": "EUR", "displayFinancialStatus": "PAID", "displayFulfillmentStatus": "UNFULFILLED",
        "totalPriceSet": {"shopMoney": {"amount": "42.50"}}, "customer": {"id": "gid://shopify/Customer/1"},
        "cancelledAt": None, "createdAt": "2025-01-04T00:00:00Z", "updatedAt": "2025-01-04T01:00:00Z",
    }
    api.post(API, json=answer({"orders": {"nodes": [order], "pageInfo": {"hasNextPage": False, "endCursor": None}}}))

    page = shopify.read_page("orders", cursor="2025-01-01T00:00:00Z")

    body = sent(api.calls[0])
    assert "orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT)" in body["query"]
    assert body["variables"]["query"] == "updated_at:>='2025-01-01T00:00:00Z'"
    assert page.records[0].data["totalPrice"] == "42.50"
    assert page.records[0].data["financialStatus"] == "PAID"
    assert page.records[0].data["customerId"] == "gid://shopify/Customer/1"
    assert page.cursor == "2025-01-04T01:00:00Z"


def test_fetch_asks_for_nodes_by_gid_and_leaves_out_the_missing(api, shopify):
    api.post(API, json=answer({"nodes": [customer(1), None]}))

    found = shopify.fetch("customers", ["gid://shopify/Customer/1", "gid://shopify/Customer/9",
                                        "gid://shopify/Order/1", "not-an-id"])

    body = sent(api.calls[0])
    assert body["variables"]["ids"] == ["gid://shopify/Customer/1", "gid://shopify/Customer/9"]
    assert "nodes(ids: $ids) { ... on Customer {" in body["query"]
    assert list(found) == ["gid://shopify/Customer/1"]
    assert found["gid://shopify/Customer/1"].data["email"] == "c1@example.com"


def test_find_searches_by_email_and_keeps_exact_matches_only(api, shopify):
    api.post(API, json=customers_page([
        customer(1, email="ann@example.com"), customer(2, email="bob@example.com"),
        customer(3, email="ann@example.com.evil"),
    ]))

    found = shopify.find("customers", "email", ["ann@example.com", "Bob@Example.com", "nobody@example.com"])

    assert sent(api.calls[0])["variables"]["query"] == (
        'email:"ann@example.com" OR email:"Bob@Example.com" OR email:"nobody@example.com"'
    )
    assert {value: [r.id for r in records] for value, records in found.items()} == {
        "ann@example.com": ["gid://shopify/Customer/1"],
        # Shopify keeps emails lower-cased: the source's capitals still find the customer.
        "Bob@Example.com": ["gid://shopify/Customer/2"],
    }


def test_find_follows_every_page_of_matches(api, shopify):
    api.post(API, json=customers_page([customer(1, lastName="Smith")], end_cursor="c-1"))
    api.post(API, json=customers_page([customer(2, lastName="Smith")]))

    found = shopify.find("customers", "lastName", ["Smith"])

    assert sent(api.calls[0])["variables"]["query"] == 'last_name:"Smith"'
    assert sent(api.calls[1])["variables"]["after"] == "c-1"
    assert [r.id for r in found["Smith"]] == ["gid://shopify/Customer/1", "gid://shopify/Customer/2"]


def test_find_by_a_field_shopify_cannot_search_is_a_mapping_error(api, shopify):
    with pytest.raises(ConnectorError) as caught:
        shopify.find("customers", "note", ["x"])

    assert caught.value.category == ErrorCategory.MAPPING
    assert len(api.calls) == 0


# --- writing ------------------------------------------------------------------------------------------------------


def test_a_batch_write_reports_each_operation_on_its_own(api, shopify):
    created = customer(10, email="new@example.com", createdAt="2025-02-01T00:00:00Z", updatedAt="2025-02-01T00:00:00Z")
    updated = customer(11, updatedAt="2025-02-01T00:00:00Z")
    upserted = customer(12, email="up@example.com", createdAt="2025-02-01T00:00:00Z", updatedAt="2025-02-01T00:00:00Z")
    api.post(API, json=answer({
        "op0": {"customer": created, "userErrors": []},
        "op1": {"customer": None, "userErrors": [{"field": ["email"], "message": "Email has already been taken"}]},
        "op2": {"customer": updated, "userErrors": []},
        "op3": {"customer": None, "userErrors": [{"field": ["id"], "message": "Customer does not exist"}]},
        "op4": {"customer": upserted, "userErrors": []},
        "op5": {"customer": None, "userErrors": [
            {"field": ["input", "phone"], "message": "Phone is invalid", "code": "INVALID"}]},
    }, requested=60))
    operations = [
        WriteOperation("src-0", WriteAction.CREATE, {"email": "new@example.com", "tags": "vip, new"}),
        WriteOperation("src-1", WriteAction.CREATE, {"email": "taken@example.com"}),
        WriteOperation("src-2", WriteAction.UPDATE, {"firstName": "Ann"}, target_id="gid://shopify/Customer/11"),
        WriteOperation("src-3", WriteAction.UPDATE, {"firstName": "Gone"}, target_id="404"),
        WriteOperation("src-4", WriteAction.UPSERT, {"email": "up@example.com"}, match_field="email"),
        WriteOperation("src-5", WriteAction.UPSERT, {"email": "x@example.com", "phone": "12"}, match_field="email"),
        WriteOperation("src-6", WriteAction.CREATE, {"email": "ro@example.com", "state": "ENABLED"}),
    ]

    results = shopify.write("customers", operations)

    assert len(api.calls) == 1
    body = sent(api.calls[0])
    document, variables = body["query"], body["variables"]
    assert "op0: customerCreate(input: $input0)" in document
    assert "op2: customerUpdate(input: $input2)" in document
    assert "op4: customerSet(identifier: $identifier4, input: $input4)" in document
    assert "op6" not in document  # refused before sending: state is read-only
    assert variables["input0"] == {"email": "new@example.com", "tags": ["vip", "new"]}
    assert variables["input2"] == {"id": "gid://shopify/Customer/11", "firstName": "Ann"}
    assert variables["input3"]["id"] == "gid://shopify/Customer/404"
    assert variables["identifier4"] == {"email": "up@example.com"}

    assert [r.ref for r in results] == [op.ref for op in operations]
    assert [r.ok for r in results] == [True, False, True, False, True, False, False]
    assert (results[0].target_id, results[0].action) == ("gid://shopify/Customer/10", "create")
    assert results[0].record["email"] == "new@example.com"
    assert (results[1].error.category, results[1].error.field) == (ErrorCategory.DUPLICATE, "email")
    assert (results[2].target_id, results[2].action) == ("gid://shopify/Customer/11", "update")
    assert results[3].error.category == ErrorCategory.NOT_FOUND
    assert (results[4].target_id, results[4].action) == ("gid://shopify/Customer/12", "create")
    assert (results[5].error.category, results[5].error.code, results[5].error.field) == (
        ErrorCategory.VALIDATION, "INVALID", "phone")
    assert (results[6].error.category, results[6].error.field) == (ErrorCategory.VALIDATION, "state")
    assert not any(r.error.retryable for r in results if r.error)


@pytest.mark.parametrize(
    ("code", "category"),
    [("TAKEN", ErrorCategory.DUPLICATE), ("NOT_FOUND", ErrorCategory.NOT_FOUND),
     ("BLANK", ErrorCategory.VALIDATION), ("TOO_LONG", ErrorCategory.VALIDATION)],
)
def test_customer_set_error_codes_decide_the_category(api, shopify, code, category):
    api.post(API, json=answer({"op0": {"customer": None, "userErrors": [
        {"field": ["input", "first_name"], "message": "First name is not right", "code": code}]}}))

    [result] = shopify.write("customers", [
        WriteOperation("src-1", WriteAction.UPSERT, {"email": "a@example.com", "firstName": "A"}, match_field="email"),
    ])

    assert "userErrors { field message code }" in sent(api.calls[0])["query"]
    assert (result.error.category, result.error.code, result.error.field) == (category, code, "firstName")


@pytest.mark.parametrize(
    ("action", "sent_times"),
    [(WriteAction.CREATE, 1), (WriteAction.UPDATE, 2)],
)
def test_a_document_that_creates_is_never_sent_again_after_a_lost_answer(api, shopify, settings, action, sent_times):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0]
    api.post(API, status=502)
    operation = WriteOperation("src-1", action, {"firstName": "Ann"}, target_id="gid://shopify/Customer/1")

    with pytest.raises(ConnectorError) as caught:
        shopify.write("customers", [operation])

    assert caught.value.category == ErrorCategory.CONNECTION
    assert len(api.calls) == sent_times


def test_an_error_naming_one_operation_fails_only_that_one(api, shopify):
    api.post(API, json={"data": {"op0": {"customer": customer(1), "userErrors": []}, "op1": None},
                        "errors": [{"message": "Internal error. Looks like something went wrong on our end.",
                                    "path": ["op1"], "extensions": {"code": "INTERNAL_SERVER_ERROR"}}],
                        "extensions": cost()})

    results = shopify.write("customers", [
        WriteOperation("src-0", WriteAction.CREATE, {"email": "c1@example.com"}),
        WriteOperation("src-1", WriteAction.CREATE, {"email": "c2@example.com"}),
    ])

    # Raising would make the engine send the created customer again.
    assert results[0].ok and results[0].target_id == "gid://shopify/Customer/1"
    assert (results[1].ok, results[1].error.category) == (False, ErrorCategory.CONNECTION)
    assert results[1].error.may_have_applied


def test_an_error_about_the_whole_document_fails_the_whole_write(api, shopify):
    api.post(API, json={"errors": [{"message": "Variable $input0 of type CustomerInput! was provided invalid value",
                                    "locations": [{"line": 1, "column": 23}],
                                    "extensions": {"code": "INVALID_VARIABLE"}}]})

    with pytest.raises(ConnectorError) as caught:
        shopify.write("customers", [WriteOperation("src-0", WriteAction.CREATE, {"email": "c1@example.com"})])

    assert (caught.value.category, caught.value.retryable) == (ErrorCategory.UNKNOWN, False)


def test_orders_are_read_only_and_never_reach_the_api(api, shopify):
    results = shopify.write("orders", [
        WriteOperation("src-1", WriteAction.CREATE, {"name": "#1"}),
        WriteOperation("src-2", WriteAction.UPDATE, {"name": "#2"}, target_id="gid://shopify/Order/2"),
    ])

    assert len(api.calls) == 0
    assert [(r.ref, r.ok) for r in results] == [("src-1", False), ("src-2", False)]
    assert all(r.error.category == ErrorCategory.MAPPING for r in results)
    assert all(r.error.message == "Orders are read-only in Shopify" for r in results)


def test_an_upsert_by_a_field_customer_set_does_not_know_fails_alone(api, shopify):
    api.post(API, json=answer({"op1": {"customer": customer(1), "userErrors": []}}))

    results = shopify.write("customers", [
        WriteOperation("src-0", WriteAction.UPSERT, {"firstName": "Ann"}, match_field="firstName"),
        WriteOperation("src-1", WriteAction.UPSERT, {"phone": "+15551234567"}, match_field="phone"),
    ])

    assert results[0].error.category == ErrorCategory.MAPPING
    assert results[1].ok and results[1].action == "update"
    assert sent(api.calls[0])["variables"]["identifier1"] == {"phone": "+15551234567"}


# --- errors -------------------------------------------------------------------------------------------------------

INVALID_TOKEN = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}


@pytest.mark.parametrize(
    ("status", "body", "headers", "category", "retryable", "retry_after"),
    [
        (401, INVALID_TOKEN, {}, ErrorCategory.AUTH, False, None),
        (402, {"errors": "Unavailable Shop"}, {}, ErrorCategory.PERMISSION, False, None),
        (403, {"errors": "[API] This action requires merchant approval for read_customers scope."}, {},
         ErrorCategory.PERMISSION, False, None),
        (404, {"errors": "Not Found"}, {}, ErrorCategory.NOT_FOUND, False, None),
        (423, {"errors": "Locked"}, {}, ErrorCategory.PERMISSION, False, None),
        (429, {"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted "
                         "service."}, {"Retry-After": "2.0"}, ErrorCategory.RATE_LIMIT, True, 2),
        (422, {"errors": {"email": ["has already been taken"]}}, {}, ErrorCategory.DUPLICATE, False, None),
        (400, {"errors": "Bad Request"}, {}, ErrorCategory.VALIDATION, False, None),
        (500, {"errors": "Internal Server Error"}, {}, ErrorCategory.UNKNOWN, True, None),
        (502, "<html>Bad Gateway</html>", {}, ErrorCategory.CONNECTION, True, None),
        (503, {"errors": "Service Unavailable"}, {}, ErrorCategory.CONNECTION, True, None),
        # Throttling is told by its code, whatever the status: 200 for GraphQL (or a 429).
        (200, throttled(), {}, ErrorCategory.RATE_LIMIT, True, 4),
        (429, throttled(), {}, ErrorCategory.RATE_LIMIT, True, 4),
        (200, {"errors": [{"message": "Access denied for customers field. Required access: `read_customers` "
                                      "access scope.", "extensions": {"code": "ACCESS_DENIED"}}]}, {},
         ErrorCategory.PERMISSION, False, None),
    ],
)
def test_each_documented_error_lands_in_its_category(api, shopify, status, body, headers, category, retryable,
                                                     retry_after):
    if isinstance(body, dict):
        api.post(API, json=body, status=status, headers=headers)
    else:
        api.post(API, body=body, status=status, headers=headers)

    with pytest.raises(ConnectorError) as caught:
        shopify.check()

    error = caught.value
    assert (error.category, error.retryable, error.retry_after) == (category, retryable, retry_after)
    assert TOKEN not in error.message and TOKEN not in error.detail


def test_the_messages_say_what_to_fix(api, shopify):
    api.post(API, json=INVALID_TOKEN, status=401)
    with pytest.raises(ConnectorError) as wrong_token:
        shopify.check()
    api.replace(responses.POST, API, json={"errors": "Not Found"}, status=404)
    with pytest.raises(ConnectorError) as wrong_shop:
        shopify.check()
    api.replace(responses.POST, API, json={"errors": {"email": ["has already been taken"]}}, status=422)
    with pytest.raises(ConnectorError) as duplicate:
        shopify.check()

    assert "Invalid API key or access token" in wrong_token.value.message
    assert "shop domain and the API version" in wrong_shop.value.message
    assert duplicate.value.field == "email"


# --- token refresh ------------------------------------------------------------------------------------------------


def expiring_credentials(**overrides):
    return {"access_token": TOKEN, "refresh_token": "shprt_old", "client_id": "client-1",
            "client_secret": CLIENT_SECRET, "expires_at": int(time.time()) - 10, **overrides}


def test_it_refreshes_an_expired_token_once(api, make_connection):
    connection = make_connection(credentials=expiring_credentials())
    connector = connector_of(connection)
    api.post(TOKEN_URL, json={"access_token": "shpat_new_token", "expires_in": 3600, "refresh_token": "shprt_new",
                              "scope": "read_customers,write_customers", "refresh_token_expires_in": 7776000})
    api.post(API, json=answer({"shop": {"name": "Acme"}}))

    connector.check()
    connector.check()

    token_calls = [call for call in api.calls if call.request.url == TOKEN_URL]
    assert len(token_calls) == 1
    assert json.loads(token_calls[0].request.body) == {
        "client_id": "client-1", "client_secret": CLIENT_SECRET, "refresh_token": "shprt_old",
        "grant_type": "refresh_token",
    }
    api_calls = [call for call in api.calls if call.request.url == API]
    assert [call.request.headers["X-Shopify-Access-Token"] for call in api_calls] == ["shpat_new_token"] * 2
    stored = Connection.objects.get(pk=connection.pk)
    assert "shpat_new_token" not in stored.credentials_ciphertext  # encrypted at rest
    assert stored.credentials["access_token"] == "shpat_new_token"
    assert stored.credentials["refresh_token"] == "shprt_new"
    assert stored.credentials["expires_at"] > time.time() + 3000


def test_a_401_right_after_a_refresh_is_raised_not_refreshed_again(api, make_connection):
    # An offline token whose expiry is unknown: the first 401 refreshes it.
    connector = connector_of(make_connection(credentials=expiring_credentials(expires_at=None)))
    api.post(TOKEN_URL, json={"access_token": "shpat_new_token", "expires_in": 3600, "refresh_token": "shprt_new"})
    api.post(API, json=INVALID_TOKEN, status=401)

    with pytest.raises(ConnectorError) as caught:
        connector.check()

    assert caught.value.category == ErrorCategory.AUTH
    assert len([call for call in api.calls if call.request.url == TOKEN_URL]) == 1
    api_calls = [call for call in api.calls if call.request.url == API]
    assert [call.request.headers["X-Shopify-Access-Token"] for call in api_calls] == [TOKEN, "shpat_new_token"]


def test_a_refused_refresh_makes_the_connection_need_reauthentication(api, make_connection):
    connection = make_connection(credentials=expiring_credentials())
    api.post(TOKEN_URL, status=400, json={"error": "invalid_grant",
                                          "error_description": "The refresh token is invalid or expired."})

    error = connection_check(connection=connection)

    assert (error.category, error.code, error.retryable) == (ErrorCategory.AUTH, "refresh_failed", False)
    assert CLIENT_SECRET not in error.message and CLIENT_SECRET not in error.detail
    assert not [call for call in api.calls if call.request.url == API]
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH


# --- rate limits --------------------------------------------------------------------------------------------------


def test_it_waits_before_a_query_the_bucket_cannot_pay_for(api, shopify):
    calls_at_wait = []
    shopify.sleep = lambda seconds: (shopify.waits.append(seconds), calls_at_wait.append(len(api.calls)))
    api.post(API, json=customers_page([customer(1)], end_cursor="c-1", requested=252, available=100.0, rate=50.0))
    api.post(API, json=customers_page([customer(2)], requested=252, available=900.0, rate=50.0))

    first = shopify.read_page("customers", page_size=250)
    shopify.read_page("customers", page_token=first.next_token, page_size=250)

    # 252 points wanted, 100 left, 50 restored a second: wait 3.04 s before the second page, not after it.
    assert shopify.waits == [pytest.approx(3.04)]
    assert calls_at_wait == [1]


def test_it_counts_what_the_bucket_restored_since_the_last_answer(api, shopify):
    now = [1000.0]
    shopify.clock = lambda: now[0]
    api.post(API, json=customers_page([], requested=252, available=100.0, rate=50.0))

    shopify.read_page("customers")
    now[0] += 2.0  # 100 more points restored meanwhile
    shopify.read_page("customers")
    now[0] += 10.0  # the bucket has restored far past the query's cost
    shopify.read_page("customers")

    assert shopify.waits == [pytest.approx(1.04)]


def test_a_throttled_answer_is_a_rate_limit_with_the_time_to_wait(api, shopify):
    api.post(API, json=throttled(requested=252, available=2.0, rate=100.0))

    with pytest.raises(ConnectorError) as caught:
        shopify.read_page("customers")

    assert (caught.value.category, caught.value.code) == (ErrorCategory.RATE_LIMIT, "THROTTLED")
    assert caught.value.retry_after == 3  # ceil((252 - 2) / 100)
    assert caught.value.retryable


# --- webhooks -----------------------------------------------------------------------------------------------------


def shopify_signature(raw, secret=CLIENT_SECRET):
    return base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()


def delivery(raw, *, secret=CLIENT_SECRET, topic="customers/update", at=NOW, webhook_id="b54557e4-1", **extra):
    return {
        "x-shopify-hmac-sha256": shopify_signature(raw, secret),
        "x-shopify-topic": topic,
        "x-shopify-webhook-id": webhook_id,
        "x-shopify-triggered-at": at.isoformat().replace("+00:00", "Z"),
        "x-shopify-shop-domain": SHOP,
        "x-shopify-api-version": "2025-01",
        **extra,
    }


RAW = json.dumps({"id": 706405506930370084, "email": "bob@example.com", "updated_at": "2025-03-01T12:00:00Z",
                  "admin_graphql_api_id": "gid://shopify/Customer/706405506930370084"}).encode()


def verify(connector, headers, raw=RAW, secrets=(CLIENT_SECRET,), now=NOW):
    connector.verify_webhook(secrets=list(secrets), method="POST", url="https://resync.example/hooks/x",
                             headers=headers, raw_body=raw, now=now)


def test_a_delivery_signed_with_the_client_secret_is_accepted(shopify):
    verify(shopify, delivery(RAW))
    # While the client secret rotates, the old one still verifies.
    verify(shopify, delivery(RAW, secret="shpss_old"), secrets=("shpss_new", "shpss_old"))
    # A late retry carries the original trigger time: Shopify retries for 4 hours.
    verify(shopify, delivery(RAW, at=NOW - timedelta(hours=4)))


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (delivery(RAW, secret="someone-else"), "signature_invalid"),
        (delivery(RAW + b" "), "signature_invalid"),
        ({**delivery(RAW), "x-shopify-hmac-sha256": ""}, "signature_missing"),
        ({k: v for k, v in delivery(RAW).items() if k != "x-shopify-hmac-sha256"}, "signature_missing"),
        (delivery(RAW, at=NOW - timedelta(hours=6)), "timestamp_out_of_tolerance"),
        ({**delivery(RAW), "x-shopify-triggered-at": "yesterday"}, "timestamp_invalid"),
        ({k: v for k, v in delivery(RAW).items() if k != "x-shopify-triggered-at"}, "timestamp_invalid"),
    ],
)
def test_a_delivery_that_cannot_be_trusted_is_refused(shopify, headers, code):
    with pytest.raises(WebhookSignatureError) as caught:
        verify(shopify, headers)

    assert caught.value.code == code
    assert CLIENT_SECRET not in caught.value.message


def test_the_webhook_id_deduplicates_deliveries(shopify):
    assert shopify.webhook_event_id(headers=delivery(RAW), payload={}) == "b54557e4-1"
    with pytest.raises(WebhookPayloadError):
        shopify.webhook_event_id(headers={}, payload={})


@pytest.mark.parametrize(
    ("topic", "payload", "changes"),
    [
        ("customers/update", {"id": 706405506930370084},
         [WebhookChange("customers", ["gid://shopify/Customer/706405506930370084"])]),
        ("customers/delete", {"id": 12}, [WebhookChange("customers", ["gid://shopify/Customer/12"])]),
        ("orders/updated", {"id": 820982911946154508, "name": "#9999"},
         [WebhookChange("orders", ["gid://shopify/Order/820982911946154508"])]),
        ("orders/paid", {"id": "450789469"}, [WebhookChange("orders", ["gid://shopify/Order/450789469"])]),
        ("app/uninstalled", {"id": 548380009}, []),
        ("products/update", {"id": 1}, []),
    ],
)
def test_a_delivery_names_the_record_by_the_id_reads_use(shopify, topic, payload, changes):
    assert shopify.parse_webhook(payload, headers={"x-shopify-topic": topic}) == changes


@pytest.mark.parametrize(
    ("payload", "headers", "code"),
    [
        ([1, 2], {"x-shopify-topic": "customers/update"}, "payload_invalid"),
        ({"email": "bob@example.com"}, {"x-shopify-topic": "customers/update"}, "id_missing"),
        ({"id": True}, {"x-shopify-topic": "customers/update"}, "id_missing"),
        ({"id": 1}, {}, "topic_missing"),
        ({"id": 1}, {"x-shopify-topic": "customers/update", "x-shopify-shop-domain": "other.myshopify.com"},
         "shop_mismatch"),
    ],
)
def test_a_payload_of_the_wrong_shape_is_refused(shopify, payload, headers, code):
    with pytest.raises(WebhookPayloadError) as caught:
        shopify.parse_webhook(payload, headers=headers)

    assert caught.value.code == code


def test_a_delivery_goes_through_the_receiver_to_the_record_it_names(make_connection):
    connection = make_connection()
    endpoint, _secret = webhook_endpoint_create(connection=connection, name="Shopify", secret=CLIENT_SECRET)
    headers = {name.title(): value for name, value in delivery(RAW).items()}

    status, _body = webhook_receive(code=endpoint.code, headers=headers, raw_body=RAW, now=NOW)
    again, _ = webhook_receive(code=endpoint.code, headers=headers, raw_body=RAW, now=NOW + timedelta(minutes=5))

    assert (status, again) == (202, 200)
    event = WebhookEvent.objects.get(endpoint=endpoint)
    assert "x-shopify-hmac-sha256" not in event.headers
    event = webhook_event_process(event_pk=event.pk)
    assert event.record_ids == ["gid://shopify/Customer/706405506930370084"]
    assert event.status == WebhookEventStatus.IGNORED  # no mapping reads these customers yet
