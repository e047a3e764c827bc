"""The sandbox vendor API: a small CRM API that Resync serves itself, for the demo and the tests.

It is the far side of the sandbox connector, reached over HTTP like any vendor (`make run`: loopback to the web
server; tests: the same views called in-process through a requests transport). Its storage is Resync's own
database (SandboxRecord, one set of records per sandbox connection, the "account" in the URL), and it behaves
like a real CRM API, failures included: faults configured in the connection's config["faults"] are answered as
the status codes and bodies such an API sends (503, 429 with Retry-After, 500 pages, 401 expired tokens, 403
missing scopes, timeouts), deterministically from (seed, call number). See integrations.connectors.sandbox for the
fault settings.

    GET  /sandbox/api/v1/<account>/me                                   who am I (check)
    GET  /sandbox/api/v1/<account>/objects                              the objects
    GET  /sandbox/api/v1/<account>/objects/<object>/schema              one object's fields
    GET  /sandbox/api/v1/<account>/objects/<object>/records?after=&limit=   a page, keyset (modified_at, id)
    POST /sandbox/api/v1/<account>/objects/<object>/records/fetch       {"ids": [...]}
    POST /sandbox/api/v1/<account>/objects/<object>/records/find        {"field": "email", "values": [...]}
    POST /sandbox/api/v1/<account>/objects/<object>/records/batch       {"operations": [...]}: one result each
"""

import base64
import datetime
import hashlib
import hmac
import json
import math
import re
import secrets as random_secrets
import time

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.http import JsonResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from email_validator import EmailNotValidError, validate_email

from integrations.connectors.base import FieldSpec, FieldType, ObjectSchema
from integrations.crypto import CredentialsDecryptionError
from integrations.models import Connection, SandboxCallCounter, SandboxRecord

PROBLEM_BASE = "https://sandbox.resync.invalid/problems/"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_FAULT_OPERATIONS = ("read_page", "fetch", "write", "find")
DEFAULT_RETRY_AFTER = 30
MAX_PAGE = 1000
# In-process calls (tests) ask for a hang to be reported rather than slept through: the transport turns it into
# the client's read timeout.
IN_PROCESS_HEADER = "HTTP_X_SANDBOX_IN_PROCESS"
HANG_HEADER = "X-Sandbox-Hang"
# A refused connection cannot be answered over HTTP: in-process it is raised as one; over loopback it is a 503.
REFUSE_HEADER = "X-Sandbox-Refuse"


def _object_schema(name, label, fields):
    # Every record has its external id as a read-only "id"; a record's data never contains it.
    specs = [FieldSpec("id", FieldType.STRING, unique=True, read_only=True, label="ID"), *fields]
    return ObjectSchema(name=name, label=label, fields={spec.name: spec for spec in specs})


SCHEMAS = {
    "contacts": _object_schema("contacts", "Contacts", [
        FieldSpec("email", FieldType.EMAIL, required=True, unique=True, max_length=100, label="Email"),
        FieldSpec("first_name", FieldType.STRING, max_length=40, label="First name"),
        FieldSpec("last_name", FieldType.STRING, required=True, max_length=40, label="Last name"),
        FieldSpec("phone", FieldType.PHONE, max_length=20, label="Phone", format="e164"),
        FieldSpec("company", FieldType.STRING, max_length=80, label="Company"),
        FieldSpec("customer_number", FieldType.STRING, max_length=20, label="Customer number"),
        FieldSpec("city", FieldType.STRING, max_length=40, label="City"),
        FieldSpec("lifecycle_stage", FieldType.STRING, max_length=30, label="Lifecycle stage"),
        FieldSpec("notes", FieldType.TEXT, max_length=500, label="Notes"),
    ]),
    "companies": _object_schema("companies", "Companies", [
        FieldSpec("name", FieldType.STRING, required=True, max_length=80, label="Name"),
        FieldSpec("domain", FieldType.STRING, unique=True, max_length=100, label="Domain"),
        FieldSpec("phone", FieldType.PHONE, max_length=20, label="Phone", format="e164"),
        FieldSpec("industry", FieldType.STRING, max_length=50, label="Industry"),
        FieldSpec("employee_count", FieldType.INTEGER, label="Employee count"),
    ]),
    "deals": _object_schema("deals", "Deals", [
        FieldSpec("title", FieldType.STRING, required=True, max_length=120, label="Title"),
        FieldSpec("amount", FieldType.NUMBER, required=True, label="Amount"),
        FieldSpec("stage", FieldType.STRING, required=True, max_length=30, label="Stage"),
        FieldSpec("close_date", FieldType.DATE, label="Close date", format="%Y-%m-%d"),
        FieldSpec("contact_email", FieldType.EMAIL, max_length=100, label="Contact email"),
    ]),
}
ID_PREFIXES = {"contacts": "ct_", "companies": "co_", "deals": "dl_"}
# The one unique field of each object, kept lower-cased in SandboxRecord.unique_key so checks use an index.
UNIQUE_FIELDS = {"contacts": "email", "companies": "domain"}


