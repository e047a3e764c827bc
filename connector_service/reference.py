"""A small connector service that implements the whole contract of docs/connector-service.md.

Standard library only: a WSGI app (ReferenceService) over an in-memory store per object, served by a threading
wsgiref server. It verifies every request's Standard Webhooks signature (and refuses a webhook-id it has seen),
validates records against its declared objects, and injects faults on request so tests can see Resync cope:

    unavailable   answer 503 (Retry-After: `seconds` when given) without doing anything
    retry_later   answer 500 with the RETRY_LATER problem without doing anything
    error         answer `status` (500) with a publish-error or process-error problem (`retryable`), doing nothing
    slow          do the work, then wait `seconds` before answering (past the client's timeout: a lost answer)
    invalid       refuse the records whose `field` holds `value` with a per-record error in the 200 answer
    partial       refuse those records and answer the call with a 500 publish-error whose linkIdentities name
                  the records that were stored (the seed's partial success)

A fault applies to requests of `method` to `path` (PUT /v1/data by default; "*" for any), to the next `times`
of them (all when None). Faults come from the constructor, from $CONNECTOR_SERVICE_FAULTS (a JSON list) or from
--faults, and tests may change `service.faults` at any time.

Run it:   python -m connector_service.reference --port 8765 --secret whsec_...
In tests: server = serve(port=0, secret=SECRET, faults=[Fault("unavailable", times=2)])
          server.url, server.service.records("contacts"), server.service.calls("PUT", "/v1/data"), server.stop()
"""

import argparse
import base64
import dataclasses
import hashlib
import hmac
import json
import os
import secrets as random_secrets
import sys
import threading
import time
import traceback
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

PROBLEM = "urn:resync:problem:"
TOLERANCE_SECONDS = 300  # Standard Webhooks: 5 minutes either way
MAX_BATCH = 100
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100
MAX_IDS = 100
WRITE_ACTIONS = ("create", "update", "upsert")
FAULT_KINDS = ("unavailable", "retry_later", "error", "slow", "invalid", "partial")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so the text sorts as the time does

# The objects this service offers when it is given none: a field list as GET /v1/objects/{name} answers it.
DEFAULT_OBJECTS = {
    "contacts": {
        "label": "Contacts",
        "fields": [
            {"name": "email", "type": "email", "required": True, "unique": True, "maxLength": 254, "label": "Email"},
            {"name": "first_name", "type": "string", "maxLength": 100, "label": "First name"},
            {"name": "last_name", "type": "string", "maxLength": 100, "label": "Last name"},
            {"name": "phone", "type": "phone", "maxLength": 40, "label": "Phone"},
        ],
    },
    "companies": {
        "label": "Companies",
        "fields": [
            {"name": "name", "type": "string", "required": True, "unique": True, "maxLength": 200, "label": "Name"},
            {"name": "website", "type": "url", "maxLength": 500, "label": "Website"},
            {"name": "employees", "type": "integer", "label": "Employees"},
        ],
    },
}


# --- signatures (Standard Webhooks) ----------------------------------------------------------------------------


