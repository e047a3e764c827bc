import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from config.admin_refusals import ServiceDeleteMixin
from integrations import webhooks
from integrations.connectors import PROVIDER_CHOICES
from integrations.connectors.base import webhook_secret_key
from integrations.crypto import CredentialsDecryptionError
from integrations.models import Connection, SandboxCallCounter, SandboxRecord, WebhookEndpoint, WebhookEvent
from integrations.services import (
    ConnectionInUse,
    connection_clean,
    connection_config_secret_keys,
    connection_delete,
    connection_update,
)


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders its value back, like PasswordInput(render_value=False).

    Re-displaying a form after a validation error must not echo the secret the operator typed into the page.
    """

    def format_value(self, value):
        return None


class ConnectionAdminForm(forms.ModelForm):
    provider = forms.ChoiceField(choices=PROVIDER_CHOICES)
    new_credentials = forms.CharField(
        label="New credentials (JSON object)",
        required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 4, "autocomplete": "off", "spellcheck": "false"}),
        help_text='For example {"api_key": "..."}. Leave empty to keep the current credentials; '
        "{} removes them. Stored encrypted and never shown again.",
    )

    class Meta:
        model = Connection
        fields = ["organization", "name", "provider", "config", "max_concurrency", "status", "status_reason"]

    def clean_config(self):
        # The same rule as the API: config is shown to everyone, so a secret-looking key belongs in credentials.
        config = self.cleaned_data["config"]
        secret_keys = connection_config_secret_keys(config)
        if secret_keys:
            raise forms.ValidationError(
                f"{', '.join(secret_keys)} looks like a secret: put it in the new credentials, which are stored "
                "encrypted and never shown."
            )
        return config

    def clean_new_credentials(self):
        raw = self.cleaned_data["new_credentials"].strip()
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            # The parser's message quotes the input, which here is a secret.
            raise forms.ValidationError("Enter valid JSON.") from None
        if not isinstance(value, dict):
            raise forms.ValidationError('Enter a JSON object, for example {"api_key": "..."}.')
        return value

    def _post_clean(self):
        # The service's checks, as in the API (the connector's form, URLs through the SSRF guard, required
        # secrets, a name free in the organization): a refusal is a form error here, not a crash in save_model.
        super()._post_clean()
        had_errors = set(self.errors)
        credentials = self.cleaned_data.get("new_credentials")
        for path, messages_ in connection_clean(self.instance, credentials=credentials).items():
            head, _dot, key = path.partition(".")
            field = "new_credentials" if head == "credentials" else head
            if field not in self.fields:
                self.add_error(None, [f"{path}: {message}" for message in messages_])
            elif field not in had_errors:
                self.add_error(field, [f"{key}: {message}" if key else message for message in messages_])


@admin.register(Connection)
class ConnectionAdmin(ServiceDeleteMixin, admin.ModelAdmin):
    form = ConnectionAdminForm
    actions = ["delete_selected"]
    delete_refusals = (ConnectionInUse,)
    list_display = ["name", "organization", "provider", "status", "has_credentials", "last_checked_at", "updated_at"]
    list_filter = ["provider", "status", "organization"]
    search_fields = ["name", "organization__name", "organization__slug", "code"]
    list_select_related = ["organization"]
    autocomplete_fields = ["organization"]
    readonly_fields = ["code", "has_credentials", "last_checked_at", "last_error", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["organization", "name", "provider", "code", "status", "status_reason"]}),
        ("Configuration (not secret)", {"fields": ["config", "max_concurrency"]}),
        ("Credentials", {"fields": ["has_credentials", "new_credentials"]}),
        ("Health", {"fields": ["last_checked_at", "last_error", "created_at", "updated_at"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        # A connection moved to another organization would take its mappings' data along; its provider is fixed
        # once created, as in the API (connection_clean refuses both either way).
        if obj is not None:
            return [*self.readonly_fields, "organization", "provider"]
        return self.readonly_fields

    @admin.display(boolean=True, description="Credentials set")
    def has_credentials(self, obj):
        return bool(obj.credentials_ciphertext)

    def save_model(self, request, obj, form, change):
        # The same service as the API: the same checks, and a changed address empties the schema cache.
        connection_update(connection=obj, credentials=form.cleaned_data.get("new_credentials"))

    def delete_through_service(self, obj):
        connection_delete(connection=obj)


@admin.register(SandboxRecord)
class SandboxRecordAdmin(admin.ModelAdmin):
    list_display = ["external_id", "object_name", "connection", "organization", "modified_at"]
    list_filter = ["object_name", "organization"]
    search_fields = ["external_id", "object_name", "connection__name"]
    list_select_related = ["connection", "organization"]
    raw_id_fields = ["connection"]
    readonly_fields = ["organization", "created_at"]
    date_hierarchy = "modified_at"
    show_full_result_count = False

    def save_model(self, request, obj, form, change):
        obj.organization_id = obj.connection.organization_id
        super().save_model(request, obj, form, change)


@admin.register(SandboxCallCounter)
class SandboxCallCounterAdmin(admin.ModelAdmin):
    list_display = ["connection", "calls"]
    search_fields = ["connection__name"]
    list_select_related = ["connection"]
    raw_id_fields = ["connection"]


class WebhookEndpointAdminForm(forms.ModelForm):
    new_secret = forms.CharField(
        label="New signing secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="The secret the sender signs with (e.g. whsec_...; required for a new endpoint). On an existing "
        "endpoint a new secret goes first and the old ones are still accepted until you drop them. Stored "
        "encrypted and never shown again.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["connection", "name", "is_active"]

    def clean_new_secret(self):
        secret = self.cleaned_data["new_secret"] or None
        if secret is None and self.instance.pk is None:
            raise ValidationError("A new endpoint needs the secret its sender signs with.")
        if secret is not None:
            try:
                webhook_secret_key(secret)
            except ValueError as exc:
                # The message names the format, never the value typed.
                raise ValidationError(str(exc)) from None
        return secret


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointAdminForm
    list_display = ["name", "organization", "connection", "code", "is_active", "secret_count", "last_received_at"]
    list_filter = ["is_active", "organization"]
    search_fields = ["name", "code", "connection__name", "organization__name"]
    list_select_related = ["organization", "connection"]
    autocomplete_fields = ["connection"]
    readonly_fields = ["organization", "code", "receive_path", "secret_count", "created_at", "last_received_at"]
    fields = ["connection", "name", "is_active", "new_secret", *readonly_fields]
    actions = ["drop_old_secrets"]

    def get_readonly_fields(self, request, obj=None):
        # Moving an endpoint to another connection would route one tenant's events into another's syncs.
        if obj is not None:
            return [*self.readonly_fields, "connection"]
        return self.readonly_fields

    @admin.display(description="Signing secrets")
    def secret_count(self, obj):
        try:
            return len(obj.secrets)
        except CredentialsDecryptionError:
            return "unreadable"

    def save_model(self, request, obj, form, change):
        secret = form.cleaned_data.get("new_secret")
        if not change:
            # The API's service: the organization of its connection, the secret checked, the creation logged.
            created, _plain = webhooks.webhook_endpoint_create(connection=obj.connection, name=obj.name, secret=secret)
            if not obj.is_active:
                WebhookEndpoint.objects.filter(pk=created.pk).update(is_active=False)
                created.is_active = False
            obj.pk, obj.organization_id, obj.code = created.pk, created.organization_id, created.code
            obj._state.adding = False
            return
        super().save_model(request, obj, form, change)
        if secret:
            webhooks.webhook_endpoint_rotate_secret(endpoint=obj, secret=secret)

    @admin.action(description="Drop old signing secrets (keep only the newest)")
    def drop_old_secrets(self, request, queryset):
        dropped, unreadable = 0, []
        for endpoint in queryset:
            try:
                webhooks.webhook_endpoint_drop_old_secrets(endpoint=endpoint)
            except CredentialsDecryptionError:
                unreadable.append(endpoint.name)  # the encryption keys changed: set a new secret instead
            else:
                dropped += 1
        self.message_user(request, f"Old secrets dropped on {dropped} endpoint(s).", messages.SUCCESS)
        if unreadable:
            self.message_user(
                request, f"Secrets unreadable (set a new secret): {', '.join(unreadable)}.", messages.WARNING
            )


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    """Events as received: read-only, with replay as the one action."""

    list_display = ["event_id", "endpoint", "organization", "status", "object_name", "received_at", "attempts"]
    list_filter = ["status", "organization"]
    search_fields = ["event_id", "code", "endpoint__name"]
    list_select_related = ["endpoint", "organization"]
    date_hierarchy = "received_at"
    show_full_result_count = False
    readonly_fields = [
        "code", "organization", "endpoint", "event_id", "received_at", "status", "outcome", "object_name",
        "record_ids", "run_list", "attempts", "processing_started_at", "processed_at", "headers", "payload",
    ]
    fields = readonly_fields
    actions = ["replay_events"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="Runs")
    def run_list(self, obj):
        return ", ".join(str(run.pk) for run in obj.runs.all()) or "-"

    @admin.action(description="Replay selected events (queue their records again)", permissions=["change"])
    def replay_events(self, request, queryset):
        events = list(queryset.select_related("endpoint__connection", "organization"))
        for event in events:
            webhooks.webhook_event_replay(event=event)
        self.message_user(request, f"{len(events)} event(s) replayed.", messages.SUCCESS)
