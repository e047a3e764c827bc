"""Filters of the integrations app's API lists (one FilterSet per model)."""

import django_filters

from config.api import UtcDateTimeFilter
from integrations.connectors import PROVIDER_CHOICES
from integrations.models import Connection, ConnectionStatus, WebhookEndpoint, WebhookEvent, WebhookEventStatus


class ConnectionFilterSet(django_filters.FilterSet):
    provider = django_filters.ChoiceFilter(choices=PROVIDER_CHOICES, help_text="Only connections of this provider.")
    status = django_filters.ChoiceFilter(choices=ConnectionStatus.choices, help_text="Only connections in this status.")
    search = django_filters.CharFilter(
        field_name="name", lookup_expr="icontains", max_length=200,
        help_text="Connections whose name contains this text (case-insensitive).",
    )

    class Meta:
        model = Connection
        fields = ["provider", "status", "search"]


class WebhookEndpointFilterSet(django_filters.FilterSet):
    connection = django_filters.UUIDFilter(field_name="connection__code", help_text="The connection's id.")
    is_active = django_filters.BooleanFilter(help_text="Only endpoints that accept deliveries (true) or not.")

    class Meta:
        model = WebhookEndpoint
        fields = []


class WebhookEventFilterSet(django_filters.FilterSet):
    endpoint = django_filters.UUIDFilter(field_name="endpoint__code", help_text="The webhook endpoint's id.")
    status = django_filters.MultipleChoiceFilter(
        choices=WebhookEventStatus.choices, help_text="Repeat to match several."
    )
    received_after = UtcDateTimeFilter(field_name="received_at", lookup_expr="gte",
                                       help_text="Received at or after this time (ISO 8601).")
    received_before = UtcDateTimeFilter(field_name="received_at", lookup_expr="lt",
                                        help_text="Received before this time (ISO 8601).")

    class Meta:
        model = WebhookEvent
        fields = []
