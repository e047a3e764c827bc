"""Salesforce through its REST API: Contacts, Accounts and Opportunities.

Reads are SOQL queries ordered by (SystemModstamp, Id) and paged by the query locator Salesforce answers with
(nextRecordsUrl, the page token); an incremental read filters SystemModstamp >= the cursor. Writes go through
sObject Collections: 200 records a call, one result per record in the order sent, upserts by an external-id field.
Salesforce answers errors as a list [{message, errorCode, fields}] and an exhausted limit with 403, not 429. Every
answer reports the org's 24-hour API usage (Sforce-Limit-Info); the connector stops short of the allocation so
that the customer's other integrations keep a reserve.

Salesforce has no signed webhooks of its own (Outbound Messages are SOAP, Change Data Capture goes through the
Pub/Sub API): the base's generic scheme serves a relay (a Flow calling out, middleware) that posts
{"type": "records.changed", "object": "Contact", "ids": [...]}.
"""

import json
import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal

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
    WriteAction,
    WriteResult,
)
from integrations.errors import ConnectorError, ErrorCategory
from integrations.redaction import scrub_text

OBJECTS = ("Contact", "Account", "Opportunity")
DEFAULT_API_VERSION = "v60.0"
DEFAULT_LOGIN_URL = "https://login.salesforce.com"
API_VERSION_PATTERN = re.compile(r"v\d+\.\d+")
MODIFIED_FIELD = "SystemModstamp"

# Sforce-Query-Options batchSize: Salesforce takes 200 to 2000 records a page.
MIN_QUERY_BATCH, MAX_QUERY_BATCH = 200, 2000
# Characters of values in one `IN (...)`: the query travels in a GET URL, which Salesforce cuts off at 16 KB.
MAX_IN_CLAUSE_LENGTH = 4000
RECORD_ID_PATTERN = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
# "api-usage=10018/100000; per-app-api-usage=17/250(appName=x)": the org's count, not the app's.
API_USAGE_PATTERN = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")

# The last share of the org's daily allocation is left to its other integrations. The allocation is a rolling
# 24-hour window, so usage falls back over hours: come back in one rather than wait in-process.
API_RESERVE_SHARE = 0.02
ALLOCATION_RETRY_AFTER = 3600
# "ConcurrentPerOrgLongTxn Limit exceeded": too many long requests at once, over within seconds.
CONCURRENCY_RETRY_AFTER = 30
STRING_TOO_LONG_PATTERN = re.compile(r"^(.+?): data value too large")

FIELD_TYPES = {
    "id": FieldType.STRING,
    "reference": FieldType.STRING,
    "string": FieldType.STRING,
    "picklist": FieldType.STRING,
    "multipicklist": FieldType.STRING,
    "combobox": FieldType.STRING,
    "encryptedstring": FieldType.STRING,
    "textarea": FieldType.TEXT,
    "email": FieldType.EMAIL,
    "phone": FieldType.PHONE,
    "url": FieldType.URL,
    "int": FieldType.INTEGER,
    "long": FieldType.INTEGER,
    "double": FieldType.NUMBER,
    "currency": FieldType.NUMBER,
    "percent": FieldType.NUMBER,
    "boolean": FieldType.BOOLEAN,
    "date": FieldType.DATE,
    "datetime": FieldType.DATETIME,
}
NUMBER_TYPES = {"int", "long", "double", "currency", "percent"}

