"""Pipedrive (API v2): persons, organizations and deals of one company.

Records come from https://{company_domain}.pipedrive.com/api/v2 (or the `api_domain` an OAuth token answer names),
paged with Pipedrive's cursor and filtered for incremental reads with `updated_since` (inclusive) in update-time
order. Schemas come from the v1 field endpoints. Pipedrive has no batch and no upsert: every operation is one
request, and an upsert is a search, then a create or an update. Authentication is an API token (x-api-token) or
OAuth2 (Bearer, refreshed with HTTP Basic client authentication). Webhooks v2 carry no signature, only the HTTP
Basic credentials configured on the webhook.

Shapes: developers.pipedrive.com (Persons, Organizations, Deals, ItemSearch v2; PersonFields v1) and
pipedrive.readme.io (rate limiting, HTTP status codes, OAuth, webhooks v2); see connector-apis.md section 3.
"""

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import math
import re
import time
from datetime import UTC, datetime

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
from integrations.redaction import scrub_text

MAX_PAGE_SIZE = 500  # v2 list endpoints
MAX_IDS_PER_CALL = 100  # the `ids` filter of v2 list endpoints
FIELDS_PAGE_SIZE = 500  # v1 field endpoints
# Pipedrive counts requests in 2-second windows; without a reset header, the next window starts this soon.
RATE_WINDOW_SECONDS = 2
# A client that keeps ignoring 429s gets a 403 HTML page instead; how long that block lasts is not documented.
BLOCKED_RETRY_AFTER = 300
# The daily budget "resets at the start of the next day"; the day is taken as UTC's.
SECONDS_PER_DAY = 86400
MIN_DAILY_RETRY_AFTER = 60

# Custom fields are 40-character hashes; in v2 their values live under `custom_fields`.
CUSTOM_FIELD_KEY = re.compile(r"[0-9a-f]{40}")
COMPANY_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

# v1 field types -> (FieldType, max_length, format). Unlisted types are strings.
FIELD_TYPES = {
    "varchar": (FieldType.STRING, 255, ""),
    "varchar_auto": (FieldType.STRING, 255, ""),
    "varchar_options": (FieldType.STRING, 255, ""),
    "text": (FieldType.TEXT, None, ""),
    "phone": (FieldType.PHONE, 255, ""),
    "double": (FieldType.NUMBER, None, ""),
    "monetary": (FieldType.NUMBER, None, ""),
    "int": (FieldType.INTEGER, None, ""),
    "date": (FieldType.DATE, None, "%Y-%m-%d"),
    "time": (FieldType.STRING, None, "%H:%M:%S"),
    # Ids: v2 rejects a number sent as a string, so these stay integers.
    "enum": (FieldType.INTEGER, None, ""),
    "org": (FieldType.INTEGER, None, ""),
    "people": (FieldType.INTEGER, None, ""),
    "user": (FieldType.INTEGER, None, ""),
    "stage": (FieldType.INTEGER, None, ""),
    "visible_to": (FieldType.INTEGER, None, ""),
}
# Fields Pipedrive computes: listed by the field endpoints, never written.
READ_ONLY_KEYS = {
    "id", "add_time", "update_time", "creator_user_id", "cc_email", "stage_change_time", "rotten_time",
    "next_activity_date", "next_activity_time", "next_activity_id", "last_activity_id", "last_activity_date",
    "last_incoming_mail_time", "last_outgoing_mail_time", "weighted_value", "weighted_value_currency",
}
# Errors after which the rest of a write batch would fail the same way: it is not sent.
BATCH_STOPPING_CATEGORIES = {ErrorCategory.AUTH, ErrorCategory.RATE_LIMIT, ErrorCategory.CONNECTION}


@dataclasses.dataclass(frozen=True)
class PipedriveObject:
    name: str
    label: str
    entity: str  # meta.entity in webhooks v2
    fields_path: str  # the v1 field endpoint
    required_field: str  # the one field a create needs
    search_fields: frozenset  # what /{name}/search can look in
    # v1 field keys that v2 renamed (migration guide): the schema speaks v2, like the records.
    renames: tuple = ()
    # Multi-value v2 fields exposed as one field holding the primary value: (exposed name, v2 key).
    multi_values: tuple = ()