class SignatureError(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def secret_key(secret):
    """The HMAC key of a "whsec_<base64>" secret."""
    if not secret.startswith("whsec_"):
        raise ValueError('A signing secret is "whsec_" followed by base64')
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


def sign(secret, webhook_id, timestamp, body):
    """"v1," + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")): what Resync sends in webhook-signature."""
    digest = hmac.new(secret_key(secret), f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_signature(secrets, headers, body, *, now=None, tolerance=TOLERANCE_SECONDS):
    """Raise SignatureError unless one signature of the request matches one of `secrets` (several during a
    rotation) and its timestamp is within `tolerance` seconds of now. `headers` has lower-case names."""
    webhook_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (webhook_id and timestamp and signatures):
        raise SignatureError("webhook-id, webhook-timestamp and webhook-signature are required", "signature_missing")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureError("webhook-timestamp must be unix seconds", "timestamp_invalid") from None
    if abs((time.time() if now is None else now) - sent_at) > tolerance:
        raise SignatureError("webhook-timestamp is too far from now", "timestamp_out_of_tolerance")
    expected = [sign(secret, webhook_id, timestamp, body).encode() for secret in secrets]
    for candidate in signatures.split():
        # Compare with every secret, match or not: timing must not tell which one matched.
        if any([hmac.compare_digest(candidate.encode(), value) for value in expected]):
            return
    raise SignatureError("No signature matches the signing secret", "signature_invalid")


def new_secret():
    return "whsec_" + base64.b64encode(random_secrets.token_bytes(24)).decode()


# --- problems --------------------------------------------------------------------------------------------------


def problem(kind, detail, *, status, log_code, retryable=False, field="", technical_info="", **extra):
    """A problem JSON answer body (RFC 9457 with the contract's logCode, technicalInfo and retryable)."""
    body = {
        "type": PROBLEM + kind,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "logCode": log_code,
        "retryable": retryable,
    }
    if field:
        body["field"] = field
    if technical_info:
        body["technicalInfo"] = technical_info
    return {**body, **extra}


def retry_later():
    # The seed's shape: a 500 that says the request was not carried out and may be sent again.
    return {"type": PROBLEM + "retry-later", "typeCode": "RETRY_LATER", "status": 500, "title": "Retry later",
            "detail": "Retry later", "retryable": True}


class Refused(Exception):
    """A request or a record this service refuses: `status` and a problem body."""

    def __init__(self, status, body, headers=()):
        super().__init__(body.get("detail"))
        self.status = status
        self.body = body
        self.headers = list(headers)


def invalid(detail, field="", *, log_code="4220E"):
    return Refused(422, problem("validation", detail, status=422, log_code=log_code, field=field))


def not_found(detail, *, log_code="4040E"):
    return Refused(404, problem("not-found", detail, status=404, log_code=log_code))


# --- faults ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Fault:
    kind: str
    path: str = "/v1/data"  # "*": every path
    method: str = "PUT"  # "*": every method
    times: int | None = None  # how many more requests it hits; None: all of them
    seconds: float = 0  # slow: the wait after the work; unavailable: Retry-After
    field: str = ""  # invalid, partial: the records whose `field` holds `value` ("" : every record)
    value: Any = None
    status: int = 500  # error
    retryable: bool = False  # error, partial

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"Unknown fault kind {self.kind!r}: one of {', '.join(FAULT_KINDS)}")

    @classmethod
    def from_dict(cls, data):
        unknown = set(data) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown fault options: {', '.join(sorted(unknown))}")
        return cls(**data)

    def matches(self, method, path):
        return self.method in ("*", method) and self.path in ("*", path) and self.times != 0

    def hits_record(self, data):
        return not self.field or data.get(self.field) == self.value


def faults_from_env():
    text = os.environ.get("CONNECTOR_SERVICE_FAULTS", "").strip()
    return [Fault.from_dict(entry) for entry in json.loads(text)] if text else []


# --- the store -------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ReceivedRequest:
    method: str
    path: str
    query: dict
    webhook_id: str
    body: Any  # parsed JSON, or None


@dataclasses.dataclass
class StoredRecord:
    id: str
    data: dict
    modified_at: str

    def as_dict(self):
        return {"id": self.id, "data": dict(self.data), "modifiedAt": self.modified_at}


class ObjectStore:
    """One object's records and declared fields."""

    def __init__(self, name, label, fields):
        self.name = name
        self.label = label
        self.fields = {field["name"]: field for field in fields}
        self.records: dict[str, StoredRecord] = {}

    def schema(self):
        id_field = {"name": "id", "type": "string", "required": False, "unique": True, "readOnly": True,
                    "label": "ID"}
        return {"name": self.name, "label": self.label, "fields": [id_field, *self.fields.values()]}

    def validate(self, data, *, creating, record_id=None):
        """Raise Refused for data this object does not accept."""
        for name, value in data.items():
            spec = self.fields.get(name)
            if spec is None:
                raise invalid(f"{self.name} has no field {name!r}", name, log_code="4221E")
            if spec.get("readOnly"):
                raise invalid(f"{name} is read-only", name, log_code="4222E")
            if value is not None:
                self._check_value(spec, value)
        for name, spec in self.fields.items():
            blank = data.get(name) in (None, "")
            if spec.get("required") and blank and (creating or name in data):
                raise invalid(f"{name} is required", name, log_code="4223E")
            if spec.get("unique") and not blank:
                for other in self.records.values():
                    if other.id != record_id and other.data.get(name) == data[name]:
                        raise Refused(409, problem(
                            "duplicate", f"Another {self.name} record has this {name}", status=409, log_code="4090E",
                            field=name, technical_info=f"existing id {other.id}",
                        ))

    def _check_value(self, spec, value):
        name, kind = spec["name"], spec.get("type", "string")
        ok = {
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "email": isinstance(value, str) and "@" in value.strip("@"),
        }.get(kind, isinstance(value, str))
        if ok and kind in ("date", "datetime"):
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                ok = False
        if not ok:
            raise invalid(f"{name} must be a valid {kind}", name, log_code="4224E")
        if isinstance(value, str) and spec.get("maxLength") and len(value) > spec["maxLength"]:
            raise invalid(f"{name} is longer than {spec['maxLength']} characters", name, log_code="4225E")

    def find(self, field, value):
        return [record for record in self.records.values() if record.data.get(field) == value]

    def ordered(self):
        return sorted(self.records.values(), key=lambda record: (record.modified_at, record.id))


# --- the service -----------------------------------------------------------------------------------------------


class ReferenceService:
    """The WSGI app: every endpoint of the contract over in-memory stores, one per object."""

    def __init__(self, secret, *, objects=None, faults=None, tolerance=TOLERANCE_SECONDS, integration_key="reference"):
        # Several secrets during a rotation: the newest first.
        self.secrets = [secret] if isinstance(secret, str) else list(secret)
        for each in self.secrets:
            secret_key(each)
        self.tolerance = tolerance
        self.integration_key = integration_key
        self.faults = list(faults_from_env() if faults is None else faults)
        self.stores = {
            name: ObjectStore(name, spec.get("label") or name, spec.get("fields") or [])
            for name, spec in (DEFAULT_OBJECTS if objects is None else objects).items()
        }
        self.requests: list[ReceivedRequest] = []
        self.messages: list[dict] = []  # process messages received
        self._seen_ids = {}  # webhook-id -> when it was seen: a signed request is accepted once
        self._sequence = 0
        self._last_modified = None
        self._lock = threading.RLock()

    # -- what tests look at ---------------------------------------------------------------------------------------

    def records(self, object_name):
        with self._lock:
            return [record.as_dict() for record in self.stores[object_name].ordered()]

    def calls(self, method=None, path=None):
        with self._lock:
            return [r for r in self.requests if method in (None, r.method) and path in (None, r.path)]

    def add(self, object_name, data, *, record_id=None):
        """Store a record without validation (test setup); its id."""
        with self._lock:
            record = StoredRecord(record_id or self._new_id(object_name), dict(data), self._next_modified())
            self.stores[object_name].records[record.id] = record
            return record.id

    # -- WSGI -------------------------------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        try:
            status, body, headers = self.handle(environ)
        except Exception:
            traceback.print_exc()
            status, body, headers = 500, problem("unknown", "The service failed", status=500, log_code="5000E",
                                                 retryable=True), []
        raw = b"" if body is None else json.dumps(body).encode()
        phrase = HTTPStatus(status).phrase
        start_response(f"{status} {phrase}", [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(raw))), *headers])
        return [raw]

    def handle(self, environ):
        method = environ["REQUEST_METHOD"].upper()
        path = environ.get("PATH_INFO") or "/"
        query = {key: values[0] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        try:
            self.authenticate(headers, raw)
        except SignatureError as exc:
            return 401, problem("auth", "The request's signature was not accepted", status=401, log_code="4010E",
                                code=exc.code, technical_info=str(exc)), []
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = ValueError
        with self._lock:
            self.requests.append(ReceivedRequest(method, path, query, headers["webhook-id"],
                                                 None if body is ValueError else body))
            faults = self._take_faults(method, path)
        try:
            if body is ValueError:
                raise invalid("The body is not JSON")
            for fault in faults:
                self._early_answer(fault)
            status, answer = self.route(method, path, query, body, faults)
            answer_headers = []
        except Refused as exc:
            status, answer, answer_headers = exc.status, exc.body, exc.headers
        for fault in faults:
            if fault.kind == "slow":
                time.sleep(fault.seconds)  # the work is done: the client may give up before it hears so
        return status, answer, answer_headers

    def authenticate(self, headers, raw):
        verify_signature(self.secrets, headers, raw, tolerance=self.tolerance)
        now = time.time()
        with self._lock:
            self._seen_ids = {key: at for key, at in self._seen_ids.items() if now - at <= self.tolerance}
            if headers["webhook-id"] in self._seen_ids:
                raise SignatureError("This webhook-id was seen before (a replay)", "replayed")
            self._seen_ids[headers["webhook-id"]] = now

    def _take_faults(self, method, path):
        taken = []
        for fault in self.faults:
            if fault.matches(method, path):
                if fault.times is not None:
                    fault.times -= 1
                taken.append(fault)
        return taken

    @staticmethod
    def _early_answer(fault):
        if fault.kind == "unavailable":
            headers = [("Retry-After", str(int(fault.seconds)))] if fault.seconds else []
            raise Refused(503, {"title": "Service Unavailable", "status": 503}, headers)
        if fault.kind == "retry_later":
            raise Refused(500, retry_later())
        if fault.kind == "error":
            kind = "process-error" if fault.path == "/v1/process" else "publish-error"
            raise Refused(fault.status, problem(
                kind, "The target system refused the request", status=fault.status, log_code="5001E",
                retryable=fault.retryable, technical_info="injected fault",
            ))

    def route(self, method, path, query, body, faults):
        routes = {
            ("GET", "/v1/objects"): lambda: self.list_objects(),
            ("GET", "/v1/data"): lambda: self.read(query),
            ("PUT", "/v1/data"): lambda: self.write(body, faults),
            ("POST", "/v1/data/fetch"): lambda: self.fetch(body),
            ("POST", "/v1/data/find"): lambda: self.find(body),
            ("PUT", "/v1/process"): lambda: self.process(body),
        }
        if (method, path) in routes:
            return routes[(method, path)]()
        if method == "GET" and path.startswith("/v1/objects/"):
            return 200, self._store(path.removeprefix("/v1/objects/")).schema()
        if any(known == path for _method, known in routes):
            raise Refused(405, problem("validation", f"{method} is not allowed on {path}", status=405,
                                       log_code="4050E"))
        raise not_found(f"No endpoint {path}")

    # -- endpoints --------------------------------------------------------------------------------------------------

    def list_objects(self):
        return 200, {"objects": [{"name": store.name, "label": store.label} for store in self.stores.values()]}

    def read(self, query):
        store = self._store(query.get("object"))
        try:
            limit = min(int(query.get("limit") or DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE)
        except ValueError:
            raise invalid("limit must be a whole number", "limit") from None
        cursor = _normalized_time(query.get("cursor"), "cursor")
        after = tuple(query["page"].split("|", 1)) if query.get("page") else None
        with self._lock:
            records = [
                record for record in store.ordered()
                # The cursor is inclusive: records sharing its timestamp are read again, never skipped.
                if (cursor is None or record.modified_at >= cursor)
                and (after is None or (record.modified_at, record.id) > after)
            ]
        page, more = records[:max(1, limit)], len(records) > max(1, limit)
        last = page[-1] if page else None
        return 200, {
            "records": [record.as_dict() for record in page],
            "next": f"{last.modified_at}|{last.id}" if more and last else None,
            "cursor": last.modified_at if last else None,
        }

    def fetch(self, body):
        store = self._store(_dict(body).get("object"))
        ids = _dict(body).get("ids")
        if not isinstance(ids, list) or len(ids) > MAX_IDS:
            raise invalid(f"ids must be a list of at most {MAX_IDS} ids", "ids")
        with self._lock:
            found = [store.records[str(i)].as_dict() for i in ids if str(i) in store.records]
        return 200, {"records": found}

    def find(self, body):
        body = _dict(body)
        store = self._store(body.get("object"))
        field, values = body.get("field"), body.get("values")
        if field not in store.fields:
            raise invalid(f"{store.name} has no field {field!r}", "field")
        if not isinstance(values, list) or len(values) > MAX_IDS:
            raise invalid(f"values must be a list of at most {MAX_IDS} values", "values")
        with self._lock:
            matches = [{"value": value, "records": [record.as_dict() for record in store.find(field, value)]}
                       for value in values]
        return 200, {"matches": matches}

    def write(self, body, faults):
        body = _dict(body)
        store = self._store(body.get("object"))
        entries = body.get("records")
        if not isinstance(entries, list) or not entries or len(entries) > MAX_BATCH:
            raise invalid(f"records must be a list of 1 to {MAX_BATCH} records", "records")
        refusing = [fault for fault in faults if fault.kind in ("invalid", "partial")]
        with self._lock:
            results = [self._write_one(store, entry, refusing) for entry in entries]
        partial = next((fault for fault in refusing if fault.kind == "partial"), None)
        failed = [result for result in results if "error" in result]
        if partial is None or not failed:
            return 200, {"results": results}
        # The seed's partial success: the call fails, and linkIdentities say which records were stored anyway.
        stored = [result for result in results if "error" not in result]
        return 500, problem(
            "publish-error", f"{len(failed)} of {len(results)} records could not be stored", status=500,
            log_code="5002E", retryable=partial.retryable,
            technical_info="; ".join(f"{result['ref']}: {result['error']['detail']}" for result in failed),
            linkIdentities={
                "integrationKey": self.integration_key,
                "linkIdentities": [{"iri": result["ref"], "externalId": result["externalId"]} for result in stored],
            },
        )

    def _write_one(self, store, entry, refusing):
        ref = entry.get("ref") if isinstance(entry, dict) else None
        try:
            if not isinstance(ref, str) or not ref:
                raise invalid("Every record needs a ref", "ref")
            action, data = entry.get("action"), entry.get("data")
            if action not in WRITE_ACTIONS:
                raise invalid(f"action must be one of {', '.join(WRITE_ACTIONS)}", "action")
            if not isinstance(data, dict):
                raise invalid("data must be an object", "data")
            data = {key: value for key, value in data.items() if key != "id"}
            for fault in refusing:
                if fault.hits_record(data):
                    raise invalid(f"This record was refused ({fault.field or 'every record'})", fault.field,
                                  log_code="4229E")
            record, done = self._apply(store, action, entry, data)
        except Refused as exc:
            return {"ref": ref, "error": exc.body}
        return {"ref": ref, "externalId": record.id, "action": done, "data": dict(record.data)}

    def _apply(self, store, action, entry, data):
        target_id = entry.get("externalId")
        if action == "upsert":
            field = entry.get("matchField")
            if field not in store.fields or data.get(field) in (None, ""):
                raise invalid("An upsert needs a matchField that the data holds", "matchField")
            matches = store.find(field, data[field])
            if len(matches) > 1:
                raise Refused(409, problem("duplicate", f"{len(matches)} records have this {field}", status=409,
                                           log_code="4091E", field=field))
            action, target_id = ("update", matches[0].id) if matches else ("create", None)
        if action == "create":
            store.validate(data, creating=True)
            record = StoredRecord(self._new_id(store.name), data, self._next_modified())
            store.records[record.id] = record
            return record, "create"
        record = store.records.get(str(target_id)) if target_id not in (None, "") else None
        if record is None:
            raise not_found(f"No {store.name} record {target_id}", log_code="4041E")
        store.validate({**record.data, **data}, creating=False, record_id=record.id)
        record.data.update(data)
        record.modified_at = self._next_modified()
        return record, "update"

    def process(self, body):
        message = _dict(body)
        with self._lock:
            self.messages.append(message)
        kind, payload = message.get("type"), message.get("payload")
        if kind == "ping":
            return 200, {"ok": True}
        if kind == "records.delete" and isinstance(payload, dict):
            store = self._store(payload.get("object"))
            ids = payload.get("ids") if isinstance(payload.get("ids"), list) else []
            with self._lock:
                deleted = [str(i) for i in ids if store.records.pop(str(i), None) is not None]
            return 200, {"deleted": deleted}
        raise Refused(422, problem("process-error", f"Unknown message type {kind!r}", status=422, log_code="4003E",
                                   technical_info="known types: ping, records.delete"))

    # -- helpers ----------------------------------------------------------------------------------------------------

    def _store(self, name):
        if not isinstance(name, str) or name not in self.stores:
            raise not_found(f"No object {name!r}")
        return self.stores[name]

    def _new_id(self, object_name):
        self._sequence += 1
        return f"{object_name[:3]}_{self._sequence}"

    def _next_modified(self):
        # Strictly increasing, so reads in modification order are stable.
        now = datetime.now(UTC)
        if self._last_modified is not None and now <= self._last_modified:
            now = self._last_modified + timedelta(microseconds=1)
        self._last_modified = now
        return now.strftime(TIME_FORMAT)


def _dict(body):
    if not isinstance(body, dict):
        raise invalid("The body must be a JSON object")
    return body


def _normalized_time(value, field):
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{field} must be an ISO 8601 time", field) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


# --- serving ---------------------------------------------------------------------------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow answer does not hold up stop()
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


class ReferenceServer:
    """A ReferenceService listening on `host`:`port` in a background thread; `stop()` (or `with`) ends it."""

    def __init__(self, service, *, host="127.0.0.1", port=0):
        self.service = service
        self.httpd = make_server(host, port, service, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.host = host
        self.port = self.httpd.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=f"connector-service:{self.port}",
                                        daemon=True)

    @property
    def secret(self):
        return self.service.secrets[0]

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


def serve(port=0, secret=None, *, host="127.0.0.1", **options):
    """Start a reference service in a thread; the running ReferenceServer (its `port`, `url`, `service`).

    `secret` defaults to $CONNECTOR_SERVICE_SECRET or a new one (server.secret); `options` go to
    ReferenceService (objects, faults, tolerance, integration_key).
    """
    secret = secret or os.environ.get("CONNECTOR_SERVICE_SECRET") or new_secret()
    return ReferenceServer(ReferenceService(secret, **options), host=host, port=port).start()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Resync's reference connector service (docs/connector-service.md)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--secret", default=os.environ.get("CONNECTOR_SERVICE_SECRET"),
                        help="whsec_... (default: $CONNECTOR_SERVICE_SECRET, or a new one, printed)")
    parser.add_argument("--faults", help='JSON list, e.g. \'[{"kind": "unavailable", "times": 2}]\' '
                                         "(default: $CONNECTOR_SERVICE_FAULTS)")
    args = parser.parse_args(argv)
    secret = args.secret or new_secret()
    faults = [Fault.from_dict(entry) for entry in json.loads(args.faults)] if args.faults else None
    service = ReferenceService(secret, faults=faults)
    httpd = make_server(args.host, args.port, service, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    print(f"Reference connector service on http://{args.host}:{httpd.server_port}", file=sys.stderr)
    if not args.secret:
        print(f"Signing secret: {secret}", file=sys.stderr)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
