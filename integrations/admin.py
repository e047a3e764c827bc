import json

from django import forms
from django.contrib import admin

from integrations.connectors import PROVIDER_CHOICES
from integrations.models import Connection, SandboxCallCounter, SandboxRecord


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
        fields = ["organization", "name", "provider", "config", "status", "status_reason"]

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

    def save(self, commit=True):
        credentials = self.cleaned_data.get("new_credentials")
        if credentials is not None:
            self.instance.credentials = credentials
        return super().save(commit=commit)


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    form = ConnectionAdminForm
    list_display = ["name", "organization", "provider", "status", "has_credentials", "last_checked_at", "updated_at"]
    list_filter = ["provider", "status", "organization"]
    search_fields = ["name", "organization__name", "organization__slug", "code"]
    list_select_related = ["organization"]
    autocomplete_fields = ["organization"]
    readonly_fields = ["code", "has_credentials", "last_checked_at", "last_error", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["organization", "name", "provider", "code", "status", "status_reason"]}),
        ("Configuration (not secret)", {"fields": ["config"]}),
        ("Credentials", {"fields": ["has_credentials", "new_credentials"]}),
        ("Health", {"fields": ["last_checked_at", "last_error", "created_at", "updated_at"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        # A connection moved to another organization would take its mappings' data along.
        if obj is not None:
            return [*self.readonly_fields, "organization"]
        return self.readonly_fields

    @admin.display(boolean=True, description="Credentials set")
    def has_credentials(self, obj):
        return bool(obj.credentials_ciphertext)


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