OBJECTS = {
    "persons": PipedriveObject(
        "persons", "Persons", "person", "personFields", "name",
        frozenset({"name", "email", "phone", "notes", "custom_fields"}),
        renames=(("label", "label_ids"),), multi_values=(("email", "emails"), ("phone", "phones")),
    ),
    "organizations": PipedriveObject(
        "organizations", "Organizations", "organization", "organizationFields", "name",
        frozenset({"name", "address", "notes", "custom_fields"}), renames=(("label", "label_ids"),),
    ),
    "deals": PipedriveObject(
        "deals", "Deals", "deal", "dealFields", "title",
        frozenset({"title", "notes", "custom_fields"}), renames=(("label", "label_ids"), ("user_id", "owner_id")),
    ),
}
OBJECTS_BY_ENTITY = {kind.entity: kind for kind in OBJECTS.values()}


def company_subdomain(value):
    """"acme" from "acme", "acme.pipedrive.com" or "https://acme.pipedrive.com/"; None when it is not a name."""
    text = str(value or "").strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    text = text.removesuffix(".pipedrive.com")
    return text if COMPANY_SUBDOMAIN.fullmatch(text) else None


def _is_blank(value):
    return value is None or (isinstance(value, str) and not value.strip())


def _plain(value):
    # v2 wraps some values with their subfields: {"value": 2300, "currency": "EUR"}, addresses, ranges.
    return value.get("value") if isinstance(value, dict) and "value" in value else value


def _primary(entries):
    """The primary value of a v2 multi-value field ([{"value", "primary", "label"}]), else the first one."""
    if not isinstance(entries, list):
        return _plain(entries)
    values = [entry for entry in entries if isinstance(entry, dict) and not _is_blank(entry.get("value"))]
    chosen = next((entry for entry in values if entry.get("primary")), values[0] if values else None)
    return chosen["value"] if chosen else None


def _parse_time(value):
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rfc3339(moment):
    # Whole seconds: cut down, never up, so the inclusive filter still takes the record it came from.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _comparable(field, value):
    if field == "phone":
        return re.sub(r"\D", "", str(value))
    return str(value).strip().casefold()


