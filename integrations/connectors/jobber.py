"""Jobber: clients and jobs through Jobber's GraphQL API (developer.getjobber.com).

Every call is a POST to /api/graphql with an OAuth2 bearer token (a JWT that lasts 60 minutes; refresh tokens
rotate, so the new one is stored at once) and the X-JOBBER-GRAPHQL-VERSION header. Jobber has no describe call,
no batch endpoint that answers per record and no upsert: the schema below is declared, and a write sends up to
`max_write_batch` mutations in one document under aliases (w0, w1, ...). Answers are mostly HTTP 200 with GraphQL
`errors` or per-mutation `userErrors`. The query-cost bucket that every answer reports (extensions.cost) is
respected before the next request. Webhooks carry ids only, signed with the app's client secret.
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
from datetime import UTC, datetime, timedelta

from integrations.connectors.base import (
    BASE_URL_FIELD,
    FieldSpec,
    FieldType,
    GraphQLConnector,
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

DEFAULT_API_VERSION = "2025-01-20"
API_VERSION_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Jobber's request limit is Rack::Attack's: 2,500 requests per 300 s per app and account, counted in fixed windows
# aligned on multiples of 300 s since the epoch. A 429 without Retry-After lifts when the current window ends.
REQUEST_WINDOW_SECONDS = 300
# The updatedAt filter only has "after", which may be strict: an incremental read starts this much before the
# cursor, so a record sharing the cursor's timestamp is read again (the engine's hash drops it), never skipped.
CURSOR_OVERLAP = timedelta(seconds=1)
# Records fetched by id in one query (one alias each).
FETCH_CHUNK = 50
WEBHOOK_SIGNATURE_HEADER = "x-jobber-hmac-sha256"
# How an error of one aliased field says its record does not exist (not "doesn't exist on type", a schema error).
NOT_FOUND_MESSAGE = re.compile(r"not found|could(?: not|n't) find", re.IGNORECASE)
# jobCreate requires invoicing settings; these are what Jobber's own "new job" form starts with.
DEFAULT_JOB_INVOICING = {"invoicingType": "FIXED_PRICE", "invoicingSchedule": "ON_COMPLETION"}

CLIENT_SELECTION = (
    "id firstName lastName companyName isCompany isLead isArchived jobberWebUri createdAt updatedAt "
    "emails { id address primary } phones { id number primary }"
)
JOB_SELECTION = (
    "id jobNumber title instructions jobStatus startAt endAt total jobberWebUri createdAt updatedAt "
    "client { id } property { id }"
)


@dataclasses.dataclass(frozen=True)
class JobberObject:
    """How one Jobber object is read and written: its declared fields and the GraphQL names around it."""

    name: str
    label: str
    fields: tuple[FieldSpec, ...]
    collection: str  # the paged query field: clients(first:, after:, ...)
    single: str  # the query field of one record by id, and the record's key in a mutation payload
    selection: str
    filters_updated_at: bool  # whether the collection takes filter: {updatedAt: {after: ...}}
    create: str
    create_input_type: str
    edit: str
    edit_id_argument: str
    edit_input_type: str

    def schema(self):
        return ObjectSchema(self.name, {field.name: field for field in self.fields}, label=self.label)


CLIENTS = JobberObject(
    name="clients",
    label="Clients",
    fields=(
        FieldSpec("id", read_only=True, unique=True, label="Jobber id"),
        FieldSpec("firstName", label="First name"),
        FieldSpec("lastName", label="Last name"),
        FieldSpec("companyName", label="Company name"),
        FieldSpec("isCompany", FieldType.BOOLEAN, label="Company name is the primary name"),
        FieldSpec("email", FieldType.EMAIL, label="Email (primary)"),
        FieldSpec("phone", FieldType.PHONE, label="Phone (primary)"),
        FieldSpec("isLead", FieldType.BOOLEAN, read_only=True, label="Lead"),
        FieldSpec("isArchived", FieldType.BOOLEAN, read_only=True, label="Archived"),
        FieldSpec("jobberWebUri", FieldType.URL, read_only=True, label="Jobber link"),
        FieldSpec("createdAt", FieldType.DATETIME, read_only=True, label="Created at"),
        FieldSpec("updatedAt", FieldType.DATETIME, read_only=True, label="Updated at"),
    ),
    collection="clients",
    single="client",
    selection=CLIENT_SELECTION,
    filters_updated_at=True,
    create="clientCreate",
    create_input_type="ClientCreateInput!",
    edit="clientEdit",
    edit_id_argument="clientId",
    edit_input_type="ClientEditInput!",
)

JOBS = JobberObject(
    name="jobs",
    label="Jobs",
    fields=(
        FieldSpec("id", read_only=True, unique=True, label="Jobber id"),
        FieldSpec("title", label="Title"),
        FieldSpec("instructions", FieldType.TEXT, label="Instructions"),
        # A job belongs to a property of a client: jobCreate takes the property, and the client follows from it.
        FieldSpec("propertyId", required=True, label="Property id (set when the job is created)"),
        FieldSpec("clientId", read_only=True, label="Client id"),
        FieldSpec("jobNumber", FieldType.INTEGER, read_only=True, unique=True, label="Job number"),
        FieldSpec("jobStatus", read_only=True, label="Status"),
        # Scheduling is written through visits and a date-only timeframe, not these two: read-only here.
        FieldSpec("startAt", FieldType.DATETIME, read_only=True, label="Starts at"),
        FieldSpec("endAt", FieldType.DATETIME, read_only=True, label="Ends at"),
        FieldSpec("total", FieldType.NUMBER, read_only=True, label="Total"),
        FieldSpec("jobberWebUri", FieldType.URL, read_only=True, label="Jobber link"),
        FieldSpec("createdAt", FieldType.DATETIME, read_only=True, label="Created at"),
        FieldSpec("updatedAt", FieldType.DATETIME, read_only=True, label="Updated at"),
    ),
    collection="jobs",
    single="job",
    selection=JOB_SELECTION,
    # JobFilterAttributes has createdAt, startAt, endAt... but no updatedAt: jobs are filtered on this side.
    filters_updated_at=False,
    create="jobCreate",
    create_input_type="JobCreateAttributes!",
    edit="jobEdit",
    edit_id_argument="jobId",
    edit_input_type="JobEditInput!",
)

OBJECTS = {spec.name: spec for spec in (CLIENTS, JOBS)}
# Webhook topics are OBJECT_ACTION; the object part names what to re-fetch.
TOPIC_OBJECTS = {"CLIENT": "clients", "JOB": "jobs"}


class JobberConnector(GraphQLConnector):
    label = "Jobber"
    config_fields = (
        BASE_URL_FIELD,
        SettingField(
            "api_version", "API version", default=DEFAULT_API_VERSION, placeholder=DEFAULT_API_VERSION,
            help="The X-JOBBER-GRAPHQL-VERSION to ask for (YYYY-MM-DD).",
        ),
        SettingField(
            "account_id", "Jobber account id",
            help="Optional. Jobber sends an app's webhooks for every account that installed it: with this set, "
                 "deliveries for other accounts are ignored.",
        ),
    )
    secret_fields = (
        SettingField("access_token", "Access token", type="password", required=True, secret=True),
        SettingField("refresh_token", "Refresh token", type="password", secret=True,
                     help="Rotates on every refresh; Resync stores the new one."),
        SettingField("client_id", "App client id", type="password", secret=True),
        SettingField("client_secret", "App client secret", type="password", secret=True,
                     help="Also the key Jobber signs its webhooks with."),
    )
    supports_incremental = True
    supports_fetch = True
    max_write_batch = 10

    default_base_url = "https://api.getjobber.com"
    graphql_path = "/api/graphql"
    token_path = "/api/oauth/token"
    token_url = default_base_url + token_path

    def __init__(self, connection):
        super().__init__(connection)
        self.sleep = time.sleep
        self.clock = time.monotonic
        # The last query-cost bucket Jobber reported: (currentlyAvailable, restoreRate, maximumAvailable, when).
        self._bucket = None
        # What each query (by text and page size) asked of the bucket last time: the expected cost of the next.
        self._query_costs = {}

    @classmethod
    def validate_config(cls, config):
        problems = super().validate_config(config)
        version = (config or {}).get("api_version")
        if version and isinstance(version, str) and not API_VERSION_PATTERN.match(version):
            problems.setdefault("api_version", []).append("API version must be a date such as 2025-01-20.")
        return problems

    # -- HTTP and GraphQL ---------------------------------------------------------------------------------------

    def default_headers(self):
        version = self.config.get("api_version") or DEFAULT_API_VERSION
        return {**super().default_headers(), "X-JOBBER-GRAPHQL-VERSION": version}

    def credentials(self):
        credentials = super().credentials()
        if not credentials.get("expires_at"):
            # A pasted token comes without an expiry; the JWT says when it ends, so it is refreshed ahead of a 401.
            expiry = jwt_expiry(credentials.get("access_token"))
            if expiry:
                credentials["expires_at"] = expiry
        return credentials

    def token_endpoint(self):
        # The token endpoint lives on the API host: a configured base URL (a proxy, a stand-in) serves both.
        return self.url(self.token_path)

    def token_credentials(self, body, credentials):
        new = super().token_credentials(body, credentials)
        if "expires_at" not in new:
            expiry = jwt_expiry(new["access_token"])
            if expiry:
                new["expires_at"] = expiry
        return new

    def classify(self, response, *, secrets):
        error = super().classify(response, secrets=secrets)
        if error is not None and error.category == ErrorCategory.RATE_LIMIT and error.retry_after is None:
            error.retry_after = REQUEST_WINDOW_SECONDS - int(time.time()) % REQUEST_WINDOW_SECONDS
        return error

    def graphql(self, query, variables=None, *, mutation=False):
        body = self.graphql_body(query, variables, mutation=mutation)
        if body.get("errors"):
            raise self.graphql_error(body["errors"], body)
        return body.get("data") or {}

    def graphql_body(self, query, variables=None, *, mutation=False):
        """The whole answer (data, errors, extensions), after waiting for the cost bucket to hold the query."""
        variables = variables or {}
        cost_key = (query, variables.get("first"))
        self.wait_for_query_budget(cost_key)
        response = self.request("POST", self.graphql_path, json={"query": query, "variables": variables},
                                idempotent=not mutation)
        body = self.json(response)
        if not isinstance(body, dict):
            raise ConnectorError(ErrorCategory.UNKNOWN, "Jobber answered JSON that is not an object",
                                 code="unparseable_answer")
        self.remember_query_cost(cost_key, body)
        return body

    def graphql_error(self, errors, body):
        # The base puts the first message in the error as it came: Jobber's messages may echo what was sent.
        errors = [
            {**error, "message": scrub_text(str(error["message"]), self.secrets())}
            if isinstance(error, dict) and error.get("message") else error
            for error in (errors if isinstance(errors, list) else [errors])
        ]
        first = errors[0] if errors and isinstance(errors[0], dict) else {}
        code = str((first.get("extensions") or {}).get("code") or "")
        cost = (body.get("extensions") or {}).get("cost") or {}
        maximum = (cost.get("throttleStatus") or {}).get("maximumAvailable")
        requested = cost.get("requestedQueryCost")
        if code == "THROTTLED" and _number(requested) and _number(maximum) and requested > maximum:
            # Waiting never lets this one through: the bucket is never fuller than maximumAvailable.
            return ConnectorError(
                ErrorCategory.UNKNOWN, f"The query costs {requested} points, more than Jobber's {maximum}",
                code="query_too_expensive", detail=scrub_text(json.dumps(errors)[:2000], self.secrets()),
                retryable=False,
            )
        return super().graphql_error(errors, body)

    def field_error(self, spec, error, body, record_id):
        """The error of one aliased field (path [alias, ...]): a record Jobber cannot find is not_found."""
        if NOT_FOUND_MESSAGE.search(str(error.get("message") or "")):
            return not_found(spec, record_id)
        return self.graphql_error([error], body)

    # -- the query-cost bucket ----------------------------------------------------------------------------------

    def remember_query_cost(self, cost_key, body):
        cost = (body.get("extensions") or {}).get("cost")
        if not isinstance(cost, dict):
            return
        status = cost.get("throttleStatus") or {}
        available, rate, maximum = (status.get(key) for key in ("currentlyAvailable", "restoreRate",
                                                                 "maximumAvailable"))
        if _number(available) and _number(rate):
            self._bucket = (float(available), float(rate), float(maximum) if _number(maximum) else None,
                            self.clock())
        if _number(cost.get("requestedQueryCost")):
            self._query_costs[cost_key] = float(cost["requestedQueryCost"])

    def wait_for_query_budget(self, cost_key):
        """Sleep until the bucket, refilling at restoreRate since the last answer, holds what this query cost last
        time: Jobber would refuse it (THROTTLED) otherwise."""
        expected = self._query_costs.get(cost_key)
        if expected is None or self._bucket is None:
            return
        available, rate, maximum, seen_at = self._bucket
        if rate <= 0 or (maximum is not None and expected > maximum):
            return
        available += rate * max(0.0, self.clock() - seen_at)
        if maximum is not None:
            available = min(available, maximum)
        if expected > available:
            self.sleep(math.ceil((expected - available) / rate))

    # -- the contract -------------------------------------------------------------------------------------------

    def check(self):
        self.graphql("query Check { account { id name } }")

    def list_objects(self):
        return [ObjectSummary(spec.name, spec.label) for spec in OBJECTS.values()]

    def describe_object(self, object_name):
        return self.object_spec(object_name).schema()

    def object_spec(self, object_name):
        try:
            return OBJECTS[object_name]
        except KeyError:
            raise self.unknown_object(object_name) from None

    def read_page(self, object_name, *, page_token=None, cursor=None, page_size=100):
        spec = self.object_spec(object_name)
        since = parse_cursor(cursor)
        first = max(1, int(page_size))
        while True:
            try:
                connection = self.read_connection(spec, after=page_token, since=since, first=first)
                break
            except ConnectorError as exc:
                if exc.code != "query_too_expensive" or first == 1:
                    raise
                first //= 2  # the page costs more than the whole bucket: ask for fewer records at a time
        records = [record_from(spec, node) for node in connection.get("nodes") or [] if _has_id(node)]
        if since is not None and not spec.filters_updated_at:
            records = [record for record in records if record.modified_at and record.modified_at >= since]
        page_info = connection.get("pageInfo") or {}
        next_token = page_info.get("endCursor") if page_info.get("hasNextPage") else None
        # Pages come sorted by updatedAt, so the last page's largest updatedAt is where a later read resumes.
        modified = [record.modified_at for record in records if record.modified_at]
        return Page(records=records, next_token=next_token or None,
                    cursor=max(modified).isoformat() if modified else None)

    def read_connection(self, spec, *, after, since, first):
        variables = {"first": first, "after": after}
        filter_declaration = filter_argument = ""
        if spec.filters_updated_at:
            filter_declaration, filter_argument = ", $filter: ClientFilterAttributes", ", filter: $filter"
            if since is not None:
                variables["filter"] = {"updatedAt": {"after": iso(since - CURSOR_OVERLAP)}}
        query = (
            f"query Read($first: Int!, $after: String{filter_declaration}) {{ "
            f"{spec.collection}(first: $first, after: $after{filter_argument}, "
            f"sort: {{key: UPDATED_AT, direction: ASCENDING}}) {{ "
            f"nodes {{ {spec.selection} }} pageInfo {{ endCursor hasNextPage }} }} }}"
        )
        connection = self.graphql(query, variables).get(spec.collection)
        return connection if isinstance(connection, dict) else {}

    def fetch(self, object_name, ids):
        spec = self.object_spec(object_name)
        return {record_id: record_from(spec, node) for record_id, node in self.nodes_by_id(spec, ids).items()}

    def nodes_by_id(self, spec, ids):
        """{id: node} for the ids that exist, one aliased query per chunk; an id Jobber does not know is absent
        (its field answers null)."""
        ids = list(dict.fromkeys(str(record_id) for record_id in ids))
        found = {}
        for start in range(0, len(ids), FETCH_CHUNK):
            chunk = {f"r{i}": record_id for i, record_id in enumerate(ids[start:start + FETCH_CHUNK])}
            declarations = ", ".join(f"${alias}: EncodedId!" for alias in chunk)
            fields = " ".join(f"{alias}: {spec.single}(id: ${alias}) {{ {spec.selection} }}" for alias in chunk)
            body = self.graphql_body(f"query Fetch({declarations}) {{ {fields} }}", chunk)
            for error in body.get("errors") or []:
                record_id = chunk.get(error_alias(error))
                failure = (self.field_error(spec, error, body, record_id) if record_id
                           else self.graphql_error([error], body))
                if failure.category != ErrorCategory.NOT_FOUND:
                    raise failure
            data = body.get("data") or {}
            found.update({record_id: data[alias] for alias, record_id in chunk.items() if _has_id(data.get(alias))})
        return found

    def find(self, object_name, field, values):
        spec = self.object_spec(object_name)
        if field == "id":
            fetched = self.fetch(object_name, [value for value in values if value not in (None, "")])
            return {value: [fetched[str(value)]] for value in values if str(value) in fetched}
        if field not in spec.schema().fields:
            raise ConnectorError(ErrorCategory.MAPPING, f"{spec.label} have no field '{field}'",
                                 code="field_not_found", field=field)
        query = (
            f"query Find($term: String!, $first: Int!, $after: String) {{ "
            f"{spec.collection}(searchTerm: $term, first: $first, after: $after) {{ "
            f"nodes {{ {spec.selection} }} pageInfo {{ endCursor hasNextPage }} }} }}"
        )
        found = {}
        for value in values:
            if value in (None, ""):
                continue
            after, matches = None, []
            while True:  # searchTerm matches loosely (names, emails, phones...): keep the exact matches only
                connection = self.graphql(query, {"term": str(value), "first": 100, "after": after}).get(
                    spec.collection) or {}
                for node in connection.get("nodes") or []:
                    if _has_id(node):
                        record = record_from(spec, node)
                        if same_value(field, record.data.get(field), value):
                            matches.append(record)
                page_info = connection.get("pageInfo") or {}
                if not (page_info.get("hasNextPage") and page_info.get("endCursor")):
                    break
                after = page_info["endCursor"]
            if matches:
                found[value] = matches
        return found

    # -- writes -------------------------------------------------------------------------------------------------

    def write(self, object_name, operations):
        spec = self.object_spec(object_name)
        results = [None] * len(operations)
        contact_updates = [
            op.target_id for op in operations
            if spec is CLIENTS and op.action == WriteAction.UPDATE and op.target_id
            and ("email" in op.data or "phone" in op.data)
        ]
        # Emails and phones are edited by their own ids: read the current ones first.
        current = self.nodes_by_id(spec, contact_updates) if contact_updates else {}
        planned = []  # (index, operation, input)
        for index, operation in enumerate(operations):
            try:
                planned.append((index, operation, self.mutation_input(spec, operation, current)))
            except ConnectorError as exc:
                results[index] = WriteResult(ref=operation.ref, ok=False, action=operation.action, error=exc)
        if planned:
            for index, result in self.send_mutations(spec, planned):
                results[index] = result
        return results

    def mutation_input(self, spec, operation, current):
        """The input of one operation's mutation, or a ConnectorError (per record) when it cannot be sent."""
        if operation.action == WriteAction.CREATE:
            if spec is CLIENTS:
                return client_create_input(operation.data)
            if not operation.data.get("propertyId"):
                raise ConnectorError(ErrorCategory.VALIDATION, "A job is created on a property: propertyId is "
                                     "required", code="required", field="propertyId")
            return job_create_input(operation.data)
        if operation.action == WriteAction.UPDATE:
            if not operation.target_id:
                raise ConnectorError(ErrorCategory.VALIDATION, "An update needs the id of the Jobber record",
                                     code="target_id_missing")
            if spec is JOBS:
                return job_edit_input(operation.data)
            if ("email" in operation.data or "phone" in operation.data) and operation.target_id not in current:
                raise not_found(spec, operation.target_id)
            return client_edit_input(operation.data, current.get(operation.target_id) or {})
        raise ConnectorError(ErrorCategory.VALIDATION, f"Jobber has no {operation.action} for {spec.label.lower()}: "
                             "find the record and update it instead", code="action_unsupported")

    def send_mutations(self, spec, planned):
        """One mutation document for every planned operation; (index, WriteResult) for each."""
        declarations, fields, variables = [], [], {}
        for index, operation, mutation_input in planned:
            declarations.append(f"$input{index}: "
                                + (spec.create_input_type if operation.action == WriteAction.CREATE
                                   else spec.edit_input_type))
            variables[f"input{index}"] = mutation_input
            answer = f"{{ {spec.single} {{ {spec.selection} }} userErrors {{ message path }} }}"
            if operation.action == WriteAction.CREATE:
                fields.append(f"w{index}: {spec.create}(input: $input{index}) {answer}")
            else:
                declarations.append(f"$id{index}: EncodedId!")
                variables[f"id{index}"] = operation.target_id
                fields.append(f"w{index}: {spec.edit}({spec.edit_id_argument}: $id{index}, input: $input{index}) "
                              f"{answer}")
        # A create, or an email or phone added, is a new copy when sent twice; setting fields is not.
        repeatable = all(
            operation.action == WriteAction.UPDATE and not any(key.endswith("ToAdd") for key in mutation_input)
            for _index, operation, mutation_input in planned
        )
        body = self.graphql_body(f"mutation Write({', '.join(declarations)}) {{ {' '.join(fields)} }}", variables,
                                 mutation=not repeatable)
        data = body.get("data") or {}
        aliases = {f"w{index}" for index, _operation, _input in planned}
        by_alias, general = {}, []
        for error in body.get("errors") or []:
            alias = error_alias(error)
            if alias in aliases:
                by_alias.setdefault(alias, error)
            else:
                general.append(error)
        if general and not any(isinstance(data.get(alias), dict) for alias in aliases):
            raise self.graphql_error(general, body)
        return [
            (index, self.write_result(spec, operation, data.get(f"w{index}"), by_alias.get(f"w{index}"), general,
                                      body))
            for index, operation, _input in planned
        ]

    def write_result(self, spec, operation, payload, error, general, body):
        def failed(exc):
            return WriteResult(ref=operation.ref, ok=False, target_id=operation.target_id, action=operation.action,
                               error=exc)

        if error is not None:
            return failed(self.field_error(spec, error, body, operation.target_id))
        if not isinstance(payload, dict):
            if general:
                return failed(self.graphql_error(general, body))
            if operation.action == WriteAction.UPDATE:
                return failed(not_found(spec, operation.target_id))  # the nullable field came back null
            return failed(ConnectorError(ErrorCategory.UNKNOWN, f"Jobber answered nothing for this {spec.single}",
                                         code="missing_answer", retryable=False))
        user_errors = [item for item in payload.get("userErrors") or [] if isinstance(item, dict)]
        if user_errors:
            return failed(self.user_error(spec, operation, user_errors))
        node = payload.get(spec.single)
        if not _has_id(node):
            if operation.action == WriteAction.UPDATE:
                return failed(not_found(spec, operation.target_id))
            return failed(ConnectorError(ErrorCategory.UNKNOWN, f"Jobber created no {spec.single} and said nothing "
                                         "about it", code="missing_record", retryable=False))
        record = record_from(spec, node)
        return WriteResult(ref=operation.ref, ok=True, target_id=record.id, action=operation.action,
                           record=record.data)

    def user_error(self, spec, operation, user_errors):
        """A mutation's userErrors as one per-record error: the first one's field, every message."""
        message = "; ".join(str(item.get("message") or "").strip() for item in user_errors).strip("; ")
        message = scrub_text(message, self.secrets()) or f"Jobber refused this {spec.single}"
        path = [part for part in user_errors[0].get("path") or [] if isinstance(part, str)]
        field = field_from_path(spec, path)
        lowered = message.lower()
        detail = scrub_text(json.dumps(user_errors)[:2000], self.secrets())
        if operation.action == WriteAction.UPDATE and "not found" in lowered and field in ("", spec.edit_id_argument):
            return ConnectorError(ErrorCategory.NOT_FOUND, message, code="not_found", detail=detail)
        if "already" in lowered or "duplicate" in lowered or "taken" in lowered:
            return ConnectorError(ErrorCategory.DUPLICATE, message, code="duplicate", detail=detail, field=field)
        return ConnectorError(ErrorCategory.VALIDATION, message, code="user_error", detail=detail, field=field)

    # -- webhooks -----------------------------------------------------------------------------------------------

    def verify_webhook(self, *, secrets, method, url, headers, raw_body, now):
        # Jobber signs the body alone and sends no timestamp, so there is no age to check: a replayed delivery
        # verifies, and it is its event id (topic, item, occurredAt) that makes it a duplicate.
        signature = headers.get(WEBHOOK_SIGNATURE_HEADER, "").strip()
        if not signature:
            raise WebhookSignatureError("The X-Jobber-Hmac-SHA256 header is required", code="signature_missing")
        expected = [
            base64.b64encode(hmac.new(secret.encode(), raw_body, hashlib.sha256).digest())
            for secret in secrets if secret
        ]
        # Every secret is compared, match or not, so timing does not tell which one matched.
        matches = [hmac.compare_digest(signature.encode(), value) for value in expected]
        if not any(matches):
            raise WebhookSignatureError("The signature matches no secret of this endpoint", code="signature_invalid")

    def webhook_event_id(self, *, headers, payload):
        event = webhook_event(payload)
        if not event.get("occurredAt"):
            raise WebhookPayloadError("The event has no occurredAt", code="event_id_missing")
        return f"{event['topic']}:{event['itemId']}:{event['occurredAt']}"

    def parse_webhook(self, payload, *, headers=None):
        event = webhook_event(payload)
        account_id = self.config.get("account_id")
        if account_id and event.get("accountId") and str(event["accountId"]) != str(account_id):
            return []
        object_name = TOPIC_OBJECTS.get(event["topic"].split("_", 1)[0])
        if object_name is None:  # APP_DISCONNECT, quotes, invoices...: nothing Resync syncs
            return []
        return [WebhookChange(object_name=object_name, record_ids=[str(event["itemId"])])]


