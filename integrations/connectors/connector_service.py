"""A customer's own connector service: an HTTP service that speaks Resync's connector contract.

Resync writes records with PUT {url}/v1/data and sends process messages with PUT {url}/v1/process; it reads with
GET {url}/v1/data, POST {url}/v1/data/fetch and POST {url}/v1/data/find, and discovers objects with
GET {url}/v1/objects[/{name}]. Every request is signed with the Standard Webhooks scheme (webhook-id,
webhook-timestamp, webhook-signature), so a service verifies it with any standardwebhooks library. Failures are
problem JSON (seed 001): type, logCode, detail, technicalInfo, retryable and, for a write that partly succeeded,
linkIdentities naming the records that were stored. docs/connector-service.md is the contract a customer builds
from; connector_service.reference is a small service that implements it.
"""

import json
import re
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from integrations.connectors import http
from integrations.connectors.base import (
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
    webhook_secret_key,
    webhook_signature,
)
from integrations.errors import ConnectorError, ErrorCategory

MAX_BATCH = 100  # records per PUT /v1/data, as the contract says
MAX_PAGE_SIZE = 500
MAX_IDS_PER_CALL = 100  # ids per fetch, values per find
MAX_TIMEOUT = 120  # seconds; a worker waiting longer holds its task slot hostage

# A problem's type names a Resync category by its last segment (".../validation", "urn:...:not-found").
PROBLEM_CATEGORIES = {
    "validation": ErrorCategory.VALIDATION,
    "duplicate": ErrorCategory.DUPLICATE,
    "not-found": ErrorCategory.NOT_FOUND,
    "conflict": ErrorCategory.CONFLICT,
    "auth": ErrorCategory.AUTH,
    "permission": ErrorCategory.PERMISSION,
    "rate-limit": ErrorCategory.RATE_LIMIT,
    "connection": ErrorCategory.CONNECTION,
    "timeout": ErrorCategory.TIMEOUT,
    "mapping": ErrorCategory.MAPPING,
    "unknown": ErrorCategory.UNKNOWN,
}
# Seed 001's generic types: they name no category, and a failure is retryable only when the body says so.
SEED_PROBLEM_TYPES = {"publish-error", "process-error"}
RETRY_LATER = "retry-later"
GATEWAY_STATUSES = {502, 503, 504}

# The contract's field types are Resync's own; anything else is read as a string.
FIELD_TYPES = frozenset({
    FieldType.STRING, FieldType.TEXT, FieldType.EMAIL, FieldType.PHONE, FieldType.INTEGER, FieldType.NUMBER,
    FieldType.BOOLEAN, FieldType.DATE, FieldType.DATETIME, FieldType.URL,
})


def problem_name(problem_type):
    """The last segment of a problem type URI: "publish-error" from "http://www.synchive.com/common/publish-error"."""
    return re.split(r"[/:#]", str(problem_type or "").rstrip("/"))[-1].lower()


class SignedRequest(requests.auth.AuthBase):
    """Signs a request the moment it is sent, so each in-request retry carries a new id and a fresh timestamp
    (a service that refuses ids it has seen, as the contract asks, still accepts the retry)."""

    def __init__(self, secret):
        self.secret = secret

    def __call__(self, request):
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        webhook_id = f"msg_{uuid.uuid4().hex}"
        timestamp = str(int(time.time()))
        request.headers["webhook-id"] = webhook_id
        request.headers["webhook-timestamp"] = timestamp
        request.headers["webhook-signature"] = webhook_signature(
            self.secret, webhook_id=webhook_id, timestamp=timestamp, raw_body=body,
        )
        return request


class PartialWrite(ConnectorError):
    """A failed PUT /v1/data whose answer names records that were stored (linkIdentities).

    Not retryable as a whole: sending the batch again would create the stored records twice. write() turns it
    into results: the linked records succeeded, the others carry `error`.
    """

    def __init__(self, error, links):
        super().__init__(error.category, error.message, code=error.code, detail=error.detail, retryable=False,
                         field=error.field)
        self.error = error
        self.links = links