class PipedriveConnector(HttpConnector):
    label = "Pipedrive"
    config_fields = (
        BASE_URL_FIELD,
        SettingField(
            "company_domain", "Company domain", required=True, placeholder="acme",
            help="The name before .pipedrive.com in your Pipedrive address.",
        ),
    )
    secret_fields = (
        SettingField("api_token", "API token", type="password", secret=True,
                     help="Personal preferences > API in Pipedrive. Leave empty when connecting with OAuth."),
        SettingField("client_id", "OAuth client ID", type="password", secret=True),
        SettingField("client_secret", "OAuth client secret", type="password", secret=True),
        SettingField("refresh_token", "OAuth refresh token", type="password", secret=True),
    )
    supports_incremental = True
    supports_fetch = True
    # No batch endpoint: each operation is its own request, so a small batch keeps a write() call short.
    max_write_batch = 10
    token_url = "https://oauth.pipedrive.com/oauth/token"
    check_path = "/api/v1/users/me"
    sleep = staticmethod(time.sleep)  # tests inject a recorder

    def __init__(self, connection):
        super().__init__(connection)
        # What the last answer said about the budget (x-ratelimit-remaining / -reset, x-daily-requests-left).
        self._window_remaining = None
        self._window_reset = None
        self._daily_left = None

    # -- configuration ------------------------------------------------------------------------------------------

    @classmethod
    def validate_config(cls, config):
        problems = super().validate_config(config)
        domain = (config or {}).get("company_domain")
        if "company_domain" not in problems and isinstance(domain, str) and company_subdomain(domain) is None:
            problems["company_domain"] = ["Company domain must be the name before .pipedrive.com, such as acme."]
        return problems

    @classmethod
    def validate_credentials(cls, credentials):
        credentials = credentials or {}
        if credentials.get("api_token") or credentials.get("access_token") or credentials.get("refresh_token"):
            return {}
        return {"api_token": ["An API token (or OAuth credentials) is required."]}

    def base_url(self):
        override = self.config.get("base_url") or self.credentials().get("api_domain")
        if override:
            return override.rstrip("/")
        subdomain = company_subdomain(self.config.get("company_domain"))
        if subdomain is None:
            raise ConnectorError(ErrorCategory.CONNECTION, "The Pipedrive company domain is missing or not valid",
                                 code="invalid_company_domain", retryable=False)
        return f"https://{subdomain}.pipedrive.com"

    def secrets(self):
        # The API host and the expiry are not secret; scrubbing them would blank host names out of messages.
        public = {"api_domain", "expires_at"}
        return tuple(str(value) for key, value in self.credentials().items()
                     if key not in public and value and not isinstance(value, bool))

    def auth_headers(self):
        credentials = self.credentials()
        if credentials.get("access_token"):
            return {"Authorization": f"Bearer {credentials['access_token']}"}
        if credentials.get("api_token"):
            return {"x-api-token": credentials["api_token"]}
        return {}

    # -- OAuth2 -------------------------------------------------------------------------------------------------

    def refresh_form(self, credentials):
        # The client authenticates with HTTP Basic, not in the form.
        return {"grant_type": "refresh_token", "refresh_token": credentials.get("refresh_token", "")}

    def send_refresh(self, credentials):
        client = f"{credentials.get('client_id', '')}:{credentials.get('client_secret', '')}"
        basic = base64.b64encode(client.encode()).decode()
        return http.request("POST", self.token_endpoint(), session=self.session, secrets=self.secrets(),
                            data=self.refresh_form(credentials), idempotent=False, timeout=self.timeout,
                            headers={"Accept": "application/json", "Authorization": f"Basic {basic}"})

    def token_credentials(self, body, credentials):
        new = super().token_credentials(body, credentials)
        if body.get("api_domain"):
            new["api_domain"] = body["api_domain"]  # the company's API host: used from now on
        return new

    # -- requests, limits and errors ----------------------------------------------------------------------------

    def _send(self, method, path, *, idempotent, headers, **kwargs):
        self._wait_for_budget()
        return super()._send(method, path, idempotent=idempotent, headers=headers, sleep=self.sleep, **kwargs)

    def _wait_for_budget(self):
        if self._daily_left is not None and self._daily_left <= 0:
            until_midnight = SECONDS_PER_DAY - int(time.time()) % SECONDS_PER_DAY
            raise ConnectorError(
                ErrorCategory.RATE_LIMIT, "Pipedrive's daily API budget of this company is used up",
                code="daily_budget_exhausted", retry_after=max(MIN_DAILY_RETRY_AFTER, until_midnight),
            )
        if self._window_remaining is not None and self._window_remaining <= 0:
            wait = self._window_reset if self._window_reset is not None else RATE_WINDOW_SECONDS
            self.sleep(max(0, wait))
            self._window_remaining = None

    def _note_budget(self, headers):
        remaining = _number(headers.get("x-ratelimit-remaining"))
        if remaining is not None:
            self._window_remaining = remaining
            self._window_reset = _number(headers.get("x-ratelimit-reset"))
        daily = _number(headers.get("x-daily-requests-left"))
        if daily is not None:
            self._daily_left = daily

    def classify(self, response, *, secrets):
        """Pipedrive's envelope {"success": false, "error", "error_info", "data"} and its status quirks."""
        self._note_budget(response.headers)
        error = super().classify(response, secrets=secrets)
        if error is None:
            return None
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        reset = _number(response.headers.get("x-ratelimit-reset"))
        if not isinstance(body, dict):
            if status == 403:
                # Not Pipedrive's JSON: the HTML page a client gets for ignoring 429s.
                return _changed(error, category=ErrorCategory.RATE_LIMIT, code="rate_limit_block",
                                message="Pipedrive blocked requests after repeated rate-limit answers",
                                retry_after=error.retry_after or BLOCKED_RETRY_AFTER)
            return error
        text = body.get("error") if isinstance(body.get("error"), str) else ""
        message = scrub_text(text, secrets)[: http.MAX_MESSAGE_LENGTH] if text else error.message
        code = _body_code(body) or f"http_{status}"
        if status == 402:
            return _changed(error, category=ErrorCategory.PERMISSION, code=_body_code(body) or "payment_required",
                            message=f"The Pipedrive account is not open: {message}")
        if status == 403 and code.startswith("feature_capping"):
            return _changed(error, code=code, message=f"Pipedrive plan limit reached: {message}")
        if status == 429:
            return _changed(error, code=code, message=message,
                            retry_after=error.retry_after or math.ceil(reset or RATE_WINDOW_SECONDS))
        if error.category == ErrorCategory.VALIDATION:
            return _changed(error, code=code, message=message, field=error.field or _field_named(body, text))
        return _changed(error, code=code, message=message)

    def _get(self, path, **params):
        body = self.json(self.request("GET", path, params=params))
        if not isinstance(body, dict):
            raise ConnectorError(ErrorCategory.UNKNOWN, "Pipedrive answered JSON that is not an object",
                                 code="unexpected_answer")
        return body

    def check(self):
        try:
            self.request("GET", self.check_path)
        except ConnectorError as exc:
            if exc.category != ErrorCategory.NOT_FOUND:
                raise
            raise ConnectorError(
                ErrorCategory.CONNECTION, f"No Pipedrive company answers at {self.base_url()}: check the company "
                "domain", code="company_not_found", detail=exc.detail, retryable=False,
            ) from None

    # -- objects and schemas ------------------------------------------------------------------------------------

    def _object(self, object_name):
        try:
            return OBJECTS[object_name]
        except KeyError:
            raise self.unknown_object(object_name) from None

    def list_objects(self):
        return [ObjectSummary(kind.name, kind.label) for kind in OBJECTS.values()]

    def describe_object(self, object_name):
        kind = self._object(object_name)
        fields = {"id": FieldSpec("id", read_only=True, unique=True, label="ID")}
        for definition in self._field_definitions(kind):
            spec = self._field_spec(kind, definition)
            if spec is not None and spec.name not in fields:
                fields[spec.name] = spec
        return ObjectSchema(object_name, fields, label=kind.label)

    def _field_definitions(self, kind):
        start = 0
        while True:
            body = self._get(f"/api/v1/{kind.fields_path}", start=start, limit=FIELDS_PAGE_SIZE)
            yield from (item for item in body.get("data") or [] if isinstance(item, dict))
            pagination = (body.get("additional_data") or {}).get("pagination") or {}
            if not pagination.get("more_items_in_collection") or pagination.get("next_start") is None:
                return
            start = pagination["next_start"]

    def _field_spec(self, kind, definition):
        key = definition.get("key")
        if not isinstance(key, str) or not key or key == "id" or definition.get("active_flag") is False:
            return None
        name = dict(kind.renames).get(key, key)
        field_type, max_length, fmt = FIELD_TYPES.get(definition.get("field_type"), (FieldType.STRING, None, ""))
        if name == "email" and name in dict(kind.multi_values):
            field_type = FieldType.EMAIL
        return FieldSpec(
            name, type=field_type, max_length=max_length, format=fmt, label=str(definition.get("name") or key),
            # mandatory_flag may also be an object (required in some deal stages only): not required everywhere.
            required=definition.get("mandatory_flag") is True or name == kind.required_field,
            read_only=key in READ_ONLY_KEYS or key.endswith("_count"),
        )

    # -- reading ------------------------------------------------------------------------------------------------

    def _record(self, kind, raw):
        data = {}
        multi_values = {v2_key: name for name, v2_key in kind.multi_values}
        for key, value in raw.items():
            if key in ("id", "custom_fields"):
                continue
            if key in multi_values:
                data[multi_values[key]] = _primary(value)
            else:
                data[key] = _plain(value)
        for key, value in (raw.get("custom_fields") or {}).items():
            data[key] = _plain(value)
        return SourceRecord(id=str(raw["id"]), data=data, modified_at=_parse_time(raw.get("update_time")))

    @staticmethod
    def _items(body):
        data = body.get("data")
        return [item for item in data if isinstance(item, dict) and "id" in item] if isinstance(data, list) else []

    def read_page(self, object_name, *, page_token=None, cursor=None, page_size=100):
        """A page in update-time order; `cursor` is the update time to read from (inclusive)."""
        kind = self._object(object_name)
        since, vendor_cursor = cursor, None
        if page_token:
            # The token carries the filter of its read, so the next page never loses it.
            try:
                token = json.loads(page_token)
                since, vendor_cursor = token["since"], token["cursor"]
            except (ValueError, TypeError, KeyError):
                vendor_cursor = page_token
        params = {"limit": max(1, min(int(page_size), MAX_PAGE_SIZE)), "sort_by": "update_time",
                  "sort_direction": "asc"}
        if since:
            params["updated_since"] = since
        if vendor_cursor:
            params["cursor"] = vendor_cursor
        body = self._get(f"/api/v2/{kind.name}", **params)
        records = [self._record(kind, raw) for raw in self._items(body)]
        next_cursor = (body.get("additional_data") or {}).get("next_cursor")
        next_token = json.dumps({"since": since, "cursor": next_cursor}) if next_cursor else None
        stamps = [record.modified_at for record in records if record.modified_at]
        return Page(records, next_token, cursor=_rfc3339(max(stamps)) if stamps else None)

    def _raw_by_ids(self, kind, ids):
        wanted = list(dict.fromkeys(str(i) for i in ids if str(i).isdigit()))  # Pipedrive ids are integers
        found = []
        for start in range(0, len(wanted), MAX_IDS_PER_CALL):
            chunk = wanted[start:start + MAX_IDS_PER_CALL]
            body = self._get(f"/api/v2/{kind.name}", ids=",".join(chunk), limit=MAX_IDS_PER_CALL)
            found += [raw for raw in self._items(body) if str(raw["id"]) in chunk]
        return found

    def fetch(self, object_name, ids):
        kind = self._object(object_name)
        return {str(raw["id"]): self._record(kind, raw) for raw in self._raw_by_ids(kind, ids)}

    # -- find ---------------------------------------------------------------------------------------------------

    def find(self, object_name, field, values):
        """Exact matches: one search per value, then the full records of what it found (one call per 100)."""
        kind = self._object(object_name)
        search_field = "custom_fields" if CUSTOM_FIELD_KEY.fullmatch(field) else field
        if search_field not in kind.search_fields:
            raise ConnectorError(ErrorCategory.MAPPING, f"Pipedrive cannot search {object_name} by {field}",
                                 code="field_not_searchable", field=field)
        ids_by_value = {value: self._search(kind, search_field, value)
                        for value in dict.fromkeys(values) if not _is_blank(value)}
        raws = {str(raw["id"]): raw
                for raw in self._raw_by_ids(kind, [i for ids in ids_by_value.values() for i in ids])}
        # A search also matches other custom fields, secondary values and case variants: keep exact matches.
        return {
            value: [self._record(kind, raws[i]) for i in ids if i in raws and self._holds(kind, raws[i], field, value)]
            for value, ids in ids_by_value.items()
        }

    def _search(self, kind, search_field, value):
        ids, cursor = [], None
        while True:
            params = {"term": str(value), "fields": search_field, "exact_match": "true", "limit": MAX_PAGE_SIZE}
            if cursor:
                params["cursor"] = cursor
            body = self._get(f"/api/v2/{kind.name}/search", **params)
            items = (body.get("data") or {}).get("items") or []
            ids += [str(entry["item"]["id"]) for entry in items
                    if isinstance(entry, dict) and isinstance(entry.get("item"), dict) and "id" in entry["item"]]
            cursor = (body.get("additional_data") or {}).get("next_cursor")
            if not cursor:
                return list(dict.fromkeys(ids))

    def _holds(self, kind, raw, field, value):
        v2_key = dict(kind.multi_values).get(field)
        if v2_key:
            candidates = [entry.get("value") for entry in raw.get(v2_key) or [] if isinstance(entry, dict)]
        elif CUSTOM_FIELD_KEY.fullmatch(field):
            candidates = [_plain((raw.get("custom_fields") or {}).get(field))]
        else:
            candidates = [_plain(raw.get(field))]
        wanted = _comparable(field, value)
        return any(c is not None and _comparable(field, c) == wanted for c in candidates)

    # -- writing ------------------------------------------------------------------------------------------------

    def write(self, object_name, operations):
        """One request per operation (two for an upsert), in order, with one result each.

        Raises only when the first request fails in a way every later one would (auth, limits, outage); after
        that, such a failure ends the batch and the operations left are reported as not sent.
        """
        kind = self._object(object_name)
        results, anything_applied = [], False
        for index, operation in enumerate(operations):
            try:
                result = self._write_one(kind, operation)
            except ConnectorError as exc:
                stops = exc.category in BATCH_STOPPING_CATEGORIES
                if stops and not anything_applied and not exc.may_have_applied:
                    raise
                results.append(WriteResult(operation.ref, ok=False, action=_attempted(operation), error=exc))
                anything_applied = anything_applied or exc.may_have_applied
                if stops:
                    results += [_not_sent(rest, exc) for rest in operations[index + 1:]]
                    return results
                continue
            anything_applied = anything_applied or result.ok
            results.append(result)
        return results

    def _write_one(self, kind, operation):
        if operation.action == WriteAction.CREATE:
            return self._create(kind, operation)
        if operation.action == WriteAction.UPDATE:
            if not operation.target_id:
                return _refused(operation, "An update needs the id of the record to update", code="target_id_missing")
            return self._update(kind, operation, operation.target_id)
        if operation.action == WriteAction.UPSERT:
            return self._upsert(kind, operation)
        return _refused(operation, f"Unknown write action '{operation.action}'", code="unknown_action")

    def _upsert(self, kind, operation):
        field = operation.match_field
        value = operation.data.get(field) if field else None
        if _is_blank(value):
            return _refused(operation, f"An upsert needs a value for its match field {field!r}",
                            code="match_value_missing", field=field or "")
        matches = self.find(kind.name, field, [value]).get(value, [])
        if len(matches) > 1:
            return WriteResult(operation.ref, ok=False, error=ConnectorError(
                ErrorCategory.DUPLICATE, f"{len(matches)} {kind.name} have {field} = {value!r}; cannot tell which one "
                "to update", code="ambiguous_match", field=field,
                detail="matching ids: " + ", ".join(match.id for match in matches[:10]),
            ))
        if matches:
            return self._update(kind, operation, matches[0].id)
        return self._create(kind, operation)

    def _create(self, kind, operation):
        # A POST that creates is never sent again after a failure that may have been carried out (http.py).
        response = self.request("POST", f"/api/v2/{kind.name}", json=self._payload(kind, operation.data))
        return self._written(kind, operation, response, WriteAction.CREATE)

    def _update(self, kind, operation, target_id):
        response = self.request("PATCH", f"/api/v2/{kind.name}/{target_id}", json=self._payload(kind, operation.data),
                                idempotent=True)
        return self._written(kind, operation, response, WriteAction.UPDATE)

    def _written(self, kind, operation, response, action):
        body = self.json(response)
        raw = body.get("data") if isinstance(body, dict) else None
        if not isinstance(raw, dict) or "id" not in raw:
            return WriteResult(operation.ref, ok=False, action=action, error=ConnectorError(
                ErrorCategory.UNKNOWN, "Pipedrive answered without the written record", code="unexpected_answer",
                retryable=False, may_have_applied=True,
            ))
        record = self._record(kind, raw)
        return WriteResult(operation.ref, ok=True, target_id=record.id, action=action, record=record.data)

    @staticmethod
    def _payload(kind, data):
        """The v2 body: primary email and phone as one-entry lists, custom fields under custom_fields."""
        payload, custom = {}, {}
        multi_values = dict(kind.multi_values)
        for name, value in data.items():
            if name == "id":
                continue
            if name in multi_values:
                entries = [] if _is_blank(value) else [{"value": value, "primary": True, "label": "work"}]
                payload[multi_values[name]] = entries
            elif CUSTOM_FIELD_KEY.fullmatch(name):
                custom[name] = value
            else:
                payload[name] = value
        if custom:
            payload["custom_fields"] = custom
        return payload

    # -- webhooks (v2) ------------------------------------------------------------------------------------------

    def verify_webhook(self, *, secrets, method, url, headers, raw_body, now):
        """HTTP Basic credentials, the only proof a Pipedrive webhook carries; each secret is "user:password".

        There is no signed timestamp to hold against a tolerance: the credentials are the same on every delivery.
        """
        authorization = headers.get("authorization", "").strip()
        if not authorization:
            raise WebhookSignatureError("The Authorization header (HTTP Basic) is required", code="signature_missing")
        scheme, _, encoded = authorization.partition(" ")
        try:
            if scheme.lower() != "basic":
                raise ValueError(scheme)
            received = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookSignatureError("The Authorization header is not HTTP Basic credentials",
                                        code="signature_invalid") from None
        # Every secret is compared, match or not, so timing does not tell which one matched.
        matches = [hmac.compare_digest(received, secret.encode()) for secret in secrets if secret]
        if not any(matches):
            raise WebhookSignatureError("The credentials match no secret of this endpoint", code="signature_invalid")

    def webhook_event_id(self, *, headers, payload):
        """meta.id, else a digest of what the event is about: never meta.attempt, which grows on each retry."""
        meta = _webhook_meta(payload)
        if isinstance(meta.get("id"), str | int) and str(meta["id"]).strip():
            return str(meta["id"]).strip()
        parts = [str(meta.get(key) or "") for key in ("entity", "entity_id", "action", "timestamp")]
        if not parts[0] or not parts[3]:
            raise WebhookPayloadError("The delivery has no meta.id, nor an entity and a timestamp",
                                      code="event_id_missing")
        return "pd_" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def parse_webhook(self, payload, *, headers=None):
        """The record an event names; deleted records too (the sync finds them gone)."""
        meta = _webhook_meta(payload)
        kind = OBJECTS_BY_ENTITY.get(meta.get("entity"))
        if kind is None:
            return []  # activities, leads, products...: nothing Resync syncs
        record_id = meta.get("entity_id")
        for source in (payload.get("data"), payload.get("previous")):
            if _is_blank(record_id) and isinstance(source, dict):
                record_id = source.get("id")
        if _is_blank(record_id) or isinstance(record_id, bool) or not isinstance(record_id, str | int):
            raise WebhookPayloadError("meta.entity_id must name the record the event is about")
        return [WebhookChange(object_name=kind.name, record_ids=[str(record_id).strip()])]


