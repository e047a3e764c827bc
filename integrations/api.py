"""REST API resources of the integrations app (registered in config.api_urls through ROUTES and URLS).

Connections: CRUD with write-only credentials (stored encrypted, answered only as `has_credentials`), and the
actions on one connection: test, reconnect, refresh schema, its objects and their fields.

Webhook endpoints: CRUD, rotate the signing secret and drop the old ones (the plain secret appears only in the
answers to create and rotate-secret); received webhook events with their processing outcome, and replay.
"""

import contextlib
import json

from django.db import IntegrityError, transaction
from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.api import IDEMPOTENCY_HEADER, TenantRelatedField, TenantViewSetMixin, idempotent
from config.api import PROBLEM_CONTENT_TYPE, RecentFirstCursorPagination, RejectUnknownFieldsMixin, problem
from integrations.connectors import PROVIDER_CHOICES
from integrations.connectors.base import FieldType
from integrations.crypto import CredentialsDecryptionError
from integrations.errors import ConnectorError, ErrorCategory
from integrations.filtersets import ConnectionFilterSet, WebhookEndpointFilterSet, WebhookEventFilterSet
from integrations.models import Connection, WebhookEndpoint, WebhookEvent
from integrations.services import (
    ConnectionInUse,
    connection_check,
    connection_config_secret_keys,
    connection_create,
    connection_delete,
    connection_describe,
    connection_hint,
    connection_objects,
    connection_schema,
    connection_schema_refresh,
    connection_update,
    provider_forms,
)
from integrations.webhooks import (
    webhook_endpoint_create,
    webhook_endpoint_drop_old_secrets,
    webhook_endpoint_rotate_secret,
    webhook_event_replay,
)
from syncs.chains import connection_reconnect_and_resume
from syncs.models import SyncRun

# Generous for a base URL and a few options; the limit keeps a row from becoming a document store.
MAX_CONFIG_BYTES = 64 * 1024
MAX_CREDENTIALS_BYTES = 16 * 1024
# The field types a connector answers with, as choices: the enum of a field's type in the schema.
FIELD_TYPE_CHOICES = [(value, value) for name, value in vars(FieldType).items() if name.isupper()]


