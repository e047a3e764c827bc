"""The sandbox connector: a simulated CRM (contacts, companies, deals) for the demo and the tests, reached over
HTTP like any vendor.

Its far side is the sandbox vendor API that Resync serves itself (integrations.sandbox_api, at
settings.RESYNC_SANDBOX_URL): `make run` calls it over loopback; the tests call the same views in-process through
`InProcessTransport`, a requests transport, so every answer (a 503, a 429 with Retry-After, a timeout, a 401) goes
through integrations.connectors.http and its one classification table exactly as a real vendor's would.

Faults are injected deterministically from connection.config["faults"]:

    {"seed": 7, "failure_rate": 0.2, "failure_kind": "503" | "timeout" | "connection" | "500" | "retry_later"
     | "lost_answer", "fail_calls": [3, 4], "rate_limit_every": 5, "retry_after": 30,
     "expired_credentials": false, "expire_after_calls": 300, "permission_denied": false, "fail_pages": [2],
     "slow_writes": 0.5, "operations": ["read_page", "fetch", "write", "find"]}

`failure_kind` may be a list: each failing call picks one kind of it. `fail_calls` fail exactly those calls.
`expire_after_calls` expires the API key in use at that call: every later call with that key answers 401, as
an expired token does, until the connection gets a new key (a reconnect). "lost_answer" carries out a write and
then answers too late (a read timeout after the target acted). `slow_writes` answers a write that many seconds
after storing it (a slow but successful API). Every API call (check, read_page, fetch, write,
find; describing is free) counts on the connection's SandboxCallCounter, and the fault of call N is a pure
function of (seed, N). `timeout_seconds` in the config is how long the connector waits for an answer.
"""

import io
import urllib.parse
from datetime import datetime

import requests
from django.conf import settings
from django.test import RequestFactory
from django.urls import resolve
from django.utils import timezone
from requests.adapters import BaseAdapter

from integrations.connectors import http
from integrations.connectors.base import (
    HttpConnector,
    ObjectSchema,
    ObjectSummary,
    Page,
    SettingField,
    SourceRecord,
    WriteResult,
)
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import SandboxCallCounter, SandboxRecord
from integrations.sandbox_api import HANG_HEADER, REFUSE_HEADER, SCHEMAS, new_id, unique_key

FAILURE_KINDS = ("503", "timeout", "connection", "500", "retry_later", "lost_answer")


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_fraction(value):
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


FAULT_SETTINGS = {
    "seed": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "failure_rate": _is_fraction,
    "failure_kind": lambda v: v in FAILURE_KINDS or (
        isinstance(v, list) and v and all(kind in FAILURE_KINDS for kind in v)),
    "fail_calls": lambda v: isinstance(v, list) and all(_is_count(n) for n in v),
    "expire_after_calls": _is_count,
    "rate_limit_every": _is_count,
    "retry_after": _is_count,
    "expired_credentials": lambda v: isinstance(v, bool),
    "permission_denied": lambda v: isinstance(v, bool),
    "fail_pages": lambda v: isinstance(v, list) and all(_is_count(p) for p in v),
    "slow_writes": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 30,
    "operations": lambda v: isinstance(v, list) and all(
        o in ("check", "read_page", "fetch", "write", "find") for o in v),
}


