"""The one HTTP path: classification of answers and exceptions, the SSRF guard, and in-request retries."""

import email.utils
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import responses

from integrations.connectors import http
from integrations.errors import ConnectorError, ErrorCategory

# A public address, so the SSRF guard lets it through without DNS; `responses` answers in its place.
API = "http://93.184.216.34/v1/records"

SEED_001_RETRY_LATER = {
    "type": "http://www.meaningful.co.nz/limber-sync/retry-later",
    "typeCode": "RETRY_LATER",
    "status": 500,
    "title": "Retry later",
    "detail": "Retry later",
    "uuid": "3721a351-9285-4375-99db-f1fe1d8277b7",
    "message": "Oops, something went wrong",
}
SEED_001_PUBLISH_ERROR = {
    "type": "http://www.synchive.com/common/publish-error",
    "detail": "Could not connect to ShopifyNZ. The HTTP API Key Value you provided is incorrect.",
    "logCode": "4005E",
    "retryable": False,
}


class SleepRecorder:
    def __init__(self):
        self.delays = []

    def __call__(self, seconds):
        self.delays.append(seconds)


@pytest.fixture
def sleep():
    return SleepRecorder()


# -- classify_response: the table --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "category", "retryable"),
    [
        (400, ErrorCategory.VALIDATION, False),
        (401, ErrorCategory.AUTH, False),
        (403, ErrorCategory.PERMISSION, False),
        (404, ErrorCategory.NOT_FOUND, False),
        (408, ErrorCategory.TIMEOUT, True),
        (409, ErrorCategory.DUPLICATE, False),
        (410, ErrorCategory.NOT_FOUND, False),
        (418, ErrorCategory.UNKNOWN, False),
        (422, ErrorCategory.VALIDATION, False),
        (429, ErrorCategory.RATE_LIMIT, True),
        (500, ErrorCategory.UNKNOWN, True),
        (501, ErrorCategory.UNKNOWN, True),
        (502, ErrorCategory.CONNECTION, True),
        (503, ErrorCategory.CONNECTION, True),
        (504, ErrorCategory.CONNECTION, True),
        (599, ErrorCategory.UNKNOWN, True),
    ],
)
def test_it_classifies_each_status(status, category, retryable):
    error = http.classify_response(status)

    assert error.category == category
    assert error.retryable is retryable
    assert error.code == f"http_{status}"
    assert error.detail.startswith(f"HTTP {status}")


@pytest.mark.parametrize("status", [200, 201, 204, 301, 304])
def test_it_does_not_treat_success_or_redirects_as_errors(status):
    assert http.classify_response(status, {}, b"") is None


def test_it_falls_back_to_a_plain_sentence():
    error = http.classify_response(503, {}, b"")

    assert error.message == "The target answered 503 Service Unavailable"


def test_it_reads_retry_after_in_seconds():
    error = http.classify_response(429, {"Retry-After": "17"}, b"")

    assert error.category == ErrorCategory.RATE_LIMIT
    assert error.retry_after == 17


def test_it_reads_retry_after_as_an_http_date():
    later = datetime.now(UTC) + timedelta(seconds=45)
    error = http.classify_response(429, {"retry-after": email.utils.format_datetime(later, usegmt=True)}, b"")

    assert 40 <= error.retry_after <= 46


def test_it_treats_a_past_retry_after_date_as_now():
    assert http.classify_response(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}).retry_after == 0


@pytest.mark.parametrize("body", [{"retryAfter": 9}, {"retry_after": "9"}])
def test_it_reads_retry_after_from_the_body_without_a_header(body):
    assert http.classify_response(429, {}, body).retry_after == 9


@pytest.mark.parametrize("headers", [None, {}, {"Retry-After": "soon"}])
def test_it_leaves_retry_after_empty_without_a_usable_header(headers):
    assert http.classify_response(429, headers).retry_after is None