def _unstorable_text(value):
    """Whether a JSON value holds text PostgreSQL's jsonb refuses: NUL characters or lone surrogates."""
    if isinstance(value, dict):
        return any(_unstorable_text(key) or _unstorable_text(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_unstorable_text(item) for item in value)
    if isinstance(value, str):
        return "\x00" in value or any("\ud800" <= char <= "\udfff" for char in value)
    return False


def _json_size(value):
    return len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass"))


def _credentials_field(help_text):
    # Errors of this field never quote its value: it is a secret.
    return serializers.DictField(write_only=True, required=False, help_text=help_text)


def _validate_credentials(value):
    if _json_size(value) > MAX_CREDENTIALS_BYTES:
        raise serializers.ValidationError(f"At most {MAX_CREDENTIALS_BYTES // 1024} KB.")
    return value


# --- serializers -------------------------------------------------------------------------------------------------


class ConnectionSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    provider = serializers.ChoiceField(
        choices=PROVIDER_CHOICES, help_text="The external system: a key of the connector registry. Fixed once created."
    )
    config = serializers.DictField(
        required=False,
        help_text="Settings that are not secret (base URL, default phone country, ...). Replaced as a whole when "
        "given. Secret-looking keys (password, token, api_key, ...) are refused: put them in credentials.",
    )
    credentials = _credentials_field(
        "Write-only, stored encrypted, never returned. Omit to keep the current credentials; {} removes them. "
        "After changing them, POST reconnect to check the connection and make it active again."
    )
    has_credentials = serializers.SerializerMethodField()

    class Meta:
        model = Connection
        fields = [
            "id", "name", "provider", "config", "credentials", "status", "status_reason", "has_credentials",
            "max_concurrency", "last_checked_at", "last_error", "created_at", "updated_at",
        ]
        read_only_fields = ["status", "status_reason", "last_checked_at", "last_error", "created_at", "updated_at"]

    @extend_schema_field(serializers.BooleanField())
    def get_has_credentials(self, connection):
        return bool(connection.credentials_ciphertext)

    def validate_name(self, value):
        others = Connection.objects.for_org(self.context["request"].org).filter(name=value)
        if self.instance is not None:
            others = others.exclude(pk=self.instance.pk)
        if others.exists():
            raise serializers.ValidationError("Another connection of your organization has this name.")
        return value

    def validate_provider(self, value):
        if self.instance is not None and value != self.instance.provider:
            raise serializers.ValidationError("The provider of a connection cannot change: create a new connection.")
        return value

    def validate_config(self, value):
        secret_keys = connection_config_secret_keys(value)
        if secret_keys:
            raise serializers.ValidationError(
                f"{', '.join(secret_keys)} looks like a secret: config is shown to everyone in your organization. "
                "Put secrets in credentials, which are stored encrypted and never returned."
            )
        if _unstorable_text(value):
            raise serializers.ValidationError("Text in config cannot contain NUL characters or lone surrogates.")
        if _json_size(value) > MAX_CONFIG_BYTES:
            raise serializers.ValidationError(f"At most {MAX_CONFIG_BYTES // 1024} KB.")
        return value

    def validate_credentials(self, value):
        return _validate_credentials(value)

    def create(self, validated_data):
        return connection_create(**validated_data)

    def update(self, connection, validated_data):
        validated_data.pop("provider", None)  # fixed once created (validate_provider refuses a change)
        return connection_update(connection=connection, **validated_data)


class ReconnectedConnectionSerializer(ConnectionSerializer):
    resumed_runs = serializers.ListField(
        child=serializers.UUIDField(), read_only=True,
        help_text="Ids of the retries queued for runs the outage had stopped (one per mapping).",
    )

    class Meta(ConnectionSerializer.Meta):
        fields = [*ConnectionSerializer.Meta.fields, "resumed_runs"]
        read_only_fields = fields


class ReconnectSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    credentials = _credentials_field("New credentials, write-only and stored encrypted. Omit to keep the current ones.")

    def validate_credentials(self, value):
        return _validate_credentials(value)


class ConnectorErrorSerializer(serializers.Serializer):
    category = serializers.ChoiceField(choices=ErrorCategory.choices)
    code = serializers.CharField()
    message = serializers.CharField()

    @staticmethod
    def of(error):
        return {"category": error.category.value, "code": error.code, "message": error.message}


class ConnectionTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    error = ConnectorErrorSerializer(allow_null=True, help_text="Why the check failed; null when it worked.")
    hint = serializers.CharField(allow_blank=True, help_text="What to do about a failure, in a sentence.")
    checked_at = serializers.DateTimeField()


class ConnectionFieldSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField(allow_blank=True)
    type = serializers.ChoiceField(choices=FIELD_TYPE_CHOICES)
    required = serializers.BooleanField()
    max_length = serializers.IntegerField(allow_null=True)
    unique = serializers.BooleanField()
    read_only = serializers.BooleanField()
    format = serializers.CharField(allow_blank=True, help_text='e.g. "e164" for phones, a strftime pattern for dates.')


class SettingFieldSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    type = serializers.ChoiceField(choices=["string", "text", "url", "integer", "boolean", "choice", "password"])
    required = serializers.BooleanField()
    help = serializers.CharField(allow_blank=True)
    secret = serializers.BooleanField()
    default = serializers.JSONField(allow_null=True)
    choices = serializers.ListField(child=serializers.CharField())
    placeholder = serializers.CharField(allow_blank=True)


class ProviderSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="The provider of a connection.")
    label = serializers.CharField()
    config_fields = SettingFieldSerializer(many=True, help_text="Settings stored in config (not secret).")
    secret_fields = SettingFieldSerializer(many=True, help_text="Settings stored encrypted in credentials.")


class ConnectionObjectSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField(allow_blank=True)


class ConnectionObjectSchemaSerializer(ConnectionObjectSerializer):
    fields = ConnectionFieldSerializer(many=True)


class ConnectionSchemaSerializer(serializers.Serializer):
    objects = ConnectionObjectSchemaSerializer(many=True)
    refreshed_at = serializers.DateTimeField()


def _object_summary(schema):
    return {"name": schema.name, "label": schema.label or schema.name}


def _object_fields(schema):
    return [{**spec.as_dict(), "label": spec.label or spec.name} for spec in schema.fields.values()]


