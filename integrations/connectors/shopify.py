"""Shopify: customers (read and write) and orders (read-only) through the Admin GraphQL API.

One endpoint, https://{shop}/admin/api/{version}/graphql.json, with the token in X-Shopify-Access-Token. Reads
page with Relay cursors, sorted by updatedAt and filtered with Shopify's search syntax; a write sends up to
`max_write_batch` mutations in one document (aliases op0, op1, ...) and answers one result per alias. Every answer
reports the app's query-cost bucket (extensions.cost), so the next request waits until the bucket holds what it
will cost. Webhooks are signed with the app's client secret over the raw body and name one record by numeric id.
"""

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from integrations.connectors import http
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

DEFAULT_API_VERSION = "2025-01"
# The most nodes one connection or nodes() query returns.
MAX_PAGE_SIZE = 250
# Values per search query in find(): "email:"a" OR email:"b" ..." stays a reasonable length.
FIND_VALUES_PER_QUERY = 25

SHOP_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*(\.[a-z0-9-]+)+$")
API_VERSION_PATTERN = re.compile(r"^(\d{4}-\d{2}|unstable)$")

# Statuses Shopify answers for a shop that cannot be used as it stands: 402 a frozen shop (unpaid bill), 423 a
# locked shop. Neither is a wrong token, and neither clears by retrying: the merchant has to act.
SHOP_UNAVAILABLE = {
    402: ("payment_required", "The shop is frozen: its Shopify bill is unpaid"),
    423: ("shop_locked", "The shop is locked"),
}

# customerSet's error codes; customerCreate/customerUpdate answer UserError without a code (read from the message).
DUPLICATE_CODES = {"TAKEN"}
NOT_FOUND_CODES = {"NOT_FOUND"}


def _customer_data(node):
    return {
        "email": node.get("email"),
        "phone": node.get("phone"),
        "firstName": node.get("firstName"),
        "lastName": node.get("lastName"),
        "note": node.get("note"),
        # GraphQL answers a list; a mapped field takes one value, so tags travel as "a, b" (as in Shopify's admin).
        "tags": ", ".join(node.get("tags") or []),
        "taxExempt": node.get("taxExempt"),
        "state": node.get("state"),
        "verifiedEmail": node.get("verifiedEmail"),
        # UnsignedInt64 arrives as a string.
        "numberOfOrders": int(node["numberOfOrders"]) if node.get("numberOfOrders") is not None else None,
        "createdAt": node.get("createdAt"),
        "updatedAt": node.get("updatedAt"),
    }


def _order_data(node):
    total = ((node.get("totalPriceSet") or {}).get("shopMoney") or {}).get("amount")
    return {
        "name": node.get("name"),
        "email": node.get("email"),
        "phone": node.get("phone"),
        "totalPrice": total,  # Shopify's Decimal is a string: kept exact
        "currencyCode": node.get("currencyCode"),
        "financialStatus": node.get("displayFinancialStatus"),
        "fulfillmentStatus": node.get("displayFulfillmentStatus"),
        "customerId": (node.get("customer") or {}).get("id"),
        "cancelledAt": node.get("cancelledAt"),
        "createdAt": node.get("createdAt"),
        "updatedAt": node.get("updatedAt"),
    }


@dataclasses.dataclass(frozen=True)
class ShopifyObject:
    """One object Resync syncs with Shopify: its GraphQL shape and its declared schema (Shopify has no cheap
    describe call for the fields a sync needs)."""

    name: str
    label: str
    type_name: str  # the GraphQL type, also the kind in its ids: gid://shopify/<type_name>/<number>
    selection: str
    to_data: Callable[[dict], dict]
    fields: tuple[FieldSpec, ...]
    # Our field -> the term Shopify's search syntax knows it by (find() searches only these).
    search_terms: dict[str, str]
    writable: bool

    def schema(self):
        return ObjectSchema(self.name, {spec.name: spec for spec in self.fields}, label=self.label)


def _id_field():
    return FieldSpec("id", FieldType.STRING, unique=True, read_only=True, label="ID")


