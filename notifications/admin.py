"""Admin for notifications: what was configured, which alerts fired, and every delivery with its attempts.

Everything is read-only here: channels and rules change through the API (notifications.services checks them and
keeps secrets write-only), and alerts and deliveries are history. A channel's secrets are never displayed.
"""

from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from notifications.models import Alert, Channel, Delivery, DeliveryAttempt, Rule
from notifications.services import channel_enable, channel_send_test
from syncs.admin import ReadOnlyAdminMixin, pretty_json


@admin.register(Channel)
class ChannelAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["name", "organization", "kind", "is_enabled", "disabled_reason", "failed_deliveries_in_a_row",
                    "last_success_at", "last_failure_at"]
    list_filter = ["kind", "is_enabled"]
    search_fields = ["name", "organization__name"]
    exclude = ["secrets_ciphertext"]
    actions = ["send_test", "enable"]

    @admin.action(description="Send a test message")
    def send_test(self, request, queryset):
        for channel in queryset:
            try:
                channel_send_test(channel=channel)
            except ValidationError as exc:
                self.message_user(request, f"{channel}: {exc.messages[0]}", messages.WARNING)
            else:
                self.message_user(request, f"{channel}: test message queued.")

    @admin.action(description="Enable again")
    def enable(self, request, queryset):
        for channel in queryset.filter(is_enabled=False):
            channel_enable(channel=channel)
            self.message_user(request, f"{channel}: enabled.")


@admin.register(Rule)
class RuleAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["name", "organization", "condition", "scope", "level", "threshold", "minutes",
                    "cooldown_minutes", "is_enabled", "customer_facing"]
    list_filter = ["condition", "scope", "level", "is_enabled", "customer_facing"]
    search_fields = ["name", "organization__name"]


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = ["created_at", "event", "kind", "channel", "audience", "status", "attempts", "response_code", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["title", "organization", "rule", "level", "state", "started_at", "updated_at", "resolved_at",
                    "occurrences", "notifications"]
    list_filter = ["state", "level", "rule__condition"]
    search_fields = ["title", "organization__name", "rule__name"]
    readonly_fields = ["details_json"]
    exclude = ["details"]
    inlines = [DeliveryInline]

    @admin.display(description="Details")
    def details_json(self, alert):
        return pretty_json(alert.details)


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ["number", "attempted_at", "duration_ms", "succeeded", "response_code", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "organization", "event", "kind", "channel", "audience", "status", "attempts",
                    "response_code", "next_attempt_at"]
    list_filter = ["status", "kind", "event", "audience"]
    search_fields = ["organization__name", "channel__name", "message_id"]
    readonly_fields = ["message_json"]
    exclude = ["message"]
    inlines = [AttemptInline]

    @admin.display(description="Message")
    def message_json(self, delivery):
        return pretty_json(delivery.message)
