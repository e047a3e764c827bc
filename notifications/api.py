"""REST API resources of notifications (registered in config.api_urls through ROUTES).

Channels: CRUD, send test, rotate a webhook's signing secret, enable again after Resync disabled one. Secrets are
write-only: a Slack webhook URL is never answered (only its host), a webhook's signing secret appears once, in
the answer to create or rotate-secret. Rules: CRUD. Alerts and deliveries (with their attempts): read-only.
"""

from datetime import timedelta
from urllib.parse import urlsplit

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.api import TenantRelatedField, TenantViewSetMixin
from config.api import RecentFirstCursorPagination, RejectUnknownFieldsMixin, UtcDateTimeFilter
from integrations.crypto import CredentialsDecryptionError
from integrations.models import Connection
from mappings.models import Mapping
from notifications.models import (
    Alert,
    AlertState,
    Channel,
    ChannelKind,
    Condition,
    Delivery,
    DeliveryAttempt,
    DeliveryEvent,
    DeliveryStatus,
    Level,
    Rule,
    Scope,
)
from notifications.services import (
    ROTATION_GRACE,
    channel_create,
    channel_delete,
    channel_enable,
    channel_rotate_secret,
    channel_send_test,
    channel_update,
    rule_create,
    rule_delete,
    rule_update,
)
from syncs.api.common import ConnectionRefSerializer, MappingRefSerializer, StateConflict, refusals_as_conflicts

MAX_SECRET_LENGTH = 200


class RefSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="code", read_only=True)
    name = serializers.CharField(read_only=True)


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ["number", "attempted_at", "duration_ms", "succeeded", "response_code", "error"]
        read_only_fields = fields


class ChannelRefSerializer(RefSerializer):
    kind = serializers.ChoiceField(choices=ChannelKind.choices, read_only=True)


class DeliverySerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    channel = ChannelRefSerializer(read_only=True, allow_null=True,
                                   help_text="Null for a message to a customer's contacts.")
    alert = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    rule = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    attempt_log = DeliveryAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = Delivery
        fields = ["id", "channel", "alert", "rule", "event", "audience", "kind", "recipients", "message",
                  "message_id", "status", "attempts", "next_attempt_at", "last_attempt_at", "delivered_at",
                  "response_code", "error", "created_at", "attempt_log"]
        read_only_fields = fields


# --- channels ------------------------------------------------------------------------------------------------------


class ChannelSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    kind = serializers.ChoiceField(choices=ChannelKind.choices, help_text="Fixed once created.")
    recipients = serializers.ListField(
        child=serializers.CharField(max_length=254), required=False, max_length=50,
        help_text="Email channels: the addresses alerts go to.")
    url = serializers.CharField(
        write_only=True, required=False, max_length=2000,
        help_text="Slack: the incoming-webhook URL (a secret: write-only, never answered). Webhook: the URL Resync "
                  "posts signed messages to. Must be a public address.")
    secret = serializers.CharField(
        write_only=True, required=False, max_length=MAX_SECRET_LENGTH,
        help_text='Webhook channels: a signing secret ("whsec_" + base64 of 24 to 64 bytes). Omit it and one is '
                  "generated; either way the answer to create shows it once.")
    destination = serializers.SerializerMethodField(
        help_text="Where messages go, without secrets: the recipients, the Slack host, or the webhook URL without "
                  "its query string.")

    class Meta:
        model = Channel
        fields = ["id", "name", "kind", "recipients", "url", "secret", "destination", "is_enabled",
                  "disabled_reason", "disabled_at", "failed_deliveries_in_a_row", "last_success_at",
                  "last_failure_at", "created_at", "updated_at"]
        read_only_fields = ["is_enabled", "disabled_reason", "disabled_at", "failed_deliveries_in_a_row",
                            "last_success_at", "last_failure_at", "created_at", "updated_at"]

    @extend_schema_field(serializers.CharField())
    def get_destination(self, channel):
        if channel.kind == ChannelKind.EMAIL:
            return ", ".join(channel.recipients)
        if channel.kind == ChannelKind.SLACK:
            return "Slack incoming webhook"
        parts = urlsplit(channel.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

    def validate_kind(self, value):
        if self.instance is not None and value != self.instance.kind:
            raise serializers.ValidationError("The kind of a channel cannot change: create a new channel.")
        return value

    def validate_secret(self, value):
        if self.instance is not None:
            raise serializers.ValidationError("The secret is set when creating; change it with POST rotate-secret.")
        return value

    def create(self, validated_data):
        organization = validated_data.pop("organization", None) or self.context["request"].org
        channel, plain = channel_create(organization=organization, **validated_data)
        channel.plain_secret = plain
        return channel

    def update(self, channel, validated_data):
        validated_data.pop("kind", None)
        return channel_update(channel=channel, **validated_data)


class ChannelWithSecretSerializer(ChannelSerializer):
    secret = serializers.CharField(source="plain_secret", read_only=True, allow_null=True,
                                   help_text="Shown once: store it now. Null for email and Slack channels.")

    class Meta(ChannelSerializer.Meta):
        pass


class SecretRotationSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    secret = serializers.CharField(required=False, max_length=MAX_SECRET_LENGTH,
                                   help_text="The new secret; omit it and one is generated.")
    grace_hours = serializers.IntegerField(
        required=False, min_value=0, max_value=24 * 7, default=int(ROTATION_GRACE.total_seconds() // 3600),
        help_text="Hours the previous secret keeps signing next to the new one (0: stop at once).")


class ChannelFilterSet(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=ChannelKind.choices)
    is_enabled = django_filters.BooleanFilter()

    class Meta:
        model = Channel
        fields = []


@extend_schema_view(
    list=extend_schema(summary="List notification channels"),
    create=extend_schema(summary="Create a notification channel", responses={201: ChannelWithSecretSerializer},
                         description="A webhook channel's signing secret is in the answer, once."),
    retrieve=extend_schema(summary="Get a notification channel"),
    update=extend_schema(summary="Replace a notification channel"),
    partial_update=extend_schema(summary="Update a notification channel"),
    destroy=extend_schema(summary="Delete a notification channel and its deliveries"),
)
class ChannelViewSet(TenantViewSetMixin, viewsets.ModelViewSet):
    """Where your alerts go: email, Slack, or signed webhooks. Secrets are write-only."""

    tenant_model = Channel
    serializer_class = ChannelSerializer
    filterset_class = ChannelFilterSet
    ordering_fields = ["name", "kind", "created_at"]
    ordering = ["name"]

    # No Idempotency-Key on create or rotate-secret: the stored answer would keep the plain secret.
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        channel = serializer.save()
        data = ChannelWithSecretSerializer(channel, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        channel_delete(channel=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="Send a test message", request=None, responses={202: DeliverySerializer},
                   description="Queues a test message through the channel; the answer is its delivery, whose "
                               "status tells how it went.")
    @action(detail=True, methods=["post"])
    def test(self, request, *args, **kwargs):
        with refusals_as_conflicts():
            delivery = channel_send_test(channel=self.get_object())
        delivery.refresh_from_db()
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Rotate a webhook channel's signing secret", request=SecretRotationSerializer,
                   responses={200: ChannelWithSecretSerializer},
                   description="The new secret signs from now on and is shown once; the previous one keeps "
                               "signing next to it for grace_hours, so the receiver can switch over.")
    @action(detail=True, methods=["post"], url_path="rotate-secret", url_name="rotate-secret")
    def rotate_secret(self, request, *args, **kwargs):
        channel = self.get_object()
        body = SecretRotationSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            with refusals_as_conflicts():
                plain = channel_rotate_secret(channel=channel, secret=body.validated_data.get("secret"),
                                              grace=timedelta(hours=body.validated_data["grace_hours"]))
        except CredentialsDecryptionError:
            raise StateConflict("The channel's secrets cannot be read (the encryption keys changed): rotate with "
                                "grace_hours=0.", code="channel_secrets_unreadable") from None
        channel.plain_secret = plain
        return Response(ChannelWithSecretSerializer(channel, context=self.get_serializer_context()).data)

    @extend_schema(summary="Enable a disabled channel", request=None, responses={200: ChannelSerializer})
    @action(detail=True, methods=["post"])
    def enable(self, request, *args, **kwargs):
        channel = channel_enable(channel=self.get_object())
        return Response(self.get_serializer(channel).data)


# --- rules ---------------------------------------------------------------------------------------------------------


class RuleSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    condition = serializers.ChoiceField(choices=Condition.choices)
    scope = serializers.ChoiceField(choices=Scope.choices, default=Scope.ORGANIZATION)
    connection = TenantRelatedField(Connection, required=False, allow_null=True,
                                    help_text="The connection's id, for scope connection.")
    mapping = TenantRelatedField(Mapping, required=False, allow_null=True,
                                 help_text="The mapping's id, for scope mapping.")
    channels = TenantRelatedField(Channel, many=True, required=False, help_text="Ids of the channels to alert.")
    level = serializers.ChoiceField(choices=Level.choices, default=Level.WARNING,
                                    help_text="Authentication rules are always critical.")
    threshold = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=10_000_000,
                                         help_text="N of failures per hour (default 5) and unsynced records "
                                                   "(default 100).")
    minutes = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=7 * 24 * 60,
                                       help_text="N of a target failing for N minutes (default 10).")
    cooldown_minutes = serializers.IntegerField(required=False, min_value=0, max_value=7 * 24 * 60)
    digest_hour = serializers.IntegerField(required=False, min_value=0, max_value=23)
    customer_contacts = serializers.ListField(child=serializers.CharField(max_length=254), required=False,
                                              max_length=50)

    class Meta:
        model = Rule
        fields = ["id", "name", "condition", "scope", "connection", "mapping", "threshold", "minutes", "level",
                  "cooldown_minutes", "digest_hour", "channels", "is_enabled", "customer_facing",
                  "customer_contacts", "customer_name", "last_digest_at", "created_at", "updated_at"]
        read_only_fields = ["last_digest_at", "created_at", "updated_at"]

    def create(self, validated_data):
        organization = validated_data.pop("organization", None) or self.context["request"].org
        return rule_create(organization=organization, **validated_data)

    def update(self, rule, validated_data):
        return rule_update(rule=rule, **validated_data)