def test_it_retries_seed_001_retry_later_even_as_a_500():
    error = http.classify_response(500, {"Content-Type": "application/problem+json"}, json.dumps(SEED_001_RETRY_LATER))

    assert error.category == ErrorCategory.CONNECTION
    assert error.retryable is True
    assert error.code == "RETRY_LATER"
    assert error.message == "Retry later"


def test_it_retries_a_retry_later_problem_type_without_a_type_code():
    body = {"type": "https://api.example.com/problems/retry-later", "title": "Busy"}

    error = http.classify_response(400, {}, body)

    assert (error.category, error.retryable, error.message) == (ErrorCategory.CONNECTION, True, "Busy")


def test_it_honours_retryable_false_in_a_publish_error():
    error = http.classify_response(500, {}, json.dumps(SEED_001_PUBLISH_ERROR).encode())

    assert error.category == ErrorCategory.UNKNOWN
    assert error.retryable is False
    assert error.code == "4005E"
    assert error.message.startswith("Could not connect to ShopifyNZ.")


def test_it_honours_retryable_true_in_a_process_error():
    body = {
        "type": "http://www.synchive.com/common/process-error",
        "detail": "ShopifyNZ is busy",
        "logCode": "4003E",
        "technicalInfo": "upstream answered 502 after 30s",
        "retryable": True,
    }

    error = http.classify_response(422, {}, body)

    assert error.retryable is True
    assert error.code == "4003E"
    assert error.detail == "HTTP 422 Unprocessable Entity: upstream answered 502 after 30s"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"detail": "d", "title": "t", "message": "m"}, "d"),
        ({"title": "t", "message": "m"}, "t"),
        ({"message": "m"}, "m"),
        ({"error": {"message": "nested", "code": "E42"}}, "nested"),
    ],
)
def test_it_takes_the_message_from_detail_then_title_then_message(body, message):
    assert http.classify_response(400, {}, body).message == message


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"logCode": "L1", "typeCode": "T1", "code": "C1", "errorCode": "E1"}, "L1"),
        ({"typeCode": "T1", "code": "C1"}, "T1"),
        ({"code": "C1", "errorCode": "E1"}, "C1"),
        ({"errorCode": "E1"}, "E1"),
        ({"code": 1042}, "1042"),
        ({"errors": [{"field": "email", "code": "INVALID_EMAIL"}]}, "INVALID_EMAIL"),
    ],
)
def test_it_takes_the_code_from_the_body(body, code):
    assert http.classify_response(400, {}, body).code == code


@pytest.mark.parametrize(
    "body",
    [
        {"field": "email"},
        {"errors": [{"message": "bad"}, {"field": "email", "message": "invalid"}]},
        {"invalid_params": [{"name": "email", "reason": "must be an email"}]},
    ],
)
def test_it_names_the_offending_field(body):
    assert http.classify_response(400, {}, body).field == "email"


def test_it_treats_an_expired_oauth_grant_as_auth_whatever_the_status():
    body = {"error": "invalid_grant", "error_description": "Token has expired"}

    error = http.classify_response(400, {}, body)

    assert (error.category, error.code, error.message) == (ErrorCategory.AUTH, "invalid_grant", "Token has expired")


def test_it_keeps_a_non_json_body_as_technical_detail_cut_to_size():
    error = http.classify_response(502, {}, "<html>" + "x" * 5000 + "</html>")

    assert error.detail.startswith("HTTP 502 Bad Gateway: <html>xxx")
    assert len(error.detail) <= http.MAX_DETAIL_LENGTH


def test_it_scrubs_secrets_from_message_and_detail():
    body = {
        "detail": "Key sk_live_canary123 was rejected",
        "technicalInfo": "Authorization: Bearer eyJcanary.token sent with api_key=sk_live_canary123",
    }

    error = http.classify_response(401, {}, body, secrets=["sk_live_canary123"])

    for text in (error.message, error.detail):
        assert "sk_live_canary123" not in text
        assert "eyJcanary" not in text
    assert "[redacted]" in error.detail


