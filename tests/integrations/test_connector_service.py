"""The connector-service connector: what it sends (Standard Webhooks-signed requests, one PUT per batch), what it
makes of the contract's answers (results, per-record errors, problem JSON, linkIdentities), and the reference
service on loopback: retries, lost answers, reads, find and fetch, schema discovery and process messages."""

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import requests
import responses

from connector_service.reference import Fault, ReferenceService, serve, sign
from integrations.connectors.base import (
    FieldType,
    WebhookChange,
    WebhookSignatureError,
    WriteAction,
    WriteOperation,
    webhook_signature,
)
from integrations.connectors.connector_service import ConnectorServiceConnector
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import Connection

pytestmark = pytest.mark.django_db

# A canary: it must never show up in a message or a detail.
SECRET = "whsec_" + base64.b64encode(b"connector-service-canary-5d2e").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"some-other-secret-entirely").decode()
URL = "https://connector.acme.example"
DATA = f"{URL}/v1/data"
SEED_RETRY_LATER = {
    "type": "http://www.meaningful.co.nz/limber-sync/retry-later", "typeCode": "RETRY_LATER", "status": 500,
    "title": "Retry later", "detail": "Retry later", "uuid": "3721a351-9285-4375-99db-f1fe1d8277b7",
    "message": "Oops, something went wrong",
}


