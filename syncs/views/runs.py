"""Sync runs in the browser: the list with the API's filters, a run's detail (counts, timing, batches, its retry
chain and why it is not recovered yet, its errors) with live progress while it runs, and its two actions, retry
failures and cancel, through the services the API calls (syncs.chains, syncs.services)."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.access import get_object_for_org_or_404, org_required
from integrations.errors import ErrorCategory
from syncs.chains import run_and_descendants, run_recovery_summary, sync_run_retry_failures
from syncs.forms import ERROR_FILTERS, FILTERED, RunFilters, with_defaults
from syncs.models import ErrorLevel, ErrorStatus, RunStatus, SyncRun
from syncs.services import sync_run_cancel
from syncs.views.errors import errors_page_context
from syncs.views.paging import keyset_page

ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
RETRIABLE_RUN_STATUSES = (RunStatus.PARTIALLY_FAILED, RunStatus.FAILED)
# A run's page lists this many batches; a run of thousands of pages says how many more there are.
BATCHES_SHOWN = 100
CHILDREN_SHOWN = 20
# How often the live part of a running run's page asks again.
POLL_SECONDS = 2


def _run_queryset(org):
    return SyncRun.objects.for_org(org).select_related(
        "mapping__source_connection", "mapping__target_connection", "parent", "root")


@org_required
def runs_list(request):
    """Every run of the organization, newest first, filtered by mapping, status, trigger and date."""
    filters = RunFilters(with_defaults(request.GET, RunFilters.DEFAULTS), request=request,
                         queryset=_run_queryset(request.org))
    runs = filters.qs if filters.is_valid() else SyncRun.objects.none()
    page = keyset_page(runs, field="queued_at", after=request.GET.get("after"), before=request.GET.get("before"))
    query = filters.data.copy()
    query.pop("after", None)
    query.pop("before", None)
    query[FILTERED] = "1"
    return render(request, "syncs/runs.html", {
        "filters": filters, "page": page, "query": query.urlencode(), "filtered": filters.is_filtered,
    })


def _progress_context(run):
    batches = list(run.batches.order_by("direction", "sequence")[:BATCHES_SHOWN + 1])
    return {
        "run": run,
        "batches": batches[:BATCHES_SHOWN],
        "more_batches": len(batches) > BATCHES_SHOWN,
        "live": run.status in ACTIVE_RUN_STATUSES,
        "poll_seconds": POLL_SECONDS,
        "can_retry": run.status in RETRIABLE_RUN_STATUSES and not run.is_test,
        "can_cancel": run.status in ACTIVE_RUN_STATUSES,
    }


def _get_run(request, code):
    return get_object_for_org_or_404(_run_queryset(request.org), request.org, code=code)


@org_required
def run_detail(request, code):
    """One run: its live summary (counts, timing, batches, actions), its retry chain and its recovery."""
    run = _get_run(request, code)
    below = run_and_descendants(run) - {run.pk}
    descendants = dict(SyncRun.objects.filter(pk__in=below).values_list("status").annotate(n=Count("pk"))
                       .order_by("status"))
    children = list(run.children.order_by("queued_at", "pk")[:CHILDREN_SHOWN + 1])
    failures = dict(run.record_errors.filter(level__in=(ErrorLevel.SYSTEM, ErrorLevel.BATCH, ErrorLevel.RECORD))
                    .values_list("category").annotate(n=Count("pk")).order_by("category"))
    recovery = run_recovery_summary(run) if run.status in RETRIABLE_RUN_STATUSES else None
    if recovery:
        recovery["statuses"] = [(ErrorStatus(status).label, n) for status, n in recovery["by_status"].items()]
        recovery["categories"] = [(ErrorCategory(category).label, n) for category, n in recovery["by_category"].items()]
    return render(request, "syncs/run_detail.html", {
        **_progress_context(run),
        "tab": "summary",
        "children": children[:CHILDREN_SHOWN],
        "more_children": len(children) > CHILDREN_SHOWN,
        "descendants": [(RunStatus(status).label, n) for status, n in descendants.items()],
        "descendant_count": len(below),
        "errors_by_category": [(category, ErrorCategory(category).label, n) for category, n in failures.items()],
        "recovery": recovery,
    })


@org_required
def run_progress(request, code):
    """The live part of a run's page, polled by htmx while the run is queued or running."""
    return render(request, "syncs/partials/run_progress.html", _progress_context(_get_run(request, code)))


@org_required
def run_errors(request, code):
    """The run's errors tab: the errors list filtered to this run."""
    run = _get_run(request, code)
    context = errors_page_context(request, fixed={"run": str(run.code)}, defaults={})
    return render(request, "syncs/run_errors.html", {**context, "run": run, "tab": "errors",
                                                      "error_filters": ERROR_FILTERS})


@require_POST
@org_required
def run_retry_failures(request, code):
    run = _get_run(request, code)
    try:
        child = sync_run_retry_failures(run=run)
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
        return redirect("run_detail", code=run.code)
    messages.success(request, "Retrying the failures of this run in a new run: its progress is below.")
    return redirect("run_detail", code=child.code)


@require_POST
@org_required
def run_cancel(request, code):
    run = _get_run(request, code)
    try:
        run = sync_run_cancel(run=run)
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
    else:
        if run.finished_at:
            messages.success(request, "The run is canceled; the errors it was to retry are back in their queue.")
        else:
            messages.success(request, "The run stops before its next batch: what it already wrote stays written.")
    return redirect(reverse("run_detail", kwargs={"code": run.code}))

