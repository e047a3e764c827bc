"""The contract every connector fulfils, and the plain data types that cross it.

A connector is built from one Connection. It checks the connection, lists objects and describes one, reads pages
(from a page token, or from an opaque cursor for incremental reads), fetches records by id, writes a batch of
operations with one result per operation, and finds records by a field's values. Failures are ConnectorError
(integrations.errors); a write reports per-record failures in its results instead of raising, and raises only
when the whole call failed. HTTP connectors derive from HttpConnector (below), GraphQL ones from
GraphQLConnector.

A connector also owns its system's inbound webhooks: how a delivery's signature is verified, which id
deduplicates it, and which records it names. The base implements a generic scheme in the style of Standard
Webhooks (see `Connector.verify_webhook`); a vendor connector overrides these methods with its own scheme.
"""

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import math
import time
from datetime import datetime
from typing import Any

from integrations.connectors import http
from integrations.crypto import CredentialsDecryptionError
from integrations.errors import ConnectorError, ErrorCategory
from integrations.redaction import scrub_text


class FieldType:
    STRING = "string"
    TEXT = "text"
    EMAIL = "email"
    PHONE = "phone"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    URL = "url"


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str = FieldType.STRING
    required: bool = False
    max_length: int | None = None
    unique: bool = False
    read_only: bool = False
    label: str = ""
    format: str = ""  # e.g. "e164" for phones, a strftime pattern for dates

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ObjectSchema:
    name: str
    fields: dict[str, FieldSpec]
    label: str = ""

    def as_dict(self):
        return {"name": self.name, "label": self.label, "fields": {k: f.as_dict() for k, f in self.fields.items()}}

    @classmethod
    def from_dict(cls, data):
        fields = {name: FieldSpec(**spec) for name, spec in data["fields"].items()}
        return cls(name=data["name"], label=data.get("label", ""), fields=fields)


@dataclasses.dataclass
class SourceRecord:
    id: str
    data: dict[str, Any]
    modified_at: datetime | None = None


@dataclasses.dataclass
class Page:
    records: list[SourceRecord]
    next_token: str | None  # None: this was the last page
    cursor: str | None = None  # where an incremental read resumes after this page (None: the cursor stays)


class WriteAction:
    CREATE = "create"
    UPDATE = "update"
    UPSERT = "upsert"


@dataclasses.dataclass
class WriteOperation:
    ref: str  # the caller's key for this operation (the source record id); echoed in the result
    action: str
    data: dict[str, Any]
    target_id: str | None = None  # required for update
    match_field: str | None = None  # required for upsert


@dataclasses.dataclass
class WriteResult:
    ref: str
    ok: bool
    target_id: str | None = None
    action: str | None = None  # what was actually done: create or update
    error: ConnectorError | None = None
    record: dict[str, Any] | None = None  # the target record as stored, when the system returns it


@dataclasses.dataclass(frozen=True)
class WebhookChange:
    """Records of one object that an inbound webhook says have changed (ids in the source system)."""

    object_name: str
    record_ids: list[str]


class WebhookSignatureError(Exception):
    """An inbound webhook whose signature cannot be trusted: missing, malformed, stale or wrong.

    `code` is stable and safe to answer with; the message never contains a secret or a signature.
    """

    def __init__(self, message, *, code="signature_invalid"):
        super().__init__(message)
        self.message = message
        self.code = code


class WebhookPayloadError(Exception):
    """A verified webhook whose payload the connector does not understand (no event id, wrong shape)."""

    def __init__(self, message, *, code="payload_invalid"):
        super().__init__(message)
        self.message = message
        self.code = code


WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SIGNATURE_VERSION = "v1"


def webhook_secret_key(secret):
    """The HMAC key of a signing secret: "whsec_<base64>" is base64-decoded (as Standard Webhooks does); any
    other string (a vendor's plain secret) is used as its UTF-8 bytes. Raises ValueError for a bad whsec_."""
    if not secret:
        raise ValueError("A webhook secret cannot be empty")
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        return secret.encode()
    try:
        key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError('A "whsec_" secret must be followed by base64') from None
    if not key:
        raise ValueError('A "whsec_" secret must be followed by base64')
    return key