# errorCode (whole answers) or statusCode (per record) -> category; retryability is the category's default.
ERROR_CODES = {
    "INVALID_SESSION_ID": ErrorCategory.AUTH,
    "REQUEST_LIMIT_EXCEEDED": ErrorCategory.RATE_LIMIT,
    "INSUFFICIENT_ACCESS_OR_READONLY": ErrorCategory.PERMISSION,
    "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY": ErrorCategory.PERMISSION,
    "API_DISABLED_FOR_ORG": ErrorCategory.PERMISSION,
    "REQUIRED_FIELD_MISSING": ErrorCategory.VALIDATION,
    "STRING_TOO_LONG": ErrorCategory.VALIDATION,
    "INVALID_EMAIL_ADDRESS": ErrorCategory.VALIDATION,
    "FIELD_CUSTOM_VALIDATION_EXCEPTION": ErrorCategory.VALIDATION,
    "INVALID_FIELD": ErrorCategory.VALIDATION,
    "DUPLICATE_VALUE": ErrorCategory.DUPLICATE,
    "DUPLICATES_DETECTED": ErrorCategory.DUPLICATE,
    "DUPLICATE_EXTERNAL_ID": ErrorCategory.DUPLICATE,
    "NOT_FOUND": ErrorCategory.NOT_FOUND,
    "ENTITY_IS_DELETED": ErrorCategory.NOT_FOUND,
    "UNKNOWN_EXCEPTION": ErrorCategory.UNKNOWN,
    # Another transaction held the record for 10 seconds: the same write goes through a moment later.
    "UNABLE_TO_LOCK_ROW": ErrorCategory.TIMEOUT,
}

# https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm
SOQL_ESCAPES = str.maketrans({
    "\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
})


