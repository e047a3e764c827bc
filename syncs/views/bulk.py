"""A bulk action's page: where "retry / ignore every matching error" lands, following the BulkAction a worker
carries out (syncs.bulk) until it is done, then what it did, as the API's GET /api/v1/bulk-actions/{id}/ tells it.

Viewers may look (it is a read); another organization's action is not found.
"""

from urllib.parse import urlencode

from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from accounts.access import get_object_for_org_or_404, org_required
from syncs.models import BulkAction, BulkActionStatus, SyncRun
from syncs.retries import SKIP_REASONS

POLL_SECONDS = 2
RUNS_SHOWN = 20


def _back(request):
    """The list the action was started from (a local path only), or the errors list."""
    back = request.GET.get("back", "")
    if back.startswith("/") and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        return back
    return reverse("errors")


def _outcome(action, org):
    """What a finished action did, in the shape the template shows: counts, left-out reasons, the replay runs."""
    summary = action.summary or {}
    skipped = [(SKIP_REASONS.get(reason, reason.replace("_", " ")), count)
               for reason, count in (summary.get("skipped") or {}).items() if count]
    codes = summary.get("runs") or []
    runs = list(SyncRun.objects.for_org(org).filter(code__in=codes[:RUNS_SHOWN])
                .select_related("mapping").order_by("queued_at", "pk"))
    return {"done": summary.get("queued", summary.get("closed", 0)), "skipped": skipped, "runs": runs,
            "more_runs": max(0, len(codes) - RUNS_SHOWN)}


@org_required
def bulk_action_detail(request, code):
    """The action's progress; htmx asks for it again every POLL_SECONDS while it is queued or running."""
    action = get_object_for_org_or_404(BulkAction, request.org, code=code)
    live = action.status in (BulkActionStatus.QUEUED, BulkActionStatus.RUNNING)
    context = {"action": action, "live": live, "poll_seconds": POLL_SECONDS, "back": _back(request),
               "outcome": None if live else _outcome(action, request.org)}
    template = "syncs/bulk_action_status.html" if request.htmx else "syncs/bulk_action.html"
    return render(request, template, context)


def bulk_action_url(action, *, back):
    """Where a request that started `action` lands: its page, which links back to `back`."""
    return f"{reverse('bulk_action', args=[action.code])}?{urlencode({'back': back})}"