OBJECTS = {
    "customers": ShopifyObject(
        name="customers",
        label="Customers",
        type_name="Customer",
        selection="id email phone firstName lastName note tags taxExempt state verifiedEmail numberOfOrders "
                  "createdAt updatedAt",
        to_data=_customer_data,
        fields=(
            _id_field(),
            FieldSpec("email", FieldType.EMAIL, unique=True, label="Email"),
            FieldSpec("phone", FieldType.PHONE, unique=True, label="Phone", format="e164"),
            FieldSpec("firstName", label="First name"),
            FieldSpec("lastName", label="Last name"),
            FieldSpec("note", FieldType.TEXT, label="Note"),
            FieldSpec("tags", label="Tags (comma-separated)"),
            FieldSpec("taxExempt", FieldType.BOOLEAN, label="Tax exempt"),
            FieldSpec("state", read_only=True, label="Account state"),
            FieldSpec("verifiedEmail", FieldType.BOOLEAN, read_only=True, label="Email verified"),
            FieldSpec("numberOfOrders", FieldType.INTEGER, read_only=True, label="Number of orders"),
            FieldSpec("createdAt", FieldType.DATETIME, read_only=True, label="Created at"),
            FieldSpec("updatedAt", FieldType.DATETIME, read_only=True, label="Updated at"),
        ),
        search_terms={"email": "email", "phone": "phone", "firstName": "first_name", "lastName": "last_name"},
        writable=True,
    ),
    "orders": ShopifyObject(
        name="orders",
        label="Orders",
        type_name="Order",
        selection="id name email phone currencyCode displayFinancialStatus displayFulfillmentStatus "
                  "totalPriceSet { shopMoney { amount } } customer { id } cancelledAt createdAt updatedAt",
        to_data=_order_data,
        fields=(
            _id_field(),
            FieldSpec("name", read_only=True, label="Order name"),
            FieldSpec("email", FieldType.EMAIL, read_only=True, label="Email"),
            FieldSpec("phone", FieldType.PHONE, read_only=True, label="Phone", format="e164"),
            FieldSpec("totalPrice", FieldType.NUMBER, read_only=True, label="Total price"),
            FieldSpec("currencyCode", read_only=True, label="Currency"),
            FieldSpec("financialStatus", read_only=True, label="Financial status"),
            FieldSpec("fulfillmentStatus", read_only=True, label="Fulfillment status"),
            FieldSpec("customerId", read_only=True, label="Customer ID"),
            FieldSpec("cancelledAt", FieldType.DATETIME, read_only=True, label="Cancelled at"),
            FieldSpec("createdAt", FieldType.DATETIME, read_only=True, label="Created at"),
            FieldSpec("updatedAt", FieldType.DATETIME, read_only=True, label="Updated at"),
        ),
        search_terms={"name": "name", "email": "email"},
        writable=False,
    ),
}

# Webhook topics that name one record to sync again; a delete names it too (the sync finds it gone).
WEBHOOK_TOPICS = {
    "customers/create": "customers",
    "customers/update": "customers",
    "customers/delete": "customers",
    "customers/enable": "customers",
    "customers/disable": "customers",
    "orders/create": "orders",
    "orders/updated": "orders",
    "orders/delete": "orders",
    "orders/paid": "orders",
    "orders/cancelled": "orders",
    "orders/fulfilled": "orders",
    "orders/partially_fulfilled": "orders",
}


@dataclasses.dataclass
class PreparedWrite:
    """One operation as a part of the mutation document."""

    index: int
    ref: str
    action: str
    declarations: list[str]  # "$input0: CustomerInput!"
    call: str  # 'customerCreate(input: $input0)'
    variables: dict

    @property
    def alias(self):
        return f"op{self.index}"


def _parse_time(value):
    """An aware datetime from Shopify's ISO 8601 text (naive means UTC); None when absent or garbled."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _search_time(moment):
    # Whole seconds, rounded down: with the inclusive filter a coarser bound reads more, never less.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _search_value(value):
    """A value quoted for Shopify's search syntax."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _tag_list(value):
    if isinstance(value, list | tuple):
        return [str(tag).strip() for tag in value if str(tag).strip()]
    return [tag.strip() for tag in str(value or "").split(",") if tag.strip()]


