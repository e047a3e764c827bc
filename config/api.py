"""Project-wide API conventions: problem-JSON errors (RFC 9457, seed 001's shape), pagination and ordering, query
filters, the serializer pieces more than one app's resources use, and the OpenAPI schema's shared parts. The tenant
chokepoint and authentication live in accounts.api; resources in each app's api.py, gathered by config.urls."""

import logging
import uuid
from datetime import UTC

import django_filters
from django import forms
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import exceptions, filters, serializers
from rest_framework.pagination import CursorPagination, LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler

from integrations.errors import ErrorCategory

logger = logging.getLogger("resync.api")

# --- problem JSON ------------------------------------------------------------------------------------------------

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://resync.dev/problems/"

TITLES = {
    400: "Invalid request",
    401: "Authentication required",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal error",
}


def problem(status_code, *, code, detail, title=None, errors=None, **extra):
    """A problem-JSON body: type, title, status, detail, a stable code, a uuid for support, field errors."""
    body = {
        "type": PROBLEM_BASE + code.replace("_", "-"),
        "title": title or TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
        "code": code,
        "uuid": str(uuid.uuid4()),
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


def _flatten(detail):
    """DRF error details → {field: [messages]} (non-field errors under "non_field_errors")."""
    if isinstance(detail, dict):
        return {key: [str(m) for m in (value if isinstance(value, list) else [value])] if not isinstance(value, dict)
                else _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return {"non_field_errors": [str(m) for m in detail]}
    return {"non_field_errors": [str(detail)]}


def problem_exception_handler(exc, context):
    """Every API error, expected or not, answers problem JSON; a 500 never leaks a traceback."""
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        body = problem(500, code="internal_error", detail="Something went wrong on our side. Quote the uuid to "
                                                          "support.")
        logger.exception("api_internal_error", extra={"event": "api_internal_error", "fields": {"uuid": body["uuid"]}})
        return Response(body, status=500, content_type=PROBLEM_CONTENT_TYPE)
    status_code = response.status_code
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        first = next(iter(errors.items()), ("", [""]))
        message = first[1][0] if isinstance(first[1], list) and first[1] else "The request is not valid."
        detail = message if first[0] == "non_field_errors" else f"{first[0]}: {message}"
        code = getattr(exc, "problem_code", "validation_error")
        body = problem(status_code, code=code, detail=detail, errors=errors)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        code = code if isinstance(code, str) else "error"
        body = problem(status_code, code=code, detail=str(detail))
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            body["retry_after"] = int(exc.wait)
    response.data = body
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


@csrf_exempt  # a POST to an unknown API URL is a 404, not a CSRF failure page
def api_not_found(request, *args, **kwargs):
    """Unknown URLs under /api/ answer problem JSON, not an HTML page."""
    body = problem(404, code="not_found", detail=f"No API endpoint at {request.path}.")
    return JsonResponse(body, status=404, content_type=PROBLEM_CONTENT_TYPE)


# --- pagination and ordering -------------------------------------------------------------------------------------


# The largest offset a database accepts everywhere (a signed 32-bit integer on the strictest).
MAX_OFFSET = 2**31 - 1


def _query_int(request, name, *, minimum, maximum=None):
    """A paging parameter: absent or empty means its default (None); anything but a whole number in range is a 400.
    DRF's own paginators fall back to the default for `limit=abc` or `offset=-5`, so a typo looked like success."""
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    if not raw.isascii() or not raw.isdigit() or int(raw) < minimum or (maximum is not None and int(raw) > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise exceptions.ValidationError({name: [f"A whole number of at least {minimum}{bound}."]})
    return int(raw)


def _bounded(parameters, bounds):
    """The paginator's documented parameters with the bounds _query_int enforces."""
    for parameter in parameters:
        parameter["schema"].update(bounds.get(parameter["name"], {}))
    return parameters


class StandardPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500

    def get_limit(self, request):
        # Above max_limit is capped, as documented by DRF; below 1 or not a number is refused.
        limit = _query_int(request, self.limit_query_param, minimum=1)
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request):
        return _query_int(request, self.offset_query_param, minimum=0, maximum=MAX_OFFSET) or 0

    def get_schema_operation_parameters(self, view):
        return _bounded(super().get_schema_operation_parameters(view), {
            self.limit_query_param: {"minimum": 1},
            self.offset_query_param: {"minimum": 0, "maximum": MAX_OFFSET},
        })


class RecentFirstCursorPagination(CursorPagination):
    """Cursor pagination for the long, growing lists (runs, errors): stable while new rows arrive."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = ("-created_at", "-id")

    def get_page_size(self, request):
        size = _query_int(request, self.page_size_query_param, minimum=1)
        return self.page_size if size is None else min(size, self.max_page_size)

    def get_schema_operation_parameters(self, view):
        return _bounded(super().get_schema_operation_parameters(view), {self.page_size_query_param: {"minimum": 1}})


class StableOrderingFilter(filters.OrderingFilter):
    """Any requested ordering ends with the primary key, so offset pages neither repeat nor skip rows.

    The default filter backend (settings.REST_FRAMEWORK). An ordering that already names the key is kept as is.
    """

    def get_ordering(self, request, queryset, view):
        ordering = super().get_ordering(request, queryset, view)
        if not ordering or {"id", "-id", "pk", "-pk"} & set(ordering):
            return ordering
        return [*ordering, "id"]


# --- query filters -----------------------------------------------------------------------------------------------

BOOLEAN_QUERY_VALUES = {"true", "false", "1", "0"}


class StrictFilterBackend(DjangoFilterBackend):
    """The API's query filters (settings.REST_FRAMEWORK), refusing a boolean filter's value that is not a boolean:
    django-filter reads `?is_active=yes` or `?is_active=-1` as no filter at all, so the answer looked filtered."""

    def get_filterset(self, request, queryset, view):
        filterset = super().get_filterset(request, queryset, view)
        if filterset is not None:
            errors = {name: ["Must be true or false."] for name, definition in filterset.filters.items()
                      if isinstance(definition, django_filters.BooleanFilter)
                      and request.query_params.get(name, "").lower() not in BOOLEAN_QUERY_VALUES | {""}}
            if errors:
                raise exceptions.ValidationError(errors)
        return filterset



class UtcDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 date-time that also exists in UTC: year 1 at +14:00 would otherwise crash the query."""

    def to_python(self, value):
        value = super().to_python(value)
        try:
            return value.astimezone(UTC) if value is not None else None
        except OverflowError:
            raise forms.ValidationError("Date-time value out of range.", code="overflow") from None


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """Every date-time filter of the API: an out-of-range date is a 400, not a 500."""

    field_class = UtcDateTimeField


# --- serializer pieces of more than one app ----------------------------------------------------------------------


def _json_type_error(field, value):
    """Why `value` is not of the JSON type `field` documents, or None. DRF converts quietly: 5 becomes "5" for a
    string, "true" or 1 True for a boolean, "7" 7 for an integer, an integer a UUID; the schema promises one
    type, and a client sending another has a bug it should hear about."""
    if value is None or field.read_only:
        return None  # null is the field's own business (allow_null)
    if isinstance(field, serializers.ListField) and isinstance(value, list):
        errors = {i: error for i, item in enumerate(value) if (error := _json_type_error(field.child, item))}
        return next(iter(errors.values()), None)
    if isinstance(field, serializers.DictField) and isinstance(value, dict):
        return next((error for item in value.values() if (error := _json_type_error(field.child, item))), None)
    if isinstance(field, (serializers.CharField, serializers.UUIDField, serializers.DateTimeField,
                          serializers.DateField, serializers.TimeField)) and not isinstance(value, str):
        return "Must be a string."
    if isinstance(field, serializers.BooleanField) and not isinstance(value, bool):
        return "Must be true or false."
    if isinstance(field, serializers.IntegerField) and (isinstance(value, bool) or not isinstance(value, int)):
        return "Must be a whole number."
    if isinstance(field, serializers.FloatField) and (isinstance(value, bool) or not isinstance(value, int | float)):
        return "Must be a number."
    return None


class RejectUnknownFieldsMixin:
    """A key the serializer does not know is an error, not silently dropped: a typo must not look like success.
    So is a value of another JSON type than the schema says (a number for a string, "true" for a boolean).

    Read-only fields are accepted (and ignored), so the body of a GET can be sent back as a PUT. The schema says
    the same: request bodies of these serializers have additionalProperties false (config.openapi).
    """

    def to_internal_value(self, data):
        if isinstance(data, dict):
            errors = {name: ["Unknown field."] for name in sorted(set(data) - set(self.fields))}
            for name, field in self.fields.items():
                if name in data and (error := _json_type_error(field, data[name])):
                    errors[name] = [error]
            if errors:
                # Every other problem of the body too, as a 400 always lists them.
                try:
                    super().to_internal_value({k: v for k, v in data.items() if k not in errors})
                except serializers.ValidationError as exc:
                    detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
                    errors = {**detail, **errors}
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class RunCountsSerializer(serializers.Serializer):
    """A run's counts, read from the run itself (use with source="*")."""

    read = serializers.IntegerField(read_only=True)
    created = serializers.IntegerField(read_only=True)
    updated = serializers.IntegerField(read_only=True)
    unchanged = serializers.IntegerField(read_only=True)
    skipped = serializers.IntegerField(read_only=True)
    ignored = serializers.IntegerField(read_only=True)
    warned = serializers.IntegerField(read_only=True)
    failed = serializers.IntegerField(read_only=True)


PLAN_ACTIONS = ("create", "update", "unchanged", "skipped", "ignored", "failed")


class PlanChangeSerializer(serializers.Serializer):
    current = serializers.JSONField(read_only=True, allow_null=True)
    new = serializers.JSONField(read_only=True, allow_null=True)


class PlanEntrySerializer(serializers.Serializer):
    """One record of a test run's plan: what a real run would do with it, next to the target's current values.

    A page that failed to load, or a failed connection check, is an entry too: its record_id is null.
    """

    record_id = serializers.CharField(read_only=True, allow_null=True, default=None)
    action = serializers.ChoiceField(choices=PLAN_ACTIONS, read_only=True)
    payload = serializers.DictField(read_only=True, allow_null=True, default=None,
                                    help_text="What would be written, after transforms.")
    warnings = serializers.ListField(child=serializers.CharField(), read_only=True, default=list)
    errors = serializers.ListField(child=serializers.CharField(), read_only=True, default=list)
    changes = serializers.DictField(child=PlanChangeSerializer(), read_only=True, default=dict,
                                    help_text="Per field of an update: the target's current value and the new one.")
    current = serializers.DictField(read_only=True, allow_null=True, default=None,
                                    help_text="The target record as it is now, when there is one.")
    target_id = serializers.CharField(read_only=True, allow_null=True, default=None)
    reason = serializers.CharField(read_only=True, allow_null=True, default=None, help_text="Why it is ignored.")
    category = serializers.ChoiceField(choices=ErrorCategory.choices, read_only=True, allow_null=True, default=None)
    batch = serializers.IntegerField(read_only=True, allow_null=True, default=None)


# --- OpenAPI -----------------------------------------------------------------------------------------------------


PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "uuid": {"type": "string", "format": "uuid"},
        "errors": {"type": "object", "additionalProperties": True},
        "retry_after": {"type": "integer"},
    },
    "required": ["type", "title", "status", "detail", "code", "uuid"],
    "additionalProperties": True,
}

