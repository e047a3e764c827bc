"""HubSpot CRM v3: contacts, companies and deals.

A full read pages through the list endpoint; a delta read searches on the object's modification time, oldest
first, from an inclusive cursor. Writes go to the batch create / update / upsert endpoints, one result per input.
Errors come as {status, message, correlationId, category, errors, context} (429s as errorType + policyName), and
the X-HubSpot-RateLimit-* headers say how much of the budget is left, which is respected before it runs out.
Inbound webhooks are arrays of events signed with HubSpot's v3 scheme.
Shapes: developers.hubspot.com (error handling, CRM search, webhooks request validation) and the OpenAPI specs in
HubSpot/HubSpot-public-api-spec-collection (PublicApiSpecs/CRM/Contacts/Rollouts/424/v3/contacts.json).
"""

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import time
from datetime import UTC, date, datetime, timedelta

from integrations.connectors import http
from integrations.connectors.base import (
    BASE_URL_FIELD,
    FieldSpec,
    FieldType,
    HttpConnector,
    ObjectSchema,
    ObjectSummary,
    Page,
    SettingField,
    SourceRecord,
    WebhookChange,
    WebhookPayloadError,
    WebhookSignatureError,
    WriteAction,
    WriteResult,
)
from integrations.errors import ConnectorError, ErrorCategory
from integrations.redaction import scrub, scrub_text


@dataclasses.dataclass(frozen=True)
class HubSpotObject:
    label: str
    modified_property: str  # what a delta read filters and sorts on
    webhook_prefix: str  # "contact" in contact.propertyChange
    object_type_id: str  # "0-1" in the generic object.propertyChange events


OBJECTS = {
    "contacts": HubSpotObject("Contacts", "lastmodifieddate", "contact", "0-1"),
    "companies": HubSpotObject("Companies", "hs_lastmodifieddate", "company", "0-2"),
    "deals": HubSpotObject("Deals", "hs_lastmodifieddate", "deal", "0-3"),
}

PROPERTY_TYPES = {
    "string": FieldType.STRING,
    "enumeration": FieldType.STRING,
    "number": FieldType.NUMBER,
    "date": FieldType.DATE,
    "datetime": FieldType.DATETIME,
    "bool": FieldType.BOOLEAN,
    "phone_number": FieldType.PHONE,
}
# fieldType (how the property is edited) says more than type for these.
FIELD_TYPES = {"phonenumber": FieldType.PHONE, "textarea": FieldType.TEXT, "booleancheckbox": FieldType.BOOLEAN}

LIST_PAGE_MAX = 100
SEARCH_PAGE_MAX = 200
BATCH_MAX = 100
# A GET with every property of a large portal in its query answers 414: past this, the page's records are read
# again through batch/read, whose property list travels in the body.
MAX_PROPERTIES_QUERY_LENGTH = 6000