def _webhook_meta(payload):
    if not isinstance(payload, dict) or not isinstance(payload.get("meta"), dict):
        raise WebhookPayloadError("The payload must be a JSON object with a meta object")
    meta = payload["meta"]
    # Webhooks v1 put the record's id in meta.id: deduplicating on it would drop every later change of the record.
    if meta.get("v") == 1 or not str(meta.get("version") or "2").startswith("2"):
        raise WebhookPayloadError("Only Pipedrive webhooks v2 are supported", code="unsupported_version")
    return meta


def _body_code(body):
    """Pipedrive's machine code ("feature_capping_deals_limit"), wherever the envelope put it."""
    for source in (body, body.get("data"), body.get("error"), body.get("additional_data")):
        if isinstance(source, dict):
            for key in ("code", "error_code"):
                if isinstance(source.get(key), str) and source[key]:
                    return source[key][:100]
    return ""


# "Validation failed: name: Required", "Parameter 'emails' is invalid", "title is required" (shapes vary).
FIELD_IN_MESSAGE = (
    re.compile(r"(?i:parameter|field)\s+['\"`]([a-z_][\w.\[\]]*)['\"`]"),
    re.compile(r"^(?i:validation failed:\s*)?([a-z_][\w.\[\]]*)(?::\s| is required| must | should )"),
)