class ConnectorProblem(Exception):
    """A classified connector failure to answer as problem JSON, with the error itself under `error`."""

    def __init__(self, status_code, error, *, code, detail=None):
        super().__init__(error.message)
        self.status_code, self.error, self.code, self.detail = status_code, error, code, detail or error.message

    def response(self):
        body = problem(self.status_code, code=self.code, detail=self.detail,
                       error=ConnectorErrorSerializer.of(self.error))
        return Response(body, status=self.status_code, content_type=PROBLEM_CONTENT_TYPE)


@contextlib.contextmanager
def _unique_name():
    # validate_name answers the usual case; this is for two requests racing to take the same name.
    try:
        with transaction.atomic():
            yield
    except IntegrityError:
        raise exceptions.ValidationError({"name": ["Another connection of your organization has this name."]}) from None


# --- views -------------------------------------------------------------------------------------------------------


CONNECTOR_FAILURE = (
    "When the external system cannot describe itself now, the answer is a 409 problem whose `error` holds the "
    "classified failure (category, code, message)."
)


@extend_schema_view(
    list=extend_schema(summary="List connections"),
    create=extend_schema(summary="Create a connection"),
    retrieve=extend_schema(summary="Get a connection"),
    update=extend_schema(summary="Replace a connection"),
    partial_update=extend_schema(summary="Update a connection"),
    destroy=extend_schema(
        summary="Delete a connection",
        description="A connection that a mapping uses cannot be deleted: the answer is a 409 problem whose "
        "`mappings` lists them (id, name).",
    ),
)
class ConnectionViewSet(TenantViewSetMixin, viewsets.ModelViewSet):
    """Your organization's connections to external systems. Credentials are write-only."""

    tenant_model = Connection
    serializer_class = ConnectionSerializer
    filterset_class = ConnectionFilterSet
    ordering_fields = ["name", "provider", "status", "last_checked_at", "created_at", "updated_at"]
    ordering = ["name"]

    def handle_exception(self, exc):
        if isinstance(exc, ConnectorProblem):
            return exc.response()
        return super().handle_exception(exc)

    def perform_create(self, serializer):
        with _unique_name():
            super().perform_create(serializer)

    def perform_update(self, serializer):
        with _unique_name():
            super().perform_update(serializer)

    def destroy(self, request, *args, **kwargs):
        try:
            connection_delete(connection=self.get_object())
        except ConnectionInUse as exc:
            body = problem(409, code="connection_in_use", detail=str(exc),
                           mappings=[{"id": str(m.code), "name": m.name} for m in exc.mappings])
            return Response(body, status=status.HTTP_409_CONFLICT, content_type=PROBLEM_CONTENT_TYPE)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="List the providers and their connection forms",
        description="Every external system Resync connects to, with the settings its connection takes: config "
        "fields (not secret) and secret fields (credentials, write-only). URL settings must point to a public "
        "address.",
        responses={200: ProviderSerializer(many=True)},
    )
    @action(detail=False, methods=["get"], pagination_class=None, filter_backends=[])
    def providers(self, request, *args, **kwargs):
        return Response(ProviderSerializer(provider_forms(), many=True).data)

    @extend_schema(
        summary="Test a connection",
        description="Checks the connection now through its connector and records the check (last_checked_at, "
        "last_error). A failure the connector classified is a 200 with ok=false and the error; an authentication "
        "failure also marks the connection needs_reauth. A successful test does not reactivate a connection: "
        "reconnect does.",
        request=None,
        responses={200: ConnectionTestSerializer},
    )
    @action(detail=True, methods=["post"], url_path="test", url_name="test")
    def test_connection(self, request, *args, **kwargs):
        connection = self.get_object()
        error = connection_check(connection=connection)
        return Response(ConnectionTestSerializer({
            "ok": error is None,
            "error": ConnectorErrorSerializer.of(error) if error else None,
            "hint": connection_hint(error) if error else "",
            "checked_at": connection.last_checked_at,
        }).data)

    @extend_schema(
        summary="Reconnect a connection",
        description="Stores the new credentials if given, checks the connection and makes it active again, then "
        "retries the runs its outage stopped (`resumed_runs`). When the check fails the answer is a 400 problem "
        "with the classified message (`error` holds category, code and message); an authentication failure "
        "leaves the connection needs_reauth.",
        request=ReconnectSerializer,
        responses={200: ReconnectedConnectionSerializer},
    )
    @action(detail=True, methods=["post"])
    def reconnect(self, request, *args, **kwargs):
        connection = self.get_object()
        serializer = ReconnectSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            connection, resumed = connection_reconnect_and_resume(
                connection=connection, credentials=serializer.validated_data.get("credentials")
            )
        except ConnectorError as exc:
            raise ConnectorProblem(400, exc, code="reconnect_failed") from None
        connection.resumed_runs = [run.code for run in resumed]
        return Response(ReconnectedConnectionSerializer(connection, context=self.get_serializer_context()).data)

    @extend_schema(
        summary="Refresh a connection's schema",
        description="Describes every object and field of the external system now and keeps the answer: "
        "mappings, forms and runs use it until the next refresh (a run describes an object again by itself when "
        "a mapped field is missing from it). " + CONNECTOR_FAILURE,
        request=None,
        responses={200: ConnectionSchemaSerializer},
    )
    @action(detail=True, methods=["post"], url_path="refresh-schema", url_name="refresh-schema")
    def refresh_schema(self, request, *args, **kwargs):
        connection = self.get_object()
        schemas = self._describe(connection, refresh=True)
        objects = [{**_object_summary(schema), "fields": _object_fields(schema)} for schema in schemas.values()]
        return Response(ConnectionSchemaSerializer({"objects": objects,
                                                    "refreshed_at": connection.schema_refreshed_at}).data)

    @extend_schema(
        summary="List a connection's objects",
        description="The objects of the external system (name and label), as last described. " + CONNECTOR_FAILURE,
        responses={200: ConnectionObjectSerializer(many=True)},
    )
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def objects(self, request, *args, **kwargs):
        connection = self.get_object()
        try:
            objects = connection_objects(connection=connection)
        except ConnectorError as exc:
            raise self._unavailable(connection, exc) from None
        return Response([{"name": o.name, "label": o.label or o.name} for o in objects])

    @extend_schema(
        summary="List the fields of one object",
        description="Each field's type, whether it is required, unique or read-only, its maximum length and "
        "format. An object the connection does not have is a 404 problem. " + CONNECTOR_FAILURE,
        parameters=[OpenApiParameter("object_name", str, OpenApiParameter.PATH, description="e.g. contacts")],
        responses={200: ConnectionFieldSerializer(many=True)},
    )
    @action(
        detail=True, methods=["get"], url_path=r"objects/(?P<object_name>[^/]+)/fields", url_name="object-fields",
        pagination_class=None, filter_backends=[],
    )
    def object_fields(self, request, *args, object_name, **kwargs):
        connection = self.get_object()
        try:
            schema = connection_schema(connection=connection, object_name=object_name)
        except ConnectorError as exc:
            if exc.code == "object_not_found":
                raise exceptions.NotFound(f"This connection has no object '{object_name}'.") from None
            raise self._unavailable(connection, exc) from None
        return Response(_object_fields(schema))

    def _describe(self, connection, *, refresh=False):
        """The connection's objects with their fields; a 409 problem when its system cannot describe them now."""
        try:
            if refresh:
                return connection_schema_refresh(connection=connection)
            return connection_describe(connection=connection)
        except ConnectorError as exc:
            raise self._unavailable(connection, exc) from None

    @staticmethod
    def _unavailable(connection, exc):
        return ConnectorProblem(
            409, exc, code="connector_unavailable",
            detail=f"Connection '{connection.name}' cannot describe its objects now: {exc.message}",
        )