def unique_key(object_name, data):
    value = (data or {}).get(UNIQUE_FIELDS.get(object_name, ""))
    return value.strip().lower()[:200] if isinstance(value, str) else ""


def new_id(object_name):
    return ID_PREFIXES[object_name] + random_secrets.token_hex(5)


# --- answers ----------------------------------------------------------------------------------------------------


def _problem(status, kind, title, detail, **extra):
    """A problem JSON body (RFC 9457) as the sandbox API answers it."""
    return {"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail, **extra}


class Answer(Exception):
    """An HTTP answer that ends the request: a fault, a refusal, or one record's rejection."""

    def __init__(self, status, body, headers=None, hang=0):
        super().__init__(str(body)[:200])
        self.status, self.body, self.headers, self.hang = status, body, headers or {}, hang

    def response(self, request):
        if isinstance(self.body, dict | list):
            response = JsonResponse(self.body, status=self.status, safe=False,
                                    content_type="application/problem+json" if self.status >= 400 else None)
        else:
            response = JsonResponse({}, status=self.status)
            response.content = self.body.encode() if isinstance(self.body, str) else self.body
            response["Content-Type"] = "text/html" if str(self.body).startswith("<") else "text/plain"
        for name, value in self.headers.items():
            response[name] = value
        return _hang(request, response, self.hang)


def _hang(request, response, seconds):
    """A target that does not answer in time: slept through for real over HTTP; reported in-process."""
    if seconds:
        if request.META.get(IN_PROCESS_HEADER):
            response[HANG_HEADER] = str(seconds)
        else:
            time.sleep(seconds)
    return response


def _validation(field, code, detail):
    return Answer(400, _problem(400, "validation", "Invalid field value", detail, code=code, field=field,
                                errors=[{"field": field, "code": code, "message": detail}]))


# --- field checks, as a real API validates what it stores ----------------------------------------------------


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
        raise _validation(spec.name, "INVALID_PHONE", f"'{spec.name}' must be an E.164 phone number such as "
                                                      "+14155550123")
    return value


def _check_integer(spec, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise _validation(spec.name, "INVALID_INTEGER", f"'{spec.name}' must be a whole number")
    return value


def _check_number(spec, value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _validation(spec.name, "INVALID_NUMBER", f"'{spec.name}' must be a number")
    return value


def _check_date(spec, value):
    try:
        if not (isinstance(value, str) and ISO_DATE.match(value)):
            raise ValueError
        datetime.date.fromisoformat(value)
    except ValueError:
        raise _validation(spec.name, "INVALID_DATE", f"'{spec.name}' must be a date as YYYY-MM-DD") from None
    return value


def _check_datetime(spec, value):
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
    FieldType.STRING: _check_string, FieldType.TEXT: _check_string, FieldType.EMAIL: _check_email,
    FieldType.PHONE: _check_phone, FieldType.INTEGER: _check_integer, FieldType.NUMBER: _check_number,
    FieldType.DATE: _check_date, FieldType.DATETIME: _check_datetime, FieldType.BOOLEAN: _check_boolean,
    FieldType.URL: _check_url,
}


def _clean(schema, data, *, partial):
    """The data as the API stores it, or an Answer for the first problem found (in field order)."""
    if not isinstance(data, dict):
        raise Answer(400, _problem(400, "validation", "Invalid request", "The record must be an object",
                                   code="INVALID_BODY"))
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
            raise _validation(name, "STRING_TOO_LONG",
                              f"'{name}' is {len(value)} characters long; the maximum is {spec.max_length}")
        cleaned[name] = value
    return cleaned


# --- faults -------------------------------------------------------------------------------------------------------


def _stable_fraction(seed, call_number):
    """A number in [0, 1) that depends only on (seed, call number): hash() is salted per process."""
    digest = hashlib.sha256(f"{seed}:{call_number}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _count_call(connection, key, expire_at):
    """This call's number, and whether the key in use has expired (faults.expire_after_calls)."""
    counter = SandboxCallCounter.objects.filter(connection=connection)
    key_digest = hashlib.sha256(key.encode()).hexdigest()
    # Inside one transaction the UPDATE holds the row lock until the read, so concurrent callers each see their
    # own call number.
    with transaction.atomic():
        if not counter.update(calls=F("calls") + 1):
            try:
                with transaction.atomic():
                    SandboxCallCounter.objects.create(connection=connection, calls=1)
            except IntegrityError:
                counter.update(calls=F("calls") + 1)
        calls, expired = counter.values_list("calls", "expired_keys").get()
        if expire_at and calls == expire_at and key_digest not in expired:
            expired = [*expired, key_digest]
            counter.update(expired_keys=expired)
        return calls, key_digest in expired


class Call:
    """One API call: authenticated, counted, and failed as the connection's faults say."""

    def __init__(self, request, account, operation, *, page_number=None):
        self.request = request
        self.operation = operation
        self.connection = Connection.objects.filter(code=account, provider="sandbox").first()
        if self.connection is None:
            raise Answer(404, _problem(404, "not-found", "Not Found", "No such account"))
        self.faults = (self.connection.config or {}).get("faults") or {}
        if not isinstance(self.faults, dict):
            self.faults = {}
        self.lost_answer = False
        key = _bearer(request)
        number, key_expired = _count_call(self.connection, key, self.faults.get("expire_after_calls"))
        self.number = number
        if self.faults.get("expired_credentials") or key_expired:
            raise Answer(401, {"error": "invalid_grant", "error_description": "Token has expired"},
                         {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if not key or not hmac.compare_digest(key.encode(), self._api_key().encode()):
            raise Answer(401, _problem(401, "unauthorized", "Unauthorized", "The API key is missing or invalid",
                                       code="invalid_api_key"))
        if operation == "write" and self.faults.get("permission_denied"):
            raise Answer(403, _problem(403, "forbidden", "Forbidden", "The API key is not allowed to write records",
                                       code="MISSING_SCOPES", technicalInfo="required scope: records.write"))
        if operation == "read_page" and page_number in (self.faults.get("fail_pages") or []):
            raise Answer(500, _problem(500, "internal-error", "Internal Server Error",
                                       f"Page {page_number} could not be loaded", code="PAGE_READ_FAILED",
                                       technicalInfo="upstream shard unavailable"))
        if operation not in self.faults.get("operations", DEFAULT_FAULT_OPERATIONS):
            return
        every = self.faults.get("rate_limit_every")
        if isinstance(every, int) and every > 0 and number % every == 0:
            retry_after = self.faults.get("retry_after", DEFAULT_RETRY_AFTER)
            raise Answer(429, {"status": "error", "message": "You have reached your rate limit",
                               "category": "RATE_LIMITS", "code": "RATE_LIMITED"}, {"Retry-After": str(retry_after)})
        rate = self.faults.get("failure_rate") or 0
        draw = _stable_fraction(self.faults.get("seed", 0), number)
        if number in (self.faults.get("fail_calls") or ()) or (rate and draw < rate):
            kinds = self.faults.get("failure_kind", "503")
            if isinstance(kinds, list):
                kinds = kinds[int(draw * 1_000_003) % len(kinds)]
            self._fail(kinds)

    def _api_key(self):
        try:
            return str(self.connection.credentials.get("api_key") or "")
        except CredentialsDecryptionError:
            return random_secrets.token_hex(16)  # nothing can match a key nobody can read

    def hang_seconds(self):
        """Longer than the client waits: the connection's timeout plus a second."""
        return float((self.connection.config or {}).get("timeout_seconds") or 5) + 1

    def _fail(self, kind):
        if kind == "lost_answer" and self.operation == "write":
            self.lost_answer = True  # carried out, then no answer in time
            return
        if kind in ("timeout", "lost_answer"):
            raise Answer(504, "", hang=self.hang_seconds())
        if kind == "connection":
            raise Answer(503, "Connection refused", {REFUSE_HEADER: "1"})
        if kind == "500":
            raise Answer(500, "<html><body><h1>500 Internal Server Error</h1></body></html>")
        if kind == "retry_later":
            raise Answer(500, {"type": "http://www.meaningful.co.nz/limber-sync/retry-later", "typeCode": "RETRY_LATER",
                               "status": 500, "title": "Retry later", "detail": "Retry later",
                               "message": "Oops, something went wrong"})
        raise Answer(503, "Service Unavailable")

    def records(self, object_name):
        return SandboxRecord.objects.filter(connection=self.connection, organization_id=self.connection.organization_id,
                                            object_name=object_name)


def _bearer(request):
    header = request.META.get("HTTP_AUTHORIZATION", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def _schema(object_name):
    schema = SCHEMAS.get(object_name)
    if schema is None:
        raise Answer(404, _problem(404, "not-found", "Unknown object", f"There is no object '{object_name}'",
                                   code="OBJECT_NOT_FOUND"))
    return schema


def _body(request):
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        raise Answer(400, _problem(400, "validation", "Invalid request", "The body is not JSON",
                                   code="INVALID_BODY")) from None
    if not isinstance(body, dict):
        raise Answer(400, _problem(400, "validation", "Invalid request", "The body must be an object",
                                   code="INVALID_BODY"))
    return body


def _record(row):
    return {"id": row.external_id, "data": row.data, "modified_at": row.modified_at.isoformat()}


def _keyset(row):
    # (modified_at, the row's sequence number): records sharing a timestamp keep the order they were stored in.
    return base64.urlsafe_b64encode(json.dumps([row.modified_at.isoformat(), row.pk]).encode()).decode()


def _parse_keyset(value):
    if not value:
        return None
    try:
        moment, sequence = json.loads(base64.urlsafe_b64decode(value.encode()))
        return datetime.datetime.fromisoformat(moment), int(sequence)
    except (ValueError, TypeError):
        raise Answer(400, _problem(400, "validation", "Invalid page token", f"Invalid cursor {value!r}",
                                   code="INVALID_PAGE_TOKEN")) from None


def endpoint(operation):
    """A view of the API: JSON in and out, every refusal or fault answered as the API's own answer."""

    def decorate(view):
        @csrf_exempt
        def wrapper(request, account, *args, **kwargs):
            try:
                return view(request, account, *args, **kwargs)
            except Answer as answer:
                return answer.response(request)

        wrapper.operation = operation
        return wrapper

    return decorate


# --- the API ------------------------------------------------------------------------------------------------------


@endpoint("check")
def me(request, account):
    call = Call(request, account, "check")
    return JsonResponse({"account": str(call.connection.code), "name": call.connection.name})


@endpoint("describe")
def objects(request, account):
    Call(request, account, "describe")
    return JsonResponse({"objects": [{"name": s.name, "label": s.label} for s in SCHEMAS.values()]})


@endpoint("describe")
def schema(request, account, object_name):
    Call(request, account, "describe")
    return JsonResponse(_schema(object_name).as_dict())


@endpoint("read_page")
def records(request, account, object_name):
    """A page in (modified_at, sequence) order, strictly after the keyset `after` (the page token, or the cursor
    of an incremental read): records sharing a timestamp are never skipped, and an edited record moves to the
    end."""
    _schema(object_name)
    try:
        limit = int(request.GET.get("limit", 100))
    except ValueError:
        limit = 0
    after = request.GET.get("after", "")
    page_number = int(request.GET.get("page", 0) or 0) or None
    call = Call(request, account, "read_page", page_number=page_number)
    if not 1 <= limit <= MAX_PAGE:
        raise Answer(400, _problem(400, "validation", "Invalid page size", f"limit must be 1 to {MAX_PAGE}",
                                   code="INVALID_PAGE_SIZE"))
    rows = call.records(object_name).order_by("modified_at", "pk")
    keyset = _parse_keyset(after)
    if keyset is not None:
        moment, sequence = keyset
        rows = rows.filter(Q(modified_at__gt=moment) | Q(modified_at=moment, pk__gt=sequence))
    rows = list(rows[: limit + 1])
    page = rows[:limit]
    return JsonResponse({
        "records": [_record(row) for row in page],
        "next": _keyset(page[-1]) if len(rows) > limit else None,
        "cursor": _keyset(page[-1]) if page else (after or None),
    })


@endpoint("fetch")
def fetch(request, account, object_name):
    _schema(object_name)
    body = _body(request)
    call = Call(request, account, "fetch")
    ids = [str(i) for i in body.get("ids") or []]
    return JsonResponse({"records": [_record(row) for row in call.records(object_name).filter(external_id__in=ids)]})


@endpoint("find")
def find(request, account, object_name):
    schema = _schema(object_name)
    body = _body(request)
    call = Call(request, account, "find")
    field, values = body.get("field"), body.get("values") or []
    if field not in schema.fields:
        raise Answer(400, _problem(400, "validation", "Invalid filter", f"'{field}' is not a field of {object_name}",
                                   code="UNKNOWN_FIELD", field=field))
    rows = call.records(object_name).order_by("modified_at", "pk")
    if field == "id":
        rows = rows.filter(external_id__in=[str(v) for v in values])
    elif field == UNIQUE_FIELDS.get(object_name):
        rows = rows.filter(unique_key__in=[unique_key(object_name, {field: v}) for v in values])
    else:
        rows = rows.filter(**{f"data__{field}__in": values})
    matches = {}
    for row in rows:
        value = row.external_id if field == "id" else row.data.get(field)
        if value in values:
            matches.setdefault(str(value), []).append(_record(row))
    return JsonResponse({"matches": matches})


@endpoint("write")
def batch(request, account, object_name):
    """Each operation is carried out on its own: one record's refusal never fails the others."""
    schema = _schema(object_name)
    body = _body(request)
    call = Call(request, account, "write")
    operations = body.get("operations")
    if not isinstance(operations, list):
        raise Answer(400, _problem(400, "validation", "Invalid request", "operations must be a list",
                                   code="INVALID_BODY"))
    results = _write_all(call, object_name, schema, operations)
    slow = call.faults.get("slow_writes")
    if isinstance(slow, int | float) and not isinstance(slow, bool) and slow > 0:
        time.sleep(min(float(slow), 30))  # an API that takes its time to answer after storing
    response = JsonResponse({"results": results})
    return _hang(request, response, call.hang_seconds() if call.lost_answer else 0)


def _write_all(call, object_name, schema, operations):
    """Creates are checked in Python and against one indexed query, then stored in one bulk insert; updates and
    upserts go one by one. Writing stays fast however many records the account holds."""
    results = [None] * len(operations)
    creates = []  # (index, cleaned data, unique key)
    for index, operation in enumerate(operations):
        if isinstance(operation, dict) and operation.get("action") == "create":
            try:
                cleaned = _clean(schema, operation.get("data"), partial=False)
            except Answer as answer:
                results[index] = {"ref": operation.get("ref"), "ok": False, "status": answer.status,
                                  "error": answer.body}
                continue
            creates.append((index, cleaned, unique_key(object_name, cleaned)))
        else:
            results[index] = _write_one(call, object_name, schema, operation)
    keys = [key for _index, _data, key in creates if key]
    taken = {row.unique_key: row for row in call.records(object_name).filter(unique_key__in=keys)} if keys else {}
    rows, now = [], timezone.now()
    for index, cleaned, key in creates:
        ref = operations[index].get("ref")
        if key and key in taken:
            answer = _duplicate(object_name, taken[key])
            results[index] = {"ref": ref, "ok": False, "status": answer.status, "error": answer.body}
            continue
        row = SandboxRecord(organization_id=call.connection.organization_id, connection=call.connection,
                            object_name=object_name, external_id=new_id(object_name), data=cleaned, unique_key=key,
                            modified_at=now)
        if key:
            taken[key] = row  # a second record with the same key in this batch collides with this one
        rows.append(row)
        results[index] = {"ref": ref, "ok": True, "id": row.external_id, "action": "create", "record": cleaned}
    SandboxRecord.objects.bulk_create(rows)
    return results


def _write_one(call, object_name, schema, operation):
    ref = operation.get("ref") if isinstance(operation, dict) else None
    try:
        with transaction.atomic():
            return {"ref": ref, "ok": True, **_apply(call, object_name, schema, operation)}
    except Answer as answer:
        return {"ref": ref, "ok": False, "status": answer.status, "error": answer.body}


def _apply(call, object_name, schema, operation):
    if not isinstance(operation, dict):
        raise Answer(400, _problem(400, "validation", "Invalid request", "Each operation must be an object",
                                   code="INVALID_BODY"))
    action, data, target_id = operation.get("action"), operation.get("data"), operation.get("id")
    if action == "create":
        return _create(call, object_name, schema, data)
    if action == "update":
        row = call.records(object_name).filter(external_id=target_id).first() if target_id else None
        if row is None:
            raise Answer(404, _problem(404, "not-found", "Not Found", f"No {object_name} record with id {target_id!r}",
                                       code="RECORD_NOT_FOUND"))
        return _update(call, object_name, schema, row, data)
    if action == "upsert":
        field = operation.get("match_field")
        if not field or field not in schema.fields or field == "id":
            raise _validation(field or "", "INVALID_MATCH_FIELD", f"Cannot upsert on {field!r}")
        value = (data or {}).get(field)
        if _is_empty(value):
            raise _validation(field, "REQUIRED_FIELD_MISSING", f"'{field}' is required to upsert")
        matches = list(call.records(object_name).filter(**{f"data__{field}": value})[:2])
        if len(matches) > 1:
            raise Answer(409, _problem(409, "conflict", "Multiple matches",
                                       f"Several {object_name} records have {field} {value!r}",
                                       code="MULTIPLE_MATCHES", field=field))
        if matches:
            return _update(call, object_name, schema, matches[0], data)
        return _create(call, object_name, schema, data)
    raise Answer(400, _problem(400, "validation", "Invalid request", f"Unknown action {action!r}",
                               code="INVALID_ACTION"))


def _create(call, object_name, schema, data):
    cleaned = _clean(schema, data, partial=False)
    key = unique_key(object_name, cleaned)
    _check_unique(call, object_name, key, exclude=None)
    row = SandboxRecord.objects.create(
        organization_id=call.connection.organization_id, connection=call.connection, object_name=object_name,
        external_id=new_id(object_name), data=cleaned, unique_key=key, modified_at=timezone.now(),
    )
    return {"id": row.external_id, "action": "create", "record": row.data}


def _update(call, object_name, schema, row, data):
    changes = _clean(schema, data, partial=True)
    merged = {**row.data, **changes}
    key = unique_key(object_name, merged)
    _check_unique(call, object_name, key, exclude=row.pk)
    row.data, row.unique_key, row.modified_at = merged, key, timezone.now()
    row.save(update_fields=["data", "unique_key", "modified_at"])
    return {"id": row.external_id, "action": "update", "record": row.data}


def _check_unique(call, object_name, key, *, exclude):
    """Case-insensitive, like most CRMs ("Jane@X.com" collides with "jane@x.com"), through an index."""
    if not key:
        return
    existing = call.records(object_name).filter(unique_key=key)
    if exclude is not None:
        existing = existing.exclude(pk=exclude)
    existing = existing.first()
    if existing is not None:
        raise _duplicate(object_name, existing)


def _duplicate(object_name, existing):
    name = UNIQUE_FIELDS[object_name]
    return Answer(409, _problem(
        409, "duplicate", "Duplicate value",
        f"A record with {name} '{existing.data.get(name)}' already exists (id {existing.external_id})",
        code="DUPLICATE_VALUE", field=name, existingId=existing.external_id,
        technicalInfo=f"{name} must be unique (case-insensitive); existing record {existing.external_id}",
    ))


urlpatterns = [
    path("v1/<uuid:account>/me", me),
    path("v1/<uuid:account>/objects", objects),
    path("v1/<uuid:account>/objects/<str:object_name>/schema", schema),
    path("v1/<uuid:account>/objects/<str:object_name>/records", records),
    path("v1/<uuid:account>/objects/<str:object_name>/records/fetch", fetch),
    path("v1/<uuid:account>/objects/<str:object_name>/records/find", find),
    path("v1/<uuid:account>/objects/<str:object_name>/records/batch", batch),
]
