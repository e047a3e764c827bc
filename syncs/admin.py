"""Admin for the record of what happened. Runs, batches and errors are history: staff read them here, and
change them only through the recovery services (retry, ignore), never by editing rows."""

import json
from collections import Counter, defaultdict

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.translation import ngettext

from accounts.models import Organization
from syncs.chains import sync_run_retry_failures
from syncs.models import (
    COUNT_FIELDS,
    BulkAction,
    ErrorCountHour,
    ErrorGroupRetry,
    ErrorStatus,
    RecordError,
    RecordLink,
    Resolution,
    RollupWatermark,
    SyncBatch,
    SyncRun,
)
from syncs.retries import SKIP_REASONS, errors_retry
from syncs.review import errors_close


class ReadOnlyAdminMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def admin_link(model, pk, text=None):
    if pk is None:
        return None
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, text or f"#{pk}")


def pretty_json(value):
    if value is None:
        return None
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False, default=str))


class EstimatedCountPaginator(Paginator):
    """Pages of a table with millions of rows that do not count them all on every click.

    Up to EXACT_UP_TO rows are counted exactly, by a count that stops there; a longer result is as long as
    PostgreSQL's planner estimates it (from the table's statistics), which is what "N results" and the page links
    then show. A page past the true end answers like any page out of range.
    """

    EXACT_UP_TO = 10_000

    @cached_property
    def count(self):
        rows = self.object_list.order_by()
        counted = rows[: self.EXACT_UP_TO + 1].count()
        if counted <= self.EXACT_UP_TO:
            return counted
        if connections[rows.db].vendor != "postgresql":
            return rows.count()  # SQLite: a newcomer's database, small enough to count
        plan = json.loads(rows.explain(format="json"))
        return max(counted, int(plan[0]["Plan"]["Plan Rows"]))


class RecoveryActionsMixin:
    """Recovery actions change rows only through the recovery services. The edit form stays closed to everyone
    (ReadOnlyAdminMixin), so the actions ask for the model's own "change" permission instead."""

    def has_recover_permission(self, request):
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")


def _errors(count):
    return ngettext("%d error", "%d errors", count) % count


class IgnoreReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Kept on every ignored error: why these records do not need to sync.",
    )


class SyncBatchInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = SyncBatch
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["sequence", "direction", "status", "record_count", "attempts", "page_token", "error", "finished_at"]
    readonly_fields = fields


@admin.register(SyncRun)
class SyncRunAdmin(RecoveryActionsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "mapping",
        "organization",
        "trigger",
        "status",
        "is_test",
        *COUNT_FIELDS,
        "queued_at",
        "duration",
    ]
    list_filter = ["status", "trigger", "is_test", "organization"]
    search_fields = ["=id", "code", "mapping__name", "system_error"]
    list_select_related = ["mapping", "organization"]
    date_hierarchy = "queued_at"
    # These tables grow by the million: skip the second, unfiltered COUNT(*) on every filtered page.
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["code", "organization", "mapping_link", "trigger", "status", "is_test", "options"]}),
        ("Retry chain", {"fields": ["parent_link", "root_link", "children_links"]}),
        ("Counts", {"fields": [tuple(COUNT_FIELDS), "record_errors_link"]}),
        ("Cursors", {"fields": ["cursor_from", "cursor_to"]}),
        ("Timing", {"fields": ["queued_at", "started_at", "finished_at", "duration", "heartbeat_at", "claims"]}),
        ("System error", {"fields": ["system_error"]}),
    ]
    readonly_fields = ["mapping_link", "parent_link", "root_link", "children_links", "record_errors_link", "duration"]
    inlines = [SyncBatchInline]
    actions = ["retry_failures"]

    def delete_view(self, request, object_id, extra_context=None):
        # A queued or running run deleted under its worker would leave its claims and links half done (the API
        # deletes no run; a mapping's service refuses while one of its runs is active). A finished one may go.
        run = self.get_object(request, object_id)
        if run is not None and not run.is_finished:
            self.message_user(request, "This run is queued or running: cancel it first, or let it finish.",
                              messages.ERROR)
            return HttpResponseRedirect(reverse("admin:syncs_syncrun_change", args=[run.pk]))
        return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would not ask each run whether it is finished
        return actions

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("mapping", "organization")

    @admin.display(description="Mapping")
    def mapping_link(self, obj):
        return admin_link(type(obj.mapping), obj.mapping_id, obj.mapping.name)

    @admin.display(description="Parent run")
    def parent_link(self, obj):
        return admin_link(SyncRun, obj.parent_id)

    @admin.display(description="Root run")
    def root_link(self, obj):
        return admin_link(SyncRun, obj.root_id)

    @admin.display(description="Child runs")
    def children_links(self, obj):
        pks = list(obj.children.values_list("pk", flat=True))
        if not pks:
            return None
        change_url = "admin:syncs_syncrun_change"
        return format_html_join(", ", '<a href="{}">#{}</a>', ((reverse(change_url, args=[pk]), pk) for pk in pks))

    @admin.display(description="Record errors")
    def record_errors_link(self, obj):
        url = reverse("admin:syncs_recorderror_changelist") + f"?run__id__exact={obj.pk}"
        return format_html('<a href="{}">{} record errors</a>', url, obj.record_errors.count())

    @admin.display(description="Duration")
    def duration(self, obj):
        if obj.started_at and obj.finished_at:
            return obj.finished_at - obj.started_at
        return None

    @admin.action(description="Retry failures of selected runs", permissions=["recover"])
    def retry_failures(self, request, queryset):
        children, refused = [], []
        for run in queryset.select_related("organization", "mapping").order_by("pk"):
            try:
                children.append(sync_run_retry_failures(run=run))
            except ValidationError as exc:
                refused.append(f"run {run.pk}: {' '.join(exc.messages)}")
        if children:
            runs = ", ".join(f"#{child.pk}" for child in children)
            queued = ngettext("%d retry run queued", "%d retry runs queued", len(children)) % len(children)
            self.message_user(request, f"{queued}: {runs}.", messages.SUCCESS)
        if refused:
            self.message_user(request, "Nothing to retry for " + "; ".join(refused), messages.WARNING)


