"""Browser views of runs. Every view acts for request.org (accounts.access) and reads through `for_org`."""

from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, Subquery
from django.shortcuts import render

from accounts.access import org_required
from integrations.models import Connection
from mappings.models import Mapping
from syncs.models import UNRESOLVED_ERROR_STATUSES, RecordError, RunStatus, SyncRun

HOME_LIST_LENGTH = 20


@login_required
@org_required
def home(request):
    org = request.org
    latest_run = SyncRun.objects.for_org(org).filter(mapping=OuterRef("pk")).order_by("-queued_at", "-id")
    mappings = list(
        Mapping.objects.for_org(org)
        .select_related("source_connection", "target_connection")
        .annotate(last_run_status=Subquery(latest_run.values("status")[:1]))
        .order_by("name")
    )
    for mapping in mappings:
        mapping.last_run_status_label = RunStatus(mapping.last_run_status).label if mapping.last_run_status else ""
    # Test runs (test syncs, replay previews) wrote nothing: they are not the organization's sync history.
    runs = SyncRun.objects.for_org(org).filter(is_test=False).select_related("mapping").order_by("-queued_at", "-id")
    record_errors = (
        RecordError.objects.for_org(org)
        .filter(status__in=UNRESOLVED_ERROR_STATUSES)
        .select_related("mapping")
        .order_by("-created_at", "-id")
    )
    context = {
        "connections": Connection.objects.for_org(org).order_by("name"),
        "mappings": mappings,
        "runs": runs[:HOME_LIST_LENGTH],
        "record_errors": record_errors[:HOME_LIST_LENGTH],
    }
    return render(request, "syncs/home.html", context)