def link_identities(body):
    """{iri: externalId} from a problem's linkIdentities ({"linkIdentities": [{"iri", "externalId"}]} or a list)."""
    links = body.get("linkIdentities") if isinstance(body, dict) else None
    if isinstance(links, dict):
        links = links.get("linkIdentities")
    found = {}
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("iri") not in (None, "") and link.get("externalId") not in (None, ""):
            found[str(link["iri"])] = str(link["externalId"])
    return found


def linked_id(links, ref):
    """The externalId linkIdentities give `ref`: its iri is the ref, or (the seed's style) a URI ending "#<ref>"."""
    if ref in links:
        return links[ref]
    return next((external_id for iri, external_id in links.items() if iri.endswith(f"#{ref}")), None)


def _copy(error, **changes):
    attributes = {
        "category": error.category, "message": error.message, "code": error.code, "detail": error.detail,
        "retryable": error.retryable, "retry_after": error.retry_after, "field": error.field,
        "may_have_applied": error.may_have_applied,
    }
    if "category" in changes and "retryable" not in changes:
        attributes["retryable"] = None  # the new category's default
    attributes.update(changes)
    return ConnectorError(attributes.pop("category"), attributes.pop("message"), **attributes)


def classify_problem(error, body, status):
    """What http.classify_response does not know about the contract's problem JSON: a category named by the
    type, the seed's rule that a publish-error or process-error is retryable only when it says so, and the
    contract's promise that an answer saying "retryable": true carried nothing out (what it did carry out, it
    names in linkIdentities)."""
    if not isinstance(body, dict):
        return error
    name = problem_name(body.get("type"))
    explicit = body.get("retryable") if isinstance(body.get("retryable"), bool) else None
    if name == RETRY_LATER or "RETRY_LATER" in (body.get("typeCode"), body.get("code")):
        code = error.code if error.code != f"http_{status}" else "RETRY_LATER"
        return _copy(error, category=ErrorCategory.CONNECTION, retryable=True, may_have_applied=False, code=code)
    if name in PROBLEM_CATEGORIES:
        # The service knows what went wrong; unless it is itself unsure (unknown, an upstream timeout), the
        # request was refused, not carried out.
        unsure = name in ("unknown", "timeout")
        error = _copy(error, category=PROBLEM_CATEGORIES[name], retryable=explicit,
                      may_have_applied=error.may_have_applied and unsure)
    elif name in SEED_PROBLEM_TYPES and explicit is None and status not in GATEWAY_STATUSES:
        error = _copy(error, retryable=False)
    if explicit and not link_identities(body):
        error = _copy(error, may_have_applied=False)
    return error


def _parse_time(value):
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _unexpected(message, **changes):
    return ConnectorError(ErrorCategory.UNKNOWN, message, code="unexpected_answer", retryable=False, **changes)