@admin.register(SyncBatch)
class SyncBatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "run", "organization", "sequence", "direction", "status", "record_count", "attempts"]
    list_filter = ["status", "direction", "organization"]
    search_fields = ["=run__id", "page_token", "error"]
    # The run's __str__ names its mapping.
    list_select_related = ["run__mapping", "organization"]
    raw_id_fields = ["run"]
    show_full_result_count = False


@admin.register(RecordError)
class RecordErrorAdmin(RecoveryActionsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "level",
        "category",
        "error_code",
        "short_message",
        "source_record_id",
        "status",
        "retryable",
        "attempts",
        "mapping",
        "organization",
        "run_link",
    ]
    # A date filter of fixed ranges rather than date_hierarchy, which scans the filtered errors for their dates
    # (MIN/MAX, then every distinct day) on every click.
    list_filter = [("created_at", admin.DateFieldListFilter), "level", "category", "status", "retryable",
                   "durability", "organization", "mapping"]
    search_fields = ["message", "source_record_id", "error_code"]
    list_select_related = ["mapping", "organization"]
    # Newest first by primary key (errors are numbered as they are created), the one order an index gives
    # across organizations; sorting a million rows by another column on a click is not offered.
    ordering = ["-pk"]
    sortable_by = []
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    fieldsets = [
        (None, {"fields": ["code", "organization", "mapping", "run_link", "batch", "direction"]}),
        (
            "Error",
            {"fields": ["level", "category", "error_code", "field", "message", "detail_pre", "fingerprint"]},
        ),
        ("Record", {"fields": ["source_record_id", "target_record_id", "before", "after", "edited"]}),
        (
            "Recovery",
            {
                "fields": [
                    "status",
                    "retryable",
                    "durability",
                    "attempts",
                    "origin_run_link",
                    "retry_after_until",
                    "next_retry_at",
                    "resolved_at",
                    "resolution",
                    "created_at",
                    "updated_at",
                ]
            },
        ),
    ]
    readonly_fields = ["run_link", "origin_run_link", "detail_pre", "before", "after", "edited"]
    actions = ["retry_selected", "ignore_selected", "resolve_selected"]

    @admin.display(description="Message")
    def short_message(self, obj):
        return Truncator(obj.message).chars(100)

    @admin.display(description="Run", ordering="run")
    def run_link(self, obj):
        return admin_link(SyncRun, obj.run_id)

    @admin.display(description="First failed in run")
    def origin_run_link(self, obj):
        return admin_link(SyncRun, obj.origin_run_id)

    @admin.display(description="Operator's correction")
    def edited(self, obj):
        return pretty_json(obj.edited_payload)

    @admin.display(description="Technical detail")
    def detail_pre(self, obj):
        return format_html("<pre>{}</pre>", obj.detail) if obj.detail else None

    @admin.display(description="Snapshot before transforms")
    def before(self, obj):
        return pretty_json(obj.snapshot_before)

    @admin.display(description="Snapshot after transforms")
    def after(self, obj):
        return pretty_json(obj.snapshot_after)

    @admin.action(description="Retry selected errors", permissions=["recover"])
    def retry_selected(self, request, queryset):
        # errors_retry works inside one organization: one call (and its replay runs) per organization selected.
        by_organization = defaultdict(list)
        for error_id, organization_id in queryset.order_by().values_list("pk", "organization_id"):
            by_organization[organization_id].append(error_id)
        queued, runs, skipped = 0, [], Counter()
        for organization in Organization.objects.filter(pk__in=by_organization).order_by("pk"):
            summary = errors_retry(
                organization=organization,
                error_ids=by_organization[organization.pk],
                resolution=Resolution.MANUAL_RETRY,
            )
            queued += summary["queued"]
            runs += summary["runs"]
            skipped.update(summary["skipped"])
        message = f"Queued {_errors(queued)} for retry"
        message += f" in runs {', '.join(f'#{pk}' for pk in runs)}." if runs else "."
        if skipped:
            reasons = [f"{_errors(n)} {SKIP_REASONS.get(reason, reason)}" for reason, n in sorted(skipped.items())]
            message += f" Skipped {'; '.join(reasons)}."
        self.message_user(request, message, messages.SUCCESS if queued else messages.WARNING)

    @admin.action(description="Ignore selected errors…", permissions=["recover"])
    def ignore_selected(self, request, queryset):
        """Like Django's delete confirmation: an intermediate page that asks for the reason, required."""
        form = IgnoreReasonForm(request.POST if request.POST.get("post") else None)
        if form.is_valid():
            self._close(request, queryset, ErrorStatus.IGNORED, form.cleaned_data["reason"], "ignored")
            return None
        errors = list(queryset.select_related("mapping", "organization").order_by("pk"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Ignore the selected errors?",
            "subtitle": None,
            "opts": self.opts,
            "queryset": errors,
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/syncs/recorderror/ignore_reason.html", context)

    @admin.action(description="Mark selected errors resolved", permissions=["recover"])
    def resolve_selected(self, request, queryset):
        note = f"Marked resolved in the admin by {request.user.get_username()}."
        self._close(request, queryset, ErrorStatus.RESOLVED, note, "marked resolved")

    def _close(self, request, queryset, status, note, done):
        # errors_close works inside one organization: one call per organization selected.
        closed = skipped = 0
        for organization in Organization.objects.filter(pk__in=queryset.values("organization_id")).order_by("pk"):
            summary = errors_close(organization=organization, queryset=queryset.filter(organization=organization),
                                   status=status, note=note)
            closed += summary["closed"]
            skipped += sum(summary["skipped"].values())
        message = f"{_errors(closed)} {done}."
        if skipped:
            message += f" Skipped {_errors(skipped)} already resolved or ignored."
        self.message_user(request, message, messages.SUCCESS if closed else messages.WARNING)


@admin.register(RecordLink)
class RecordLinkAdmin(admin.ModelAdmin):
    list_display = ["source_record_id", "target_record_id", "mapping", "organization", "status", "last_synced_at"]
    list_filter = ["status", "organization", "mapping"]
    search_fields = ["source_record_id", "target_record_id"]
    list_select_related = ["mapping", "organization"]
    date_hierarchy = "last_synced_at"
    show_full_result_count = False
    # A link is the engine's memory of a pair; staff may repair the target id or status, nothing else.
    fields = [
        "organization",
        "mapping",
        "source_record_id",
        "target_record_id",
        "status",
        "last_error_link",
        "source_hash",
        "target_hash",
        "last_synced_at",
        "updated_at",
    ]
    readonly_fields = [
        "organization",
        "mapping",
        "source_record_id",
        "last_error_link",
        "source_hash",
        "target_hash",
        "last_synced_at",
        "updated_at",
    ]

    def has_add_permission(self, request):
        return False

    @admin.display(description="Last error")
    def last_error_link(self, obj):
        return admin_link(RecordError, obj.last_error_id)


@admin.register(BulkAction)
class BulkActionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "kind", "status", "organization", "started_at", "finished_at"]
    list_filter = ["kind", "status", "organization"]
    list_select_related = ["organization"]
    show_full_result_count = False
    fields = ["code", "organization", "kind", "status", "selection_pre", "options", "summary_pre", "failure",
              "created_at", "started_at", "finished_at", "attempts", "heartbeat_at"]
    readonly_fields = ["selection_pre", "summary_pre"]

    @admin.display(description="Selection")
    def selection_pre(self, obj):
        # A long id list is shown by its length.
        selection = obj.selection
        if "ids" in selection:
            selection = {"ids": f"{len(selection['ids'])} errors"}
        return pretty_json(selection)

    @admin.display(description="Summary")
    def summary_pre(self, obj):
        return pretty_json(obj.summary)


@admin.register(ErrorCountHour)
class ErrorCountHourAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The analytics' hourly counts (syncs.rollups): recounted from the errors, never edited."""

    list_display = ["hour", "organization", "category", "error_code", "count"]
    list_filter = ["category", "organization"]
    list_select_related = ["organization"]
    search_fields = ["error_code"]
    ordering = ["-hour", "-pk"]
    show_full_result_count = False


@admin.register(RollupWatermark)
class RollupWatermarkAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["name", "counted_until", "updated_at"]


@admin.register(ErrorGroupRetry)
class ErrorGroupRetryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "fingerprint", "mapping", "organization", "status", "retried", "short_reason"]
    list_filter = ["status", "organization"]
    search_fields = ["fingerprint", "probe_record_id", "reason"]
    list_select_related = ["mapping", "organization"]
    show_full_result_count = False
    fields = ["code", "organization", "mapping", "fingerprint", "direction", "probe_record_id", "probe_error",
              "status", "reason", "retried", "created_at", "updated_at"]

    @admin.display(description="Reason")
    def short_reason(self, obj):
        return Truncator(obj.reason).chars(100)