# --- webhook endpoints and events ---------------------------------------------------------------------------------

MAX_WEBHOOK_SECRET_LENGTH = 500


def _webhook_secret_field(help_text):
    # Errors of this field never quote its value: it is a secret.
    return serializers.CharField(write_only=True, required=False, max_length=MAX_WEBHOOK_SECRET_LENGTH,
                                 help_text=help_text)


class WebhookEndpointSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    connection = TenantRelatedField(
        Connection, help_text="The id of the connection whose system sends the events. Fixed once created."
    )
    secret = _webhook_secret_field(
        "Only when creating: a signing secret the sender generated (\"whsec_\" + base64, or the vendor's own "
        "string). Omit it and one is generated. Write-only: the answer to create shows it once; rotate it with "
        "POST rotate-secret."
    )
    secret_count = serializers.SerializerMethodField(
        help_text="How many signing secrets are accepted: more than one while a rotation keeps the old ones. "
        "Null when they cannot be read (the encryption keys changed): rotate without keep_old."
    )
    receive_url = serializers.SerializerMethodField(help_text="Where the sender posts its events.")

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "name", "connection", "is_active", "secret", "secret_count", "receive_url",
                  "last_received_at", "created_at"]
        read_only_fields = ["last_received_at", "created_at"]

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_secret_count(self, endpoint):
        try:
            return len(endpoint.secrets)
        except CredentialsDecryptionError:
            return None

    @extend_schema_field(serializers.URLField())
    def get_receive_url(self, endpoint):
        return self.context["request"].build_absolute_uri(endpoint.receive_path)

    def validate_connection(self, value):
        if self.instance is not None and value != self.instance.connection:
            raise serializers.ValidationError(
                "An endpoint cannot move to another connection: create an endpoint for that connection."
            )
        return value

    def validate_secret(self, value):
        if self.instance is not None:
            raise serializers.ValidationError("The secret is set when creating; change it with POST rotate-secret.")
        return value


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The plain signing secret, shown once: give it to the sender now."
    )


class WebhookSecretRotationSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    keep_old = serializers.BooleanField(
        default=True,
        help_text="Keep accepting the current secret(s) until POST drop-old-secrets, so the sender can switch "
        "over without losing a delivery. False rejects them at once.",
    )
    secret = _webhook_secret_field("The new secret, when the sender generates it. Omit it and one is generated.")


class WebhookRunSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)

    class Meta:
        model = SyncRun
        fields = ["id", "status"]
        read_only_fields = fields


class WebhookEventSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    # A str (not the UUID a SlugRelatedField gives): an idempotent replay's answer is stored as JSON.
    endpoint = serializers.UUIDField(source="endpoint.code", read_only=True, help_text="The endpoint's id.")
    event_id = serializers.CharField(read_only=True, help_text="The sender's id of the event (the dedupe key).")
    outcome = serializers.CharField(read_only=True, help_text="What processing did, or why it did nothing.")
    object_name = serializers.CharField(
        read_only=True, help_text="The object(s) whose records changed, comma-separated; blank until processed."
    )
    record_ids = serializers.ListField(child=serializers.CharField(), read_only=True,
                                       help_text="The records the event names.")
    runs = WebhookRunSerializer(many=True, read_only=True, help_text="The webhook runs that sync those records.")

    class Meta:
        model = WebhookEvent
        fields = ["id", "endpoint", "event_id", "status", "outcome", "object_name", "record_ids", "runs",
                  "attempts", "received_at", "processed_at"]
        read_only_fields = fields


class WebhookEventDetailSerializer(WebhookEventSerializer):
    payload = serializers.JSONField(read_only=True, help_text="The body as received.")
    headers = serializers.DictField(
        child=serializers.CharField(), read_only=True,
        help_text="The request headers, lower-cased, without any that carry a secret (signatures, authorization).",
    )

    class Meta(WebhookEventSerializer.Meta):
        fields = [*WebhookEventSerializer.Meta.fields, "payload", "headers"]
        read_only_fields = fields


class UnreadableSecrets(exceptions.APIException):
    status_code = 409
    default_detail = ("The endpoint's current secrets cannot be read (the encryption keys changed): rotate the "
                      "secret with keep_old=false.")
    default_code = "webhook_secrets_unreadable"