def test_it_scrubs_secret_keys_of_a_json_body_kept_as_detail():
    error = http.classify_response(400, {}, {"title": "Bad", "client_secret": "s3cr3t-value", "api_key": "k-123"})

    assert "s3cr3t-value" not in error.detail
    assert "k-123" not in error.detail


# -- classify_exception ------------------------------------------------------------------------------------------


def _prepared(url="https://api.example.com/v1/records"):
    return requests.Request("GET", url).prepare()


@pytest.mark.parametrize(
    ("exc", "category", "code"),
    [
        (requests.ConnectTimeout("connect timed out", request=_prepared()), ErrorCategory.TIMEOUT, "connect_timeout"),
        (requests.ReadTimeout("Read timed out.", request=_prepared()), ErrorCategory.TIMEOUT, "read_timeout"),
        (requests.Timeout("timed out"), ErrorCategory.TIMEOUT, "read_timeout"),
        (
            requests.ConnectionError("Failed to resolve 'nope.example' ([Errno -2] Name or service not known)"),
            ErrorCategory.CONNECTION,
            "dns_failure",
        ),
        (
            requests.ConnectionError("Failed to establish a new connection: [Errno 111] Connection refused"),
            ErrorCategory.CONNECTION,
            "connection_refused",
        ),
        (requests.ConnectionError("Connection reset by peer"), ErrorCategory.CONNECTION, "connection_failed"),
        (requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"), ErrorCategory.CONNECTION, "tls_error"),
        (requests.exceptions.ChunkedEncodingError("Connection broken"), ErrorCategory.CONNECTION, "connection_broken"),
        (ValueError("something odd"), ErrorCategory.UNKNOWN, "unexpected_error"),
    ],
)
def test_it_classifies_exceptions(exc, category, code):
    error = http.classify_exception(exc)

    assert (error.category, error.code) == (category, code)
    assert error.retryable is True
    assert error.detail.startswith(type(exc).__name__)


def test_it_names_the_host_in_an_exception_message():
    error = http.classify_exception(requests.ReadTimeout("Read timed out.", request=_prepared()))

    assert error.message == "The target did not answer in time (api.example.com)"


def test_it_does_not_retry_a_request_that_can_never_be_sent():
    error = http.classify_exception(requests.exceptions.InvalidURL("Invalid URL 'http://'"))

    assert (error.category, error.retryable) == (ErrorCategory.UNKNOWN, False)


def test_it_passes_a_connector_error_through():
    original = ConnectorError(ErrorCategory.AUTH, "no")

    assert http.classify_exception(original) is original


def test_it_scrubs_secrets_from_exception_details():
    exc = requests.ConnectionError("GET https://api.example.com/?api_key=canary-key-1 failed; token canary-key-1")

    error = http.classify_exception(exc, secrets=["canary-key-1"])

    assert "canary-key-1" not in error.detail


# -- guard_url ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8000/",
        "http://10.1.2.3/api",
        "http://192.168.0.10/",
        "http://172.16.5.4/",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00::1]/",
        "http://[fec0::1]/",  # IPv6 site-local: deprecated, but still routed on some networks
        "http://[fec0:1234::9]:8080/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.1/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://good.example.com@127.0.0.1/",
        "http://user:pass@93.184.216.34/",
        "file:///etc/passwd",
        "gopher://93.184.216.34/",
        "ftp://93.184.216.34/",
        "http:///nohost",
        "http://93.184.216.34:99999/",
    ],
)
def test_guard_url_rejects_unsafe_urls(url):
    with pytest.raises(http.UnsafeURL) as excinfo:
        http.guard_url(url)

    assert excinfo.value.category == ErrorCategory.CONNECTION
    assert excinfo.value.code == "unsafe_url"
    assert excinfo.value.retryable is False


def test_guard_url_rejects_a_name_resolving_to_a_private_address(monkeypatch):
    monkeypatch.setattr(http, "_resolve", lambda host, port: ["93.184.216.34", "10.0.0.7"])

    with pytest.raises(http.UnsafeURL, match="private or reserved"):
        http.guard_url("https://crm.example.com/api")