# Standard Webhooks asks for signing secrets of 24 to 64 random bytes; a shorter one can be guessed offline
# from a single signed delivery.
MIN_WEBHOOK_SECRET_BYTES = 24
MAX_WEBHOOK_SECRET_BYTES = 64


def webhook_secret_check(secret):
    """A secret someone supplies (pasted from a vendor, or chosen): a well-formed key of at least 24 bytes.
    Raises ValueError saying what is wrong, never quoting the secret. Stored secrets are only decoded
    (webhook_secret_key): a rule made stricter later must not stop verifying deliveries."""
    key = webhook_secret_key(secret)
    if secret.startswith(WEBHOOK_SECRET_PREFIX) and len(key) > MAX_WEBHOOK_SECRET_BYTES:
        # Only Resync's own format is held to the maximum: a vendor's plain secret is whatever the vendor issues.
        raise ValueError(f"A \"whsec_\" secret decodes to at most {MAX_WEBHOOK_SECRET_BYTES} bytes "
                         f"(this one has {len(key)})")
    if len(key) < MIN_WEBHOOK_SECRET_BYTES:
        raise ValueError(
            f"A webhook secret needs {MIN_WEBHOOK_SECRET_BYTES} to {MAX_WEBHOOK_SECRET_BYTES} bytes of key (this one "
            f"has {len(key)}; a vendor's own secret may be longer): "
            "paste the vendor's whole secret, or omit it and Resync generates one (\"whsec_\" + base64)")
    return key


def webhook_signature(secret, *, webhook_id, timestamp, raw_body):
    """The generic scheme's signature: "v1," + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))."""
    signed = f"{webhook_id}.{timestamp}.".encode() + raw_body
    digest = hmac.new(webhook_secret_key(secret), signed, hashlib.sha256).digest()
    return f"{WEBHOOK_SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


@dataclasses.dataclass(frozen=True)
class SettingField:
    """One setting a provider asks for when a connection is added, so the API and the UI can render and check
    its form: a key of the connection's config (not secret) or of its credentials (secret: write-only)."""

    name: str
    label: str
    type: str = "string"  # string, text, url, integer, boolean, choice, password
    required: bool = False
    help: str = ""
    secret: bool = False
    default: Any = None
    choices: tuple = ()
    placeholder: str = ""

    def as_dict(self):
        return {**dataclasses.asdict(self), "choices": list(self.choices)}


# What every vendor connector accepts in its config: another address for the vendor's API (a vendor sandbox
# such as test.salesforce.com, a corporate proxy, or a test stand-in of the API), checked by the SSRF guard.
BASE_URL_FIELD = SettingField(
    "base_url", "API base URL", type="url",
    help="Leave empty for the vendor's own API. Use another address for a vendor sandbox or a proxy.",
)


@dataclasses.dataclass(frozen=True)
class ObjectSummary:
    name: str
    label: str = ""


