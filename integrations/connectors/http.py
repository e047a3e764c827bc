"""The one outbound HTTP path and the one place HTTP answers become ConnectorErrors.

`request()` guards the URL against SSRF, sends with a timeout, retries ephemeral failures in-request (2 s, 4 s,
8 s by default, never sooner than Retry-After) and raises a classified ConnectorError otherwise. A request that
is not idempotent (a POST that creates) is sent again only when the failure says it was not carried out (the
connection was never made, a 429 or 503, "retry later"): after a read timeout or a 500 it may have created
something, and a second copy would be a record RecordLink cannot see.
`classify_response()` and `classify_exception()` turn a status, headers and body (problem JSON per seed 001, or
a vendor's own shape) or a requests exception into the error model of docs/architecture.md. A vendor connector
handles only its quirks and passes everything else to them.
"""

import email.utils
import ipaddress
import json
import math
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from integrations.errors import ConnectorError, ErrorCategory
from integrations.redaction import scrub, scrub_text

MAX_DETAIL_LENGTH = 2000
MAX_MESSAGE_LENGTH = 500
# A Retry-After longer than this is not waited for inside a request: the cross-run retry scheduler owns long
# waits, and a worker asleep for minutes holds a task slot and a heartbeat hostage.
MAX_IN_REQUEST_WAIT = 60

# status -> category. Statuses not listed fall back to unknown (retryable for 5xx, not for 4xx).
STATUS_CATEGORIES = {
    400: ErrorCategory.VALIDATION,
    401: ErrorCategory.AUTH,
    403: ErrorCategory.PERMISSION,
    404: ErrorCategory.NOT_FOUND,
    408: ErrorCategory.TIMEOUT,
    409: ErrorCategory.DUPLICATE,
    410: ErrorCategory.NOT_FOUND,
    422: ErrorCategory.VALIDATION,
    429: ErrorCategory.RATE_LIMIT,
    500: ErrorCategory.UNKNOWN,
    502: ErrorCategory.CONNECTION,
    503: ErrorCategory.CONNECTION,
    504: ErrorCategory.CONNECTION,
}

# Answers after which the target may have carried out the request: a 500 may come after the write, and a gateway
# (502, 504) may have passed it on before giving up. A 503, a 429 or a 4xx says the request was not carried out.
MAY_HAVE_APPLIED_STATUSES = {500, 502, 504}

# Codes in a body that decide the category whatever the status: seed 001's RETRY_LATER arrives as a 500, and
# OAuth token endpoints answer an expired or revoked refresh token with 400 invalid_grant.
BODY_CODE_CATEGORIES = {
    "RETRY_LATER": (ErrorCategory.CONNECTION, True),
    "invalid_grant": (ErrorCategory.AUTH, False),
}
RETRY_LATER_TYPE_SUFFIX = "/retry-later"

MESSAGE_KEYS = ("detail", "title", "message", "error_description")
CODE_KEYS = ("logCode", "typeCode", "code", "errorCode", "error")
FIELD_LIST_KEYS = ("errors", "invalid_params")
FIELD_KEYS = ("field", "name")


def _truncate(text, limit):
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parse_body(body):
    """A dict for JSON object bodies, else the body as text (possibly empty)."""
    if body is None:
        return ""
    if isinstance(body, Mapping):
        return dict(body)
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not isinstance(body, str):
        return str(body)
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    return parsed if isinstance(parsed, dict) else body


def _first_text(sources, keys):
    for source in sources:
        for key in keys:
            value = source.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
            if isinstance(value, int | float) and not isinstance(value, bool) and key in CODE_KEYS:
                return str(value)
    return ""


def _field_from(sources):
    for source in sources:
        if isinstance(source.get("field"), str):
            return source["field"]
        for list_key in FIELD_LIST_KEYS:
            entries = source.get(list_key)
            if isinstance(entries, list):
                for entry in entries:
                    if isinstance(entry, dict):
                        for key in FIELD_KEYS:
                            if isinstance(entry.get(key), str) and entry[key]:
                                return entry[key]
    return ""


def _first_entry(sources):
    for source in sources:
        for list_key in FIELD_LIST_KEYS:
            entries = source.get(list_key)
            if isinstance(entries, list) and entries and isinstance(entries[0], dict):
                return entries[0]
    return {}


