import re

from django import forms
from django.contrib import admin, messages
from django.utils.translation import ngettext
from django_q.models import Schedule

from mappings.models import FieldMapping, Mapping
from mappings.services import mapping_run_now, mapping_settings_errors
from syncs.schedules import mapping_schedule_sync, schedule_name


class FieldMappingInline(admin.TabularInline):
    model = FieldMapping
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
    """Staff get the API's checks of the JSON settings (match keys, filters, retry policy, schedule)."""

    def _post_clean(self):
        super()._post_clean()
        for path, messages_ in mapping_settings_errors(self.instance).items():
            field = re.match(r"\w+", path).group(0)
            if field in self.fields and field not in self.errors:
                self.add_error(field, [f"{path}: {message}" if path != field else message for message in messages_])


@admin.register(Mapping)
class MappingAdmin(admin.ModelAdmin):
    form = MappingAdminForm
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
    actions = ["run_now"]

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

    def save_formset(self, request, form, formset, change):
        if formset.model is not FieldMapping:
            return super().save_formset(request, form, formset, change)
        # The inline has no organization field: a field mapping always lives in its mapping's organization.
        instances = formset.save(commit=False)
        for instance in formset.deleted_objects:
            instance.delete()
        for instance in instances:
            instance.organization_id = form.instance.organization_id
            instance.save()
        formset.save_m2m()

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # The django-q schedule follows the mapping's settings, as it does when the API or a pause changes them.
        mapping_schedule_sync(mapping=form.instance)

    def delete_model(self, request, obj):
        Schedule.objects.filter(name=schedule_name(obj)).delete()
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        Schedule.objects.filter(name__in=[schedule_name(mapping) for mapping in queryset]).delete()
        super().delete_queryset(request, queryset)

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
    list_display = ["__str__", "mapping", "organization", "position", "required", "skip_invalid"]
    list_filter = ["organization", "required", "skip_invalid"]
    search_fields = ["source_field", "target_field", "mapping__name"]
    list_select_related = ["mapping", "organization"]
    raw_id_fields = ["mapping"]
    readonly_fields = ["organization"]

    def save_model(self, request, obj, form, change):
        obj.organization_id = obj.mapping.organization_id
        super().save_model(request, obj, form, change)