# HubSpot's category -> the HTTP status it comes with, for the per-input errors of a batch answer (no status).
CATEGORY_STATUSES = {
    "VALIDATION_ERROR": 400,
    "INVALID_AUTHENTICATION": 401,
    "EXPIRED_AUTHENTICATION": 401,
    "MISSING_SCOPES": 403,
    "OBJECT_NOT_FOUND": 404,
    "CONFLICT": 409,
    "RATE_LIMITS": 429,
}
# What a record can fail on by itself: one input of a call refused for these is that record's result.
RECORD_CATEGORIES = {ErrorCategory.VALIDATION, ErrorCategory.DUPLICATE, ErrorCategory.NOT_FOUND, ErrorCategory.MAPPING}
# How long each rolling limit lasts when a 429 names it without Retry-After (DAILY: until midnight UTC).
POLICY_WAITS = {"TEN_SECONDLY_ROLLING": 10, "SECONDLY": 1}
EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")
# The v3 signature is over the URI with these characters decoded, as HubSpot's request validation says.
SIGNED_URI_ESCAPES = re.compile(r"%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)", re.IGNORECASE)
WEBHOOK_ACTIONS_TO_SYNC = {"creation", "propertyChange", "merge", "restore"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class HubSpotConnector(HttpConnector):
    label = "HubSpot"
    default_base_url = "https://api.hubapi.com"
    token_url = "https://api.hubapi.com/oauth/v1/token"
    check_path = "/crm/v3/objects/contacts"
    config_fields = (BASE_URL_FIELD,)
    secret_fields = (
        SettingField("access_token", "Access token", type="password", required=True, secret=True,
                     help="A private app's access token, or an OAuth access token."),
        SettingField("refresh_token", "OAuth refresh token", type="password", secret=True,
                     help="Only for an OAuth app: lets Resync renew the access token."),
        SettingField("client_id", "OAuth client ID", secret=True, help="Only for an OAuth app."),
        SettingField("client_secret", "OAuth client secret", type="password", secret=True,
                     help="Only for an OAuth app."),
    )
    supports_incremental = True
    supports_fetch = True
    max_write_batch = BATCH_MAX
    # Search results trail writes by a few moments: a delta read starts this much before its cursor, so a record
    # indexed late is still read (what is read twice is recognised by its hash).
    search_lag_seconds = 60
    # The search endpoints answer 400 past this many results of one query.
    search_result_limit = 10_000
    sleep = staticmethod(time.sleep)

    def __init__(self, connection):
        super().__init__(connection)
        self._schemas = {}
        # What the last answer's X-HubSpot-RateLimit-* headers said (None: not said).
        self._calls_left = None
        self._interval_ms = None
        self._daily_calls_left = None
        # Access tokens this connector got from a refresh (see can_refresh).
        self._refreshed_to = set()

    # -- requests and the rate budget ---------------------------------------------------------------------------

    def refresh_credentials(self):
        new = super().refresh_credentials()
        self._refreshed_to.add(new.get("access_token"))
        return new

    def can_refresh(self):
        # The base remembers the tokens it refreshed away from, not the one it got: without this, a 401 right
        # after a refresh would refresh again. A token got from a refresh is refreshed only when it expires.
        credentials = self.credentials()
        expires_at = credentials.get("expires_at")
        expiring = bool(expires_at) and float(expires_at) - self.refresh_margin <= time.time()
        if credentials.get("access_token") in self._refreshed_to and not expiring:
            return False
        return super().can_refresh()

    def token_endpoint(self):
        # Through the configured base URL, like every other call (a proxy or a test stand-in).
        return f"{self.base_url()}/oauth/v1/token"

    def request(self, method, path, **kwargs):
        self._wait_for_budget()
        return super().request(method, path, **kwargs)

    def _wait_for_budget(self):
        if self._daily_calls_left is not None and self._daily_calls_left <= 0:
            raise ConnectorError(ErrorCategory.RATE_LIMIT, "HubSpot's daily API limit for this account is used up",
                                 code="DAILY", retry_after=_seconds_to_midnight_utc())
        if self._calls_left is not None and self._calls_left <= 0:
            self.sleep((self._interval_ms or 10_000) / 1000)
            self._calls_left = None  # a new interval: the next answer says how much of it is left

    def _note_budget(self, headers):
        # Search answers carry no such headers: what an earlier answer said stands.
        remaining = _int_header(headers, "X-HubSpot-RateLimit-Remaining")
        interval = _int_header(headers, "X-HubSpot-RateLimit-Interval-Milliseconds")
        daily = _int_header(headers, "X-HubSpot-RateLimit-Daily-Remaining")
        if remaining is not None:
            self._calls_left = remaining
        if interval is not None:
            self._interval_ms = interval
        if daily is not None:
            self._daily_calls_left = daily

    # -- errors -------------------------------------------------------------------------------------------------

    def classify(self, response, *, secrets):
        self._note_budget(response.headers)
        error = super().classify(response, secrets=secrets)
        if error is None:
            return None
        body = _json_object(http.response_body(response))
        return self._hubspot_error(error, body, secrets=secrets)

    def _hubspot_error(self, error, body, *, secrets):
        """`error` (the generic classification) with what HubSpot's body adds: category, scope, field, wait."""
        kind = str(body.get("category") or "")
        if body.get("errorType") == "RATE_LIMIT" or kind == "RATE_LIMITS" or error.category == ErrorCategory.RATE_LIMIT:
            policy = str(body.get("policyName") or "")
            retry_after = error.retry_after
            if policy == "DAILY":
                self._daily_calls_left = 0  # no call before midnight would get through
                retry_after = retry_after or _seconds_to_midnight_utc()
            elif retry_after is None:
                retry_after = POLICY_WAITS.get(policy, 10)
            return _changed(error, category=ErrorCategory.RATE_LIMIT, code=policy or "RATE_LIMIT",
                            retryable=True, retry_after=retry_after)
        if kind in ("INVALID_AUTHENTICATION", "EXPIRED_AUTHENTICATION"):
            return _changed(error, category=ErrorCategory.AUTH, code=kind)
        if kind == "MISSING_SCOPES":
            scopes = _required_scopes(body)
            message = error.message
            if scopes:
                message = f"The HubSpot app lacks the scope {' or '.join(scopes)} this call needs"
            return _changed(error, category=ErrorCategory.PERMISSION, code=kind, message=message)
        if kind == "VALIDATION_ERROR":
            return self._validation_error(error, body, secrets=secrets)
        if kind == "CONFLICT":
            match = EXISTING_ID.search(str(body.get("message") or ""))
            detail = f"Existing ID: {match.group(1)}. {error.detail}" if match else error.detail
            return _changed(error, category=ErrorCategory.DUPLICATE, code=kind, detail=detail[:2000])
        if kind == "OBJECT_NOT_FOUND":
            return _changed(error, category=ErrorCategory.NOT_FOUND, code=kind)
        return _changed(error, code=kind) if kind else error

    def _validation_error(self, error, body, *, secrets):
        # "Property values were not valid: [{...,"error":"INVALID_EMAIL","name":"email"}]": a JSON array in a string.
        problems = _property_problems(str(body.get("message") or ""))
        if problems:
            codes = [str(p.get("error") or "") for p in problems]
            message = "; ".join(f"{p.get('name')}: {p.get('message') or p.get('error')}" for p in problems)
            category = ErrorCategory.MAPPING if set(codes) == {"PROPERTY_DOESNT_EXIST"} else ErrorCategory.VALIDATION
            return _changed(error, category=category, code=codes[0] or "VALIDATION_ERROR",
                            field=str(problems[0].get("name") or ""),
                            message=scrub_text(f"HubSpot refused {message}", secrets)[:500])
        first = next((e for e in body.get("errors") or [] if isinstance(e, dict)), {})
        return _changed(error, category=ErrorCategory.VALIDATION, code=str(first.get("code") or "VALIDATION_ERROR"),
                        field=str(first.get("in") or error.field or ""))

    def _input_error(self, body):
        """The ConnectorError of one input of a batch answer (an error object without an HTTP status)."""
        status = CATEGORY_STATUSES.get(str(body.get("category") or ""), 400)
        error = http.classify_response(status, None, body, secrets=self.secrets())
        detail = scrub_text(json.dumps(scrub(body), sort_keys=True, default=str), self.secrets())[:2000]
        return self._hubspot_error(_changed(error, detail=detail), body, secrets=self.secrets())

    # -- objects and schemas ------------------------------------------------------------------------------------

    def check(self):
        self.request("GET", self.check_path, params={"limit": 1, "archived": "false"})

    def list_objects(self):
        return [ObjectSummary(name, spec.label) for name, spec in OBJECTS.items()]

    def _object(self, object_name):
        try:
            return OBJECTS[object_name]
        except KeyError:
            raise self.unknown_object(object_name) from None

    def describe_object(self, object_name):
        spec = self._object(object_name)
        if object_name not in self._schemas:
            body = self.json(self.request("GET", f"/crm/v3/properties/{object_name}", params={"archived": "false"}))
            fields = {"id": FieldSpec("id", FieldType.STRING, unique=True, read_only=True, label="Record ID")}
            for prop in body.get("results") or []:
                if isinstance(prop, dict) and prop.get("name") and prop["name"] != "id":
                    fields[prop["name"]] = _field_spec(object_name, prop)
            self._schemas[object_name] = ObjectSchema(object_name, fields, label=spec.label)
        return self._schemas[object_name]

    def _property_names(self, object_name):
        return [name for name in self.describe_object(object_name).fields if name != "id"]

    # -- reading ------------------------------------------------------------------------------------------------

    def read_page(self, object_name, *, page_token=None, cursor=None, page_size=100):
        self._object(object_name)
        state = _read_token(page_token)
        if cursor is None:
            return self._read_all(object_name, state, page_size)
        return self._read_changes(object_name, cursor, state, page_size)

    def _read_all(self, object_name, state, page_size):
        # The list endpoint is in no time order: a later delta read starts where this read started.
        started = state.get("started") or _ms(datetime.now(UTC))
        names = self._property_names(object_name)
        joined = ",".join(names)
        too_long = len(joined) > MAX_PROPERTIES_QUERY_LENGTH
        params = {"limit": min(page_size, LIST_PAGE_MAX), "archived": "false",
                  "properties": OBJECTS[object_name].modified_property if too_long else joined}
        if state.get("after"):
            params["after"] = state["after"]
        body = self.json(self.request("GET", f"/crm/v3/objects/{object_name}", params=params))
        records = [self._record(object_name, item) for item in body.get("results") or []]
        if too_long and records:
            found = self.fetch(object_name, [record.id for record in records])
            records = [found[record.id] for record in records if record.id in found]
        after = _next_after(body)
        next_token = _write_token(started=started, after=after) if after else None
        return Page(records, next_token, cursor=_iso(_from_ms(started)))

    def _read_changes(self, object_name, cursor, state, page_size):
        modified = OBJECTS[object_name].modified_property
        since = state.get("since")
        if since is None:
            since = _ms(_parse_cursor(cursor)) - self.search_lag_seconds * 1000
        limit = min(page_size, SEARCH_PAGE_MAX)
        query = {
            "filterGroups": [{"filters": [{"propertyName": modified, "operator": "GTE", "value": str(since)}]}],
            "sorts": [{"propertyName": modified, "direction": "ASCENDING"}],
            "properties": self._property_names(object_name),
            "limit": limit,
        }
        if state.get("after"):
            query["after"] = state["after"]
        body = self.json(self.request("POST", f"/crm/v3/objects/{object_name}/search", json=query, idempotent=True))
        records = [self._record(object_name, item) for item in body.get("results") or []]
        newest = max((record.modified_at for record in records if record.modified_at), default=None)
        after = _next_after(body)
        next_token = None
        if after and _offset(after) + limit > self.search_result_limit:
            # One search stops at 10,000 results: a new one starts from the newest time seen (inclusive).
            if newest is None or _ms(newest) <= since:
                raise ConnectorError(
                    ErrorCategory.UNKNOWN,
                    f"More than {self.search_result_limit} HubSpot {object_name} share one modification time: "
                    "a search cannot page past them",
                    code="search_limit_reached", retryable=False,
                )
            next_token = _write_token(since=_ms(newest))
        elif after:
            next_token = _write_token(since=since, after=after)
        return Page(records, next_token, cursor=_iso(newest) if newest else None)

    def _record(self, object_name, item):
        if not isinstance(item, dict) or item.get("id") in (None, ""):
            raise ConnectorError(ErrorCategory.UNKNOWN, "HubSpot answered a record without an id",
                                 code="unparseable_answer", detail=str(item)[:500])
        properties = dict(item.get("properties") or {})
        modified = properties.get(OBJECTS[object_name].modified_property) or item.get("updatedAt")
        return SourceRecord(id=str(item["id"]), data=properties, modified_at=_parse_time(modified))

    def fetch(self, object_name, ids):
        self._object(object_name)
        names = self._property_names(object_name)
        found = {}
        for chunk in _chunks(list(dict.fromkeys(str(i) for i in ids)), BATCH_MAX):
            query = {"inputs": [{"id": record_id} for record_id in chunk], "properties": names,
                     "propertiesWithHistory": []}
            try:
                response = self.request("POST", f"/crm/v3/objects/{object_name}/batch/read",
                                        params={"archived": "false"}, json=query, idempotent=True)
            except ConnectorError as exc:
                if exc.category == ErrorCategory.NOT_FOUND:
                    continue  # none of them exists
                raise
            # A 207 lists the ids it did not find under "errors": they are simply absent.
            for item in self.json(response).get("results") or []:
                record = self._record(object_name, item)
                found[record.id] = record
        return found

    def find(self, object_name, field, values):
        self._object(object_name)
        values = list(values)
        found = {value: [] for value in values}
        wanted = {}
        for value in values:
            if value is not None and value != "":
                wanted.setdefault(str(value).casefold(), []).append(value)
        prop = "hs_object_id" if field == "id" else field
        names = self._property_names(object_name)
        for chunk in _chunks(list(wanted), BATCH_MAX // 2):
            # HubSpot matches string values without regard to case, and wants IN values lowercase for some
            # properties: both spellings are sent, and results are grouped the same case-blind way.
            originals = [str(v) for key in chunk for v in wanted[key]]
            sent = list(dict.fromkeys([*originals, *chunk]))
            for item in self._search_all(object_name, {
                "filterGroups": [{"filters": [{"propertyName": prop, "operator": "IN", "values": sent}]}],
                "properties": names, "limit": SEARCH_PAGE_MAX,
            }):
                record = self._record(object_name, item)
                own = record.id if field == "id" else record.data.get(field)
                matched = wanted.get(str(own).casefold(), []) if own is not None else []
                for value in matched:
                    found[value].append(record)
        return found

    def _search_all(self, object_name, query):
        while True:
            body = self.json(self.request("POST", f"/crm/v3/objects/{object_name}/search", json=query,
                                          idempotent=True))
            yield from body.get("results") or []
            after = _next_after(body)
            if not after or _offset(after) + query["limit"] > self.search_result_limit:
                return
            query = {**query, "after": after}

    # -- writing ------------------------------------------------------------------------------------------------

    def write(self, object_name, operations):
        """Creates, updates and upserts each go to their batch endpoint (up to three calls). A call that fails
        as a whole raises while nothing has been written, so the caller can split or retry it; once a call has
        written something, a later call's failure is reported on each of its records instead, so that what was
        written is never lost from the results."""
        self._object(object_name)
        results = [None] * len(operations)
        groups = {WriteAction.CREATE: [], WriteAction.UPDATE: [], WriteAction.UPSERT: []}
        for position, operation in enumerate(operations):
            problem = _operation_problem(operation)
            if problem:
                results[position] = WriteResult(operation.ref, ok=False, error=problem)
            else:
                groups[operation.action].append((position, operation))
        written = False
        # Creates go first: while nothing is written, a failed call is raised whole, and the caller can look up
        # the creates it may have carried out before sending them again.
        for action, entries in groups.items():
            if not entries:
                continue
            try:
                answers = self._write_batch(object_name, action, [operation for _position, operation in entries])
            except ConnectorError as exc:
                single_record = len(entries) == 1 and exc.category in RECORD_CATEGORIES
                if not (written or single_record):
                    raise
                answers = [WriteResult(operation.ref, ok=False, action=_done(action), error=exc)
                           for _position, operation in entries]
            written = written or any(answer.ok for answer in answers)
            for (position, _operation), answer in zip(entries, answers, strict=True):
                results[position] = answer
        return results

    def _write_batch(self, object_name, action, operations):
        inputs = []
        for trace, operation in enumerate(operations):
            # objectWriteTraceId turns on per-input (207) answers and names each input in them.
            entry = {"properties": _properties_for_write(operation.data), "objectWriteTraceId": str(trace)}
            if action == WriteAction.UPDATE:
                entry["id"] = str(operation.target_id)
            elif action == WriteAction.UPSERT:
                entry["id"] = str(operation.data[operation.match_field])
                entry["idProperty"] = operation.match_field
            inputs.append(entry)
        response = self.request("POST", f"/crm/v3/objects/{object_name}/batch/{action}", json={"inputs": inputs},
                                idempotent=action != WriteAction.CREATE)
        return self._batch_results(object_name, action, operations, inputs, self.json(response))

    def _batch_results(self, object_name, action, operations, inputs, body):
        """One WriteResult per input: by objectWriteTraceId, else by the record's id or idProperty value, else by
        order (HubSpot answers inputs in the order sent)."""
        outcome = {}

        def claim(obj, keys):
            context = obj.get("context") if isinstance(obj.get("context"), dict) else {}
            traces = obj.get("objectWriteTraceId") or context.get("objectWriteTraceId")
            for trace in traces if isinstance(traces, list) else [traces]:
                if str(trace).isdigit() and int(trace) < len(inputs) and int(trace) not in outcome:
                    return int(trace)
            if action != WriteAction.CREATE:
                for index, entry in enumerate(inputs):
                    if index not in outcome and entry["id"].casefold() in keys:
                        return index
            return None

        def succeeded(index, item):
            outcome[index] = self._write_success(object_name, action, operations[index], item)

        def failed(index, error):
            outcome[index] = WriteResult(operations[index].ref, ok=False, action=_done(action), error=error)

        loose_results, loose_errors = [], []
        for item in body.get("results") or []:
            if not isinstance(item, dict):
                continue
            keys = {str(item.get("id") or "").casefold()}
            if action == WriteAction.UPSERT:
                keys |= {str((item.get("properties") or {}).get(e["idProperty"]) or "").casefold() for e in inputs}
            index = claim(item, keys - {""})
            if index is None:
                loose_results.append(item)
            else:
                succeeded(index, item)
        for item in body.get("errors") or []:
            if not isinstance(item, dict):
                continue
            ids = (item.get("context") or {}).get("ids") if isinstance(item.get("context"), dict) else None
            index = claim(item, {str(i).casefold() for i in ids or []})
            if index is None:
                loose_errors.append(item)
            else:
                failed(index, self._input_error(item))
        left = [index for index in range(len(operations)) if index not in outcome]
        if left and len(loose_results) == len(left) and not loose_errors:
            for index, item in zip(left, loose_results, strict=True):
                succeeded(index, item)
        elif left and len(loose_errors) == len(left) and not loose_results:
            for index, item in zip(left, loose_errors, strict=True):
                failed(index, self._input_error(item))
        for index in range(len(operations)):
            if index not in outcome:
                failed(index, ConnectorError(ErrorCategory.UNKNOWN, "HubSpot's answer did not say what became of "
                                             "this record", code="missing_result", may_have_applied=True))
        return [outcome[index] for index in range(len(operations))]

    def _write_success(self, object_name, action, operation, item):
        if action == WriteAction.UPSERT:
            done = WriteAction.CREATE if item.get("new") else WriteAction.UPDATE
        else:
            done = action
        record = self._record(object_name, item)
        return WriteResult(operation.ref, ok=True, target_id=record.id, action=done, record=record.data)

    # -- webhooks -----------------------------------------------------------------------------------------------

    def verify_webhook(self, *, secrets, method, url, headers, raw_body, now):
        """HubSpot v3: base64(HMAC-SHA256(client secret, method + URI + body + timestamp)), timestamp in ms."""
        signature = headers.get("x-hubspot-signature-v3", "").strip()
        timestamp = headers.get("x-hubspot-request-timestamp", "").strip()
        if not (signature and timestamp):
            raise WebhookSignatureError(
                "The X-HubSpot-Signature-v3 and X-HubSpot-Request-Timestamp headers are required",
                code="signature_missing",
            )
        if not timestamp.isdigit():
            raise WebhookSignatureError("X-HubSpot-Request-Timestamp must be milliseconds", code="timestamp_invalid")
        if abs(now.timestamp() * 1000 - int(timestamp)) > self.webhook_tolerance_seconds * 1000:
            raise WebhookSignatureError(
                f"X-HubSpot-Request-Timestamp is more than {self.webhook_tolerance_seconds} seconds from now",
                code="timestamp_out_of_tolerance",
            )
        uri = SIGNED_URI_ESCAPES.sub(lambda match: chr(int(match.group(1), 16)), url)
        signed = method.upper().encode() + uri.encode() + raw_body + timestamp.encode()
        expected = [
            base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
            for secret in secrets if secret
        ]
        # Every secret is compared, match or not, so timing does not tell which one matched.
        matches = [hmac.compare_digest(signature.encode(), value) for value in expected]
        if not any(matches):
            raise WebhookSignatureError("No signature matches a secret of this endpoint", code="signature_invalid")

    def webhook_event_id(self, *, headers, payload):
        """A digest of the batch's events without attemptNumber, which is all that changes on a redelivery.
        eventId alone is "not guaranteed to be unique", so the subscription, portal, object and time join it."""
        events = _webhook_events(payload)
        keys = []
        for event in events:
            if event.get("eventId") in (None, ""):
                raise WebhookPayloadError("A HubSpot event has no eventId", code="event_id_missing")
            keys.append([str(event.get(name, "")) for name in
                         ("eventId", "subscriptionId", "portalId", "objectId", "occurredAt")])
        if not keys:
            raise WebhookPayloadError("The delivery holds no events", code="event_id_missing")
        digest = hashlib.sha256(json.dumps(sorted(keys)).encode()).hexdigest()
        return f"hubspot-{digest}"

    def parse_webhook(self, payload, *, headers=None):
        by_object = {}
        for event in _webhook_events(payload):
            object_name, action = _webhook_subject(event)
            if object_name is None or action not in WEBHOOK_ACTIONS_TO_SYNC:
                continue  # deletions (nothing left to read), associations, other objects
            object_id = event.get("objectId")
            if isinstance(object_id, bool) or not isinstance(object_id, int | str) or object_id == "":
                raise WebhookPayloadError(f"A {event.get('subscriptionType')} event has no objectId")
            by_object.setdefault(object_name, {})[str(object_id)] = None
        return [WebhookChange(object_name, list(ids)) for object_name, ids in by_object.items()]


# -- helpers -------------------------------------------------------------------------------------------------------


def _changed(error, **changes):
    """A copy of a ConnectorError with some attributes changed (a new category brings its default retryability)."""
    values = {
        "category": error.category, "message": error.message, "code": error.code, "detail": error.detail,
        "retryable": None if "category" in changes else error.retryable, "retry_after": error.retry_after,
        "field": error.field, "may_have_applied": error.may_have_applied,
    }
    values.update(changes)
    return ConnectorError(values.pop("category"), values.pop("message"), **values)


def _json_object(body):
    try:
        parsed = json.loads(body) if body else {}
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _required_scopes(body):
    scopes = []
    for entry in body.get("errors") or []:
        context = entry.get("context") if isinstance(entry, dict) else None
        if isinstance(context, dict):
            scopes += [str(scope) for scope in context.get("requiredScopes") or []]
    return list(dict.fromkeys(scopes))


def _property_problems(message):
    start = message.find("[")
    if start < 0:
        return []
    try:
        entries = json.loads(message[start:])
    except ValueError:
        return []
    return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []


def _int_header(headers, name):
    value = headers.get(name) if headers else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _seconds_to_midnight_utc():
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return max(1, int((midnight - now).total_seconds()) + 1)


def _field_spec(object_name, prop):
    name = prop["name"]
    kind = PROPERTY_TYPES.get(prop.get("type"), FieldType.STRING)
    if prop.get("type") in ("string", "enumeration", "bool"):
        kind = FIELD_TYPES.get(prop.get("fieldType"), kind)
    if name == "email":
        kind = FieldType.EMAIL
    metadata = prop.get("modificationMetadata") or {}
    return FieldSpec(
        name=name,
        type=kind,
        label=str(prop.get("label") or ""),
        read_only=bool(metadata.get("readOnlyValue") or prop.get("calculated")),
        # A contact's email is the key HubSpot upserts and deduplicates contacts on.
        unique=bool(prop.get("hasUniqueValue")) or (object_name == "contacts" and name == "email"),
    )


def _operation_problem(operation):
    def refused(message, code):
        return ConnectorError(ErrorCategory.MAPPING, message, code=code, retryable=False)

    if operation.action not in (WriteAction.CREATE, WriteAction.UPDATE, WriteAction.UPSERT):
        return refused(f"HubSpot cannot {operation.action} a record", "unsupported_action")
    if operation.action == WriteAction.UPDATE and not operation.target_id:
        return refused("An update needs the HubSpot record id", "target_id_missing")
    if operation.action == WriteAction.UPSERT:
        if not operation.match_field:
            return refused("An upsert needs the unique property to match on", "match_field_missing")
        if operation.data.get(operation.match_field) in (None, ""):
            return refused(f"An upsert on {operation.match_field} needs a value for it", "match_value_missing")
    return None


def _properties_for_write(data):
    """HubSpot property values are strings; an empty string clears a property."""
    return {name: _property_value(value) for name, value in data.items() if name != "id"}


def _property_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | set):
        return ";".join(_property_value(item) for item in value)  # multiple checkboxes
    return str(value)


def _done(action):
    return WriteAction.UPDATE if action == WriteAction.UPDATE else WriteAction.CREATE


def _webhook_events(payload):
    events = [payload] if isinstance(payload, dict) else payload
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        raise WebhookPayloadError("A HubSpot webhook delivers a JSON array of event objects")
    return events


def _webhook_subject(event):
    """(object name, action) of an event: "contact.propertyChange", or "object.propertyChange" + objectTypeId."""
    prefix, _, action = str(event.get("subscriptionType") or "").partition(".")
    for name, spec in OBJECTS.items():
        if prefix == spec.webhook_prefix or (prefix == "object" and event.get("objectTypeId") == spec.object_type_id):
            return name, action
    return None, action


def _read_token(page_token):
    if not page_token:
        return {}
    try:
        state = json.loads(page_token)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise ConnectorError(ErrorCategory.UNKNOWN, "The page token is not one this connector wrote",
                             code="invalid_page_token", retryable=False)
    return state


def _write_token(**state):
    return json.dumps({key: value for key, value in state.items() if value is not None}, separators=(",", ":"))


def _next_after(body):
    after = ((body.get("paging") or {}).get("next") or {}).get("after")
    return str(after) if after not in (None, "") else None


def _offset(after):
    # Search paging tokens are result offsets ("200"); anything else is taken as far from the limit.
    return int(after) if str(after).isdigit() else 0


def _parse_cursor(cursor):
    moment = _parse_time(cursor)
    if moment is None:
        raise ConnectorError(ErrorCategory.UNKNOWN, f"The cursor {cursor!r} is not a time this connector wrote",
                             code="invalid_cursor", retryable=False)
    return moment


def _parse_time(value):
    """An aware datetime from HubSpot's ISO 8601 or epoch-milliseconds text; None when there is none."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    try:
        moment = _from_ms(int(text)) if text.isdigit() else datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ms(moment):
    return (moment - EPOCH) // timedelta(milliseconds=1)


def _from_ms(milliseconds):
    return EPOCH + timedelta(milliseconds=milliseconds)


def _iso(moment):
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _chunks(items, size):
    return [items[start:start + size] for start in range(0, len(items), size)]