def parse_retry_after(value, *, now=None):
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), or None when absent or garbled."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(0, math.ceil(value))
    text = str(value).strip()
    if not text:
        return None
    try:
        return max(0, math.ceil(float(text)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0, math.ceil((when - now).total_seconds()))


def _header(headers, name):
    if not headers:
        return None
    # requests' CaseInsensitiveDict or a plain dict from a test or a vendor SDK.
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _status_phrase(status_code, reason=None):
    if reason:
        return reason
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return ""


def classify_response(status_code, headers=None, body=None, *, reason=None, secrets=()):
    """The ConnectorError an HTTP answer stands for, or None when it is not an error (1xx-3xx).

    `body` may be raw bytes, text or an already parsed dict; JSON is parsed when possible. `secrets` are
    removed from every text that comes out (message and detail), on top of redaction's key-based scrubbing.
    """
    if status_code < 400:
        return None
    parsed = _parse_body(body)
    sources = []
    if isinstance(parsed, dict):
        sources.append(parsed)
        # {"error": {"message": ..., "code": ...}} (Google- and Microsoft-style envelopes).
        if isinstance(parsed.get("error"), dict):
            sources.append(parsed["error"])
    first_entry = _first_entry(sources)

    category = STATUS_CATEGORIES.get(status_code, ErrorCategory.UNKNOWN)
    retryable = False if 400 <= status_code < 500 and status_code not in STATUS_CATEGORIES else None

    code = _first_text(sources, CODE_KEYS) or _first_text([first_entry], CODE_KEYS)
    problem_type = _first_text(sources, ("type",))
    retry_later = problem_type.endswith(RETRY_LATER_TYPE_SUFFIX)
    if retry_later:
        category, retryable = BODY_CODE_CATEGORIES["RETRY_LATER"]
        code = code or "RETRY_LATER"
    for source in sources:
        for key in ("typeCode", "code", "error"):
            value = source.get(key)
            if isinstance(value, str) and value in BODY_CODE_CATEGORIES:
                category, retryable = BODY_CODE_CATEGORIES[value]
                retry_later = retry_later or value == "RETRY_LATER"
    for source in sources:
        if isinstance(source.get("retryable"), bool):
            retryable = source["retryable"]
            break

    phrase = _status_phrase(status_code, reason)
    status_text = f"{status_code} {phrase}".strip()
    message = _first_text(sources, MESSAGE_KEYS) or _first_text([first_entry], ("message", "reason"))
    message = message or f"The target answered {status_text}"

    technical = _first_text(sources, ("technicalInfo",))
    if not technical and parsed:
        technical = json.dumps(scrub(parsed), sort_keys=True, default=str) if isinstance(parsed, dict) else parsed
    detail = f"HTTP {status_text}" + (f": {technical}" if technical else "")

    retry_after = parse_retry_after(_header(headers, "Retry-After"))
    for source in sources:
        if retry_after is None:
            retry_after = parse_retry_after(source.get("retryAfter", source.get("retry_after")))

    # "Retry later" is the target saying it did not process the request, whatever the status it came with.
    may_have_applied = status_code in MAY_HAVE_APPLIED_STATUSES and not retry_later
    return ConnectorError(
        category,
        _truncate(scrub_text(message, secrets), MAX_MESSAGE_LENGTH),
        may_have_applied=may_have_applied,
        code=_truncate(code, 100) or f"http_{status_code}",
        detail=_truncate(scrub_text(detail, secrets), MAX_DETAIL_LENGTH),
        retryable=retryable,
        retry_after=retry_after,
        field=_truncate(_field_from(sources), 200),
    )


# First match wins: ConnectTimeout is both a Timeout and a ConnectionError, SSLError is a ConnectionError.
# retryable None means the category's default.
EXCEPTION_TABLE = [
    (
        requests.exceptions.ConnectTimeout,
        ErrorCategory.TIMEOUT,
        "connect_timeout",
        None,
        "The target did not accept a connection in time",
    ),
    (requests.exceptions.Timeout, ErrorCategory.TIMEOUT, "read_timeout", None, "The target did not answer in time"),
    (
        requests.exceptions.SSLError,
        ErrorCategory.CONNECTION,
        "tls_error",
        None,
        "The secure (TLS) connection to the target failed",
    ),
    (
        requests.exceptions.ConnectionError,
        ErrorCategory.CONNECTION,
        "connection_failed",
        None,
        "The target could not be reached",
    ),
    # The connection dropped in the middle of the answer: as transient as a refused connection.
    (
        requests.exceptions.ChunkedEncodingError,
        ErrorCategory.CONNECTION,
        "connection_broken",
        None,
        "The connection to the target broke off",
    ),
    # A request that can never be sent as written: retrying it changes nothing.
    (
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidHeader,
        ),
        ErrorCategory.UNKNOWN,
        "invalid_request",
        False,
        "The request to the target is malformed",
    ),
    (Exception, ErrorCategory.UNKNOWN, "unexpected_error", None, "Unexpected error talking to the target"),
]
# Failures after the request went out: the target may have carried it out before the answer was lost.
SENT_FAILURE_CODES = {"read_timeout", "connection_broken", "unexpected_error"}
# A ConnectionError's text tells a DNS failure from a refusal; both stay in the connection category.
CONNECTION_FAILURE_MARKERS = [
    (
        (
            "name or service not known",
            "nodename nor servname",
            "getaddrinfo failed",
            "name resolution",
            "no address associated",
        ),
        "dns_failure",
        "The target's host name could not be resolved",
    ),
    (("connection refused", "actively refused"), "connection_refused", "The target refused the connection"),
]