class Connector:
    """Base class: subclasses implement the methods their system supports.

    Reading is incremental from an opaque, connector-defined cursor: `read_page(cursor=...)` returns records in
    the order the cursor follows, and each Page says where a later read resumes (`Page.cursor`): a keyset such
    as (updated_at, id) for a table, or the vendor's modified-time filter taken inclusively for an API (records
    read twice are recognised by their hash; records sharing a timestamp are never skipped).
    """

    label = ""
    # The connection's form: config (not secret) and credentials (secret), see SettingField.
    config_fields: tuple[SettingField, ...] = ()
    secret_fields: tuple[SettingField, ...] = ()
    # Whether read_page takes a cursor (delta reads). Without it every run reads everything.
    supports_incremental = True
    # Whether fetch() works: safe replay re-fetches a failed record before replaying it; without it a retry
    # has only the record's snapshot.
    supports_fetch = False
    # The most operations one write() call takes; the engine never sends more.
    max_write_batch = 100

    # Inbound webhooks: how far a delivery's timestamp may be from now, either way (Stripe and Svix use 5 min).
    webhook_tolerance_seconds = 300

    def __init__(self, connection):
        self.connection = connection

    # A sync holds its connectors open for the whole run (`with connector:`): a database connection or an HTTP
    # session is opened once, not per call.
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Let go of what the connector holds open."""

    @classmethod
    def validate_config(cls, config):
        """Problems with a connection's non-secret config: {key: [operator-facing messages]} (empty: fine).

        Checks the declared config fields: required ones present, values of the right type, URLs that pass
        the SSRF guard (so a private, loopback or metadata address is refused when the connection is saved, not
        only when it is called). A subclass adds its own checks on top.
        """
        config = config or {}
        problems = {}
        for field in cls.config_fields:
            value = config.get(field.name)
            if value in (None, ""):
                if field.required:
                    problems[field.name] = [f"{field.label} is required."]
                continue
            if field.type == "url":
                if not isinstance(value, str):
                    problems[field.name] = [f"{field.label} must be a URL."]
                    continue
                try:
                    http.guard_url(value)
                except ConnectorError as exc:
                    problems[field.name] = [f"{field.label}: {exc.message}."]
            elif field.type == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
                problems[field.name] = [f"{field.label} must be a whole number."]
            elif field.type == "boolean" and not isinstance(value, bool):
                problems[field.name] = [f"{field.label} must be true or false."]
            elif field.type == "choice" and value not in field.choices:
                problems[field.name] = [f"{field.label} must be one of {', '.join(map(str, field.choices))}."]
            elif field.type in ("string", "text") and not isinstance(value, str):
                problems[field.name] = [f"{field.label} must be text."]
        return problems

    @classmethod
    def validate_credentials(cls, credentials):
        """Problems with new credentials: {key: [messages]}; the declared secret fields that are required."""
        problems = {}
        for field in cls.secret_fields:
            if field.required and not (credentials or {}).get(field.name):
                problems[field.name] = [f"{field.label} is required."]
        return problems

    def check(self) -> None:
        """Raise ConnectorError when the system cannot be reached or the credentials are not accepted."""
        raise NotImplementedError

    def list_objects(self) -> list[ObjectSummary]:
        """The objects the system offers, without their fields (cheap: no describe call per object)."""
        raise NotImplementedError

    def describe_object(self, object_name) -> ObjectSchema:
        """One object's fields; raise ConnectorError (mapping, object_not_found) for an unknown object."""
        raise NotImplementedError

    def describe(self) -> dict[str, ObjectSchema]:
        """Every object with its fields: one describe per object (integrations.services caches them)."""
        return {summary.name: self.describe_object(summary.name) for summary in self.list_objects()}

    def schema_for(self, object_name) -> ObjectSchema:
        return self.describe_object(object_name)

    def unknown_object(self, object_name):
        return ConnectorError(ErrorCategory.MAPPING, f"Object '{object_name}' does not exist in {self.connection}",
                              code="object_not_found")

    def read_page(self, object_name, *, page_token=None, cursor=None, page_size=100) -> Page:
        """One page of records, from `page_token` (None: the first page of a read that starts at `cursor`).

        `cursor` is what an earlier Page.cursor said (None: read everything). The page's `next_token` is None
        on the last page; its `cursor` is where a later incremental read resumes after these records.
        """
        raise NotImplementedError

    def next_page_token(self, object_name, page_token, *, cursor=None, page_size=100):
        """The token of the page after `page_token` without fetching it, or None when unknowable.

        Lets a run go on past a page that failed to load (a batch error) on systems with offset paging; with
        cursor paging (most APIs) it is unknowable and the run reads no further (the pages left are read again
        when the failed page is retried, or by the next run).
        """
        return None

    def fetch(self, object_name, ids) -> dict[str, SourceRecord]:
        """Records by id; ids that do not exist are absent from the result."""
        raise NotImplementedError

    def write(self, object_name, operations: list[WriteOperation]) -> list[WriteResult]:
        """Carry out at most `max_write_batch` operations, with one result per operation (by `ref`). Raise
        ConnectorError only when the whole call failed; a record the system refused is a failed WriteResult."""
        raise NotImplementedError

    def find(self, object_name, field, values) -> dict[str, list[SourceRecord]]:
        """Records whose `field` equals one of `values`, grouped by value (exact match)."""
        raise NotImplementedError

    def refresh_credentials(self):
        """Get new credentials (an OAuth2 refresh) and store them; raise ConnectorError (auth) when refused.
        The base has nothing to refresh."""
        raise ConnectorError(ErrorCategory.AUTH, "These credentials cannot be refreshed: reconnect the connection",
                             code="not_refreshable", retryable=False)

    # -- inbound webhooks ----------------------------------------------------------------------------------------
    # Headers reach these methods as a dict with lower-case names. The generic scheme below is Standard Webhooks:
    #   webhook-id: the delivery's id (the same on every retry of one event: the dedupe key)
    #   webhook-timestamp: unix seconds when it was sent
    #   webhook-signature: space-separated "v1,<base64 HMAC-SHA256(key, f'{id}.{timestamp}.{raw body}')>"
    # and the payload {"type": "records.changed", "object": "contacts", "ids": ["ct_1", ...]}.

    def verify_webhook(self, *, secrets, method, url, headers, raw_body, now) -> None:
        """Raise WebhookSignatureError unless one signature of the delivery matches one of `secrets`.

        `secrets` are the endpoint's signing secrets, newest first (several while a secret rotates); `method`
        and `url` (the full URL as received, query string included) are there for schemes that sign them
        (HubSpot v3); `raw_body` is the exact bytes received (a signature is over bytes, never over
        re-serialized JSON); `now` is an aware datetime. The generic scheme checks the timestamp first
        (tolerance `webhook_tolerance_seconds` either way, so a captured delivery cannot be replayed later) and
        compares in constant time.
        """
        webhook_id = headers.get("webhook-id", "")
        timestamp = headers.get("webhook-timestamp", "")
        signatures = headers.get("webhook-signature", "")
        if not (webhook_id and timestamp and signatures):
            raise WebhookSignatureError(
                "The webhook-id, webhook-timestamp and webhook-signature headers are required",
                code="signature_missing",
            )
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise WebhookSignatureError(
                "webhook-timestamp must be unix seconds", code="timestamp_invalid"
            ) from None
        if abs(now.timestamp() - sent_at) > self.webhook_tolerance_seconds:
            raise WebhookSignatureError(
                f"webhook-timestamp is more than {self.webhook_tolerance_seconds} seconds from now",
                code="timestamp_out_of_tolerance",
            )
        expected = [
            webhook_signature(secret, webhook_id=webhook_id, timestamp=timestamp, raw_body=raw_body).encode()
            for secret in secrets
        ]
        for candidate in signatures.split():
            version, _, _value = candidate.partition(",")
            if version != WEBHOOK_SIGNATURE_VERSION:
                continue  # a scheme this receiver does not know (e.g. v1a, asymmetric): not a match
            # Every expected value is compared, match or not, so timing does not tell which secret matched.
            matches = [hmac.compare_digest(candidate.encode(), value) for value in expected]
            if any(matches):
                return
        raise WebhookSignatureError("No signature matches a secret of this endpoint", code="signature_invalid")

    def webhook_event_id(self, *, headers, payload) -> str:
        """The provider's id of the delivery: the same on every retry of one event, so it deduplicates them.

        The generic scheme takes the signed webhook-id header. Raise WebhookPayloadError when there is none.
        """
        event_id = headers.get("webhook-id", "").strip()
        if not event_id:
            raise WebhookPayloadError("The delivery has no webhook-id", code="event_id_missing")
        return event_id

    def parse_webhook(self, payload, *, headers=None) -> list[WebhookChange]:
        """The records a stored delivery says have changed, per object. `headers` are the delivery's stored
        headers (lower-case names; secrets and signatures are never stored), for vendors that put the event's
        topic there (Shopify).

        Return [] for an event that names no records (a ping, an event type Resync does not sync): the event is
        then ignored. Raise WebhookPayloadError for a payload of the wrong shape.
        """
        if not isinstance(payload, dict):
            raise WebhookPayloadError("The payload must be a JSON object")
        if payload.get("type") != "records.changed":
            return []
        object_name, ids = payload.get("object"), payload.get("ids")
        if not isinstance(object_name, str) or not object_name:
            raise WebhookPayloadError('"object" must name the object whose records changed')
        if not isinstance(ids, list) or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
            raise WebhookPayloadError('"ids" must be a list of record ids')
        record_ids = list(dict.fromkeys(str(i) for i in ids))
        return [WebhookChange(object_name=object_name, record_ids=record_ids)] if record_ids else []