DOCUMENTED_ERRORS = {
    "400": "The request is not valid: see errors",
    "401": "Missing, unknown or revoked token",
    "403": "The token's role may not do this",
    "404": "No such object in your organization",
    "409": "Conflict with the current state",
    "422": "Idempotency key reused with a different request",
    "429": "Rate limited: retry after the Retry-After header",
}


def allow_empty_query_values(result, generator, request, public):
    """Postprocessing hook: an optional query parameter sent empty (`?since=`, as an HTML form sends a blank
    input) means the parameter is not given, for every filter (django-filter), ordering and paging parameter: the
    schema says so (allowEmptyValue), instead of refusing an empty date or UUID the server accepts. Free-text
    parameters refuse the NUL character, as Django's form fields do."""
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else ():
                schema = parameter.get("schema", {})
                # Not ordering: DRF's OrderingFilter ignores what it does not know, NUL included.
                if (parameter.get("in") == "query" and schema.get("type") == "string"
                        and parameter.get("name") != "ordering" and not {"format", "enum", "pattern"} & set(schema)):
                    schema["pattern"] = "^[^\\x00]*$"
                # Not a list (status=open&status=failed): an empty one is an empty choice, which is refused.
                if (parameter.get("in") == "query" and not parameter.get("required")
                        and parameter.get("schema", {}).get("type") != "array"):
                    parameter["allowEmptyValue"] = True
    return result


def add_problem_responses(result, generator, request, public):
    """Postprocessing hook: every operation documents its problem-JSON error answers."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    # A serializer named ProblemSerializer would silently lose its shape to this one (it happened: mapping
    # validation's problems were documented as problem documents).
    if components.get("Problem", PROBLEM_SCHEMA) != PROBLEM_SCHEMA:
        raise ValueError("A serializer's component is named Problem, the name of the problem-JSON document: rename "
                         "it (extend_schema_serializer(component_name=...)).")
    components["Problem"] = PROBLEM_SCHEMA
    content = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            for code, description in DOCUMENTED_ERRORS.items():
                responses.setdefault(code, {"description": description, "content": content})
    return result