class SalesforceConnector(HttpConnector):
    label = "Salesforce"
    config_fields = (
        BASE_URL_FIELD,
        SettingField("instance_url", "Instance URL", type="url", required=True,
                     placeholder="https://acme.my.salesforce.com",
                     help="Your org's address (My Domain). A refreshed token's own instance URL takes precedence."),
        SettingField("api_version", "API version", default=DEFAULT_API_VERSION, placeholder=DEFAULT_API_VERSION),
        SettingField("login_url", "Login URL", type="url", default=DEFAULT_LOGIN_URL,
                     help="Where tokens are refreshed: https://test.salesforce.com for a sandbox, or your My Domain."),
    )
    secret_fields = (
        SettingField("access_token", "Access token", required=True, secret=True, type="password"),
        SettingField("refresh_token", "Refresh token", secret=True, type="password"),
        SettingField("client_id", "Consumer key", secret=True, type="password"),
        SettingField("client_secret", "Consumer secret", secret=True, type="password"),
    )
    supports_incremental = True
    supports_fetch = True
    max_write_batch = 200  # sObject Collections
    token_url = "{login_url}/services/oauth2/token"
    check_path = ""

    def __init__(self, connection):
        super().__init__(connection)
        self._schemas = {}
        self._describes = {}  # object -> {field name: Salesforce's describe of it}, for types and external ids
        self._api_usage = None  # (used, allowed) as the last answer said

    @classmethod
    def validate_config(cls, config):
        problems = super().validate_config(config)
        version = (config or {}).get("api_version")
        if version not in (None, "") and not (isinstance(version, str) and API_VERSION_PATTERN.fullmatch(version)):
            problems["api_version"] = [f'API version must look like "{DEFAULT_API_VERSION}".']
        return problems

    # -- addresses and credentials ----------------------------------------------------------------------------------

    def instance_root(self):
        root = (self.config.get("base_url") or self.credentials().get("instance_url")
                or self.config.get("instance_url") or "")
        return root.rstrip("/")

    def base_url(self):
        return f"{self.instance_root()}/services/data/{self.config.get('api_version') or DEFAULT_API_VERSION}"

    def token_endpoint(self):
        return self.token_url.format(login_url=(self.config.get("login_url") or DEFAULT_LOGIN_URL).rstrip("/"))

    def token_credentials(self, body, credentials):
        # No expires_in: the token lives until a 401 says otherwise. The answer names the org's instance, which
        # wins over the configured one (an org moved to another instance keeps working).
        new = super().token_credentials(body, credentials)
        if isinstance(body.get("instance_url"), str) and body["instance_url"]:
            new["instance_url"] = body["instance_url"]
        return new

    # -- requests, limits and errors --------------------------------------------------------------------------------

    def request(self, method, path, **kwargs):
        self._stop_short_of_allocation()
        return super().request(method, path, **kwargs)

    def _stop_short_of_allocation(self):
        if self._api_usage is None:
            return
        used, allowed = self._api_usage
        reserve = math.ceil(allowed * API_RESERVE_SHARE)
        if used >= allowed - reserve:
            raise ConnectorError(
                ErrorCategory.RATE_LIMIT,
                f"The Salesforce org has used {used} of its {allowed} API calls of the last 24 hours; the last "
                f"{reserve} are left to its other integrations",
                code="api_allocation_reserve", retry_after=ALLOCATION_RETRY_AFTER,
            )

    def classify(self, response, *, secrets):
        match = API_USAGE_PATTERN.search(response.headers.get("Sforce-Limit-Info", ""))
        if match:
            self._api_usage = (int(match.group(1)), int(match.group(2)))
        if response.status_code == 300:
            # Only an upsert answers 300: its external id matches several records.
            return ConnectorError(ErrorCategory.DUPLICATE, "The external id matches several Salesforce records",
                                  code="MULTIPLE_CHOICES", detail=scrub_text(response.text[:2000], secrets))
        error = super().classify(response, secrets=secrets)
        if error is None:
            return None
        try:
            body = json.loads(response.content)
        except ValueError:
            return error
        if not (isinstance(body, list) and body and isinstance(body[0], dict)):
            return error
        return self.salesforce_error(body[0], default=error.category, default_retryable=error.retryable,
                                     detail=error.detail, secrets=secrets, retry_after=error.retry_after,
                                     may_have_applied=error.may_have_applied)

    def salesforce_error(self, entry, *, default, default_retryable=None, detail, secrets, retry_after=None,
                         may_have_applied=False):
        """The ConnectorError of one Salesforce error {errorCode or statusCode, message, fields}; a code not in
        ERROR_CODES keeps the default category (the status's, or validation for a record)."""
        code = str(entry.get("errorCode") or entry.get("statusCode") or "")
        message = scrub_text(str(entry.get("message") or "Salesforce refused the request"), secrets)
        category, retryable = (ERROR_CODES[code], None) if code in ERROR_CODES else (default, default_retryable)
        if category == ErrorCategory.RATE_LIMIT and retry_after is None:
            retry_after = CONCURRENCY_RETRY_AFTER if "concurrent" in message.lower() else ALLOCATION_RETRY_AFTER
        return ConnectorError(category, message[:500], code=code or category.value, detail=detail,
                              retryable=retryable, retry_after=retry_after, field=self._error_field(entry, message),
                              may_have_applied=may_have_applied)

    def _error_field(self, entry, message):
        fields = entry.get("fields")
        if isinstance(fields, list) and fields and isinstance(fields[0], str):
            return fields[0]
        # STRING_TOO_LONG may name the field only by its label: "Last Name: data value too large: ...".
        match = STRING_TOO_LONG_PATTERN.match(message)
        if not match:
            return ""
        label = match.group(1)
        names = [spec.name for schema in self._schemas.values() for spec in schema.fields.values()
                 if spec.label == label]
        return names[0] if names else label

    def check(self):
        try:
            super().check()
        except ConnectorError as exc:
            if exc.category != ErrorCategory.NOT_FOUND:
                raise
            raise ConnectorError(
                ErrorCategory.NOT_FOUND,
                f"No Salesforce REST API answers at {self.base_url()}: check the instance URL and the API version",
                code=exc.code, detail=exc.detail,
            ) from None

    # -- schema -----------------------------------------------------------------------------------------------------

    def list_objects(self):
        body = self.json(self.request("GET", "sobjects/"))
        offered = {item.get("name"): item for item in body.get("sobjects") or [] if isinstance(item, dict)}
        return [ObjectSummary(name, offered[name].get("label") or name)
                for name in OBJECTS if name in offered and offered[name].get("queryable", True)]

    def describe_object(self, object_name):
        if object_name not in OBJECTS:
            raise self.unknown_object(object_name)
        if object_name in self._schemas:
            return self._schemas[object_name]
        try:
            body = self.json(self.request("GET", f"sobjects/{object_name}/describe/"))
        except ConnectorError as exc:
            if exc.category == ErrorCategory.NOT_FOUND:
                raise self.unknown_object(object_name) from None
            raise
        # Compound (address, location) and binary fields have no single value to sync: left out.
        described = {field["name"]: field for field in body.get("fields") or []
                     if isinstance(field, dict) and field.get("name") and field.get("type") in FIELD_TYPES}
        fields = {"id": FieldSpec("id", read_only=True, unique=True, label="Record ID")}
        for name, field in described.items():
            if name == "Id":
                continue
            fields[name] = FieldSpec(
                name,
                type=FIELD_TYPES[field["type"]],
                required=not field.get("nillable", True) and bool(field.get("createable"))
                and not field.get("defaultedOnCreate"),
                max_length=field.get("length") or None,
                unique=bool(field.get("unique") or field.get("externalId")),
                read_only=not field.get("createable") and not field.get("updateable"),
                label=field.get("label") or name,
            )
        self._describes[object_name] = described
        self._schemas[object_name] = ObjectSchema(object_name, fields, label=body.get("label") or object_name)
        return self._schemas[object_name]

    def _described(self, object_name):
        self.describe_object(object_name)
        return self._describes[object_name]

    # -- reads ------------------------------------------------------------------------------------------------------

    def read_page(self, object_name, *, page_token=None, cursor=None, page_size=100):
        batch_size = min(max(page_size, MIN_QUERY_BATCH), MAX_QUERY_BATCH)
        if page_token:
            body = self._query(page_token=page_token, batch_size=batch_size)
        else:
            where = f" WHERE {MODIFIED_FIELD} >= {datetime_literal(cursor)}" if cursor else ""
            body = self._query(f"{self._select(object_name)}{where} ORDER BY {MODIFIED_FIELD}, Id",
                               batch_size=batch_size)
        records = [source_record(raw) for raw in body.get("records") or []]
        stamps = [record.modified_at for record in records if record.modified_at]
        next_token = None if body.get("done", True) else body.get("nextRecordsUrl") or None
        return Page(records, next_token, cursor=iso_datetime(max(stamps)) if stamps else None)

    def fetch(self, object_name, ids):
        # A malformed id cannot exist, and in the query it would fail the whole call.
        wanted = [i for i in dict.fromkeys(str(i) for i in ids) if RECORD_ID_PATTERN.fullmatch(i)]
        # A 15-character id is the case-sensitive start of the 18-character one Salesforce answers with.
        requested = {record_id[:15]: record_id for record_id in wanted}
        select, found = self._select(object_name), {}
        for values in in_clauses([soql_string(i) for i in wanted]):
            for raw in self._query_all(f"{select} WHERE Id IN ({values})"):
                record = source_record(raw)
                found[requested.get(record.id[:15], record.id)] = record
        return found

    def find(self, object_name, field, values):
        described = self._described(object_name)
        field = "Id" if field == "id" else field
        if field not in described:
            raise ConnectorError(ErrorCategory.MAPPING, f"{object_name} has no field '{field}'",
                                 code="field_not_found", field=field)
        field_type = described[field]["type"]
        wanted = {}  # the value as Salesforce compares it -> the values asked for
        for value in values:
            try:
                wanted.setdefault(comparable(value, field_type), []).append(value)
            except (TypeError, ValueError):
                continue  # no record can hold it (a word for a number field, an empty value)
        select, found = self._select(object_name), {}
        for literals in in_clauses([soql_literal(value) for value in wanted]):
            for raw in self._query_all(f"{select} WHERE {field} IN ({literals})"):
                # SOQL compares text case-insensitively; a match is exact.
                try:
                    key = comparable(raw.get(field), field_type)
                except (TypeError, ValueError):
                    continue
                for value in wanted.get(key, []):
                    found.setdefault(value, []).append(source_record(raw))
        return found

    def _select(self, object_name):
        names = ["Id", *(name for name in self._described(object_name) if name != "Id")]
        if MODIFIED_FIELD not in names:
            names.append(MODIFIED_FIELD)
        return f"SELECT {', '.join(names)} FROM {object_name}"

    def _query(self, soql=None, *, page_token=None, batch_size=MAX_QUERY_BATCH):
        headers = {"Sforce-Query-Options": f"batchSize={batch_size}"}
        if page_token is None:
            response = self.request("GET", "query", params={"q": soql}, headers=headers)
        elif isinstance(page_token, str) and page_token.startswith("/services/data/"):
            # The locator is a path on the org's instance: nothing in it can send the token elsewhere.
            response = self.request("GET", self.instance_root() + page_token, headers=headers)
        else:
            raise ConnectorError(ErrorCategory.VALIDATION, "The page token is not a Salesforce query locator",
                                 code="invalid_page_token", retryable=False)
        body = self.json(response)
        if not isinstance(body, dict):
            raise ConnectorError(ErrorCategory.UNKNOWN, "Salesforce answered a query with something else than "
                                 "a result", code="unexpected_answer")
        return body

    def _query_all(self, soql):
        body = self._query(soql)
        while True:
            yield from body.get("records") or []
            if body.get("done", True) or not body.get("nextRecordsUrl"):
                return
            body = self._query(page_token=body["nextRecordsUrl"])

    # -- writes -----------------------------------------------------------------------------------------------------

    def write(self, object_name, operations):
        if object_name not in OBJECTS:
            raise self.unknown_object(object_name)
        results, creates, updates, upserts = {}, [], [], {}
        for operation in operations:
            if operation.action == WriteAction.CREATE:
                creates.append(operation)
            elif operation.action == WriteAction.UPDATE and operation.target_id:
                updates.append(operation)
            elif operation.action == WriteAction.UPSERT and self._is_external_id(object_name, operation.match_field):
                upserts.setdefault(operation.match_field, []).append(operation)
            else:
                results[operation.ref] = WriteResult(operation.ref, ok=False, error=self._unwritable(operation))
        # Updates and upserts are safe to send again, creates are not: they go last, so that a call failing before
        # anything was carried out raises (and the whole batch is retried), while a later one fails only its own.
        calls = [("PATCH", "composite/sobjects", WriteAction.UPDATE, updates)]
        calls += [("PATCH", f"composite/sobjects/{object_name}/{field}", WriteAction.UPSERT, group)
                  for field, group in upserts.items()]
        calls.append(("POST", "composite/sobjects", WriteAction.CREATE, creates))
        sent = False
        for method, path, action, group in calls:
            if not group:
                continue
            try:
                answers = self._send_collection(method, path, object_name, action, group)
            except ConnectorError as exc:
                if not sent:
                    raise
                results.update((op.ref, WriteResult(op.ref, ok=False, target_id=op.target_id, error=exc))
                               for op in group)
                continue
            sent = True
            for index, operation in enumerate(group):
                answer = answers[index] if index < len(answers) and isinstance(answers[index], dict) else None
                results[operation.ref] = self._write_result(operation, action, answer)
        return [results[operation.ref] for operation in operations]

    def _is_external_id(self, object_name, field):
        return bool(field) and bool(self._described(object_name).get(field, {}).get("externalId"))

    def _unwritable(self, operation):
        if operation.action == WriteAction.UPDATE:
            return ConnectorError(ErrorCategory.MAPPING, "An update needs the Salesforce record's id",
                                  code="target_id_missing")
        if operation.action == WriteAction.UPSERT:
            return ConnectorError(
                ErrorCategory.MAPPING,
                f"Salesforce upserts only by an external-id field, and '{operation.match_field}' is not one",
                code="not_an_external_id", field=operation.match_field or "",
            )
        return ConnectorError(ErrorCategory.MAPPING, f"Unknown write action '{operation.action}'",
                              code="unknown_action")

    def _send_collection(self, method, path, object_name, action, operations):
        records = []
        for operation in operations:
            record = {key: value for key, value in operation.data.items() if key not in ("attributes", "id", "Id")}
            record["attributes"] = {"type": object_name}
            if action == WriteAction.UPDATE:
                record["id"] = operation.target_id
            records.append(record)
        # An update or an upsert sets fields: sending it twice changes nothing. A create is not sent twice blindly.
        response = self.request(method, path, json={"allOrNone": False, "records": records},
                                idempotent=True if action != WriteAction.CREATE else None)
        answers = self.json(response)
        if not isinstance(answers, list):
            raise ConnectorError(ErrorCategory.UNKNOWN, "Salesforce answered a batch write without a result "
                                 "per record", code="unexpected_answer", may_have_applied=True)
        return answers

    def _write_result(self, operation, action, answer):
        if answer is None:
            error = ConnectorError(ErrorCategory.UNKNOWN, "Salesforce did not report on this record",
                                   code="missing_result", may_have_applied=True)
            return WriteResult(operation.ref, ok=False, target_id=operation.target_id, error=error)
        if answer.get("success"):
            if action == WriteAction.UPSERT:
                action = WriteAction.CREATE if answer.get("created") else WriteAction.UPDATE
            return WriteResult(operation.ref, ok=True, target_id=answer.get("id") or operation.target_id,
                               action=action)
        errors = [entry for entry in answer.get("errors") or [] if isinstance(entry, dict)] or [{}]
        detail = scrub_text(json.dumps(errors)[:2000], self.secrets())
        # A record's error with a code this table does not know is about its data: retrying it unchanged is futile.
        error = self.salesforce_error(errors[0], default=ErrorCategory.VALIDATION, detail=detail,
                                      secrets=self.secrets())
        return WriteResult(operation.ref, ok=False, target_id=operation.target_id, error=error)