def _exception_host(exc):
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None)
    return urlsplit(url).hostname if url else None


def classify_exception(exc, *, secrets=()):
    """The ConnectorError a failed request stands for (a ConnectorError passes through unchanged)."""
    if isinstance(exc, ConnectorError):
        return exc
    category, code, retryable, message = next(
        (category, code, retryable, message)
        for types, category, code, retryable, message in EXCEPTION_TABLE
        if isinstance(exc, types)
    )
    if code == "connection_failed":
        text = str(exc).lower()
        for markers, marker_code, marker_message in CONNECTION_FAILURE_MARKERS:
            if any(marker in text for marker in markers):
                code, message = marker_code, marker_message
                break
    host = _exception_host(exc)
    if host:
        message = f"{message} ({host})"
    detail = _truncate(scrub_text(f"{type(exc).__name__}: {exc}", secrets), MAX_DETAIL_LENGTH)
    return ConnectorError(category, message, code=code, detail=detail, retryable=retryable,
                          may_have_applied=code in SENT_FAILURE_CODES)


class UnsafeURL(ConnectorError):
    """A tenant-supplied URL that points somewhere Resync must not call (SSRF guard)."""

    def __init__(self, message, *, detail=""):
        super().__init__(ErrorCategory.CONNECTION, message, code="unsafe_url", detail=detail, retryable=False)


def _private_urls_allowed():
    return bool(getattr(settings, "RESYNC_ALLOW_PRIVATE_URLS", False))