def test_guard_url_accepts_a_public_name(monkeypatch):
    monkeypatch.setattr(http, "_resolve", lambda host, port: ["93.184.216.34", "2606:2800:220:1::1"])

    http.guard_url("https://crm.example.com/api")
    http.guard_url("http://93.184.216.34:8080/")


def test_guard_url_reports_a_name_that_does_not_resolve(monkeypatch):
    def fail(host, port):
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(http, "_resolve", fail)

    with pytest.raises(ConnectorError) as excinfo:
        http.guard_url("https://nope.example.com/")

    assert (excinfo.value.category, excinfo.value.code) == (ErrorCategory.CONNECTION, "dns_failure")


def test_guard_url_allows_private_addresses_when_the_setting_says_so(settings):
    settings.RESYNC_ALLOW_PRIVATE_URLS = True

    http.guard_url("http://127.0.0.1:8000/")
    http.guard_url("http://10.1.2.3/")
    with pytest.raises(http.UnsafeURL):
        http.guard_url("file:///etc/passwd")
    with pytest.raises(http.UnsafeURL):
        http.guard_url("http://user@127.0.0.1/")


# -- request() ----------------------------------------------------------------------------------------------------


@responses.activate
def test_request_returns_a_successful_response_with_the_default_timeout(settings, sleep):
    settings.RESYNC_HTTP_TIMEOUT = 7.5
    responses.get(API, json={"results": []})

    response = http.request("GET", API, sleep=sleep)

    assert response.json() == {"results": []}
    assert responses.calls[0].request.req_kwargs["timeout"] == 7.5
    assert sleep.delays == []


@responses.activate
def test_request_retries_ephemeral_failures_after_2_4_8_seconds_then_gives_up(settings, sleep):
    settings.RESYNC_HTTP_RETRY_DELAYS = [2, 4, 8]
    responses.get(API, status=503)

    with pytest.raises(ConnectorError) as excinfo:
        http.request("GET", API, sleep=sleep)

    assert excinfo.value.category == ErrorCategory.CONNECTION
    assert sleep.delays == [2, 4, 8]
    assert len(responses.calls) == 4


@responses.activate
def test_request_stops_retrying_once_the_target_recovers(sleep):
    responses.get(API, status=502)
    responses.get(API, json=SEED_001_RETRY_LATER, status=500)
    responses.get(API, json={"ok": True})

    response = http.request("GET", API, sleep=sleep, retry_delays=[2, 4, 8])

    assert response.json() == {"ok": True}
    assert sleep.delays == [2, 4]


@responses.activate
def test_request_waits_at_least_retry_after(sleep):
    responses.get(API, status=429, headers={"Retry-After": "5"})
    responses.get(API, status=429, headers={"Retry-After": "1"})
    responses.get(API, json={"ok": True})

    http.request("GET", API, sleep=sleep, retry_delays=[2, 4, 8])

    assert sleep.delays == [5, 4]


@responses.activate
def test_request_leaves_a_long_retry_after_to_the_retry_scheduler(sleep):
    responses.get(API, status=429, headers={"Retry-After": "120"})

    with pytest.raises(ConnectorError) as excinfo:
        http.request("GET", API, sleep=sleep, retry_delays=[2, 4, 8])

    assert (excinfo.value.category, excinfo.value.retry_after) == (ErrorCategory.RATE_LIMIT, 120)
    assert sleep.delays == []
    assert len(responses.calls) == 1


@responses.activate
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_request_raises_durable_failures_at_once(status, sleep):
    responses.get(API, status=status, json={"detail": "no", "field": "email"})

    with pytest.raises(ConnectorError) as excinfo:
        http.request("GET", API, sleep=sleep)

    assert excinfo.value.message == "no"
    assert sleep.delays == []
    assert len(responses.calls) == 1


