"""A simulated external system kept in Resync's own database, for the demo and the tests.

It behaves like a real CRM API, failures included: every failure is simulated as the status code and body such
an API would answer, then classified by integrations.connectors.http, so the sandbox exercises the real
classification. Faults are injected deterministically from connection.config["faults"]:

    {"seed": 7, "failure_rate": 0.2, "failure_kind": "503" | "timeout" | "connection" | "500" | "retry_later",
     "fail_calls": [3, 4], "rate_limit_every": 5, "retry_after": 30, "expired_credentials": false,
     "expire_after_calls": 300, "permission_denied": false, "fail_pages": [2],
     "operations": ["read_page", "fetch", "write", "find"]}

`failure_kind` may be a list: each failing call picks one kind of it. `fail_calls` fail exactly those calls.
`expire_after_calls` expires the API key in use at that call: every later call with that key answers 401, as
an expired token does, until the connection is given a new key (a reconnect).

Every API call (check, read_page, fetch, write, find; describe is served from the static schema) bumps the
connection's SandboxCallCounter, and the fault of call N is a pure function of (seed, N): the same config and
the same sequence of calls give the same faults.
"""

import datetime
import decimal
import hashlib
import math
import re
import secrets as random_secrets

import requests
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from email_validator import EmailNotValidError, validate_email

from integrations.connectors import http
from integrations.connectors.base import (
    Connector,
    FieldSpec,
    FieldType,
    ObjectSchema,
    Page,
    SourceRecord,
    WriteAction,
    WriteResult,
)
from integrations.crypto import CredentialsDecryptionError
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import SandboxCallCounter, SandboxRecord

SANDBOX_HOST = "api.sandbox.resync.invalid"
PROBLEM_BASE = f"https://{SANDBOX_HOST}/problems/"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_FAULT_OPERATIONS = ("read_page", "fetch", "write", "find")
DEFAULT_RETRY_AFTER = 30


def _object_schema(name, label, fields):
    # Every record has its external id as a read-only "id"; SourceRecord.data never contains it.
    specs = [FieldSpec("id", FieldType.STRING, unique=True, read_only=True, label="ID"), *fields]
    return ObjectSchema(name=name, label=label, fields={spec.name: spec for spec in specs})


SCHEMAS = {
    "contacts": _object_schema(
        "contacts",
        "Contacts",
        [
            FieldSpec("email", FieldType.EMAIL, required=True, unique=True, max_length=100, label="Email"),
            FieldSpec("first_name", FieldType.STRING, max_length=40, label="First name"),
            FieldSpec("last_name", FieldType.STRING, required=True, max_length=40, label="Last name"),
            FieldSpec("phone", FieldType.PHONE, max_length=20, label="Phone", format="e164"),
            FieldSpec("company", FieldType.STRING, max_length=80, label="Company"),
            FieldSpec("customer_number", FieldType.STRING, max_length=20, label="Customer number"),
            FieldSpec("city", FieldType.STRING, max_length=40, label="City"),
            FieldSpec("lifecycle_stage", FieldType.STRING, max_length=30, label="Lifecycle stage"),
            FieldSpec("notes", FieldType.TEXT, max_length=500, label="Notes"),
        ],
    ),
    "companies": _object_schema(
        "companies",
        "Companies",
        [
            FieldSpec("name", FieldType.STRING, required=True, max_length=80, label="Name"),
            FieldSpec("domain", FieldType.STRING, unique=True, max_length=100, label="Domain"),
            FieldSpec("phone", FieldType.PHONE, max_length=20, label="Phone", format="e164"),
            FieldSpec("industry", FieldType.STRING, max_length=50, label="Industry"),
            FieldSpec("employee_count", FieldType.INTEGER, label="Employee count"),
        ],
    ),
    "deals": _object_schema(
        "deals",
        "Deals",
        [
            FieldSpec("title", FieldType.STRING, required=True, max_length=120, label="Title"),
            FieldSpec("amount", FieldType.NUMBER, required=True, label="Amount"),
            FieldSpec("stage", FieldType.STRING, required=True, max_length=30, label="Stage"),
            FieldSpec("close_date", FieldType.DATE, label="Close date", format="%Y-%m-%d"),
            FieldSpec("contact_email", FieldType.EMAIL, max_length=100, label="Contact email"),
        ],
    ),
}
ID_PREFIXES = {"contacts": "ct_", "companies": "co_", "deals": "dl_"}