def _resolve(host, port):
    """Every address `host` resolves to (a seam for tests: made-up public hosts resolve nowhere)."""
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def is_public_address(address):
    """Whether an IP address (text or ipaddress object) is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 and 2002:7f00:1:: reach IPv4 hosts: judge the IPv4 address behind them.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            return is_public_address(embedded)
    # fec0::/10 (IPv6 site-local, deprecated but still routed on some networks) is not covered by is_private.
    site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
        or site_local
        or not ip.is_global
    )


def _numeric_host(host):
    """The IP a host written as an address stands for, including inet_aton's forms (2130706433, 0x7f.1)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def guard_url(url):
    """Raise UnsafeURL unless `url` is an http(s) URL whose host resolves only to public addresses.

    Loopback and private targets are allowed when settings.RESYNC_ALLOW_PRIVATE_URLS is true (development and
    tests). This checks before sending; the guarded session checks again the address actually connected to,
    which covers DNS rebinding and redirects.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL("The URL is not valid", detail=str(exc)) from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("Only http and https URLs are allowed", detail=f"scheme {parts.scheme!r}")
    if "@" in parts.netloc:
        # http://good.example@127.0.0.1/ reads as one host to a person and another to the client.
        raise UnsafeURL("URLs must not contain a user name or password")
    host = parts.hostname
    if not host:
        raise UnsafeURL("The URL has no host")
    if _private_urls_allowed():
        return
    numeric = _numeric_host(host)
    if numeric is not None:
        addresses = [numeric]
    else:
        try:
            addresses = _resolve(host, port or (443 if parts.scheme == "https" else 80))
        except (OSError, UnicodeError) as exc:
            raise ConnectorError(
                ErrorCategory.CONNECTION,
                f"The target's host name could not be resolved ({host})",
                code="dns_failure",
                detail=f"{type(exc).__name__}: {exc}",
            ) from None
    for address in addresses:
        if not is_public_address(address):
            raise UnsafeURL(
                f"The URL points to a private or reserved address ({host})",
                detail=f"{host} resolves to {address}",
            )


def guard_host(host, port):
    """Raise UnsafeURL unless `host` resolves only to public addresses (for connections that are not HTTP, such
    as a database): the same rule as guard_url, loopback and private hosts allowed only where
    RESYNC_ALLOW_PRIVATE_URLS says so. Check the address actually connected to as well where the client allows."""
    if not host or any(c in host for c in "/@ "):
        raise UnsafeURL("The host name is not valid", detail=f"host {host!r}")
    guard_url(f"http://{host if ':' not in host else f'[{host}]'}:{int(port)}/")


class _PeerCheckMixin:
    def _new_conn(self):
        sock = super()._new_conn()
        if not _private_urls_allowed():
            peer = sock.getpeername()[0]
            if not is_public_address(peer):
                sock.close()
                raise UnsafeURL(
                    f"The URL points to a private or reserved address ({self.host})",
                    detail=f"connected to {peer}",
                )
        return sock


class _GuardedHTTPConnection(_PeerCheckMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_PeerCheckMixin, HTTPSConnection):
    pass


class _GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """Checks the address each new socket is actually connected to (DNS rebinding, redirects).

    Connections through a proxy are checked by guard_url only: the socket's peer is then the proxy.
    """

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPConnectionPool,
            "https": _GuardedHTTPSConnectionPool,
        }


def new_session():
    """A requests Session whose connections pass the SSRF guard; reuse it for connection pooling."""
    session = requests.Session()
    _mount_guard(session)
    return session


def _mount_guard(session):
    for prefix in ("http://", "https://"):
        if not isinstance(session.get_adapter(prefix), GuardedAdapter):
            session.mount(prefix, GuardedAdapter())


def response_body(response):
    try:
        return response.content
    except requests.RequestException:
        return None


IDEMPOTENT_METHODS = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}


def request(
    method,
    url,
    *,
    session=None,
    retry_delays=None,
    sleep=time.sleep,
    timeout=None,
    secrets=(),
    classify: Callable | None = None,
    idempotent=None,
    trusted=False,
    **kwargs,
) -> requests.Response:
    """Send one HTTP request the Resync way and return the successful response, or raise ConnectorError.

    Retryable failures are retried after each of `retry_delays` (default settings.RESYNC_HTTP_RETRY_DELAYS),
    waiting max(delay, Retry-After); a Retry-After over MAX_IN_REQUEST_WAIT gives up at once so the retry
    scheduler can wait instead. `idempotent` (default: by method; say True for a read sent as POST, such as a
    search or a GraphQL query, or an update that sets fields) allows sending again after a failure that may
    have been carried out; otherwise only failures that were not are retried. `classify(response, secrets=...)`
    replaces the default response classification for a vendor's quirks. `trusted` skips the SSRF guard, for
    an address that comes from Resync's own settings and never from a tenant (the sandbox API). Other keyword
    arguments go to requests.
    """
    if not trusted:
        guard_url(url)
    if session is None:
        session = new_session() if not trusted else requests.Session()
    elif not trusted:
        _mount_guard(session)
    delays = list(settings.RESYNC_HTTP_RETRY_DELAYS if retry_delays is None else retry_delays)
    timeout = settings.RESYNC_HTTP_TIMEOUT if timeout is None else timeout
    if idempotent is None:
        idempotent = method.upper() in IDEMPOTENT_METHODS
    attempt = 0
    while True:
        try:
            response = session.request(method, url, timeout=timeout, **kwargs)
        except ConnectorError:
            raise
        except requests.RequestException as exc:
            error = classify_exception(exc, secrets=secrets)
        else:
            if classify is not None:
                error = classify(response, secrets=secrets)
            else:
                error = classify_response(
                    response.status_code,
                    response.headers,
                    response_body(response),
                    reason=response.reason,
                    secrets=secrets,
                )
            if error is None:
                return response
        if not error.retryable or attempt >= len(delays):
            raise error
        if error.may_have_applied and not idempotent:
            raise error
        if error.retry_after is not None and error.retry_after > MAX_IN_REQUEST_WAIT:
            raise error
        sleep(max(delays[attempt], error.retry_after or 0))
        attempt += 1
