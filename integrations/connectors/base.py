"""The contract every connector fulfils, and the plain data types that cross it.

A connector is built from one Connection. It checks the connection, describes objects and fields, reads pages
(from a page token or a modified-since time), fetches records by id, writes a batch of operations with one
result per operation, and finds records by a field's values. Failures are ConnectorError (integrations.errors);
a write reports per-record failures in its results instead of raising, and raises only when the whole call
failed.

A connector also owns its system's inbound webhooks: how a delivery's signature is verified, which id
deduplicates it, and which records it names. The base implements a generic scheme in the style of Standard
Webhooks (see `Connector.verify_webhook`); a vendor connector overrides these methods with its own scheme.
"""

import base64
import binascii
import dataclasses
import hashlib
import hmac
from datetime import datetime
from typing import Any

from integrations.errors import ConnectorError, ErrorCategory


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


@dataclasses.dataclass
class SourceRecord:
    id: str
    data: dict[str, Any]
    modified_at: datetime | None = None


@dataclasses.dataclass
class Page:
    records: list[SourceRecord]
    next_token: str | None  # None: this was the last page


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


def webhook_signature(secret, *, webhook_id, timestamp, raw_body):
    """The generic scheme's signature: "v1," + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))."""
    signed = f"{webhook_id}.{timestamp}.".encode() + raw_body
    digest = hmac.new(webhook_secret_key(secret), signed, hashlib.sha256).digest()
    return f"{WEBHOOK_SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


class Connector:
    """Base class: subclasses implement the methods their system supports."""

    label = ""
    # Whether read_page accepts modified_since (delta reads). Without it every run reads everything.
    supports_modified_since = True
    # Whether fetch() works: safe replay re-fetches a failed record before replaying it; without it a retry
    # has only the record's snapshot.
    supports_fetch = False

    # Inbound webhooks: how far a delivery's timestamp may be from now, either way (Stripe and Svix use 5 min).
    webhook_tolerance_seconds = 300

    def __init__(self, connection):
        self.connection = connection

    @classmethod
    def validate_config(cls, config):
        """Problems with a connection's non-secret config, as operator-facing messages (empty: fine)."""
        return []

    def check(self) -> None:
        """Raise ConnectorError when the system cannot be reached or the credentials are not accepted."""
        raise NotImplementedError

    def describe(self) -> dict[str, ObjectSchema]:
        raise NotImplementedError

    def read_page(self, object_name, *, page_token=None, modified_since=None, page_size=100) -> Page:
        raise NotImplementedError

    def next_page_token(self, object_name, page_token, *, modified_since=None, page_size=100):
        """The token of the page after `page_token` without fetching it, or None when unknowable.

        Lets a run go on past a page that failed to load (a batch error) on systems with offset paging.
        """
        return None

    def fetch(self, object_name, ids) -> dict[str, SourceRecord]:
        """Records by id; ids that do not exist are absent from the result."""
        raise NotImplementedError

    def write(self, object_name, operations: list[WriteOperation]) -> list[WriteResult]:
        raise NotImplementedError

    def find(self, object_name, field, values) -> dict[str, list[SourceRecord]]:
        """Records whose `field` equals one of `values`, grouped by value (exact match)."""
        raise NotImplementedError

    def schema_for(self, object_name) -> ObjectSchema:
        schemas = self.describe()
        try:
            return schemas[object_name]
        except KeyError:
            raise ConnectorError(
                ErrorCategory.MAPPING,
                f"Object '{object_name}' does not exist in {self.connection}",
                code="object_not_found",
            ) from None

    # -- inbound webhooks ----------------------------------------------------------------------------------------
    # Headers reach these methods as a dict with lower-case names. The generic scheme below is Standard Webhooks:
    #   webhook-id: the delivery's id (the same on every retry of one event: the dedupe key)
    #   webhook-timestamp: unix seconds when it was sent
    #   webhook-signature: space-separated "v1,<base64 HMAC-SHA256(key, f'{id}.{timestamp}.{raw body}')>"
    # and the payload {"type": "records.changed", "object": "contacts", "ids": ["ct_1", ...]}.

    def verify_webhook(self, *, secrets, headers, raw_body, now) -> None:
        """Raise WebhookSignatureError unless one signature of the delivery matches one of `secrets`.

        `secrets` are the endpoint's signing secrets, newest first (several while a secret rotates); `raw_body`
        is the exact bytes received (a signature is over bytes, never over re-serialized JSON); `now` is an
        aware datetime. The generic scheme checks the timestamp first (tolerance `webhook_tolerance_seconds`
        either way, so a captured delivery cannot be replayed later) and compares in constant time.
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

    def parse_webhook(self, payload) -> list[WebhookChange]:
        """The records a stored delivery says have changed, per object.

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