@responses.activate
def test_request_does_not_retry_a_publish_error_that_says_it_is_final(sleep):
    responses.put(API, status=500, json=SEED_001_PUBLISH_ERROR)

    with pytest.raises(ConnectorError) as excinfo:
        http.request("PUT", API, sleep=sleep, json={"id": 1})

    assert excinfo.value.code == "4005E"
    assert sleep.delays == []


@responses.activate
@pytest.mark.parametrize(
    ("exc", "category"),
    [
        (requests.ReadTimeout("Read timed out."), ErrorCategory.TIMEOUT),
        (requests.ConnectionError("[Errno 111] Connection refused"), ErrorCategory.CONNECTION),
    ],
)
def test_request_retries_exceptions_too(exc, category, sleep):
    responses.get(API, body=exc)

    with pytest.raises(ConnectorError) as excinfo:
        http.request("GET", API, sleep=sleep, retry_delays=[1, 1])

    assert excinfo.value.category == category
    assert sleep.delays == [1, 1]
    assert len(responses.calls) == 3


@responses.activate
def test_request_scrubs_the_callers_secrets(sleep):
    responses.get(API, status=401, json={"detail": "Invalid key sk-canary-9f8e", "technicalInfo": "key=sk-canary-9f8e"})

    with pytest.raises(ConnectorError) as excinfo:
        http.request("GET", API, sleep=sleep, secrets=["sk-canary-9f8e"], headers={"X-Api-Key": "sk-canary-9f8e"})

    assert "sk-canary-9f8e" not in excinfo.value.message
    assert "sk-canary-9f8e" not in excinfo.value.detail


@responses.activate
def test_request_guards_the_url_before_sending(sleep):
    with pytest.raises(http.UnsafeURL):
        http.request("GET", "http://169.254.169.254/latest/meta-data/", sleep=sleep)

    assert len(responses.calls) == 0


@responses.activate
def test_request_lets_a_vendor_classify_its_quirks(sleep):
    # A GraphQL API answering throttling inside a 200.
    responses.post(API, json={"errors": [{"extensions": {"code": "THROTTLED"}}]})

    def classify(response, *, secrets=()):
        errors = response.json().get("errors") or []
        if any(e.get("extensions", {}).get("code") == "THROTTLED" for e in errors):
            return ConnectorError(ErrorCategory.RATE_LIMIT, "Throttled", code="THROTTLED", retry_after=1)
        return http.classify_response(response.status_code, response.headers, response.content, secrets=secrets)

    with pytest.raises(ConnectorError) as excinfo:
        http.request("POST", API, sleep=sleep, retry_delays=[2], classify=classify)

    assert excinfo.value.code == "THROTTLED"
    assert sleep.delays == [2]


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_request_checks_the_address_actually_connected_to(monkeypatch, loopback_server, sleep):
    # DNS rebinding: the name looked public when checked, but the connection lands on loopback.
    monkeypatch.setattr(http, "_resolve", lambda host, port: ["93.184.216.34"])
    url = f"http://localhost:{loopback_server.server_address[1]}/"

    with pytest.raises(http.UnsafeURL) as excinfo:
        http.request("GET", url, sleep=sleep, retry_delays=[])

    assert "127.0.0.1" in excinfo.value.detail


def test_request_reaches_loopback_when_private_urls_are_allowed(settings, loopback_server, sleep):
    settings.RESYNC_ALLOW_PRIVATE_URLS = True

    response = http.request("GET", f"http://127.0.0.1:{loopback_server.server_address[1]}/", sleep=sleep)

    assert response.text == "hello"


def test_request_guards_a_callers_own_session(monkeypatch, loopback_server, sleep):
    monkeypatch.setattr(http, "_resolve", lambda host, port: ["93.184.216.34"])
    session = requests.Session()

    with pytest.raises(http.UnsafeURL):
        http.request("GET", f"http://localhost:{loopback_server.server_address[1]}/", session=session, sleep=sleep)