class SandboxConnector(HttpConnector):
    """The sandbox API's client: an HTTP connector like the vendors', with an API key and keyset pages."""

    label = "Sandbox"
    config_fields = (
        SettingField("default_phone_country", "Default phone country", help="Two letters, e.g. US or GB."),
        SettingField("timeout_seconds", "Timeout (seconds)", type="integer",
                     help="How long to wait for an answer; the sandbox's simulated timeouts last one second more."),
    )
    secret_fields = (SettingField("api_key", "API key", type="password", required=True, secret=True),)
    supports_incremental = True
    supports_fetch = True
    max_write_batch = 1000

    def base_url(self):
        return f"{settings.RESYNC_SANDBOX_URL.rstrip('/')}/sandbox/api/v1/{self.connection.code}"

    def auth_headers(self):
        key = str(self.credentials().get("api_key") or "").strip()
        return {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def timeout(self):
        seconds = (self.config or {}).get("timeout_seconds")
        return float(seconds) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None

    @property
    def session(self):
        if self._session is None:
            self._session = requests.Session()
            if settings.RESYNC_SANDBOX_IN_PROCESS:
                self._session.mount(self.base_url(), InProcessTransport())
        return self._session

    def _send(self, method, path, *, idempotent, headers, **kwargs):
        # The sandbox's address is Resync's own setting, not a tenant's: the SSRF guard is for tenant URLs.
        return http.request(
            method, self.url(path), session=self.session, secrets=self.secrets(), classify=self.classify,
            idempotent=idempotent, timeout=self.timeout, trusted=True,
            headers={**self.default_headers(), **self.auth_headers(), **(headers or {})}, **kwargs,
        )

    @classmethod
    def validate_config(cls, config):
        """The fault injection settings must have the documented shape; a typo is an error, not a crash."""
        problems = super().validate_config(config)
        faults = (config or {}).get("faults")
        if faults is None:
            return problems
        if not isinstance(faults, dict):
            return {**problems, "faults": ["faults must be an object"]}
        messages = []
        for key, value in faults.items():
            expected = FAULT_SETTINGS.get(key)
            if expected is None:
                messages.append(f"faults.{key} is not a fault setting (known: {', '.join(sorted(FAULT_SETTINGS))})")
            elif not expected(value):
                messages.append(f"faults.{key} has an invalid value {value!r}")
        return {**problems, "faults": messages} if messages else problems

    def _checked_config(self):
        problems = self.validate_config(self.config)
        if problems:
            messages = "; ".join(message for values in problems.values() for message in values)
            raise ConnectorError(ErrorCategory.UNKNOWN, f"The sandbox's settings are invalid: {messages}",
                                 code="invalid_config", retryable=False)

    # -- the contract ----------------------------------------------------------------------------------------------

    def check(self):
        self._checked_config()
        self.request("GET", "me")

    def list_objects(self):
        return [ObjectSummary(schema.name, schema.label) for schema in SCHEMAS.values()]

    def describe_object(self, object_name):
        # The schema is the API's own, served without a call: describing is free, as it was for the old sandbox.
        schema = SCHEMAS.get(object_name)
        if schema is None:
            raise self.unknown_object(object_name)
        return ObjectSchema.from_dict(schema.as_dict())

    def read_page(self, object_name, *, page_token=None, cursor=None, page_size=100):
        """Keyset pages in (modified_at, id) order; the page token carries its page number for fail_pages."""
        self._checked_config()
        self.describe_object(object_name)
        number, _, after = (page_token or "").partition("|")
        if not page_token:
            number, after = "1", cursor or ""
        params = {"limit": page_size, "page": number}
        if after:
            params["after"] = after
        body = self.json(self.request("GET", f"objects/{object_name}/records", params=params))
        next_token = f"{int(number) + 1}|{body['next']}" if body.get("next") else None
        return Page(records=[_source_record(item) for item in body["records"]], next_token=next_token,
                    cursor=body.get("cursor"))

    def fetch(self, object_name, ids):
        self._checked_config()
        self.describe_object(object_name)
        body = self.json(self.request("POST", f"objects/{object_name}/records/fetch", json={"ids": list(ids)},
                                      idempotent=True))
        return {item["id"]: _source_record(item) for item in body["records"]}

    def find(self, object_name, field, values):
        self._checked_config()
        self.describe_object(object_name)
        values = list(values)
        body = self.json(self.request("POST", f"objects/{object_name}/records/find",
                                      json={"field": field, "values": values}, idempotent=True))
        found = {value: [] for value in values}
        for value in values:
            found[value] = [_source_record(item) for item in body["matches"].get(str(value), [])]
        return found

    def write(self, object_name, operations):
        self._checked_config()
        self.describe_object(object_name)
        payload = [{"ref": op.ref, "action": op.action, "data": op.data, "id": op.target_id,
                    "match_field": op.match_field} for op in operations]
        body = self.json(self.request("POST", f"objects/{object_name}/records/batch", json={"operations": payload}))
        results = []
        for item in body["results"]:
            if item.get("ok"):
                results.append(WriteResult(ref=item["ref"], ok=True, target_id=item["id"], action=item["action"],
                                           record=item.get("record")))
            else:
                error = http.classify_response(item.get("status", 400), {}, item.get("error"), secrets=self.secrets())
                results.append(WriteResult(ref=item["ref"], ok=False, error=error))
        return results


def _source_record(item):
    modified = item.get("modified_at")
    return SourceRecord(id=item["id"], data=dict(item["data"]),
                        modified_at=datetime.fromisoformat(modified) if modified else None)


class InProcessTransport(BaseAdapter):
    """Calls the sandbox API's views in this process instead of over a socket (tests, and workers started by
    tests, which have no web server to call). The answer is a real HTTP answer; a simulated hang becomes the
    client's read timeout and a simulated refusal a refused connection, as over the network."""

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        parts = urllib.parse.urlsplit(request.url)
        factory = RequestFactory()
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        headers = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in request.headers.items()
                   if name.lower() not in ("content-type", "content-length")}
        django_request = factory.generic(
            request.method, parts.path + (f"?{parts.query}" if parts.query else ""), data=body,
            content_type=request.headers.get("Content-Type", "application/octet-stream"),
            HTTP_X_SANDBOX_IN_PROCESS="1", **headers,
        )
        match = resolve(parts.path)
        django_response = match.func(django_request, *match.args, **match.kwargs)
        if django_response.get(REFUSE_HEADER):
            raise requests.ConnectionError(
                f"HTTPConnectionPool(host='{parts.hostname}', port={parts.port}): Max retries exceeded with url: "
                f"{parts.path} (Caused by NewConnectionError('Failed to establish a new connection: [Errno 111] "
                "Connection refused'))", request=request)
        if django_response.get(HANG_HEADER):
            raise requests.ReadTimeout(
                f"HTTPConnectionPool(host='{parts.hostname}', port={parts.port}): Read timed out. "
                f"(read timeout={timeout})", request=request)
        response = requests.Response()
        response.status_code = django_response.status_code
        response.reason = django_response.reason_phrase
        response.headers = requests.structures.CaseInsensitiveDict(dict(django_response.items()))
        response.raw = io.BytesIO(django_response.content)
        response._content = django_response.content
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self):
        pass