# --- records --------------------------------------------------------------------------------------------------


def record_from(spec, node):
    """A SourceRecord from a Jobber node: emails and phones become the primary one, nested ids become flat."""
    data = {key: value for key, value in node.items() if key not in ("id", "emails", "phones", "client", "property")}
    if spec is CLIENTS:
        data["email"] = primary_value(node.get("emails"), "address")
        data["phone"] = primary_value(node.get("phones"), "number")
    else:
        data["clientId"] = (node.get("client") or {}).get("id")
        data["propertyId"] = (node.get("property") or {}).get("id")
    return SourceRecord(id=str(node["id"]), data=data, modified_at=parse_time(node.get("updatedAt")))


def primary_entry(entries):
    entries = [entry for entry in entries or [] if isinstance(entry, dict)]
    return next((entry for entry in entries if entry.get("primary")), entries[0] if entries else None)


def primary_value(entries, key):
    entry = primary_entry(entries)
    return entry.get(key) if entry else None


def client_create_input(data):
    attributes = {key: data[key] for key in ("firstName", "lastName", "companyName", "isCompany") if key in data}
    if data.get("email"):
        attributes["emails"] = [{"address": data["email"], "primary": True}]
    if data.get("phone"):
        attributes["phones"] = [{"number": data["phone"], "primary": True}]
    return attributes