class ConnectorServiceConnector(HttpConnector):
    label = "Connector service"
    config_fields = (
        SettingField("url", "Service URL", type="url", required=True, placeholder="https://connector.example.com",
                     help="The address of your connector service; Resync calls {url}/v1/data, {url}/v1/process..."),
        SettingField("timeout", "Timeout (seconds)", type="integer", placeholder="15",
                     help=f"How long Resync waits for an answer (1 to {MAX_TIMEOUT}); empty: Resync's default."),
    )
    secret_fields = (
        SettingField("signing_secret", "Signing secret", type="password", secret=True, required=True,
                     placeholder="whsec_...",
                     help="Resync signs every request with it (Standard Webhooks); your service verifies it."),
    )
    supports_incremental = True
    supports_fetch = True
    max_write_batch = MAX_BATCH
    check_path = "/v1/objects"

    def __init__(self, connection):
        super().__init__(connection)
        self.timeout = self.config.get("timeout") or None

    # -- configuration ------------------------------------------------------------------------------------------

    @classmethod
    def validate_config(cls, config):
        config = config or {}
        problems = super().validate_config(config)
        timeout = config.get("timeout")
        if "timeout" not in problems and timeout not in (None, "") and not 1 <= timeout <= MAX_TIMEOUT:
            problems["timeout"] = [f"Timeout must be between 1 and {MAX_TIMEOUT} seconds."]
        url = config.get("url")
        if "url" in problems or not isinstance(url, str):
            return problems
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            problems["url"] = ["Service URL must not carry a query or a fragment: Resync appends /v1/... to it."]
        elif parts.scheme != "https" and not getattr(settings, "RESYNC_ALLOW_PRIVATE_URLS", False):
            # Records travel in this request: the signature proves who sent them, only TLS keeps them private.
            problems["url"] = ["Service URL must use https."]
        return problems

    @classmethod
    def validate_credentials(cls, credentials):
        problems = super().validate_credentials(credentials)
        secret = (credentials or {}).get("signing_secret")
        if "signing_secret" not in problems and not _is_whsec(secret):
            problems["signing_secret"] = ['Signing secret must be "whsec_" followed by base64 (Standard Webhooks).']
        return problems

    def base_url(self):
        return str(self.config.get("url") or "").rstrip("/")

    def auth_headers(self):
        return {}  # the signature is the authentication

    # -- requests and errors ------------------------------------------------------------------------------------

    def request(self, method, path, *, accept_partial=False, **kwargs):
        """As the base, but a partly carried-out write reaches only write(); anyone else sees its error."""
        try:
            return super().request(method, path, **kwargs)
        except PartialWrite as exc:
            if accept_partial:
                raise
            raise exc.error from None

    def _send(self, method, path, *, idempotent, headers, **kwargs):
        secret = self.credentials().get("signing_secret")
        if not _is_whsec(secret):
            raise ConnectorError(ErrorCategory.AUTH, "The connection has no valid signing secret",
                                 code="signing_secret_invalid", retryable=False)
        return super()._send(method, path, idempotent=idempotent, headers=headers, auth=SignedRequest(secret),
                             **kwargs)

    def classify(self, response, *, secrets):
        error = super().classify(response, secrets=secrets)
        if error is None:
            return None
        try:
            body = response.json()
        except ValueError:
            return error
        error = classify_problem(error, body, response.status_code)
        links = link_identities(body)
        return PartialWrite(error, links) if links else error

    def _json_body(self, payload):
        # Records read from a database hold dates and decimals; they travel as ISO 8601 text and numbers in text.
        return {"data": json.dumps(payload, cls=DjangoJSONEncoder).encode(),
                "headers": {"Content-Type": "application/json"}}

    def _get(self, path, **params):
        body = self.json(self.request("GET", path, params=params))
        if not isinstance(body, dict):
            raise _unexpected(f"The service answered GET {path} with something that is not a JSON object")
        return body

    def _post_read(self, path, payload):
        body = self.json(self.request("POST", path, idempotent=True, **self._json_body(payload)))
        if not isinstance(body, dict):
            raise _unexpected(f"The service answered POST {path} with something that is not a JSON object")
        return body

    # -- schema -------------------------------------------------------------------------------------------------

    def list_objects(self):
        body = self._get("/v1/objects")
        return [
            ObjectSummary(name=str(entry["name"]), label=str(entry.get("label") or ""))
            for entry in body.get("objects") or []
            if isinstance(entry, dict) and entry.get("name")
        ]

    def describe_object(self, object_name):
        try:
            body = self._get(f"/v1/objects/{quote(object_name, safe='')}")
        except ConnectorError as exc:
            if exc.category == ErrorCategory.NOT_FOUND:
                raise self.unknown_object(object_name) from None
            raise
        fields = {"id": FieldSpec("id", FieldType.STRING, unique=True, read_only=True, label="ID")}
        for entry in body.get("fields") or []:
            if not isinstance(entry, dict) or not entry.get("name") or entry["name"] == "id":
                continue
            max_length = entry.get("maxLength")
            fields[str(entry["name"])] = FieldSpec(
                name=str(entry["name"]),
                type=entry["type"] if entry.get("type") in FIELD_TYPES else FieldType.STRING,
                required=entry.get("required") is True,
                max_length=max_length if isinstance(max_length, int) and not isinstance(max_length, bool) else None,
                unique=entry.get("unique") is True,
                read_only=entry.get("readOnly") is True,
                label=str(entry.get("label") or ""),
                format=str(entry.get("format") or ""),
            )
        return ObjectSchema(name=object_name, label=str(body.get("label") or ""), fields=fields)

    # -- reading ------------------------------------------------------------------------------------------------

    def read_page(self, object_name, *, page_token=None, cursor=None, page_size=100):
        """GET /v1/data: the service pages with `next` and says where an incremental read resumes (`cursor`)."""
        params = {"object": object_name, "limit": max(1, min(int(page_size), MAX_PAGE_SIZE))}
        if cursor:
            params["cursor"] = cursor
        if page_token:
            params["page"] = page_token
        body = self._get("/v1/data", **params)
        records = [self._source_record(raw) for raw in _list(body, "records")]
        next_token = body.get("next") or None
        resume = body.get("cursor")
        return Page(records, str(next_token) if next_token else None, cursor=str(resume) if resume else None)

    def fetch(self, object_name, ids):
        wanted = list(dict.fromkeys(str(i) for i in ids))
        found = {}
        for start in range(0, len(wanted), MAX_IDS_PER_CALL):
            chunk = wanted[start:start + MAX_IDS_PER_CALL]
            body = self._post_read("/v1/data/fetch", {"object": object_name, "ids": chunk})
            for raw in _list(body, "records"):
                record = self._source_record(raw)
                if record.id in chunk:
                    found[record.id] = record
        return found

    def find(self, object_name, field, values):
        """POST /v1/data/find; the service answers {"matches": [{"value", "records"}]} in exact match."""
        wanted = list(dict.fromkeys(value for value in values if value is not None))
        found = {value: [] for value in wanted}
        by_text = {str(value): value for value in wanted}
        for start in range(0, len(wanted), MAX_IDS_PER_CALL):
            chunk = wanted[start:start + MAX_IDS_PER_CALL]
            body = self._post_read("/v1/data/find", {"object": object_name, "field": field, "values": chunk})
            for match in _list(body, "matches"):
                if not isinstance(match, dict) or str(match.get("value")) not in by_text:
                    continue
                found[by_text[str(match["value"])]] += [self._source_record(raw) for raw in _list(match, "records")]
        return found

    @staticmethod
    def _source_record(raw):
        if not isinstance(raw, dict) or raw.get("id") in (None, "") or isinstance(raw.get("id"), bool | dict | list):
            raise _unexpected("The service answered a record without an id", detail=str(raw)[:500])
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        data = {key: value for key, value in data.items() if key != "id"}
        return SourceRecord(id=str(raw["id"]), data=data, modified_at=_parse_time(raw.get("modifiedAt")))

    # -- writing ------------------------------------------------------------------------------------------------

    def write(self, object_name, operations):
        """One PUT /v1/data for the batch, with one result per operation.

        The answer is a 200 with a result (or a per-record error) for each record, or a problem answer for the
        whole call; a problem that names stored records in linkIdentities is a partial success. A batch that
        creates is never sent again after an answer that may have been carried out (http.request); a batch of
        updates by externalId is.
        """
        results, sent = {}, []
        for operation in operations:
            refusal = _refusal(operation)
            if refusal:
                results[operation.ref] = refusal
            else:
                sent.append(operation)
        if sent:
            results.update(self._write_batch(object_name, sent))
        return [results[operation.ref] for operation in operations]

    def _write_batch(self, object_name, operations):
        payload = {"object": object_name, "records": [
            {"ref": operation.ref, "action": operation.action, "externalId": operation.target_id,
             "matchField": operation.match_field, "data": operation.data}
            for operation in operations
        ]}
        idempotent = all(op.action == WriteAction.UPDATE and op.target_id for op in operations)
        try:
            response = self.request("PUT", "/v1/data", idempotent=idempotent, accept_partial=True,
                                    **self._json_body(payload))
        except PartialWrite as exc:
            # The service accounted for each record: the linked ones were stored, the others were not.
            failed = _copy(exc.error, may_have_applied=False)
            results = {}
            for operation in operations:
                target_id = linked_id(exc.links, operation.ref)
                results[operation.ref] = (
                    WriteResult(operation.ref, ok=True, target_id=target_id, action=_done(operation, None))
                    if target_id else WriteResult(operation.ref, ok=False, action=_attempted(operation), error=failed)
                )
            return results
        body = self._carried_out_answer(response)
        entries = body.get("results") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise _unexpected("The service answered PUT /v1/data without results", may_have_applied=True)
        by_ref = {str(entry["ref"]): entry for entry in entries if isinstance(entry, dict) and "ref" in entry}
        links = link_identities(body)
        return {operation.ref: self._result(operation, by_ref.get(operation.ref), links) for operation in operations}

    def _result(self, operation, entry, links):
        if entry is None and linked_id(links, operation.ref):
            entry = {"externalId": linked_id(links, operation.ref)}
        if entry is None:
            return WriteResult(operation.ref, ok=False, action=_attempted(operation), error=ConnectorError(
                ErrorCategory.UNKNOWN, "The service did not report on this record", code="missing_result",
                retryable=False, may_have_applied=True,  # it may be stored: a blind retry could create it twice
            ))
        if isinstance(entry.get("error"), dict):
            return WriteResult(operation.ref, ok=False, action=_attempted(operation),
                               error=self.record_error(entry["error"]))
        target_id = entry.get("externalId") or operation.target_id
        if target_id in (None, ""):
            return WriteResult(operation.ref, ok=False, action=_attempted(operation), error=_unexpected(
                "The service reported success without the record's externalId", may_have_applied=True,
            ))
        record = entry.get("data") if isinstance(entry.get("data"), dict) else None
        return WriteResult(operation.ref, ok=True, target_id=str(target_id), action=_done(operation, entry),
                           record=record)

    def record_error(self, problem):
        """A per-record problem of a 200 answer: classified as if it had been an answer of its own (status
        `status`; without one, a validation error, or an unknown transient one when it says retryable)."""
        status = problem.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            status = 500 if problem.get("retryable") is True else 422
        error = http.classify_response(status, None, problem, secrets=self.secrets())
        # The service answered for this record: it was not carried out.
        return _copy(classify_problem(error, problem, status), may_have_applied=False)

    # -- process messages ---------------------------------------------------------------------------------------

    def process(self, message, *, idempotent=False):
        """PUT /v1/process: the service's answer (parsed JSON, None when empty), or the classified error.

        A message is a command (send an invoice, close a job): it is not sent again after an answer that may have
        been carried out, unless the caller knows it is idempotent.
        """
        response = self.request("PUT", "/v1/process", idempotent=idempotent, **self._json_body(message))
        if not response.content.strip():
            return None
        return self._carried_out_answer(response)

    def _carried_out_answer(self, response):
        """The JSON of a success answer to a write: one that cannot be read still says the write was done, so its
        error must not invite sending the write again."""
        try:
            return self.json(response)
        except ConnectorError as exc:
            raise _copy(exc, retryable=False, may_have_applied=True) from None