# -- helpers for the demo and the tests: they bypass the API, its faults and its call counter on purpose -------


def _require_object(object_name):
    if object_name not in SCHEMAS:
        raise ValueError(f"The sandbox has no object '{object_name}'")


def seed_records(connection, object_name, rows, *, ids=None):
    """Insert records "in the external system" as they are (messy data included); returns the rows."""
    _require_object(object_name)
    if ids is not None and len(ids) != len(rows):
        raise ValueError("ids and rows must have the same length")
    now = timezone.now()
    records = [
        SandboxRecord(
            organization=connection.organization, connection=connection, object_name=object_name,
            external_id=ids[index] if ids is not None else new_id(object_name), data=dict(data),
            unique_key=unique_key(object_name, data), modified_at=now,
        )
        for index, data in enumerate(rows)
    ]
    return SandboxRecord.objects.bulk_create(records)


def change_record(connection, object_name, external_id, changes):
    """Edit a record "in the external system": merge `changes` into its data and bump modified_at."""
    row = (
        SandboxRecord.objects.for_org(connection.organization)
        .filter(connection=connection, object_name=object_name)
        .get(external_id=external_id)
    )
    row.data = {**row.data, **changes}
    row.unique_key = unique_key(object_name, row.data)
    row.modified_at = timezone.now()
    row.save(update_fields=["data", "unique_key", "modified_at"])
    return row


def reset_call_counter(connection):
    """Start the fault sequence over: the next call is call 1 again."""
    SandboxCallCounter.objects.filter(connection=connection).update(calls=0)

