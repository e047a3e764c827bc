"""Admin deletes that go through the app's service, as the API's do.

A service refuses some deletes (a mapping with a run queued or running, a connection a mapping uses). The admin
then shows the refusal as an error message and deletes nothing: not the object, not the "deleted" log entry,
and in a bulk delete not the other selected objects either, as Django does when one of them is protected.
"""

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.db import router, transaction
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext_lazy


class DeleteRefused(Exception):
    def __init__(self, reasons):
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class ServiceDeleteMixin:
    """Put before admin.ModelAdmin, list "delete_selected" in `actions`, and define `delete_through_service(obj)`
    and `delete_refusals` (the exceptions by which the service refuses)."""

    delete_refusals = ()

    def delete_through_service(self, obj):
        raise NotImplementedError

    def delete_model(self, request, obj):
        try:
            self.delete_through_service(obj)
        except self.delete_refusals as exc:
            raise DeleteRefused([str(exc)]) from exc

    def delete_queryset(self, request, queryset):
        reasons = []
        with transaction.atomic(using=router.db_for_write(self.model)):
            for obj in queryset:
                try:
                    self.delete_through_service(obj)
                except self.delete_refusals as exc:
                    reasons.append(str(exc))
            if reasons:
                raise DeleteRefused(reasons)  # rolls back the ones already deleted

    def delete_view(self, request, object_id, extra_context=None):
        # super() runs in a transaction: raising out of it also drops the deletion's log entry.
        try:
            return super().delete_view(request, object_id, extra_context)
        except DeleteRefused as refused:
            self.message_user(request, str(refused), messages.ERROR)
            opts = self.opts
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change",
                                                args=[object_id], current_app=self.admin_site.name))

    @admin.action(permissions=["delete"], description=gettext_lazy("Delete selected %(verbose_name_plural)s"))
    def delete_selected(self, request, queryset):
        # Django's action (confirmation page, protected objects), with its log entries and success message undone
        # when the service refuses one object.
        try:
            with transaction.atomic(using=router.db_for_write(self.model)):
                return django_delete_selected(self, request, queryset)
        except DeleteRefused as refused:
            for reason in refused.reasons:
                self.message_user(request, reason, messages.ERROR)
            self.message_user(request, f"No {self.opts.verbose_name_plural} were deleted.", messages.ERROR)
            return None