def standard_webhooks_valid(secret, headers, body):
    """The Standard Webhooks verification, written out as a service would (standardwebhooks' algorithm)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + (body or b"")
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(signature.partition(",")[2], expected)
               for signature in headers["webhook-signature"].split() if signature.startswith("v1,"))


def sent(call):
    return json.loads(call.request.body)


def create(ref, email, **data):
    return WriteOperation(ref=ref, action=WriteAction.CREATE, data={"email": email, **data})


def update(ref, target_id, **data):
    return WriteOperation(ref=ref, action=WriteAction.UPDATE, data=data, target_id=target_id)


@pytest.fixture(autouse=True)
def _offline(settings):
    settings.RESYNC_ALLOW_PRIVATE_URLS = True  # no DNS here, and the reference service listens on loopback
    settings.RESYNC_HTTP_RETRY_DELAYS = []


@pytest.fixture
def make_connection(org):
    def make(url=URL, secret=SECRET):
        connection = Connection(organization=org, name=f"Service {Connection.objects.count()}",
                                provider="connector_service", config={"url": url})
        connection.credentials = {"signing_secret": secret}
        connection.save()
        return connection

    return make


@pytest.fixture
def connector(make_connection):
    return make_connection().get_connector()


@pytest.fixture
def reference():
    server = serve(port=0, secret=SECRET)
    yield server
    server.stop()


@pytest.fixture
def service(reference, make_connection):
    """A connector talking to the reference service on loopback."""
    return make_connection(url=reference.url).get_connector()


# -- signing ----------------------------------------------------------------------------------------------------


@responses.activate
def test_it_signs_every_request_the_standard_webhooks_way(connector):
    responses.get(f"{URL}/v1/objects", json={"objects": []})
    responses.put(DATA, json={"results": [{"ref": "r1", "externalId": "c_1", "action": "create"}]})

    connector.check()
    connector.write("contacts", [create("r1", "ada@example.org")])

    for call in responses.calls:
        headers = call.request.headers
        assert headers["webhook-id"].startswith("msg_")
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
        assert standard_webhooks_valid(SECRET, headers, call.request.body)
        assert "Authorization" not in headers
    assert responses.calls[0].request.headers["webhook-id"] != responses.calls[1].request.headers["webhook-id"]


@responses.activate
def test_each_retry_is_signed_anew_with_a_new_id(connector, settings):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0]
    responses.put(DATA, status=503)
    responses.put(DATA, json={"results": [{"ref": "r1", "externalId": "c_1", "action": "create"}]})

    [result] = connector.write("contacts", [create("r1", "ada@example.org")])

    assert result.ok
    first, second = (call.request.headers for call in responses.calls)
    assert first["webhook-id"] != second["webhook-id"]  # a service that refuses replays still takes the retry
    assert all(standard_webhooks_valid(SECRET, call.request.headers, call.request.body) for call in responses.calls)


# -- writing: request and answer shapes -------------------------------------------------------------------------


@responses.activate
def test_it_sends_a_batch_as_one_put_and_reads_one_result_per_record(connector):
    responses.put(DATA, json={"results": [
        {"ref": "r1", "externalId": "c_1", "action": "create", "data": {"email": "ada@example.org"}},
        {"ref": "r2", "error": {"type": "urn:resync:problem:validation", "status": 422, "logCode": "4224E",
                                "detail": "email must be a valid email", "field": "email", "retryable": False}},
        {"ref": "r3", "externalId": "c_9", "action": "update"},
        {"ref": "r4", "externalId": "c_4", "action": "update"},
    ]})
    operations = [
        create("r1", "ada@example.org", first_name="Ada"),
        create("r2", "not-an-email"),
        update("r3", "c_9", phone="+44 20 7946 0018"),
        WriteOperation(ref="r4", action=WriteAction.UPSERT, data={"email": "grace@example.org"}, match_field="email"),
    ]

    results = connector.write("contacts", operations)

    assert sent(responses.calls[0]) == {"object": "contacts", "records": [
        {"ref": "r1", "action": "create", "externalId": None, "matchField": None,
         "data": {"email": "ada@example.org", "first_name": "Ada"}},
        {"ref": "r2", "action": "create", "externalId": None, "matchField": None, "data": {"email": "not-an-email"}},
        {"ref": "r3", "action": "update", "externalId": "c_9", "matchField": None,
         "data": {"phone": "+44 20 7946 0018"}},
        {"ref": "r4", "action": "upsert", "externalId": None, "matchField": "email",
         "data": {"email": "grace@example.org"}},
    ]}
    assert responses.calls[0].request.headers["Content-Type"] == "application/json"
    assert [(r.ref, r.ok, r.target_id, r.action) for r in results] == [
        ("r1", True, "c_1", "create"), ("r2", False, None, "create"), ("r3", True, "c_9", "update"),
        ("r4", True, "c_4", "update"),
    ]
    assert results[0].record == {"email": "ada@example.org"}
    error = results[1].error
    assert (error.category, error.field, error.code, error.retryable) == (ErrorCategory.VALIDATION, "email", "4224E",
                                                                          False)


@responses.activate
def test_a_publish_error_with_link_identities_succeeds_the_linked_records(connector):
    # Seed 001's example, with Resync's refs as iris: the service stored one record, then failed.
    responses.put(DATA, status=500, json={
        "type": "http://www.synchive.com/common/publish-error",
        "detail": "Could not connect to ShopifyNZ. The HTTP API Key Value you provided is incorrect.",
        "logCode": "4005E", "technicalInfo": "POST /admin/products.json answered 401", "retryable": False,
        "linkIdentities": {"integrationKey": "shopify_nz_integration", "linkIdentities": [
            {"iri": "https://schema.limbergraph.com/limber/Product#r1", "externalId": "632910392"},
        ]},
    })

    results = connector.write("products", [create("r1", "a@example.org"), create("r2", "b@example.org")])

    assert len(responses.calls) == 1
    assert (results[0].ok, results[0].target_id, results[0].action) == (True, "632910392", "create")
    failed = results[1]
    assert not failed.ok
    assert (failed.error.category, failed.error.code, failed.error.retryable) == (ErrorCategory.UNKNOWN, "4005E",
                                                                                  False)
    assert "answered 401" in failed.error.detail
    assert not failed.error.may_have_applied  # the service accounted for every record of the call


@responses.activate
def test_a_retryable_partial_failure_is_not_sent_again_as_a_whole(connector, settings):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0, 0]
    responses.put(DATA, status=500, json={
        "type": "urn:resync:problem:publish-error", "detail": "The ERP is busy", "logCode": "5002E",
        "retryable": True, "linkIdentities": {"linkIdentities": [{"iri": "r1", "externalId": "c_1"}]},
    })

    results = connector.write("contacts", [update("r1", "c_1", first_name="A"), update("r2", "c_2", first_name="B")])

    assert len(responses.calls) == 1  # r1 was stored: sending the batch again would write it twice
    assert results[0].ok and results[0].target_id == "c_1"
    assert not results[1].ok and results[1].error.retryable


@responses.activate
def test_records_the_service_did_not_answer_for_fail_without_being_lost(connector):
    responses.put(DATA, json={"results": [{"ref": "r1", "externalId": "c_1"}, {"ref": "r2"}]})

    results = connector.write("contacts", [create("r1", "a@example.org"), create("r2", "b@example.org"),
                                           create("r3", "c@example.org")])

    assert results[0].ok and results[0].action == "create"
    assert results[1].error.code == "unexpected_answer" and results[1].error.may_have_applied
    assert results[2].error.code == "missing_result" and results[2].error.may_have_applied


@responses.activate
def test_operations_the_contract_cannot_carry_are_refused_without_a_call(connector):
    results = connector.write("contacts", [
        WriteOperation(ref="r1", action=WriteAction.UPDATE, data={"email": "a@example.org"}),
        WriteOperation(ref="r2", action=WriteAction.UPSERT, data={"email": "b@example.org"}),
    ])

    assert not responses.calls
    assert [(r.ok, r.error.category, r.error.code) for r in results] == [
        (False, ErrorCategory.VALIDATION, "target_id_missing"),
        (False, ErrorCategory.VALIDATION, "match_field_missing"),
    ]


@responses.activate
def test_a_success_answer_that_is_not_json_does_not_invite_sending_the_creates_again(connector):
    responses.put(DATA, body="OK")

    with pytest.raises(ConnectorError) as caught:
        connector.write("contacts", [create("r1", "a@example.org")])

    assert (caught.value.code, caught.value.retryable, caught.value.may_have_applied) == ("unparseable_answer",
                                                                                          False, True)


@responses.activate
def test_dates_and_decimals_travel_as_text(connector):
    responses.put(DATA, json={"results": [{"ref": "r1", "externalId": "c_1"}]})

    connector.write("orders", [WriteOperation(ref="r1", action=WriteAction.CREATE,
                                              data={"total": Decimal("12.50"), "placed_on": date(2026, 3, 1)})])

    assert sent(responses.calls[0])["records"][0]["data"] == {"total": "12.50", "placed_on": "2026-03-01"}


@responses.activate
@pytest.mark.parametrize(("action", "calls"), [("create", 1), ("update", 2)])
def test_a_batch_is_sent_again_after_a_500_only_when_it_updates(connector, settings, action, calls):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0]
    responses.put(DATA, status=500, body="Internal Server Error")
    responses.put(DATA, json={"results": [{"ref": "r1", "externalId": "c_1", "action": action}]})
    operation = create("r1", "a@example.org") if action == "create" else update("r1", "c_1", first_name="A")

    if action == "create":
        with pytest.raises(ConnectorError) as caught:
            connector.write("contacts", [operation])
        assert caught.value.may_have_applied
    else:
        assert connector.write("contacts", [operation])[0].ok
    assert len(responses.calls) == calls


# -- error classification ---------------------------------------------------------------------------------------


def problem(kind, status, **extra):
    return {"type": f"urn:resync:problem:{kind}", "status": status, "detail": f"{kind} happened", **extra}


ERRORS = [
    # status, body, headers, category, retryable, code, field, retry_after, may_have_applied
    (401, problem("auth", 401, logCode="4010E"), {}, ErrorCategory.AUTH, False, "4010E", "", None, False),
    (403, {"detail": "No access to contacts"}, {}, ErrorCategory.PERMISSION, False, "http_403", "", None, False),
    (404, problem("not-found", 404, logCode="4040E"), {}, ErrorCategory.NOT_FOUND, False, "4040E", "", None, False),
    (409, problem("duplicate", 409, logCode="4090E", field="email"), {}, ErrorCategory.DUPLICATE, False, "4090E",
     "email", None, False),
    (422, problem("validation", 422, logCode="4220E", field="email"), {}, ErrorCategory.VALIDATION, False, "4220E",
     "email", None, False),
    (500, problem("validation", 500, logCode="4220E", field="phone"), {}, ErrorCategory.VALIDATION, False, "4220E",
     "phone", None, False),
    (429, {"detail": "Slow down"}, {"Retry-After": "7"}, ErrorCategory.RATE_LIMIT, True, "http_429", "", 7, False),
    (500, SEED_RETRY_LATER, {}, ErrorCategory.CONNECTION, True, "RETRY_LATER", "", None, False),
    (500, {"type": "urn:resync:problem:retry-later", "logCode": "5030W"}, {}, ErrorCategory.CONNECTION, True,
     "5030W", "", None, False),
    (502, "<html>Bad Gateway</html>", {}, ErrorCategory.CONNECTION, True, "http_502", "", None, True),
    (503, {"title": "Service Unavailable"}, {}, ErrorCategory.CONNECTION, True, "http_503", "", None, False),
    (504, "", {}, ErrorCategory.CONNECTION, True, "http_504", "", None, True),
    (500, {"type": "http://www.synchive.com/common/publish-error", "logCode": "4005E", "detail": "Bad API key"}, {},
     ErrorCategory.UNKNOWN, False, "4005E", "", None, True),
    (500, {"type": "http://www.synchive.com/common/publish-error", "logCode": "4006E", "retryable": True}, {},
     ErrorCategory.UNKNOWN, True, "4006E", "", None, False),
    (503, {"type": "urn:resync:problem:publish-error", "logCode": "4007E", "retryable": False}, {},
     ErrorCategory.CONNECTION, False, "4007E", "", None, False),
    (500, {"type": "urn:resync:problem:unknown", "logCode": "5009E"}, {}, ErrorCategory.UNKNOWN, True, "5009E", "",
     None, True),
    (500, {"type": "urn:resync:problem:unknown", "logCode": "5009E", "retryable": True}, {}, ErrorCategory.UNKNOWN,
     True, "5009E", "", None, False),
    (500, "Traceback (most recent call last): ...", {}, ErrorCategory.UNKNOWN, True, "http_500", "", None, True),
]


@responses.activate
@pytest.mark.parametrize(("status", "body", "headers", "category", "retryable", "code", "field", "retry_after",
                          "may_have_applied"), ERRORS)
def test_every_error_answer_lands_in_its_category(connector, status, body, headers, category, retryable, code, field,
                                                  retry_after, may_have_applied):
    kwargs = {"json": body} if isinstance(body, dict) else {"body": body}
    responses.put(DATA, status=status, headers=headers, **kwargs)

    with pytest.raises(ConnectorError) as caught:
        connector.write("contacts", [create("r1", "a@example.org")])

    error = caught.value
    assert (error.category, error.retryable, error.code, error.field) == (category, retryable, code, field)
    assert (error.retry_after, error.may_have_applied) == (retry_after, may_have_applied)
    assert SECRET not in error.message + error.detail


@responses.activate
def test_technical_info_goes_into_the_detail(connector):
    responses.get(f"{URL}/v1/objects", status=500, json={
        "type": "urn:resync:problem:publish-error", "detail": "The ERP refused the login", "logCode": "4005E",
        "technicalInfo": "ERP answered 401 to POST /session",
    })

    with pytest.raises(ConnectorError) as caught:
        connector.check()

    assert caught.value.message == "The ERP refused the login"
    assert caught.value.detail == "HTTP 500 Internal Server Error: ERP answered 401 to POST /session"


# -- configuration ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/", "https://169.254.169.254/latest/meta-data", "https://10.0.0.1:8443", "https://[fec0::1]/",
    "https://[::ffff:127.0.0.1]/", "https://2130706433/",
])
def test_validate_config_refuses_private_loopback_and_metadata_addresses(settings, url):
    settings.RESYNC_ALLOW_PRIVATE_URLS = False

    problems = ConnectorServiceConnector.validate_config({"url": url})

    assert "private or reserved address" in problems["url"][0]


@pytest.mark.parametrize(("url", "message"), [
    (None, "Service URL is required."),
    ("http://93.184.216.34", "Service URL must use https."),
    ("https://93.184.216.34/hook?token=1", "must not carry a query"),
    ("file:///etc/passwd", "Only http and https"),
])
def test_validate_config_refuses_what_is_not_a_usable_service_url(settings, url, message):
    settings.RESYNC_ALLOW_PRIVATE_URLS = False

    problems = ConnectorServiceConnector.validate_config({"url": url})

    assert message in problems["url"][0]


def test_validate_config_accepts_a_public_https_url_and_loopback_in_development(settings):
    settings.RESYNC_ALLOW_PRIVATE_URLS = False
    assert ConnectorServiceConnector.validate_config({"url": "https://93.184.216.34/connector"}) == {}

    settings.RESYNC_ALLOW_PRIVATE_URLS = True
    assert ConnectorServiceConnector.validate_config({"url": "http://127.0.0.1:8765"}) == {}


@pytest.mark.parametrize("timeout", [0, 121, "30"])
def test_validate_config_refuses_a_timeout_out_of_range(timeout):
    assert "timeout" in ConnectorServiceConnector.validate_config({"url": URL, "timeout": timeout})


@responses.activate
def test_it_waits_as_long_as_the_connection_says(org):
    connection = Connection(organization=org, name="Slow ERP", provider="connector_service",
                            config={"url": URL, "timeout": 90})
    connection.credentials = {"signing_secret": SECRET}
    connection.save()
    responses.get(f"{URL}/v1/objects", json={"objects": []})

    connection.get_connector().check()

    assert responses.calls[0].request.req_kwargs["timeout"] == 90


@pytest.mark.parametrize("secret", [None, "", "plain-secret", "whsec_", "whsec_not base64!"])
def test_validate_credentials_asks_for_a_standard_webhooks_secret(secret):
    assert "signing_secret" in ConnectorServiceConnector.validate_credentials({"signing_secret": secret})


def test_validate_credentials_accepts_a_whsec_secret():
    assert ConnectorServiceConnector.validate_credentials({"signing_secret": SECRET}) == {}


@responses.activate
def test_a_connection_without_a_usable_secret_sends_nothing(make_connection):
    connector = make_connection(secret="not-a-whsec").get_connector()

    with pytest.raises(ConnectorError) as caught:
        connector.check()

    assert (caught.value.category, caught.value.code) == (ErrorCategory.AUTH, "signing_secret_invalid")
    assert not responses.calls


# -- inbound webhooks (the base's Standard Webhooks scheme) -----------------------------------------------------


def test_change_events_from_the_service_are_verified_and_parsed(connector):
    raw = json.dumps({"type": "records.changed", "object": "contacts", "ids": ["con_1", "con_2"]}).encode()
    now = datetime.now(UTC)
    timestamp = str(int(now.timestamp()))
    headers = {"webhook-id": "evt_1", "webhook-timestamp": timestamp,
               "webhook-signature": webhook_signature(SECRET, webhook_id="evt_1", timestamp=timestamp, raw_body=raw)}

    connector.verify_webhook(secrets=[SECRET], method="POST", url="https://resync.example/hooks/1", headers=headers,
                             raw_body=raw, now=now)
    with pytest.raises(WebhookSignatureError):
        connector.verify_webhook(secrets=[OTHER_SECRET], method="POST", url="https://resync.example/hooks/1",
                                 headers=headers, raw_body=raw, now=now)
    assert connector.webhook_event_id(headers=headers, payload=json.loads(raw)) == "evt_1"
    assert connector.parse_webhook(json.loads(raw)) == [WebhookChange("contacts", ["con_1", "con_2"])]


# -- the reference service on loopback: writing -----------------------------------------------------------------


def test_a_batch_write_with_per_record_errors_stores_the_rest(reference, service):
    existing = reference.service.add("contacts", {"email": "grace@example.org", "first_name": "Grace"})
    reference.service.faults = [Fault("invalid", field="last_name", value="Refuse")]

    results = service.write("contacts", [
        create("r1", "ada@example.org", first_name="Ada"),
        create("r2", "bob@example.org", last_name="Refuse"),
        create("r3", "grace@example.org"),
        update("r4", existing, last_name="Hopper"),
        update("r5", "con_404", last_name="Nobody"),
        WriteOperation(ref="r6", action=WriteAction.UPSERT, data={"email": "grace@example.org", "phone": "+1 555"},
                       match_field="email"),
    ])

    outcome = {r.ref: (r.ok, r.action, r.error.category if r.error else None) for r in results}
    assert outcome == {
        "r1": (True, "create", None),
        "r2": (False, "create", ErrorCategory.VALIDATION),
        "r3": (False, "create", ErrorCategory.DUPLICATE),
        "r4": (True, "update", None),
        "r5": (False, "update", ErrorCategory.NOT_FOUND),
        "r6": (True, "update", None),
    }
    assert results[2].error.field == "email"
    stored = {record["id"]: record["data"] for record in reference.service.records("contacts")}
    assert stored == {
        existing: {"email": "grace@example.org", "first_name": "Grace", "last_name": "Hopper", "phone": "+1 555"},
        results[0].target_id: {"email": "ada@example.org", "first_name": "Ada"},
    }
    assert results[5].target_id == existing
    assert len(reference.service.calls("PUT", "/v1/data")) == 1


def test_a_partial_failure_links_the_records_that_were_stored(reference, service):
    reference.service.faults = [Fault("partial", field="email", value="bad@example.org")]

    results = service.write("contacts", [create("r1", "ada@example.org"), create("r2", "bad@example.org"),
                                         create("r3", "grace@example.org")])

    stored = {record["data"]["email"]: record["id"] for record in reference.service.records("contacts")}
    assert stored.keys() == {"ada@example.org", "grace@example.org"}
    assert (results[0].ok, results[0].target_id) == (True, stored["ada@example.org"])
    assert (results[2].ok, results[2].target_id) == (True, stored["grace@example.org"])
    assert not results[1].ok
    assert (results[1].error.code, results[1].error.retryable) == ("5002E", False)
    assert "r2: This record was refused" in results[1].error.detail


@pytest.mark.parametrize("kind", ["retry_later", "unavailable"])
def test_retry_later_and_503_are_retried_within_the_request(reference, service, settings, kind):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0.01, 0.01, 0.01]
    reference.service.faults = [Fault(kind, times=2)]

    [result] = service.write("contacts", [create("r1", "ada@example.org")])

    assert result.ok
    assert len(reference.service.calls("PUT", "/v1/data")) == 3
    assert [record["id"] for record in reference.service.records("contacts")] == [result.target_id]


def test_a_create_whose_answer_is_lost_is_not_sent_again(reference, service, settings):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0.01, 0.01, 0.01]
    service.timeout = 0.3
    reference.service.faults = [Fault("slow", seconds=1.0)]

    with pytest.raises(ConnectorError) as caught:
        service.write("contacts", [create("r1", "ada@example.org")])

    assert (caught.value.category, caught.value.code) == (ErrorCategory.TIMEOUT, "read_timeout")
    assert caught.value.may_have_applied
    assert len(reference.service.calls("PUT", "/v1/data")) == 1
    # What the engine does next: look the record up by its match key instead of creating it twice.
    reference.service.faults = []
    [found] = service.find("contacts", "email", ["ada@example.org"])["ada@example.org"]
    assert [record["id"] for record in reference.service.records("contacts")] == [found.id]


def test_an_update_whose_answer_is_lost_is_sent_again(reference, service, settings):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0.01]
    service.timeout = 0.3
    existing = reference.service.add("contacts", {"email": "ada@example.org"})
    reference.service.faults = [Fault("slow", seconds=1.0, times=1)]

    [result] = service.write("contacts", [update("r1", existing, first_name="Ada")])

    assert (result.ok, result.target_id) == (True, existing)
    assert len(reference.service.calls("PUT", "/v1/data")) == 2
    assert reference.service.records("contacts")[0]["data"]["first_name"] == "Ada"


def test_the_reference_service_refuses_a_wrong_secret_with_401(reference, make_connection):
    connector = make_connection(url=reference.url, secret=OTHER_SECRET).get_connector()

    with pytest.raises(ConnectorError) as caught:
        connector.check()

    assert (caught.value.category, caught.value.retryable) == (ErrorCategory.AUTH, False)
    assert not reference.service.calls()


def test_the_reference_service_refuses_unsigned_stale_and_replayed_requests(reference):
    body = b'{"type": "ping"}'

    def put(webhook_id, timestamp, signature=None):
        signature = signature or sign(SECRET, webhook_id, timestamp, body)
        headers = {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
        return requests.put(f"{reference.url}/v1/process", data=body, headers=headers, timeout=5)

    now = int(time.time())
    assert requests.put(f"{reference.url}/v1/process", data=body, timeout=5).json()["code"] == "signature_missing"
    assert put("msg_a", now - 600).json()["code"] == "timestamp_out_of_tolerance"
    assert put("msg_b", now, signature=sign(OTHER_SECRET, "msg_b", now, body)).json()["code"] == "signature_invalid"
    assert put("msg_c", now, signature=f"v1,bm9wZQ== {sign(SECRET, 'msg_c', now, body)}").status_code == 200
    assert put("msg_c", now).json()["code"] == "replayed"
    assert len(reference.service.messages) == 1


# -- the reference service on loopback: reading -----------------------------------------------------------------


def test_it_reads_three_pages_and_resumes_from_the_cursor_inclusively(reference, service):
    ids = [reference.service.add("contacts", {"email": f"p{n}@example.org"}) for n in range(5)]

    pages, token = [], None
    while True:
        page = service.read_page("contacts", page_token=token, page_size=2)
        pages.append(page)
        token = page.next_token
        if token is None:
            break

    assert [[record.id for record in page.records] for page in pages] == [ids[:2], ids[2:4], ids[4:]]
    assert pages[0].records[0].data == {"email": "p0@example.org"}
    assert pages[0].records[0].modified_at.tzinfo is not None
    queries = [call.query for call in reference.service.calls("GET", "/v1/data")]
    assert [query.get("page") for query in queries] == [None, pages[0].next_token, pages[1].next_token]
    assert all(query["limit"] == "2" and query["object"] == "contacts" for query in queries)

    cursor = pages[-1].cursor
    service.write("contacts", [update("r1", ids[1], first_name="Changed")])
    again = service.read_page("contacts", cursor=cursor)

    # The record at the cursor's timestamp is read again (dropped by its hash), the changed one comes after it.
    assert [record.id for record in again.records] == [ids[4], ids[1]]
    assert reference.service.calls("GET", "/v1/data")[-1].query["cursor"] == cursor


def test_fetch_and_find_return_records_by_id_and_by_value(reference, service):
    ada = reference.service.add("contacts", {"email": "ada@example.org", "last_name": "Lovelace"})
    grace = reference.service.add("contacts", {"email": "grace@example.org", "last_name": "Hopper"})
    twin = reference.service.add("contacts", {"email": "twin@example.org", "last_name": "Hopper"})

    fetched = service.fetch("contacts", [ada, "con_missing", grace])
    found = service.find("contacts", "last_name", ["Hopper", "Lovelace", "Nobody"])

    assert fetched.keys() == {ada, grace}
    assert fetched[ada].data["email"] == "ada@example.org"
    assert {value: sorted(record.id for record in records) for value, records in found.items()} == {
        "Hopper": sorted([grace, twin]), "Lovelace": [ada], "Nobody": [],
    }
    assert reference.service.calls("POST", "/v1/data/find")[0].body == {
        "object": "contacts", "field": "last_name", "values": ["Hopper", "Lovelace", "Nobody"],
    }


def test_schema_discovery_lists_and_describes_objects(service):
    assert [(o.name, o.label) for o in service.list_objects()] == [("contacts", "Contacts"),
                                                                    ("companies", "Companies")]

    schema = service.describe_object("contacts")

    assert list(schema.fields) == ["id", "email", "first_name", "last_name", "phone"]
    assert schema.fields["id"].read_only and schema.fields["id"].unique
    email = schema.fields["email"]
    assert (email.type, email.required, email.unique, email.max_length) == (FieldType.EMAIL, True, True, 254)
    assert service.describe_object("companies").fields["employees"].type == FieldType.INTEGER
    with pytest.raises(ConnectorError) as caught:
        service.describe_object("invoices")
    assert (caught.value.category, caught.value.code) == (ErrorCategory.MAPPING, "object_not_found")


# -- the reference service on loopback: process messages --------------------------------------------------------


def test_process_sends_a_message_and_returns_the_answer(reference, service):
    doomed = reference.service.add("contacts", {"email": "ada@example.org"})

    assert service.process({"type": "ping", "payload": {}}) == {"ok": True}
    assert service.process({"type": "records.delete", "payload": {"object": "contacts", "ids": [doomed]}}) == {
        "deleted": [doomed]}

    assert reference.service.records("contacts") == []
    assert reference.service.messages[0] == {"type": "ping", "payload": {}}


def test_a_process_error_is_classified_and_retry_later_is_retried(reference, service, settings):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0.01, 0.01]
    with pytest.raises(ConnectorError) as caught:
        service.process({"type": "invoice.send", "payload": {"id": 1}})
    assert (caught.value.category, caught.value.code, caught.value.retryable) == (ErrorCategory.VALIDATION, "4003E",
                                                                                  False)

    reference.service.faults = [Fault("retry_later", path="/v1/process", times=1)]
    assert service.process({"type": "ping"}) == {"ok": True}
    assert len(reference.service.calls("PUT", "/v1/process")) == 3


def test_a_process_message_is_not_sent_again_after_a_500(reference, service, settings):
    settings.RESYNC_HTTP_RETRY_DELAYS = [0.01, 0.01]
    reference.service.faults = [Fault("error", path="/v1/process", times=1)]

    with pytest.raises(ConnectorError) as caught:
        service.process({"type": "ping"})

    assert (caught.value.code, caught.value.retryable) == ("5001E", False)
    assert len(reference.service.calls("PUT", "/v1/process")) == 1


# -- the reference service itself -------------------------------------------------------------------------------


def test_faults_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CONNECTOR_SERVICE_FAULTS", '[{"kind": "unavailable", "times": 2, "seconds": 3}]')

    service = ReferenceService(SECRET)

    assert service.faults == [Fault("unavailable", times=2, seconds=3)]
    with pytest.raises(ValueError):
        Fault("explode")