def client_edit_input(data, current):
    attributes = {key: data[key] for key in ("firstName", "lastName", "companyName", "isCompany") if key in data}
    if "email" in data:
        attributes.update(contact_edit("emails", "address", primary_entry(current.get("emails")), data["email"]))
    if "phone" in data:
        attributes.update(contact_edit("phones", "number", primary_entry(current.get("phones")), data["phone"]))
    return attributes


def contact_edit(kind, key, primary, value):
    """The ClientEditInput keys that make `value` the primary email or phone: edit it, add it, or delete it."""
    if value in (None, ""):
        return {f"{kind}ToDelete": [primary["id"]]} if primary and primary.get("id") else {}
    if primary and primary.get("id"):
        return {} if primary.get(key) == value else {f"{kind}ToEdit": [{"id": primary["id"], key: value}]}
    return {f"{kind}ToAdd": [{key: value, "primary": True}]}


def job_create_input(data):
    attributes = {key: data[key] for key in ("title", "instructions") if key in data}
    return {**attributes, "propertyId": data["propertyId"], "invoicing": dict(DEFAULT_JOB_INVOICING)}


def job_edit_input(data):
    return {key: data[key] for key in ("title", "instructions") if key in data}


def field_from_path(spec, path):
    """Our field for a userError's path (["input", "emails", 0, "address"] is "email")."""
    for part in path:
        if part.startswith("email"):
            return "email"
        if part.startswith("phone"):
            return "phone"
    names = [part for part in path if part not in ("input", "attributes", spec.create, spec.edit)
             and not re.fullmatch(r"w\d+", part)]
    return names[-1] if names else ""