def _field_named(body, text):
    """The field a validation error names, in Resync's names (emails -> email, custom_fields.<key> -> key)."""
    for source in (body, body.get("data")):
        if isinstance(source, dict) and isinstance(source.get("field"), str):
            text = source["field"]
            break
    else:
        for pattern in FIELD_IN_MESSAGE:
            match = pattern.search(text or "")
            if match:
                text = match.group(1)
                break
        else:
            return ""
    parts = [part for part in re.split(r"[.\[\]]", text) if part and not part.isdigit()]
    if not parts or parts[0].lower() == "validation":
        return ""
    if parts[0] == "custom_fields" and len(parts) > 1:
        return parts[1]
    return {"emails": "email", "phones": "phone"}.get(parts[0], parts[0])


def _changed(error, **changes):
    """A copy of a classified error with some attributes changed (a new category brings its own retryability)."""
    attributes = {
        "category": error.category, "message": error.message, "code": error.code, "detail": error.detail,
        "retryable": error.retryable, "retry_after": error.retry_after, "field": error.field,
        "may_have_applied": error.may_have_applied,
    }
    if "category" in changes and "retryable" not in changes:
        attributes["retryable"] = None
    attributes.update(changes)
    return ConnectorError(attributes.pop("category"), attributes.pop("message"), **attributes)


def _attempted(operation):
    return operation.action if operation.action in (WriteAction.CREATE, WriteAction.UPDATE) else None


def _refused(operation, message, *, code, field=""):
    return WriteResult(operation.ref, ok=False, action=_attempted(operation),
                       error=ConnectorError(ErrorCategory.VALIDATION, message, code=code, field=field))


def _not_sent(operation, cause):
    return WriteResult(operation.ref, ok=False, action=_attempted(operation), error=ConnectorError(
        cause.category, f"Not sent: an earlier operation of this batch failed ({cause.message})", code=cause.code,
        retryable=cause.retryable, retry_after=cause.retry_after,
    ))
