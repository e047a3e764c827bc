import re

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.utils.translation import ngettext

from config.admin_refusals import ServiceDeleteMixin
from mappings.models import FieldMapping, Mapping
from mappings.services import (
    FIELD_MAPPING_FIELDS,
    MappingBusy,
    mapping_clean,
    mapping_delete,
    mapping_field_mappings_errors,
    mapping_run_now,
    mapping_update,
)


def _kept_forms(formset):
    """The inline's rows that make the mapping's field mappings: existing or filled in, and not deleted."""
    return [form for form in formset.forms
            if (form.instance.pk or form.has_changed()) and not form.cleaned_data.get("DELETE")]


def _field_mapping_item(form):
    return {name: form.cleaned_data[name] for name in FIELD_MAPPING_FIELDS if name in form.cleaned_data}


class FieldMappingFormSet(forms.BaseInlineFormSet):
    def clean(self):
        # The service's checks of the list as a whole, which replaces the mapping's field mappings on save.
        super().clean()
        if any(self.errors) or self.instance.organization_id is None:
            return
        kept = _kept_forms(self)
        unplaced = []
        errors = mapping_field_mappings_errors(self.instance, [_field_mapping_item(form) for form in kept])
        for path, messages_ in errors.items():
            match = re.fullmatch(r"field_mappings\[(\d+)\]\.?(\w*)", path)
            if match is None:
                unplaced += messages_
                continue
            form, field = kept[int(match.group(1))], match.group(2)
            form.add_error(field if field in form.fields else None, messages_)
        if unplaced:
            raise ValidationError(unplaced)


class FieldMappingInline(admin.TabularInline):
    model = FieldMapping
    formset = FieldMappingFormSet
    extra = 0
    fields = [
        "position",
        "source_field",
        "target_field",
        "transforms",
        "reverse_transforms",
        "required",
        "default_value",
        "skip_invalid",
    ]


class MappingAdminForm(forms.ModelForm):
    """Staff get the API's checks (mappings.services.mapping_clean): JSON settings, a free name, and no moving a
    mapping that has synced records to other connections or objects."""

    def _post_clean(self):
        super()._post_clean()
        had_errors = set(self.errors)
        for path, messages_ in mapping_clean(self.instance).items():
            field = re.match(r"\w+", path).group(0)
            if field in self.fields:
                if field not in had_errors:
                    self.add_error(field, [f"{path}: {m}" if path != field else m for m in messages_])
            else:
                self.add_error(None, [m if path == NON_FIELD_ERRORS else f"{path}: {m}" for m in messages_])


@admin.register(Mapping)
class MappingAdmin(ServiceDeleteMixin, admin.ModelAdmin):
    form = MappingAdminForm
    delete_refusals = (MappingBusy,)
    list_display = [
        "name",
        "organization",
        "source",
        "target",
        "direction",
        "write_mode",
        "error_strategy",
        "schedule",
        "is_active",
        "last_successful_sync_at",
    ]
    list_filter = [
        "organization",
        "is_active",
        "direction",
        "write_mode",
        "error_strategy",
        "logging_level",
        "auto_fix",
        "schedule_type",
    ]
    search_fields = ["name", "source_object", "target_object", "source_connection__name", "target_connection__name"]
    list_select_related = ["organization", "source_connection", "target_connection"]
    autocomplete_fields = ["organization", "source_connection", "target_connection"]
    readonly_fields = [
        "code",
        "source_cursor",
        "target_cursor",
        "last_successful_sync_at",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["organization", "name", "code", "is_active", "paused_reason"]}),
        (
            "What to sync",
            {
                "fields": [
                    ("source_connection", "source_object"),
                    ("target_connection", "target_object"),
                    "direction",
                    "match_keys",
                    "write_mode",
                    "create_if_missing",
                    "conflict_policy",
                    "filters",
                ]
            },
        ),
        (
            "When things go wrong",
            {
                "fields": [
                    "error_strategy",
                    "retry_schedule",
                    "max_retries",
                    ("automated_replay", "replay_attempts"),
                    "auto_fix",
                    "default_phone_country",
                    "logging_level",
                ]
            },
        ),
        ("Schedule", {"fields": ["schedule_type", "schedule_interval_minutes", "schedule_cron"]}),
        (
            "State",
            {"fields": ["source_cursor", "target_cursor", "last_successful_sync_at", "created_at", "updated_at"]},
        ),
    ]
    inlines = [FieldMappingInline]
    actions = ["delete_selected", "run_now"]

    def get_readonly_fields(self, request, obj=None):
        # Moving a mapping to another organization would strand its runs, errors and links in the old one.
        if obj is not None:
            return [*self.readonly_fields, "organization"]
        return self.readonly_fields

    @admin.display(description="Source")
    def source(self, obj):
        return f"{obj.source_connection} · {obj.source_object}"

    @admin.display(description="Target")
    def target(self, obj):
        return f"{obj.target_connection} · {obj.target_object}"

    @admin.display(description="Schedule", ordering="schedule_type")
    def schedule(self, obj):
        if obj.schedule_type == "interval" and obj.schedule_interval_minutes:
            return f"Every {obj.schedule_interval_minutes} min"
        if obj.schedule_type == "cron" and obj.schedule_cron:
            return obj.schedule_cron
        return obj.get_schedule_type_display()

    def save_model(self, request, obj, form, change):
        # The API's service, with the settings the form set on obj: its checks again, and the schedule follows.
        mapping_update(mapping=obj)

    def save_formset(self, request, form, formset, change):
        if formset.model is not FieldMapping:
            return super().save_formset(request, form, formset, change)
        formset.save(commit=False)  # only to name what changed in the history: the service writes
        items = [_field_mapping_item(row) for row in _kept_forms(formset)]
        # The service replaces the rows (new ids): only when their values really change.
        if items != list(form.instance.field_mappings.order_by("position", "pk").values(*FIELD_MAPPING_FIELDS)):
            mapping_update(mapping=form.instance, field_mappings=items)

    def delete_through_service(self, obj):
        mapping_delete(mapping=obj)

    @admin.action(description="Run now")
    def run_now(self, request, queryset):
        # mapping_run_now hands back the active run of a mapping instead of racing it with a second one.
        results = [mapping_run_now(mapping=mapping) for mapping in queryset.select_related("organization")]
        busy = sum(1 for _run, already_active in results if already_active)
        queued = len(results) - busy
        message = ngettext("%d run queued.", "%d runs queued.", queued) % queued
        if busy:
            message += (
                " "
                + ngettext(
                    "%d mapping already had a run queued or running.",
                    "%d mappings already had a run queued or running.",
                    busy,
                )
                % busy
            )
        self.message_user(request, message, messages.SUCCESS if queued else messages.WARNING)


@admin.register(FieldMapping)
class FieldMappingAdmin(admin.ModelAdmin):
    """Read-only: field mappings are written with their mapping (its page, or the API), through mappings.services."""

    list_display = ["__str__", "mapping", "organization", "position", "required", "skip_invalid"]
    list_filter = ["organization", "required", "skip_invalid"]
    search_fields = ["source_field", "target_field", "mapping__name"]
    list_select_related = ["mapping", "organization"]
    raw_id_fields = ["mapping"]
    readonly_fields = ["organization"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    # Deleting a mapping deletes its field mappings, which needs the delete permission: only their own delete
    # page and action are closed.
    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "show_delete": False})

    def delete_view(self, request, object_id, extra_context=None):
        raise PermissionDenied