# --- HTTP connectors -------------------------------------------------------------------------------------------


class HttpConnector(Connector):
    """A connector whose system is an HTTP API. It owns the session, the base URL, the auth headers and the
    refresh of expiring credentials, and sends every request through integrations.connectors.http (the SSRF
    guard, the timeout, in-request retries and the classification table). A vendor overrides only its quirks:
    `classify()` (in the way healthchecks' `raise_for_response` works), `auth_headers()`, and for OAuth2
    `token_url` / `refresh_form()` / `token_credentials()`.

    Credentials that refresh (OAuth2, rotating refresh tokens) hold `access_token`, `refresh_token` and
    `expires_at` (unix seconds). A token is refreshed ahead of its expiry, or once after a 401 when its expiry
    is unknown; the new credentials are stored encrypted at once, under a row lock so that two workers never
    spend one rotating refresh token twice. A refused refresh is an authentication error: the run halts and the
    connection waits for a reconnect.
    """

    config_fields = (BASE_URL_FIELD,)
    default_base_url = ""
    # OAuth2 token endpoint, formatted with the connection's config (e.g. "https://{shop}/admin/oauth/...").
    token_url = ""
    # A token this close to its expiry (seconds) is refreshed before it is used.
    refresh_margin = 60
    timeout = None  # seconds; None: settings.RESYNC_HTTP_TIMEOUT

    def __init__(self, connection):
        super().__init__(connection)
        self._session = None
        self._credentials = None
        # Access tokens this connector refreshed away from, and when it got each new one: a 401 with a token it
        # has just got is the credentials' fault, not the token's age, and is not refreshed again.
        self._refreshed = set()
        self._obtained = {}

    # -- configuration ------------------------------------------------------------------------------------------

    @property
    def config(self):
        return self.connection.config or {}

    def close(self):
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def session(self):
        if self._session is None:
            self._session = http.new_session()
        return self._session

    def base_url(self):
        base = self.config.get("base_url") or self.default_base_url.format(**self.config)
        return base.rstrip("/")

    def url(self, path):
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url()}/{path.lstrip('/')}"

    def credentials(self):
        if self._credentials is None:
            try:
                self._credentials = dict(self.connection.credentials)
            except CredentialsDecryptionError:
                self._credentials = {}  # what the vendor sees with garbage credentials: none, so a 401
        return self._credentials

    def secrets(self):
        """Every credential value, scrubbed from what comes back in messages and details."""
        return tuple(str(value) for value in self.credentials().values() if value and not isinstance(value, bool))

    def auth_headers(self):
        token = self.credentials().get("access_token")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def default_headers(self):
        return {"Accept": "application/json"}

    # -- requests -----------------------------------------------------------------------------------------------

    def request(self, method, path, *, idempotent=None, headers=None, **kwargs):
        """Send one request to the API; the successful response, or a classified ConnectorError."""
        self._refresh_if_expiring()
        try:
            return self._send(method, path, idempotent=idempotent, headers=headers, **kwargs)
        except ConnectorError as exc:
            token = self.credentials().get("access_token")
            just_obtained = time.monotonic() - self._obtained.get(token, -math.inf) < self.refresh_margin
            if exc.category != ErrorCategory.AUTH or not self.can_refresh() or token in self._refreshed \
                    or just_obtained:
                raise
            # Expired without saying so (no expires_at): refresh once, then try once more.
            self.refresh_credentials()
            return self._send(method, path, idempotent=idempotent, headers=headers, **kwargs)

    def _send(self, method, path, *, idempotent, headers, **kwargs):
        return http.request(
            method, self.url(path), session=self.session, secrets=self.secrets(), classify=self.classify,
            idempotent=idempotent, timeout=self.timeout,
            headers={**self.default_headers(), **self.auth_headers(), **(headers or {})}, **kwargs,
        )

    def classify(self, response, *, secrets):
        """The ConnectorError an answer stands for, or None when it is a success: the vendor's hook."""
        return http.classify_response(response.status_code, response.headers, http.response_body(response),
                                      reason=response.reason, secrets=secrets)

    def json(self, response):
        """The answer's JSON; an answer that is not JSON is an unknown (retryable) error, not a crash."""
        try:
            return response.json()
        except ValueError:
            raise ConnectorError(
                ErrorCategory.UNKNOWN, "The target answered something that is not JSON", code="unparseable_answer",
                detail=scrub_text(response.text[:500], self.secrets()),
            ) from None

    def check(self):
        """A cheap authenticated call; subclasses name it (`check_path`)."""
        self.request("GET", self.check_path)

    check_path = "/"

    # -- OAuth2 refresh -----------------------------------------------------------------------------------------

    def can_refresh(self):
        return bool(self.token_url and self.credentials().get("refresh_token"))

    def token_endpoint(self):
        return self.token_url.format(**self.config)

    def refresh_form(self, credentials):
        """The body of the refresh request (OAuth2 refresh_token grant, form-encoded)."""
        return {"grant_type": "refresh_token", "refresh_token": credentials.get("refresh_token", ""),
                "client_id": credentials.get("client_id", ""), "client_secret": credentials.get("client_secret", "")}

    def send_refresh(self, credentials):
        """POST the refresh; never sent twice blindly (a rotating refresh token may already be spent)."""
        return http.request("POST", self.token_endpoint(), session=self.session, secrets=self.secrets(),
                            data=self.refresh_form(credentials), idempotent=False, timeout=self.timeout,
                            headers={"Accept": "application/json"})

    def token_credentials(self, body, credentials):
        """The new credentials from a token answer: a rotated refresh token replaces the old one."""
        if not isinstance(body, dict) or not body.get("access_token"):
            raise ConnectorError(ErrorCategory.AUTH, "The token endpoint answered without an access token",
                                 code="refresh_failed", retryable=False)
        new = {**credentials, "access_token": body["access_token"]}
        if body.get("refresh_token"):
            new["refresh_token"] = body["refresh_token"]
        if body.get("expires_in"):
            new["expires_at"] = int(time.time()) + int(body["expires_in"])
        else:
            new.pop("expires_at", None)
        return new

    def refresh_credentials(self):
        from django.db import transaction

        from integrations.models import Connection

        if not self.can_refresh():
            return super().refresh_credentials()
        old_token = self.credentials().get("access_token")
        with transaction.atomic():
            row = Connection.objects.select_for_update().get(pk=self.connection.pk)
            try:
                stored = dict(row.credentials)
            except CredentialsDecryptionError:
                stored = {}
            if stored.get("access_token") and stored.get("access_token") != old_token:
                new = stored  # another worker refreshed while this one waited for the lock
            else:
                try:
                    response = self.send_refresh(stored or self.credentials())
                except ConnectorError as exc:
                    if exc.category in (ErrorCategory.AUTH, ErrorCategory.VALIDATION, ErrorCategory.PERMISSION):
                        raise ConnectorError(
                            ErrorCategory.AUTH, f"The credentials could not be refreshed: {exc.message}",
                            code="refresh_failed", detail=exc.detail, retryable=False,
                        ) from None
                    raise
                new = self.token_credentials(self.json(response), stored or self.credentials())
                row.credentials = new
                row.save(update_fields=["credentials_ciphertext", "updated_at"])
        self._refreshed.add(old_token)
        self._obtained[new.get("access_token")] = time.monotonic()
        self.connection.credentials_ciphertext = row.credentials_ciphertext
        self._credentials = dict(new)
        return new

    def _refresh_if_expiring(self):
        expires_at = self.credentials().get("expires_at")
        token = self.credentials().get("access_token")
        if (expires_at and self.can_refresh() and token not in self._refreshed
                and float(expires_at) - self.refresh_margin <= time.time()):
            self.refresh_credentials()