def _field_name(path):
    """Our field from a userError's path (["input", "email"], ["email"] or "first_name")."""
    parts = path if isinstance(path, list) else [path]
    names = [str(part) for part in parts if isinstance(part, str) and part and not part.isdigit()]
    if not names:
        return ""
    head, *rest = names[-1].split("_")
    return head + "".join(word.capitalize() for word in rest)


class ShopifyConnector(GraphQLConnector):
    label = "Shopify"
    config_fields = (
        BASE_URL_FIELD,
        SettingField("shop", "Shop domain", required=True, placeholder="acme.myshopify.com",
                     help="The shop's myshopify.com domain."),
        SettingField("api_version", "API version", default=DEFAULT_API_VERSION, placeholder=DEFAULT_API_VERSION,
                     help="The Admin API version, YYYY-MM."),
    )
    secret_fields = (
        SettingField("access_token", "Admin API access token", required=True, secret=True, type="password"),
        SettingField("refresh_token", "Refresh token", secret=True, type="password",
                     help="Only for expiring offline tokens."),
        SettingField("client_id", "Client ID", secret=True, help="The app's client ID, to refresh expiring tokens."),
        SettingField("client_secret", "Client secret", secret=True, type="password",
                     help="The app's client secret, to refresh expiring tokens."),
    )
    supports_incremental = True
    supports_fetch = True
    # A mutation costs 10 points and one document may cost at most 1,000: 25 customers with their fields stay well
    # under that, and under a standard shop's bucket.
    max_write_batch = 25
    # Shopify retries a failed delivery 8 times over 4 hours with the original X-Shopify-Triggered-At, so a
    # tolerance of minutes would refuse every late retry (and after 8 failures Shopify drops the subscription).
    # The time is not signed anyway; a replay only makes Resync read the current record again.
    webhook_tolerance_seconds = 5 * 60 * 60

    graphql_path = "graphql.json"
    token_url = "https://{shop}/admin/oauth/access_token"

    def __init__(self, connection):
        super().__init__(connection)
        self.sleep = time.sleep
        self.clock = time.monotonic
        # The query-cost bucket as the last answer reported it: (available, maximum, restore rate, when noted).
        self._bucket = None
        # What each query document cost last time (the estimate for its next request), and the last cost of all
        # (the estimate for a document not sent yet).
        self._query_costs = {}
        self._last_query_cost = None

    # -- configuration ------------------------------------------------------------------------------------------

    @classmethod
    def validate_config(cls, config):
        problems = super().validate_config(config)
        shop = (config or {}).get("shop")
        if isinstance(shop, str) and shop and not SHOP_PATTERN.match(shop):
            problems["shop"] = ["Shop domain must be a domain such as acme.myshopify.com (no https://, no path)."]
        version = (config or {}).get("api_version")
        if isinstance(version, str) and version and not API_VERSION_PATTERN.match(version):
            problems["api_version"] = ["API version must look like 2025-01."]
        return problems

    def api_version(self):
        return self.config.get("api_version") or DEFAULT_API_VERSION

    def shop_origin(self):
        """https://{shop}; the base URL setting stands for the shop's address (a proxy or a stand-in of the shop),
        so the API and the OAuth token endpoint both go there."""
        return (self.config.get("base_url") or f"https://{self.config.get('shop', '')}").rstrip("/")

    def base_url(self):
        return f"{self.shop_origin()}/admin/api/{self.api_version()}"

    def token_endpoint(self):
        return f"{self.shop_origin()}/admin/oauth/access_token"

    def auth_headers(self):
        token = self.credentials().get("access_token")
        return {"X-Shopify-Access-Token": token} if token else {}

    def send_refresh(self, credentials):
        # Shopify takes the refresh grant as JSON, not form-encoded.
        return http.request("POST", self.token_endpoint(), session=self.session, secrets=self.secrets(),
                            json=self.refresh_form(credentials), idempotent=False, timeout=self.timeout,
                            headers={"Accept": "application/json"})

    # -- requests and errors ------------------------------------------------------------------------------------

    def graphql(self, query, variables=None, *, mutation=False):
        """As GraphQLConnector.graphql, keeping the query-cost bucket between requests (the base has no hook for
        the answer's extensions)."""
        body = self.graphql_answer(query, variables, mutation=mutation)
        if body.get("errors"):
            raise self.graphql_error(body["errors"], body)
        return body.get("data") or {}

    def graphql_answer(self, query, variables=None, *, mutation=False):
        """The whole answer, `errors` included (a write tells which operations they concern)."""
        self.wait_for_query_budget(query)
        response = self.request("POST", self.graphql_path, json={"query": query, "variables": variables or {}},
                                idempotent=not mutation)
        body = self.json(response)
        if not isinstance(body, dict):
            raise ConnectorError(ErrorCategory.UNKNOWN, "Shopify answered something that is not a GraphQL answer",
                                 code="unparseable_answer")
        self.note_query_cost(query, body)
        return body

    def wait_for_query_budget(self, query):
        """Sleep until the bucket has restored what this query cost last time (or the last query, for a new one)."""
        if self._bucket is None:
            return
        available, maximum, rate, noted_at = self._bucket
        expected = self._query_costs.get(query, self._last_query_cost)
        if not expected or rate <= 0:
            return
        expected = min(expected, maximum)  # more than the bucket holds is refused, not waited for
        available = min(maximum, available + rate * (self.clock() - noted_at))
        if expected > available:
            self.sleep((expected - available) / rate)

    def note_query_cost(self, query, body):
        cost = (body.get("extensions") or {}).get("cost") or {}
        status = cost.get("throttleStatus") or {}
        try:
            available = float(status["currentlyAvailable"])
            maximum = float(status["maximumAvailable"])
            rate = float(status["restoreRate"])
        except (KeyError, TypeError, ValueError):
            return
        self._bucket = (available, maximum, rate, self.clock())
        requested = cost.get("requestedQueryCost")
        if isinstance(requested, int | float) and not isinstance(requested, bool):
            self._query_costs[query] = self._last_query_cost = float(requested)

    def classify(self, response, *, secrets):
        error = super().classify(response, secrets=secrets)
        body = self._json_or_none(response)
        errors = body.get("errors") if isinstance(body, dict) else None
        if self._throttled(errors):
            # THROTTLED comes with a 200 (or a 429): nothing was carried out, so a resend is safe.
            return ConnectorError(ErrorCategory.RATE_LIMIT, "Shopify is throttling requests (query cost)",
                                  code="THROTTLED", retry_after=self.throttle_wait(body),
                                  detail=scrub_text(json.dumps(errors)[:2000], secrets))
        if error is None:
            return None
        category, code, message, field = error.category, error.code, error.message, error.field
        if isinstance(errors, str) and errors.strip():
            message = scrub_text(errors.strip(), secrets)  # REST-style {"errors": "[API] Invalid API key ..."}
        elif isinstance(errors, dict) and errors:
            # {"errors": {"email": ["has already been taken"]}}
            name, problems = next(iter(errors.items()))
            text = "; ".join(map(str, problems)) if isinstance(problems, list) else str(problems)
            field, message = _field_name(str(name)), scrub_text(f"{name} {text}", secrets)
            if "taken" in text.lower():
                category, code = ErrorCategory.DUPLICATE, "TAKEN"
        status = response.status_code
        if status in SHOP_UNAVAILABLE:
            category, (code, reason) = ErrorCategory.PERMISSION, SHOP_UNAVAILABLE[status]
            message = f"{reason} ({message})"
        elif status == 404:
            message = f"{message}: check the shop domain and the API version"
            code = "shop_or_version_not_found"
        # A new category takes its own default retryability.
        retryable = error.retryable if category == error.category else None
        return ConnectorError(category, message, code=code, detail=error.detail, retryable=retryable,
                              retry_after=error.retry_after, field=field, may_have_applied=error.may_have_applied)

    @staticmethod
    def _json_or_none(response):
        try:
            return response.json()
        except ValueError:
            return None

    @staticmethod
    def _throttled(errors):
        return isinstance(errors, list) and any(
            isinstance(entry, dict) and (entry.get("extensions") or {}).get("code") == "THROTTLED" for entry in errors
        )

    def check(self):
        self.graphql("query Check { shop { name } }")

    # -- schema -------------------------------------------------------------------------------------------------

    def shopify_object(self, object_name):
        try:
            return OBJECTS[object_name]
        except KeyError:
            raise self.unknown_object(object_name) from None

    def list_objects(self):
        return [ObjectSummary(item.name, item.label) for item in OBJECTS.values()]

    def describe_object(self, object_name):
        return self.shopify_object(object_name).schema()

    def gid(self, object_name, record_id):
        """The GraphQL id of a record given by its numeric id (webhooks, REST) or already as a GID."""
        text = str(record_id).strip()
        if text.startswith("gid://"):
            return text
        return f"gid://shopify/{self.shopify_object(object_name).type_name}/{text}"

    def record(self, shopify_object, node):
        return SourceRecord(id=node["id"], data=shopify_object.to_data(node),
                            modified_at=_parse_time(node.get("updatedAt")))

    # -- reading ------------------------------------------------------------------------------------------------

    def list_query(self, shopify_object):
        return (
            f"query Read{shopify_object.type_name}s($first: Int!, $after: String, $query: String) {{\n"
            f"  {shopify_object.name}(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{\n"
            f"    nodes {{ {shopify_object.selection} }}\n"
            f"    pageInfo {{ hasNextPage endCursor }}\n"
            f"  }}\n"
            f"}}"
        )

    def list_page(self, shopify_object, *, first, after=None, search=None):
        variables = {"first": max(1, min(int(first), MAX_PAGE_SIZE)), "after": after, "query": search}
        data = self.graphql(self.list_query(shopify_object), variables)
        connection = data.get(shopify_object.name) or {}
        records = [self.record(shopify_object, node) for node in connection.get("nodes") or [] if node]
        page_info = connection.get("pageInfo") or {}
        next_token = page_info.get("endCursor") if page_info.get("hasNextPage") else None
        return records, next_token

    def read_page(self, object_name, *, page_token=None, cursor=None, page_size=100):
        shopify_object = self.shopify_object(object_name)
        search = None
        if cursor:
            since = _parse_time(cursor)
            if since is None:
                raise ConnectorError(ErrorCategory.VALIDATION, f"The read cursor {cursor!r} is not an ISO 8601 time",
                                     code="invalid_cursor", retryable=False)
            # Inclusive: records sharing the cursor's second are read again (the engine drops them by hash).
            search = f"updated_at:>='{_search_time(since)}'"
        # Shopify's page cursors belong to the query that made them: the engine passes the same `cursor` with every
        # page of one read, so the filter is rebuilt rather than carried in the token.
        records, next_token = self.list_page(shopify_object, first=page_size, after=page_token, search=search)
        times = [record.modified_at for record in records if record.modified_at]
        return Page(records, next_token, cursor=_search_time(max(times)) if times else None)

    def fetch(self, object_name, ids):
        shopify_object = self.shopify_object(object_name)
        prefix = f"gid://shopify/{shopify_object.type_name}/"
        # An id of another kind would fail the whole nodes() call ("Invalid global id"): it cannot exist here.
        wanted = list(dict.fromkeys(str(record_id) for record_id in ids if str(record_id).startswith(prefix)))
        query = (
            f"query Fetch{shopify_object.type_name}s($ids: [ID!]!) {{\n"
            f"  nodes(ids: $ids) {{ ... on {shopify_object.type_name} {{ {shopify_object.selection} }} }}\n"
            f"}}"
        )
        found = {}
        for start in range(0, len(wanted), MAX_PAGE_SIZE):
            data = self.graphql(query, {"ids": wanted[start:start + MAX_PAGE_SIZE]})
            for node in data.get("nodes") or []:
                if isinstance(node, dict) and str(node.get("id", "")).startswith(prefix):
                    record = self.record(shopify_object, node)
                    found[record.id] = record
        return found

    def find(self, object_name, field, values):
        shopify_object = self.shopify_object(object_name)
        term = shopify_object.search_terms.get(field)
        if term is None:
            raise ConnectorError(
                ErrorCategory.MAPPING, f"Shopify cannot search {object_name} by {field}", code="field_not_searchable",
                field=field, detail="searchable: " + ", ".join(shopify_object.search_terms),
            )
        wanted = [value for value in dict.fromkeys(values) if value not in (None, "")]

        # Shopify keeps emails lower-cased and searches case-insensitively; other fields must match exactly.
        def key(value):
            return str(value).lower() if field == "email" else str(value)

        matches = {}
        for start in range(0, len(wanted), FIND_VALUES_PER_QUERY):
            chunk = wanted[start:start + FIND_VALUES_PER_QUERY]
            by_key = {}
            for value in chunk:
                by_key.setdefault(key(value), []).append(value)
            search = " OR ".join(f"{term}:{_search_value(value)}" for value in chunk)
            after = None
            while True:
                records, after = self.list_page(shopify_object, first=MAX_PAGE_SIZE, after=after, search=search)
                for record in records:
                    for value in by_key.get(key(record.data.get(field)), []):
                        matches.setdefault(value, []).append(record)
                if after is None:
                    break
        return matches

    # -- writing ------------------------------------------------------------------------------------------------

    def write(self, object_name, operations):
        shopify_object = self.shopify_object(object_name)
        if not shopify_object.writable:
            return [
                WriteResult(op.ref, ok=False, error=ConnectorError(
                    ErrorCategory.MAPPING, f"{shopify_object.label} are read-only in Shopify", code="read_only_object",
                ))
                for op in operations
            ]
        results = [None] * len(operations)
        prepared = []
        for index, op in enumerate(operations):
            try:
                prepared.append(self.prepare_customer_write(index, op, shopify_object))
            except ConnectorError as exc:
                results[index] = WriteResult(op.ref, ok=False, error=exc)
        if prepared:
            declarations = ", ".join(d for item in prepared for d in item.declarations)
            fields = f"customer {{ {shopify_object.selection} }}"
            body = "\n".join(
                f"  {item.alias}: {item.call} {{ {fields} userErrors {{ {self.user_error_fields(item)} }} }}"
                for item in prepared
            )
            document = f"mutation WriteCustomers({declarations}) {{\n{body}\n}}"
            variables = {name: value for item in prepared for name, value in item.variables.items()}
            # A create sent twice makes two customers: such a document is never re-sent blindly. Updates and
            # upserts (customerSet by email or phone finds what a lost first attempt made) are safe to repeat.
            creates = any(item.action == WriteAction.CREATE for item in prepared)
            body = self.graphql_answer(document, variables, mutation=creates)
            failed = self.errors_by_operation(body.get("errors") or [], prepared)
            if failed is None:
                raise self.graphql_error(body["errors"], body)
            data = body.get("data") or {}
            for item in prepared:
                if item.alias in failed:
                    error = self.graphql_error(failed[item.alias], body)
                    error.may_have_applied = True  # the other operations went through: this one may have too
                    results[item.index] = WriteResult(item.ref, ok=False, error=error)
                else:
                    results[item.index] = self.write_result(item, data.get(item.alias), shopify_object)
        return results

    @staticmethod
    def errors_by_operation(errors, prepared):
        """{alias: [errors]} when every top-level error names one operation by its path (the others were carried
        out: raising would send them again); None when one concerns the whole document."""
        aliases = {item.alias for item in prepared}
        failed = {}
        for entry in errors:
            path = entry.get("path") if isinstance(entry, dict) else None
            if not (isinstance(path, list) and path and path[0] in aliases):
                return None
            failed.setdefault(path[0], []).append(entry)
        return failed

    @staticmethod
    def user_error_fields(item):
        # customerSet answers CustomerSetUserError (with a code); customerCreate/Update answer UserError (without).
        return "field message code" if item.action == WriteAction.UPSERT else "field message"

    def customer_input(self, data, shopify_object):
        fields = shopify_object.schema().fields
        values = {}
        for name, value in data.items():
            spec = fields.get(name)
            if spec is None:
                raise ConnectorError(ErrorCategory.VALIDATION, f"Shopify customers have no field '{name}'",
                                     code="unknown_field", field=name)
            if spec.read_only:
                raise ConnectorError(ErrorCategory.VALIDATION, f"'{name}' is read-only in Shopify",
                                     code="read_only_field", field=name)
            values[name] = _tag_list(value) if name == "tags" else value
        return values

    def prepare_customer_write(self, index, op, shopify_object):
        values = self.customer_input(op.data or {}, shopify_object)
        prepared = PreparedWrite(index, op.ref, op.action, [], "", {})
        input_name, identifier_name = f"input{index}", f"identifier{index}"
        if op.action == WriteAction.CREATE:
            prepared.declarations = [f"${input_name}: CustomerInput!"]
            prepared.call = f"customerCreate(input: ${input_name})"
        elif op.action == WriteAction.UPDATE:
            if not op.target_id:
                raise ConnectorError(ErrorCategory.VALIDATION, "An update needs the Shopify customer's id",
                                     code="target_id_missing")
            values = {"id": self.gid(shopify_object.name, op.target_id), **values}
            prepared.declarations = [f"${input_name}: CustomerInput!"]
            prepared.call = f"customerUpdate(input: ${input_name})"
        elif op.action == WriteAction.UPSERT:
            prepared.variables[identifier_name] = self.upsert_identifier(op, shopify_object)
            prepared.declarations = [
                f"${identifier_name}: CustomerSetIdentifiers!", f"${input_name}: CustomerSetInput!",
            ]
            prepared.call = f"customerSet(identifier: ${identifier_name}, input: ${input_name})"
        else:
            raise ConnectorError(ErrorCategory.VALIDATION, f"Unknown write action '{op.action}'", code="unknown_action")
        prepared.variables[input_name] = values
        return prepared

    def upsert_identifier(self, op, shopify_object):
        if op.match_field == "id":
            if not op.target_id:
                raise ConnectorError(ErrorCategory.VALIDATION, "An upsert by id needs the Shopify customer's id",
                                     code="target_id_missing")
            return {"id": self.gid(shopify_object.name, op.target_id)}
        if op.match_field not in ("email", "phone"):
            raise ConnectorError(ErrorCategory.MAPPING, "Shopify upserts customers by email, phone or id only",
                                 code="unsupported_match_field", field=op.match_field or "")
        value = (op.data or {}).get(op.match_field)
        if value in (None, ""):
            raise ConnectorError(ErrorCategory.VALIDATION, f"An upsert by {op.match_field} needs a value for it",
                                 code="match_value_missing", field=op.match_field)
        return {op.match_field: value}

    def write_result(self, item, payload, shopify_object):
        if not isinstance(payload, dict):
            return WriteResult(item.ref, ok=False, error=ConnectorError(
                ErrorCategory.UNKNOWN, "Shopify answered nothing for this operation", code="no_result",
                retryable=False, may_have_applied=True,
            ))
        user_errors = [entry for entry in payload.get("userErrors") or [] if isinstance(entry, dict)]
        if user_errors:
            return WriteResult(item.ref, ok=False, error=self.user_error(user_errors))
        customer = payload.get("customer")
        if not isinstance(customer, dict) or not customer.get("id"):
            return WriteResult(item.ref, ok=False, error=ConnectorError(
                ErrorCategory.UNKNOWN, "Shopify answered without the customer", code="no_result",
                retryable=False, may_have_applied=True,
            ))
        action = item.action
        if action == WriteAction.UPSERT:
            # customerSet does not say which it did; a customer never updated since its creation was just made.
            created = customer.get("createdAt") and customer.get("createdAt") == customer.get("updatedAt")
            action = WriteAction.CREATE if created else WriteAction.UPDATE
        record = self.record(shopify_object, customer)
        return WriteResult(item.ref, ok=True, target_id=record.id, action=action, record=record.data)

    def user_error(self, user_errors):
        """One ConnectorError for an operation's userErrors: a duplicate or a missing record decides the category,
        anything else is a validation error on the first field named."""
        codes = [str(entry.get("code") or self._code_from_message(entry.get("message"))) for entry in user_errors]
        deciding = next((i for i, code in enumerate(codes) if code in DUPLICATE_CODES | NOT_FOUND_CODES), 0)
        code = codes[deciding]
        if code in DUPLICATE_CODES:
            category = ErrorCategory.DUPLICATE
        elif code in NOT_FOUND_CODES:
            category = ErrorCategory.NOT_FOUND
        else:
            category = ErrorCategory.VALIDATION
        entry = user_errors[deciding]
        field = _field_name(entry.get("field"))
        messages = []
        for other in user_errors:
            text = str(other.get("message") or "invalid")
            name = _field_name(other.get("field"))
            messages.append(f"{name}: {text}" if name and not text.lower().startswith(name.lower()) else text)
        return ConnectorError(category, scrub_text("; ".join(messages), self.secrets()), code=code, field=field,
                              detail=scrub_text(json.dumps(user_errors)[:2000], self.secrets()))

    @staticmethod
    def _code_from_message(message):
        # UserError has no code: Shopify's messages are Rails validation messages ("Email has already been taken").
        text = str(message or "").lower()
        if "already been taken" in text:
            return "TAKEN"
        if "not found" in text or "does not exist" in text:
            return "NOT_FOUND"
        if "blank" in text:
            return "BLANK"
        if "too long" in text:
            return "TOO_LONG"
        return "INVALID"

    # -- inbound webhooks ---------------------------------------------------------------------------------------
    # X-Shopify-Hmac-SHA256: base64(HMAC-SHA256(client secret, raw body)); X-Shopify-Topic: customers/update...;
    # X-Shopify-Webhook-Id: the same on every retry of one delivery; X-Shopify-Triggered-At: when the event
    # happened (ISO 8601); X-Shopify-Shop-Domain: the shop. The body is the REST resource, with its numeric id.

    def verify_webhook(self, *, secrets, method, url, headers, raw_body, now):
        signature = headers.get("x-shopify-hmac-sha256", "").strip()
        if not signature:
            raise WebhookSignatureError("The X-Shopify-Hmac-SHA256 header is required", code="signature_missing")
        triggered_at = _parse_time(headers.get("x-shopify-triggered-at", "").strip())
        if triggered_at is None:
            raise WebhookSignatureError("X-Shopify-Triggered-At must be an ISO 8601 time", code="timestamp_invalid")
        if abs((now - triggered_at).total_seconds()) > self.webhook_tolerance_seconds:
            raise WebhookSignatureError(
                f"X-Shopify-Triggered-At is more than {self.webhook_tolerance_seconds} seconds from now",
                code="timestamp_out_of_tolerance",
            )
        expected = [
            base64.b64encode(hmac.new(secret.encode(), raw_body, hashlib.sha256).digest())
            for secret in secrets if secret
        ]
        # Every secret is compared, match or not, so timing does not tell which one matched.
        matches = [hmac.compare_digest(signature.encode(), value) for value in expected]
        if not any(matches):
            raise WebhookSignatureError("No signature matches a secret of this endpoint", code="signature_invalid")

    def webhook_event_id(self, *, headers, payload):
        event_id = headers.get("x-shopify-webhook-id", "").strip()
        if not event_id:
            raise WebhookPayloadError("The delivery has no X-Shopify-Webhook-Id", code="event_id_missing")
        return event_id

    def parse_webhook(self, payload, *, headers=None):
        headers = headers or {}
        if not isinstance(payload, dict):
            raise WebhookPayloadError("The payload must be a JSON object")
        topic = headers.get("x-shopify-topic", "").strip()
        if not topic:
            raise WebhookPayloadError("The delivery has no X-Shopify-Topic header", code="topic_missing")
        object_name = WEBHOOK_TOPICS.get(topic)
        if object_name is None:
            return []
        shop, configured = headers.get("x-shopify-shop-domain", "").lower(), str(self.config.get("shop", "")).lower()
        if shop and configured and shop != configured:
            # One app's secret signs every shop's deliveries: this one was meant for another connection.
            raise WebhookPayloadError(f"The delivery is for {shop}, not {configured}", code="shop_mismatch")
        record_id = payload.get("id")
        if isinstance(record_id, bool) or not str(record_id).isdigit():
            raise WebhookPayloadError(f'"id" must be the numeric id of the {object_name[:-1]}', code="id_missing")
        return [WebhookChange(object_name=object_name, record_ids=[self.gid(object_name, record_id)])]