@extend_schema_view(
    list=extend_schema(summary="List webhook endpoints"),
    create=extend_schema(
        summary="Create a webhook endpoint",
        description="The answer shows the plain signing secret once, under `secret`: it is never shown again.",
        responses={201: WebhookEndpointWithSecretSerializer},
    ),
    retrieve=extend_schema(summary="Get a webhook endpoint"),
    update=extend_schema(summary="Replace a webhook endpoint"),
    partial_update=extend_schema(summary="Update a webhook endpoint"),
    destroy=extend_schema(summary="Delete a webhook endpoint and its received events"),
)
class WebhookEndpointViewSet(TenantViewSetMixin, viewsets.ModelViewSet):
    """URLs where your connections' systems post change events. Signing secrets are write-only: shown once when
    created or rotated. An inactive endpoint answers deliveries 404."""

    tenant_model = WebhookEndpoint
    serializer_class = WebhookEndpointSerializer
    filterset_class = WebhookEndpointFilterSet
    ordering_fields = ["name", "created_at", "last_received_at"]
    ordering = ["name"]

    def scope_queryset(self, queryset):
        return queryset.select_related("connection")

    # Neither create nor rotate-secret takes an Idempotency-Key: the stored answer would keep the plain secret.
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        endpoint, plain = webhook_endpoint_create(
            connection=data["connection"], name=data["name"], secret=data.get("secret")
        )
        if data.get("is_active") is False:
            endpoint.is_active = False
            endpoint.save(update_fields=["is_active"])
        return self._with_secret(endpoint, plain, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Rotate the signing secret",
        description="A new secret is put first and shown once. With keep_old (the default) the current secrets "
        "are still accepted until POST drop-old-secrets.",
        request=WebhookSecretRotationSerializer,
        responses={200: WebhookEndpointWithSecretSerializer},
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret", url_name="rotate-secret")
    def rotate_secret(self, request, *args, **kwargs):
        endpoint = self.get_object()
        body = WebhookSecretRotationSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            plain = webhook_endpoint_rotate_secret(endpoint=endpoint, **body.validated_data)
        except CredentialsDecryptionError:
            raise UnreadableSecrets() from None
        return self._with_secret(endpoint, plain, status.HTTP_200_OK)

    @extend_schema(
        summary="Drop the old signing secrets",
        description="Only the newest secret is accepted from now on.",
        request=None,
        responses={200: WebhookEndpointSerializer},
    )
    @action(detail=True, methods=["post"], url_path="drop-old-secrets", url_name="drop-old-secrets")
    def drop_old_secrets(self, request, *args, **kwargs):
        endpoint = self.get_object()
        try:
            endpoint = webhook_endpoint_drop_old_secrets(endpoint=endpoint)
        except CredentialsDecryptionError:
            raise UnreadableSecrets() from None
        return Response(self.get_serializer(endpoint).data)

    def _with_secret(self, endpoint, plain, status_code):
        endpoint.secret = plain
        data = WebhookEndpointWithSecretSerializer(endpoint, context=self.get_serializer_context()).data
        return Response(data, status=status_code)


class WebhookEventCursorPagination(RecentFirstCursorPagination):
    ordering = ("-received_at", "-id")


@extend_schema_view(
    list=extend_schema(summary="List received webhook events"),
    retrieve=extend_schema(summary="Get a received webhook event"),
)
class WebhookEventViewSet(TenantViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                          viewsets.GenericViewSet):
    """Deliveries your webhook endpoints accepted, newest first, with what processing made of them."""

    tenant_model = WebhookEvent
    serializer_class = WebhookEventSerializer
    filterset_class = WebhookEventFilterSet
    pagination_class = WebhookEventCursorPagination
    ordering_fields = ["received_at"]
    ordering = ["-received_at", "-id"]

    def scope_queryset(self, queryset):
        runs = Prefetch("runs", queryset=SyncRun.objects.only("id", "code", "status").order_by("pk"))
        queryset = queryset.select_related("endpoint").prefetch_related(runs)
        if self.action == "list":
            queryset = queryset.defer("payload", "headers")
        return queryset

    def get_serializer_class(self):
        return WebhookEventSerializer if self.action == "list" else WebhookEventDetailSerializer

    @extend_schema(
        summary="Replay a webhook event",
        description="Processes the stored event again, whatever its status: new webhook runs re-fetch the records "
        "it names. The answer is the event with its new outcome and runs.",
        request=None,
        responses={200: WebhookEventDetailSerializer},
        parameters=[IDEMPOTENCY_HEADER],
    )
    @action(detail=True, methods=["post"])
    @idempotent
    def replay(self, request, *args, **kwargs):
        event = webhook_event_replay(event=self.get_object())
        return Response(WebhookEventDetailSerializer(self.get_queryset().get(pk=event.pk)).data)


ROUTES = [  # (prefix, viewset, basename)
    ("connections", ConnectionViewSet, "connection"),
    ("webhook-endpoints", WebhookEndpointViewSet, "webhook-endpoint"),
    ("webhook-events", WebhookEventViewSet, "webhook-event"),
]
URLS = []  # extra django.urls paths under /api/v1/