class RuleFilterSet(django_filters.FilterSet):
    condition = django_filters.ChoiceFilter(choices=Condition.choices)
    scope = django_filters.ChoiceFilter(choices=Scope.choices)
    is_enabled = django_filters.BooleanFilter()

    class Meta:
        model = Rule
        fields = []


@extend_schema_view(
    list=extend_schema(summary="List alert rules"),
    create=extend_schema(summary="Create an alert rule"),
    retrieve=extend_schema(summary="Get an alert rule"),
    update=extend_schema(summary="Replace an alert rule"),
    partial_update=extend_schema(summary="Update an alert rule"),
    destroy=extend_schema(summary="Delete an alert rule and its alerts"),
)
class RuleViewSet(TenantViewSetMixin, viewsets.ModelViewSet):
    """What to be alerted about, where, and how loudly."""

    tenant_model = Rule
    serializer_class = RuleSerializer
    filterset_class = RuleFilterSet
    ordering_fields = ["name", "condition", "created_at"]
    ordering = ["name"]

    def scope_queryset(self, queryset):
        return queryset.select_related("connection", "mapping").prefetch_related("channels")

    def destroy(self, request, *args, **kwargs):
        rule_delete(rule=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- alerts and deliveries -----------------------------------------------------------------------------------------


class RuleRefSerializer(RefSerializer):
    condition = serializers.ChoiceField(choices=Condition.choices, read_only=True)


class AlertSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="code", read_only=True)
    rule = RuleRefSerializer(read_only=True)
    connection = ConnectionRefSerializer(read_only=True, allow_null=True)
    mapping = MappingRefSerializer(read_only=True, allow_null=True)
    run = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)

    class Meta:
        model = Alert
        fields = ["id", "rule", "state", "level", "title", "summary", "details", "connection", "mapping", "run",
                  "started_at", "updated_at", "resolved_at", "last_notified_at", "occurrences", "notifications"]
        read_only_fields = fields


class AlertFilterSet(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=AlertState.choices)
    level = django_filters.ChoiceFilter(choices=Level.choices)
    rule = django_filters.UUIDFilter(field_name="rule__code", help_text="The rule's id.")
    started_after = UtcDateTimeFilter(field_name="started_at", lookup_expr="gte")
    started_before = UtcDateTimeFilter(field_name="started_at", lookup_expr="lt")

    class Meta:
        model = Alert
        fields = []


class AlertPagination(RecentFirstCursorPagination):
    ordering = ("-started_at", "-id")


@extend_schema_view(list=extend_schema(summary="List alerts"), retrieve=extend_schema(summary="Get an alert"))
class AlertViewSet(TenantViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Incidents your rules opened, newest first: firing while their condition lasts, then resolved."""

    tenant_model = Alert
    serializer_class = AlertSerializer
    filterset_class = AlertFilterSet
    pagination_class = AlertPagination
    ordering_fields = ["started_at"]
    ordering = ["-started_at", "-id"]

    def scope_queryset(self, queryset):
        return queryset.select_related("rule", "connection", "mapping", "run")


class DeliveryFilterSet(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=DeliveryStatus.choices, help_text="Repeat to match several.")
    event = django_filters.ChoiceFilter(choices=DeliveryEvent.choices)
    channel = django_filters.UUIDFilter(field_name="channel__code", help_text="The channel's id.")
    alert = django_filters.UUIDFilter(field_name="alert__code", help_text="The alert's id.")

    class Meta:
        model = Delivery
        fields = []


@extend_schema_view(list=extend_schema(summary="List deliveries"), retrieve=extend_schema(summary="Get a delivery"))
class DeliveryViewSet(TenantViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                      viewsets.GenericViewSet):
    """Every message sent (or being retried) for alerts, digests and tests, with each attempt."""

    tenant_model = Delivery
    serializer_class = DeliverySerializer
    filterset_class = DeliveryFilterSet
    pagination_class = RecentFirstCursorPagination
    ordering_fields = ["created_at"]
    ordering = ["-created_at", "-id"]

    def scope_queryset(self, queryset):
        return queryset.select_related("channel", "alert", "rule").prefetch_related("attempt_log")


ROUTES = [  # (prefix, viewset, basename)
    ("notification-channels", ChannelViewSet, "notification-channel"),
    ("notification-rules", RuleViewSet, "notification-rule"),
    ("alerts", AlertViewSet, "alert"),
    ("deliveries", DeliveryViewSet, "delivery"),
]
URLS = []