class GraphQLConnector(HttpConnector):
    """An HTTP connector whose API is one GraphQL endpoint (Jobber, Shopify's Admin API).

    GraphQL answers 200 for most failures: `errors` (a THROTTLED code is a rate limit, "permissions" or
    "access denied" a missing scope) and per-mutation `userErrors` (per record) are classified here.
    """

    graphql_path = ""

    def graphql(self, query, variables=None, *, mutation=False):
        """`data` of the answer; raises ConnectorError for top-level errors. Queries are safe to send again;
        a mutation (a create) is not, after a failure that may have been carried out."""
        body = self.graphql_body(query, variables, mutation=mutation)
        errors = body.get("errors")
        if errors:
            raise self.graphql_error(errors, body)
        return body.get("data") or {}

    def graphql_body(self, query, variables=None, *, mutation=False):
        """The whole answer ({data, errors, extensions}), for callers that read per-alias errors or the cost."""
        response = self.request("POST", self.graphql_path, json={"query": query, "variables": variables or {}},
                                idempotent=not mutation)
        body = self.json(response)
        if not isinstance(body, dict):
            raise ConnectorError(ErrorCategory.UNKNOWN, "The GraphQL API answered something that is not an object",
                                 code="unparseable_answer")
        return body

    def graphql_error(self, errors, body):
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        message = scrub_text(str(first.get("message") or "The GraphQL API answered with an error"), self.secrets())
        code = str((first.get("extensions") or {}).get("code") or "")
        detail = scrub_text(json.dumps(errors)[:2000], self.secrets())
        if code == "THROTTLED" or message.lower() == "throttled":
            return ConnectorError(ErrorCategory.RATE_LIMIT, "The API is throttling requests", code="THROTTLED",
                                  detail=detail, retry_after=self.throttle_wait(body))
        lowered = message.lower()
        if "permission" in lowered or "access denied" in lowered or code == "ACCESS_DENIED":
            return ConnectorError(ErrorCategory.PERMISSION, message, code=code or "access_denied", detail=detail)
        if "temporarily unavailable" in lowered or code in ("INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE"):
            return ConnectorError(ErrorCategory.CONNECTION, message, code=code or "unavailable", detail=detail)
        if "disconnected" in lowered or code in ("UNAUTHENTICATED", "UNAUTHORIZED"):
            return ConnectorError(ErrorCategory.AUTH, message, code=code or "unauthenticated", detail=detail)
        return ConnectorError(ErrorCategory.UNKNOWN, message, code=code or "graphql_error", detail=detail,
                              retryable=False)

    @staticmethod
    def throttle_wait(body):
        """Seconds until the query-cost bucket holds what was asked for (extensions.cost), else None."""
        cost = (body.get("extensions") or {}).get("cost") or {} if isinstance(body, dict) else {}
        status = cost.get("throttleStatus") or {}
        try:
            needed = float(cost.get("requestedQueryCost") or 0) - float(status.get("currentlyAvailable") or 0)
            rate = float(status.get("restoreRate") or 0)
        except (TypeError, ValueError):
            return None
        if rate <= 0:
            return None
        return max(1, math.ceil(needed / rate))