# -- SOQL and record shapes --------------------------------------------------------------------------------------


def source_record(raw):
    data = {key: value for key, value in raw.items() if key not in ("attributes", "Id")}
    return SourceRecord(id=str(raw["Id"]), data=data, modified_at=parse_datetime(raw.get(MODIFIED_FIELD)))


def parse_datetime(value):
    """An aware datetime from Salesforce's "2024-01-15T10:30:00.000+0000" (or any ISO 8601), else None."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso_datetime(moment):
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def datetime_literal(cursor):
    """The cursor as a SOQL dateTime literal (unquoted, whole seconds in UTC as SOQL documents them).

    Cutting the milliseconds off only moves the inclusive bound earlier: nothing is skipped. Parsing the cursor
    first means nothing but a timestamp ever reaches the query.
    """
    moment = parse_datetime(cursor)
    if moment is None:
        raise ConnectorError(ErrorCategory.VALIDATION, f"The cursor {str(cursor)[:100]!r} is not a timestamp",
                             code="invalid_cursor", retryable=False)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def soql_string(value):
    return "'" + str(value).translate(SOQL_ESCAPES) + "'"


def comparable(value, field_type):
    """A value as Salesforce compares it in a field of this type; ValueError when no record can hold it."""
    if value is None or value == "":
        raise ValueError("empty")
    if field_type == "boolean":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise ValueError("not a boolean")
    if field_type in NUMBER_TYPES:
        if isinstance(value, bool):
            raise ValueError("not a number")
        try:
            number = Decimal(str(value))
        except ArithmeticError:
            raise ValueError("not a number") from None
        if not number.is_finite():
            raise ValueError("not a number")
        return number.normalize()
    if field_type == "date":
        return date.fromisoformat(str(value)[:10])
    if field_type == "datetime":
        moment = parse_datetime(value)
        if moment is None:
            raise ValueError("not a timestamp")
        return moment.astimezone(UTC)
    return str(value)


def soql_literal(value):
    """A comparable value written in SOQL: text quoted and escaped, everything else bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return soql_string(value)


def in_clauses(literals):
    """The literals joined for `IN (...)`, in as many groups as keep each query's URL short."""
    group, length = [], 0
    for literal in literals:
        if group and length + len(literal) > MAX_IN_CLAUSE_LENGTH:
            yield ", ".join(group)
            group, length = [], 0
        group.append(literal)
        length += len(literal) + 2
    if group:
        yield ", ".join(group)
