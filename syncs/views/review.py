"""The review queue in the browser: the records a person must look at (mappings whose error strategy is manual
review, and replays flagged for review), oldest first in keyset pages; one record's correction, an input per
field of the target's schema, saved and retried; or ignored with a reason.

Each action calls what the API's calls: `review_queue`, `error_edit_and_retry` (which checks the correction
against the target's schema: its refusal, keyed by field, is shown next to each input) and `error_ignore`.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts.access import get_object_for_org_or_404, org_required
from integrations.errors import ConnectorError
from integrations.services import connection_schema
from mappings.models import ErrorStrategy, Mapping
from syncs.forms import IgnoreForm
from syncs.models import (
    ErrorLevel,
    ErrorStatus,
    RecordError,
    SyncRun,
)
from syncs.review import error_edit_and_retry, error_editable, error_ignore, error_retry_outcome, review_queue
from syncs.review_forms import CorrectionForm, RetryOptionsForm, ReviewQueueFilters
from syncs.views.errors import snapshot_rows
from syncs.views.paging import PAGE_SIZE, count_up_to, keyset_page

# How often an item's page asks how its retry went, while the retry is under way.
POLL_SECONDS = 2
QUEUE_PAGE_SIZE = PAGE_SIZE


@org_required
def review_queue_view(request):
    """The records waiting for a person, oldest first, optionally of one mapping."""
    filters = ReviewQueueFilters(request.GET or None, organization=request.org)
    queue = review_queue(organization=request.org).select_related("mapping__target_connection")
    mapping = None
    if filters.is_bound:
        if filters.is_valid():
            mapping = filters.cleaned_data["mapping"]
            if mapping is not None:
                queue = queue.filter(mapping=mapping)
        else:
            queue = queue.none()
    # A queue is worked from its head: oldest first.
    page = keyset_page(queue, field="created_at", after=request.GET.get("after"), before=request.GET.get("before"),
                       size=QUEUE_PAGE_SIZE, newest_first=False)
    query = request.GET.copy()
    for name in ("after", "before"):
        query.pop(name, None)
    context = {
        "filters": filters, "page": page, "query": query.urlencode(), "filtered": mapping is not None,
        "waiting": count_up_to(queue) if page.older or page.newer else len(page.rows),
    }
    if not page.rows and mapping is None:
        # The empty state says whether any mapping sends its failures here at all.
        context["review_mappings"] = list(Mapping.objects.for_org(request.org).filter(
            error_strategy=ErrorStrategy.MANUAL_REVIEW).order_by("name").values_list("name", flat=True)[:5])
    return render(request, "syncs/review_queue.html", context)


# --- one record ----------------------------------------------------------------------------------------------------


def _get_error(request, code):
    queryset = RecordError.objects.filter(level=ErrorLevel.RECORD).select_related(
        "mapping__source_connection", "mapping__target_connection", "run")
    return get_object_for_org_or_404(queryset, request.org, code=code)


def far_side(error):
    """The connection and object the record was being written to (the source, for a reverse pass's error)."""
    mapping = error.mapping
    if error.direction == "reverse":
        return mapping.source_connection, mapping.source_object
    return mapping.target_connection, mapping.target_object


def _schema(error):
    """The far side's schema, from the connection's cache where it has it; (schema, the reason it has none)."""
    connection, object_name = far_side(error)
    try:
        return connection_schema(connection=connection, object_name=object_name), ""
    except ConnectorError as exc:
        return None, exc.message


def _correction_form(error, schema, data=None):
    mapping = error.mapping
    field_of = "source_field" if error.direction == "reverse" else "target_field"
    mapped = [name for name in mapping.field_mappings.order_by("position", "pk").values_list(field_of, flat=True)
              if name]
    payload = error.edited_payload if error.edited_payload is not None else error.snapshot_after
    return CorrectionForm(data, payload=payload, schema=schema, mapped_fields=mapped)


def _run_of(request, error):
    """The retry run the item's page follows (?run=, set when Save and retry queued it), if it is the org's."""
    code = request.GET.get("run", "")
    if not code:
        return None
    try:
        return SyncRun.objects.for_org(request.org).filter(code=code, mapping_id=error.mapping_id).first()
    except ValidationError:  # not a UUID: no run to follow
        return None


def _item_context(request, error, *, form=None, options=None, ignore_form=None, schema=None, schema_problem=""):
    if form is None and error_editable(error):
        schema, schema_problem = _schema(error)
        form = _correction_form(error, schema)
    run = _run_of(request, error)
    outcome = error_retry_outcome(error, run)
    return {
        "error": error,
        "far_connection": far_side(error)[0],
        "form": form,
        "options": options or RetryOptionsForm(),
        "ignore_form": ignore_form or IgnoreForm(),
        "schema_problem": schema_problem,
        "editable": error_editable(error),
        "in_review": error.status == ErrorStatus.IN_REVIEW,
        "source_rows": snapshot_rows(error.snapshot_before, None) if error.snapshot_before else [],
        "outcome": outcome,
        "poll": outcome is not None and outcome["state"] == "retrying",
        "poll_seconds": POLL_SECONDS,
    }


@org_required
def review_error(request, code):
    """GET: the record's correction form (or how its retry went). POST: save the correction and retry it."""
    error = _get_error(request, code)
    if request.method != "POST":
        return render(request, "syncs/review_item.html", _item_context(request, error))
    if not error_editable(error):
        messages.error(request, "This record is no longer waiting for a correction: see how it went below.")
        return redirect("review_error", code=error.code)
    schema, schema_problem = _schema(error)
    form = _correction_form(error, schema, data=request.POST)
    options = RetryOptionsForm(request.POST)
    if form.is_valid() and options.is_valid():
        try:
            summary = error_edit_and_retry(error=error, payload=form.corrected_payload(),
                                           force=options.cleaned_data["force"])
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                form.add_service_errors(exc.message_dict)
            else:
                form.add_error(None, exc.messages[0])
        else:
            return _retried(request, error, summary)
    context = _item_context(request, error, form=form, options=options, schema=schema,
                            schema_problem=schema_problem)
    return render(request, "syncs/review_item.html", context, status=400)


def _retried(request, error, summary):
    if not summary["queued"]:
        reason = next(iter(summary["skipped"]), "not_retriable").replace("_", " ")
        messages.warning(request, f"Your correction is saved but the record was not retried ({reason}).")
        return redirect("review_error", code=error.code)
    run = SyncRun.objects.for_org(request.org).get(pk=summary["runs"][0])
    return redirect(f"{reverse('review_error', kwargs={'code': error.code})}?run={run.code}")


@org_required
def review_error_outcome(request, code):
    """The item's retry outcome (htmx partial), asked again every POLL_SECONDS while the retry is under way."""
    error = _get_error(request, code)
    outcome = error_retry_outcome(error, _run_of(request, error))
    return render(request, "syncs/partials/review_outcome.html", {
        "error": error, "outcome": outcome, "poll": outcome is not None and outcome["state"] == "retrying",
        "poll_seconds": POLL_SECONDS,
    })


@require_POST
@org_required
def review_error_ignore(request, code):
    """Close the record's error on purpose, with a reason everyone sees; back to the queue for the next one."""
    error = _get_error(request, code)
    form = IgnoreForm(request.POST)
    if not form.is_valid():
        return render(request, "syncs/review_item.html", _item_context(request, error, ignore_form=form), status=400)
    try:
        error_ignore(error=error, reason=form.cleaned_data["reason"])
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
        return redirect("review_error", code=error.code)
    messages.success(request, f"Ignored record {error.source_record_id}: it no longer counts as unsynced.")
    return redirect("review_queue")