def _new_id(object_name):
    return ID_PREFIXES[object_name] + random_secrets.token_hex(5)


def _problem(status, kind, title, detail, **extra):
    """A problem JSON body (RFC 9457) as the sandbox API answers it."""
    return {"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail, **extra}


class _LostAnswer(Exception):
    """The write goes through, but its answer never arrives (a read timeout after the target acted)."""


class _Invalid(Exception):
    """One record's rejection, carried as the (status, body) the simulated API answers."""

    def __init__(self, status, body):
        super().__init__(body.get("detail", ""))
        self.status = status
        self.body = body


def _validation(field, code, detail):
    return _Invalid(
        400,
        _problem(
            400,
            "validation",
            "Invalid field value",
            detail,
            code=code,
            field=field,
            errors=[{"field": field, "code": code, "message": detail}],
        ),
    )


def _is_empty(value):
    return value is None or (isinstance(value, str) and not value.strip())


def _check_string(spec, value):
    if not isinstance(value, str):
        raise _validation(spec.name, "INVALID_TYPE", f"'{spec.name}' must be a string")
    return value


def _check_email(spec, value):
    _check_string(spec, value)
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise _validation(spec.name, "INVALID_EMAIL", f"'{spec.name}' is not a valid email address: {exc}") from None
    return value


def _check_phone(spec, value):
    _check_string(spec, value)
    if not E164.match(value):
        raise _validation(
            spec.name, "INVALID_PHONE", f"'{spec.name}' must be an E.164 phone number such as +14155550123"
        )
    return value


def _check_integer(spec, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise _validation(spec.name, "INVALID_INTEGER", f"'{spec.name}' must be a whole number")
    return value


def _check_number(spec, value):
    if isinstance(value, decimal.Decimal) and value.is_finite():
        # JSON has no decimal type: store what the API would echo back.
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _validation(spec.name, "INVALID_NUMBER", f"'{spec.name}' must be a number")
    return value


def _check_date(spec, value):
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value.isoformat()
    try:
        if not (isinstance(value, str) and ISO_DATE.match(value)):
            raise ValueError
        datetime.date.fromisoformat(value)
    except ValueError:
        raise _validation(spec.name, "INVALID_DATE", f"'{spec.name}' must be a date as YYYY-MM-DD") from None
    return value


def _check_datetime(spec, value):
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    try:
        datetime.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise _validation(spec.name, "INVALID_DATETIME", f"'{spec.name}' must be an ISO 8601 date-time") from None
    return value


def _check_boolean(spec, value):
    if not isinstance(value, bool):
        raise _validation(spec.name, "INVALID_BOOLEAN", f"'{spec.name}' must be true or false")
    return value


def _check_url(spec, value):
    _check_string(spec, value)
    if not re.match(r"^https?://\S+$", value):
        raise _validation(spec.name, "INVALID_URL", f"'{spec.name}' must be an http(s) URL")
    return value


TYPE_CHECKS = {
    FieldType.STRING: _check_string,
    FieldType.TEXT: _check_string,
    FieldType.EMAIL: _check_email,
    FieldType.PHONE: _check_phone,
    FieldType.INTEGER: _check_integer,
    FieldType.NUMBER: _check_number,
    FieldType.DATE: _check_date,
    FieldType.DATETIME: _check_datetime,
    FieldType.BOOLEAN: _check_boolean,
    FieldType.URL: _check_url,
}


def _clean(schema, data, *, partial):
    """The data as the API would store it, or _Invalid for the first problem found (in field order)."""
    if not isinstance(data, dict):
        raise _Invalid(
            400, _problem(400, "validation", "Invalid request", "The record must be an object", code="INVALID_BODY")
        )
    for name in data:
        spec = schema.fields.get(name)
        if spec is None:
            raise _validation(name, "UNKNOWN_FIELD", f"'{name}' is not a field of {schema.name}")
        if spec.read_only:
            raise _validation(name, "READ_ONLY_FIELD", f"'{name}' is read-only")
    cleaned = {}
    for name, spec in schema.fields.items():
        if spec.read_only:
            continue
        if name not in data:
            if spec.required and not partial:
                raise _validation(name, "REQUIRED_FIELD_MISSING", f"'{name}' is required")
            continue
        value = data[name]
        if _is_empty(value):
            if spec.required:
                raise _validation(name, "REQUIRED_FIELD_MISSING", f"'{name}' is required and cannot be empty")
            cleaned[name] = value
            continue
        value = TYPE_CHECKS[spec.type](spec, value)
        if spec.max_length is not None and isinstance(value, str) and len(value) > spec.max_length:
            raise _validation(
                name,
                "STRING_TOO_LONG",
                f"'{name}' is {len(value)} characters long; the maximum is {spec.max_length}",
            )
        cleaned[name] = value
    return cleaned


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_fraction(value):
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


# "lost_answer" carries out a write, then times out before answering: the request may have been applied.
FAILURE_KINDS = ("503", "timeout", "connection", "500", "retry_later", "lost_answer")
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
    "operations": lambda v: isinstance(v, list) and all(
        o in ("check", "read_page", "fetch", "write", "find") for o in v),
}


def _stable_fraction(seed, call_number):
    """A number in [0, 1) that depends only on (seed, call number): hash() is salted per process."""
    digest = hashlib.sha256(f"{seed}:{call_number}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _parse_offset(page_token):
    if page_token in (None, ""):
        return 0
    prefix, _, number = str(page_token).partition(":")
    if prefix != "offset" or not number.isdigit():
        return None
    return int(number)


def _source_record(row):
    return SourceRecord(id=row.external_id, data=dict(row.data), modified_at=row.modified_at)


class SandboxConnector(Connector):
    """The sandbox API: contacts, companies and deals of one connection, with optional injected faults."""

    label = "Sandbox"
    supports_modified_since = True
    supports_fetch = True

    # -- the simulated wire ------------------------------------------------------------------------------------

    def _secrets(self):
        try:
            credentials = self.connection.credentials
        except CredentialsDecryptionError:
            return ()
        return tuple(str(value) for value in credentials.values() if value)

    def _answer(self, status, body=None, headers=None):
        """The ConnectorError for a simulated HTTP answer, classified like any real one."""
        return http.classify_response(status, headers or {}, body, secrets=self._secrets())

    def _records(self, object_name):
        return SandboxRecord.objects.for_org(self.connection.organization).filter(
            connection=self.connection, object_name=object_name
        )

    @classmethod
    def validate_config(cls, config):
        """The fault injection settings must have the documented shape; a typo is an error, not a crash."""
        faults = (config or {}).get("faults")
        if faults is None:
            return []
        if not isinstance(faults, dict):
            return ["faults must be an object"]
        problems = []
        for key, value in faults.items():
            expected = FAULT_SETTINGS.get(key)
            if expected is None:
                problems.append(f"faults.{key} is not a fault setting (known: {', '.join(sorted(FAULT_SETTINGS))})")
            elif not expected(value):
                problems.append(f"faults.{key} has an invalid value {value!r}")
        return problems

    def _faults(self):
        problems = self.validate_config(self.connection.config)
        if problems:
            raise ConnectorError(ErrorCategory.UNKNOWN,
                                 "The sandbox's fault settings are invalid: " + "; ".join(problems),
                                 code="invalid_config", retryable=False)
        return (self.connection.config or {}).get("faults") or {}

    def _count_call(self, *, expire_at=None):
        """This call's number, and whether the current API key has expired (at or before `expire_at`)."""
        counter = SandboxCallCounter.objects.filter(connection=self.connection)
        key = hashlib.sha256(self._api_key().encode()).hexdigest()
        # Inside one transaction the UPDATE holds the row lock until the read, so concurrent callers each see
        # their own call number.
        with transaction.atomic():
            if not counter.update(calls=F("calls") + 1):
                try:
                    with transaction.atomic():
                        SandboxCallCounter.objects.create(connection=self.connection, calls=1)
                except IntegrityError:
                    counter.update(calls=F("calls") + 1)
            calls, expired = counter.values_list("calls", "expired_keys").get()
            if expire_at and calls == expire_at and key not in expired:
                expired = [*expired, key]
                counter.update(expired_keys=expired)
            return calls, key in expired

    def _call(self, operation, *, page_number=None):
        """Count one API call and raise the failure the sandbox answers it with, if any."""
        faults = self._faults()
        call_number, key_expired = self._count_call(expire_at=faults.get("expire_after_calls"))
        if faults.get("expired_credentials") or key_expired:
            raise self._answer(
                401,
                {"error": "invalid_grant", "error_description": "Token has expired"},
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if not self._api_key():
            raise self._answer(
                401,
                _problem(
                    401, "unauthorized", "Unauthorized", "The API key is missing or invalid", code="invalid_api_key"
                ),
            )
        if operation == "write" and faults.get("permission_denied"):
            raise self._answer(
                403,
                _problem(
                    403,
                    "forbidden",
                    "Forbidden",
                    "The API key is not allowed to write records",
                    code="MISSING_SCOPES",
                    technicalInfo="required scope: records.write",
                ),
            )
        if operation == "read_page" and page_number in (faults.get("fail_pages") or []):
            raise self._answer(
                500,
                _problem(
                    500,
                    "internal-error",
                    "Internal Server Error",
                    f"Page {page_number} could not be loaded",
                    code="PAGE_READ_FAILED",
                    technicalInfo="upstream shard unavailable",
                ),
            )
        if operation not in faults.get("operations", DEFAULT_FAULT_OPERATIONS):
            return
        every = faults.get("rate_limit_every")
        if isinstance(every, int) and every > 0 and call_number % every == 0:
            retry_after = faults.get("retry_after", DEFAULT_RETRY_AFTER)
            raise self._answer(
                429,
                {
                    "status": "error",
                    "message": "You have reached your rate limit",
                    "category": "RATE_LIMITS",
                    "code": "RATE_LIMITED",
                },
                {"Retry-After": str(retry_after)},
            )
        rate = faults.get("failure_rate") or 0
        draw = _stable_fraction(faults.get("seed", 0), call_number)
        if call_number in (faults.get("fail_calls") or ()) or (rate and draw < rate):
            kinds = faults.get("failure_kind", "503")
            if isinstance(kinds, list):
                kinds = kinds[int(draw * 1_000_003) % len(kinds)]
            self._inject(kinds, operation)

    def _inject(self, kind, operation):
        request = requests.Request("POST", f"https://{SANDBOX_HOST}/v1/{operation}").prepare()
        if kind == "lost_answer" and operation == "write":
            raise _LostAnswer()
        if kind in ("timeout", "lost_answer"):
            raise http.classify_exception(
                requests.ReadTimeout(
                    f"HTTPSConnectionPool(host='{SANDBOX_HOST}', port=443): Read timed out. (read timeout=15)",
                    request=request,
                ),
                secrets=self._secrets(),
            )
        if kind == "connection":
            raise http.classify_exception(
                requests.ConnectionError(
                    f"HTTPSConnectionPool(host='{SANDBOX_HOST}', port=443): Max retries exceeded with url: "
                    f"/v1/{operation} (Caused by NewConnectionError('Failed to establish a new connection: "
                    "[Errno 111] Connection refused'))",
                    request=request,
                ),
                secrets=self._secrets(),
            )
        if kind == "500":
            raise self._answer(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>")
        if kind == "retry_later":
            raise self._answer(
                500,
                {
                    "type": "http://www.meaningful.co.nz/limber-sync/retry-later",
                    "typeCode": "RETRY_LATER",
                    "status": 500,
                    "title": "Retry later",
                    "detail": "Retry later",
                    "message": "Oops, something went wrong",
                },
            )
        raise self._answer(503, "Service Unavailable", {"Content-Type": "text/plain"})

    def _api_key(self):
        try:
            credentials = self.connection.credentials
        except CredentialsDecryptionError:
            # What a real API sees when the stored key is garbage: no valid key, so a 401.
            return ""
        return str(credentials.get("api_key") or "").strip()

    # -- the Connector contract -------------------------------------------------------------------------------

    def check(self):
        self._call("check")

    def describe(self):
        return dict(SCHEMAS)

    def read_page(self, object_name, *, page_token=None, modified_since=None, page_size=100):
        self.schema_for(object_name)
        offset = _parse_offset(page_token)
        if offset is None or not isinstance(page_size, int) or page_size < 1:
            self._call("read_page")
            raise self._answer(
                400,
                _problem(
                    400,
                    "validation",
                    "Invalid page token",
                    f"Invalid page token {page_token!r} or page size {page_size!r}",
                    code="INVALID_PAGE_TOKEN",
                ),
            )
        self._call("read_page", page_number=offset // page_size + 1)
        rows = self._records(object_name)
        if modified_since is not None:
            rows = rows.filter(modified_at__gt=modified_since)
        rows = list(rows.order_by("modified_at", "id")[offset : offset + page_size + 1])
        next_token = f"offset:{offset + page_size}" if len(rows) > page_size else None
        return Page(records=[_source_record(row) for row in rows[:page_size]], next_token=next_token)

    def next_page_token(self, object_name, page_token, *, modified_since=None, page_size=100):
        # Like an API that reports a total count: None past the end, so a run whose pages all fail still ends.
        offset = _parse_offset(page_token)
        if offset is None or not isinstance(page_size, int) or page_size < 1:
            return None
        rows = self._records(object_name)
        if modified_since is not None:
            rows = rows.filter(modified_at__gt=modified_since)
        following = offset + page_size
        return f"offset:{following}" if rows.count() > following else None

    def fetch(self, object_name, ids):
        self.schema_for(object_name)
        self._call("fetch")
        rows = self._records(object_name).filter(external_id__in=[str(i) for i in ids])
        return {row.external_id: _source_record(row) for row in rows}

    def find(self, object_name, field, values):
        schema = self.schema_for(object_name)
        self._call("find")
        if field not in schema.fields:
            raise self._answer(
                400,
                _problem(
                    400,
                    "validation",
                    "Invalid filter",
                    f"'{field}' is not a field of {object_name}",
                    code="UNKNOWN_FIELD",
                    field=field,
                ),
            )
        values = list(values)
        found = {value: [] for value in values}
        rows = self._records(object_name).order_by("modified_at", "id")
        if field == "id":
            for row in rows.filter(external_id__in=[str(v) for v in values]):
                found.setdefault(row.external_id, []).append(_source_record(row))
            return found
        for row in rows.filter(**{f"data__{field}__in": values}):
            value = row.data.get(field)
            if value in found:
                found[value].append(_source_record(row))
        return found

    def write(self, object_name, operations):
        schema = self.schema_for(object_name)
        try:
            self._call("write")
        except _LostAnswer:
            for operation in operations:
                self._write_one(object_name, schema, operation)
            self._inject("timeout", "write")
        return [self._write_one(object_name, schema, operation) for operation in operations]

    # -- one record ---------------------------------------------------------------------------------------------

    def _write_one(self, object_name, schema, operation):
        try:
            with transaction.atomic():
                return self._apply(object_name, schema, operation)
        except _Invalid as invalid:
            return WriteResult(ref=operation.ref, ok=False, error=self._answer(invalid.status, invalid.body))

    def _apply(self, object_name, schema, operation):
        if operation.action == WriteAction.CREATE:
            return self._create(object_name, schema, operation)
        if operation.action == WriteAction.UPDATE:
            row = self._records(object_name).filter(external_id=operation.target_id).first()
            if not operation.target_id or row is None:
                raise _Invalid(
                    404,
                    _problem(
                        404,
                        "not-found",
                        "Not Found",
                        f"No {object_name} record with id {operation.target_id!r}",
                        code="RECORD_NOT_FOUND",
                    ),
                )
            return self._update(object_name, schema, row, operation)
        if operation.action == WriteAction.UPSERT:
            field = operation.match_field
            if not field or field not in schema.fields or field == "id":
                raise _validation(field or "", "INVALID_MATCH_FIELD", f"Cannot upsert on {field!r}")
            value = (operation.data or {}).get(field)
            if _is_empty(value):
                raise _validation(field, "REQUIRED_FIELD_MISSING", f"'{field}' is required to upsert")
            matches = list(self._records(object_name).filter(**{f"data__{field}": value})[:2])
            if len(matches) > 1:
                raise _Invalid(
                    409,
                    _problem(
                        409,
                        "conflict",
                        "Multiple matches",
                        f"Several {object_name} records have {field} {value!r}",
                        code="MULTIPLE_MATCHES",
                        field=field,
                    ),
                )
            if matches:
                return self._update(object_name, schema, matches[0], operation)
            return self._create(object_name, schema, operation)
        raise _Invalid(
            400,
            _problem(
                400, "validation", "Invalid request", f"Unknown action {operation.action!r}", code="INVALID_ACTION"
            ),
        )

    def _create(self, object_name, schema, operation):
        data = _clean(schema, operation.data, partial=False)
        self._check_unique(object_name, schema, data, exclude_id=None)
        row = SandboxRecord.objects.create(
            organization=self.connection.organization,
            connection=self.connection,
            object_name=object_name,
            external_id=_new_id(object_name),
            data=data,
            modified_at=timezone.now(),
        )
        return WriteResult(
            ref=operation.ref, ok=True, target_id=row.external_id, action=WriteAction.CREATE, record=dict(row.data)
        )

    def _update(self, object_name, schema, row, operation):
        changes = _clean(schema, operation.data, partial=True)
        self._check_unique(object_name, schema, changes, exclude_id=row.pk)
        row.data = {**row.data, **changes}
        row.modified_at = timezone.now()
        row.save(update_fields=["data", "modified_at"])
        return WriteResult(
            ref=operation.ref, ok=True, target_id=row.external_id, action=WriteAction.UPDATE, record=dict(row.data)
        )

    def _check_unique(self, object_name, schema, data, *, exclude_id):
        for name, spec in schema.fields.items():
            value = data.get(name)
            if not spec.unique or spec.read_only or _is_empty(value):
                continue
            # Case-insensitive, like most CRMs: "Jane@X.com" collides with "jane@x.com".
            existing = self._records(object_name).filter(**{f"data__{name}__iexact": value})
            if exclude_id is not None:
                existing = existing.exclude(pk=exclude_id)
            existing = existing.first()
            if existing is not None:
                raise _Invalid(
                    409,
                    _problem(
                        409,
                        "duplicate",
                        "Duplicate value",
                        f"A record with {name} '{value}' already exists (id {existing.external_id})",
                        code="DUPLICATE_VALUE",
                        field=name,
                        existingId=existing.external_id,
                        technicalInfo=f"{name} must be unique (case-insensitive); existing record "
                        f"{existing.external_id}",
                    ),
                )


# -- helpers for the demo and the tests: they bypass validation, faults and the call counter on purpose --------


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
            organization=connection.organization,
            connection=connection,
            object_name=object_name,
            external_id=ids[index] if ids is not None else _new_id(object_name),
            data=dict(data),
            modified_at=now,
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
    row.modified_at = timezone.now()
    row.save(update_fields=["data", "modified_at"])
    return row


def reset_call_counter(connection):
    """Start the fault sequence over: the next call is call 1 again."""
    SandboxCallCounter.objects.filter(connection=connection).update(calls=0)