def error_alias(error):
    """The alias a GraphQL error's path starts at (w0, r1...), or None for an error of the whole document."""
    path = error.get("path") if isinstance(error, dict) else None
    return path[0] if isinstance(path, list) and path and isinstance(path[0], str) else None


def not_found(spec, record_id):
    return ConnectorError(ErrorCategory.NOT_FOUND, f"Jobber has no {spec.single} {record_id}", code="not_found")


def same_value(field, stored, wanted):
    if stored is None:
        return False
    if field == "email":  # email addresses compare without case
        return str(stored).strip().casefold() == str(wanted).strip().casefold()
    return str(stored) == str(wanted)


# --- values ---------------------------------------------------------------------------------------------------


def parse_time(value):
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_cursor(cursor):
    if cursor in (None, ""):
        return None
    parsed = parse_time(cursor)
    if parsed is None:
        raise ConnectorError(ErrorCategory.UNKNOWN, f"The cursor {cursor!r} is not an ISO 8601 time",
                             code="invalid_cursor", retryable=False)
    return parsed


def iso(moment):
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def jwt_expiry(token):
    """The exp claim (unix seconds) of a JWT, read without checking its signature: it only schedules a refresh."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    expiry = claims.get("exp") if isinstance(claims, dict) else None
    return int(expiry) if _number(expiry) else None


def webhook_event(payload):
    """data.webHookEvent of a delivery, checked: a topic and an item id at least."""
    event = ((payload.get("data") or {}) if isinstance(payload, dict) else {})
    event = event.get("webHookEvent") if isinstance(event, dict) else None
    if not isinstance(event, dict):
        raise WebhookPayloadError('The payload must be {"data": {"webHookEvent": {...}}}')
    if not isinstance(event.get("topic"), str) or not event["topic"]:
        raise WebhookPayloadError("The event has no topic")
    item_id = event.get("itemId")
    if isinstance(item_id, bool) or not isinstance(item_id, str | int) or item_id == "":
        raise WebhookPayloadError("The event has no itemId")
    return event


def _number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


def _has_id(node):
    return isinstance(node, dict) and bool(node.get("id"))