def _is_whsec(secret):
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        return False
    try:
        webhook_secret_key(secret)
    except ValueError:
        return False
    return True


def _list(body, key):
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, list) else []


def _attempted(operation):
    return operation.action if operation.action in (WriteAction.CREATE, WriteAction.UPDATE) else None


def _done(operation, entry):
    action = entry.get("action") if isinstance(entry, dict) else None
    if action in (WriteAction.CREATE, WriteAction.UPDATE):
        return action
    if operation.action == WriteAction.UPSERT:
        return WriteAction.UPDATE if operation.target_id else None
    return operation.action


def _refusal(operation):
    """Operations the contract cannot carry: refused here, without a call."""
    if operation.action not in (WriteAction.CREATE, WriteAction.UPDATE, WriteAction.UPSERT):
        return _refused(operation, f"Unknown write action '{operation.action}'", code="unknown_action")
    if operation.action == WriteAction.UPDATE and not operation.target_id:
        return _refused(operation, "An update needs the externalId of the record to update", code="target_id_missing")
    if operation.action == WriteAction.UPSERT and not operation.match_field:
        return _refused(operation, "An upsert needs a match field", code="match_field_missing")
    return None


def _refused(operation, message, *, code):
    return WriteResult(operation.ref, ok=False, action=_attempted(operation),
                       error=ConnectorError(ErrorCategory.VALIDATION, message, code=code))
