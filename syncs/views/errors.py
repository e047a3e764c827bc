"""The errors dashboard in the browser: every record error of the organization with the API's filters, in keyset
pages; the same errors grouped by fingerprint; retry and ignore of a selection or of everything matching the
filter; an error's detail with its snapshots, replay preview and attempt history, and its own retry, ignore and
resolve.

Each action calls what the API's action calls: `errors_retry` for ids (the API does up to 1,000 ids at once, and
a page holds fewer), a BulkAction (syncs.bulk) for everything matching a filter, `errors_close`, `error_retry`,
`error_ignore`, `error_resolve`, `error_group_retry`, `error_group_fix_apply`, `errors_replay_preview`.
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts.access import VIEWER_REFUSAL, get_object_for_org_or_404, org_required
from integrations.errors import ErrorCategory
from syncs.bulk import bulk_action_request
from syncs.engine.passes import REVERSE
from syncs.fixes import (
    ErrorGroupNotFound,
    error_group_fix_apply,
    error_groups_fixes,
    group_mappings,
    group_retries_progress,
)
from syncs.forms import ERROR_FILTERS, FILTERED, ErrorFilters, IgnoreForm, ResolveForm, SelectionForm, with_defaults
from syncs.groups import error_group_retry, error_groups, group_retries_latest
from syncs.models import UNRESOLVED_ERROR_STATUSES, BulkActionKind, ErrorStatus, RecordError, Resolution, SyncRun
from syncs.previews import errors_replay_preview
from syncs.retries import CLOSED_STATUSES, RETRIABLE_LEVELS, SKIP_REASONS, error_retry, errors_retry
from syncs.review import error_ignore, error_resolve, errors_close
from syncs.views.bulk import bulk_action_url
from syncs.views.paging import count_up_to, keyset_page

GROUPS_PER_PAGE = 25
HISTORY_SHOWN = 50
PAGING_PARAMS = ("after", "before", "page")


def _errors_queryset(org):
    return RecordError.objects.for_org(org).select_related("mapping__target_connection")


def _list_query(data, *, fixed=()):
    """The list's query string without its page, and marked as filtered (see syncs.forms.FILTERED)."""
    query = data.copy()
    for name in (*PAGING_PARAMS, *fixed):
        query.pop(name, None)
    query[FILTERED] = "1"
    return query


def _filters(request, data, *, defaults=ErrorFilters.DEFAULTS, fixed=None):
    data = with_defaults(data, defaults)
    if fixed:
        data = data.copy()
        data.update(fixed)
    return ErrorFilters(data, request=request, queryset=_errors_queryset(request.org))


def errors_page_context(request, *, fixed=None, defaults=ErrorFilters.DEFAULTS):
    """What the errors list shows (also a run's errors tab): one keyset page and a bounded count."""
    filters = _filters(request, request.GET, defaults=defaults, fixed=fixed)
    errors = filters.qs if filters.is_valid() else RecordError.objects.none()
    page = keyset_page(errors, field="created_at", after=request.GET.get("after"),
                       before=request.GET.get("before"))
    query = _list_query(filters.data)
    hidden = [(name, value) for name in filters.base_filters if name not in ERROR_FILTERS and name not in (fixed or {})
              for value in filters.data.getlist(name)]
    return {
        "filters": filters,
        "page": page,
        "matching": count_up_to(errors) if page.rows and (page.older or page.newer) else len(page.rows),
        "query": query.urlencode(),
        "hidden_filters": hidden,
        "error_filters": ERROR_FILTERS,
        "active_filters": _active_filters(request, filters),
    }


def _active_filters(request, filters):
    """How many filters the user chose: none on a landing, where only the defaults apply."""
    if FILTERED not in request.GET:
        return 0
    return sum(1 for name in ERROR_FILTERS if any(value.strip() for value in filters.data.getlist(name)))


@org_required
def errors_list(request):
    """Every error of the organization, newest first (unresolved ones on landing), filtered like the API's list."""
    return render(request, "syncs/errors.html", {**errors_page_context(request), "view": "list"})


@org_required
def error_groups_list(request):
    """The unresolved record errors of the filter, grouped by fingerprint, largest group first, each with its
    suggested fixes; above them, how the groups retried lately are doing."""
    return _error_groups_page(request, request.GET)


def _error_groups_page(request, data, *, refused=None, back=None, status=200):
    """The groups page for the query `data`; `refused` is (fingerprint, kind, {param: value}, [messages]) of a
    fix that was not applied, shown next to its form with the values given, on a page answering its POST whose
    forms return to `back`, where it came from."""
    filters = _filters(request, data)
    errors = filters.qs if filters.is_valid() else RecordError.objects.none()
    # Aggregated once and paged here, as the API does: an organization has hundreds of groups, not millions.
    groups = Paginator(list(error_groups(organization=request.org, queryset=errors)), GROUPS_PER_PAGE)
    page = groups.get_page(data.get("page"))
    # Read with what the suggested fixes need (connections, field mappings), so the fixes cost no more queries.
    mappings = group_mappings(organization=request.org, groups=page)
    samples = RecordError.objects.for_org(request.org).in_bulk([row["sample_id"] for row in page])
    retries = group_retries_latest(organization=request.org, fingerprints={row["fingerprint"] for row in page})
    fixes = error_groups_fixes(organization=request.org, groups=page, mappings=mappings, samples=samples)
    rows = [{**row, "mapping": getattr(mappings.get(row["mapping_id"]), "name", ""),
             "sample": samples.get(row["sample_id"]),
             "category_label": ErrorCategory(row["category"]).label, "last_retry": retries.get(row["fingerprint"]),
             "fixes": [_fix_shown(row["fingerprint"], suggestion, refused)
                       for suggestion in fixes.get(row["fingerprint"], [])]}
            for row in page]
    return render(request, "syncs/error_groups.html", {
        "filters": filters, "groups": rows, "page": page, "query": _list_query(filters.data).urlencode(),
        "error_filters": ERROR_FILTERS, "view": "groups", "hidden_filters": [],
        "active_filters": _active_filters(request, filters),
        "back": back or request.get_full_path(),
        **_progress_context(request),
    }, status=status)


def _fix_shown(fingerprint, suggestion, refused):
    """A suggestion as the page shows it: its changes as rows of text, and its form's values and errors."""
    given, problems = {}, []
    if refused is not None and refused[:2] == (fingerprint, suggestion.kind):
        given, problems = refused[2], refused[3]
    return {
        "suggestion": suggestion,
        "rows": [{"label": change.label, "key": "" if key == change.label.lower() else _KEY_LABELS.get(key, key),
                  "before": _shown(key, (change.before or {}).get(key), absent=change.before is None),
                  "after": _shown(key, change.after.get(key), given=True)}
                 for change in suggestion.changes for key in change.changed],
        "params": [{"param": param, "value": given.get(param.name, param.suggested or "")}
                   for param in suggestion.params],
        "problems": problems,
    }


_KEY_LABELS = {"reverse_transforms": "reverse transforms", "default_value": "default", "match_keys": "match keys",
               "write_mode": "write mode", "target_field": "target field", "source_field": "source field"}


def _shown(key, value, *, absent=False, given=False):
    """One setting's value as a person reads it; `given`: an empty value after a fix is the operator's to give."""
    if absent:
        return "(no field mapping)"
    if key in ("transforms", "reverse_transforms"):
        steps = [spec["name"] + (f"({', '.join(f'{k}={v}' for k, v in spec['args'].items())})"
                                 if spec.get("args") else "") for spec in value or []]
        return " › ".join(steps) or "as is"
    if key == "filters":
        return "; ".join(f"{rule['field']} {rule['op'].replace('_', ' ')}"
                         + (f" {rule['value']!r}" if "value" in rule else "")
                         + (f" (“{rule['reason']}”)" if rule.get("reason") else "") for rule in value) or "none"
    if key == "match_keys":
        return ", ".join(f"{item['source']} = {item['target']}" for item in value) or "none"
    if value is None:
        return "the value you give" if given and key in ("default_value", "target_field", "source_field") else "none"
    return str(value).replace("_", " ") if key == "write_mode" else str(value)


def _progress_context(request):
    progress = group_retries_progress(organization=request.org)
    return {"progress": progress, "progress_live": any(item.live for item in progress), "poll_seconds": 3}


@org_required
def error_groups_progress(request):
    """The groups retried lately and how far each has got (htmx partial, polled while one is under way)."""
    return render(request, "syncs/partials/fix_progress.html", _progress_context(request))


@require_POST
@org_required
def error_group_fix_view(request, fingerprint, kind):
    """Apply a suggested fix: the mapping changed as it says, then the group retried one record first."""
    params = {name.removeprefix("param-"): value for name, value in request.POST.items()
              if name.startswith("param-")}
    back = _back(request, "error_groups")
    try:
        result = error_group_fix_apply(organization=request.org, fingerprint=fingerprint, kind=kind, params=params,
                                       user=request.user)
    except ErrorGroupNotFound:
        raise Http404("No such error group.") from None
    except ValidationError as exc:
        problems = [f"{_problem_label(key)}{message}" for key, messages in exc.message_dict.items()
                    for message in messages] if hasattr(exc, "error_dict") else exc.messages
        query = QueryDict(back.partition("?")[2])
        return _error_groups_page(request, query, refused=(fingerprint, kind, params, problems), back=back,
                                  status=400)
    messages.add_message(request, *_fix_message(request, fingerprint, result))
    return redirect(back)


def _problem_label(key):
    # The service names a parameter "params.<name>"; the form shows its own label next to it already.
    return "" if key.startswith("params") or key == "__all__" else f"{key}: "


def _fix_message(request, fingerprint, result):
    mapping = result["mapping"]
    done = (f"Fix applied to “{mapping}”." if result["changed"]
            else f"The fix was already in “{mapping}”: nothing was changed again.")
    retry = result["retry"]
    if retry is None:
        return messages.WARNING, f"{done} {result['retry_refused']}"
    progress = next((item for item in group_retries_progress(organization=request.org)
                     if item.group_retry.fingerprint == fingerprint), None)
    if progress is not None and progress.state == "recovered":
        return messages.SUCCESS, f"{done} The group has recovered: every record of it synced."
    if progress is not None and progress.state == "stopped":
        return messages.WARNING, f"{done} The group retry stopped: {progress.detail}"
    return messages.SUCCESS, (f"{done} Retrying one record of the group first; the other {retry['remaining']} "
                              "follow once it has synced.")


@require_POST
@org_required
def error_group_retry_view(request, fingerprint):
    if not RecordError.objects.for_org(request.org).filter(fingerprint=fingerprint).exists():
        raise Http404("No such error group.")
    try:
        summary = error_group_retry(organization=request.org, fingerprint=fingerprint)
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
    else:
        if summary["queued"]:
            messages.success(request, f"Retrying one record of the group first; the other {summary['remaining']} "
                                      "follow once it has synced.")
        else:
            messages.warning(request, f"Nothing was retried: {summary['group_retry'].reason}")
    return redirect(_back(request, "error_groups"))


def _back(request, fallback):
    """Where an action returns: the page it came from (a local path only), or `fallback`."""
    back = request.POST.get("back", "")
    if back.startswith("/") and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        return back
    return reverse(fallback)


def _errors_of_org(org, codes):
    """Primary keys of the organization's errors with these ids; any other id answers 404 and nothing is done,
    as in the API."""
    found = dict(RecordError.objects.for_org(org).filter(code__in=codes).values_list("code", "pk"))
    if len(found) != len(codes):
        raise Http404("No such record error.")
    return [found[code] for code in codes]


def _skipped(summary):
    reasons = "; ".join(f"{count} {SKIP_REASONS.get(reason, reason.replace('_', ' '))}"
                        for reason, count in summary.get("skipped", {}).items())
    return f" Left out: {reasons}." if reasons else ""


def _retry_summary(summary):
    queued, runs = summary["queued"], len(summary["runs"])
    if not queued:
        return messages.WARNING, f"Nothing was retried.{_skipped(summary)}"
    return messages.SUCCESS, (f"Retrying {queued} error{'s' if queued != 1 else ''} in {runs} "
                              f"run{'s' if runs != 1 else ''}.{_skipped(summary)}")


def _refuse_viewers(request):
    if not request.membership.can_write:
        raise PermissionDenied(VIEWER_REFUSAL)


def _matching_counts(filters):
    """How many errors a filter's bulk action would touch: the unresolved ones, and of them the retriable."""
    return filters.qs.exclude(status__in=CLOSED_STATUSES).aggregate(
        unresolved=Count("pk"), retriable=Count("pk", filter=Q(level__in=RETRIABLE_LEVELS, run__is_test=False)))


def _filter_summary(filters):
    """The filter a bulk action will apply, as (label, value) lines a person reads."""
    lines = []
    for name in filters.as_body():
        field, value = filters.form.fields[name], filters.form.cleaned_data.get(name)
        if isinstance(value, list):
            labels = dict(field.choices)
            value = ", ".join(str(labels.get(item, item)) for item in value)
        elif isinstance(value, SyncRun):
            value = f"run {value.code} of {value.mapping.name}"
        elif hasattr(value, "name"):
            value = value.name
        elif hasattr(value, "isoformat"):
            value = value.strftime("%Y-%m-%d %H:%M UTC")
        lines.append((field.label or name.replace("_", " ").capitalize(), value))
    return lines


def _confirm_all(request, kind, *, form=None, status=200):
    """The confirmation of an action on every error matching the filter: what it is and how many it touches."""
    filters = _filters(request, request.GET if request.method == "GET" else request.POST)
    data = request.GET if request.method == "GET" else request.POST
    back = data.get("back", "")
    if not (back.startswith("/") and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()})):
        back = f"{reverse('errors')}?{_list_query(filters.data).urlencode()}"
    context = {"filters": filters, "kind": kind, "form": form or (IgnoreForm() if kind == "ignore" else None),
               "back": back, "all_matching": True}
    if filters.is_valid():
        context.update(counts=_matching_counts(filters), body=_filter_summary(filters))
    return render(request, "syncs/errors_confirm.html", context, status=status)


@org_required
def errors_retry_view(request):
    """GET: confirm a retry of every error matching the filter. POST: retry the selected errors at once, or
    every matching one through a bulk action a worker carries out (as the API's bulk retry with a filter)."""
    _refuse_viewers(request)
    if request.method == "GET":
        return _confirm_all(request, "retry")
    selection = SelectionForm(request.POST)
    if not selection.is_valid():
        messages.error(request, " ".join(selection.errors.get("__all__", []) or selection.errors.get("ids", [])))
        return redirect(_back(request, "errors"))
    if selection.cleaned_data["all_matching"]:
        filters = _filters(request, request.POST)
        if not filters.is_valid():
            return _confirm_all(request, "retry", status=400)
        count = _matching_counts(filters)["retriable"]
        action = bulk_action_request(organization=request.org, kind=BulkActionKind.RETRY,
                                     selection={"filter": filters.as_body()}, options={"force": False})
        messages.success(request, f"Retrying the {count} matching error{'s' if count != 1 else ''} in the "
                                  "background: each leaves the list of open errors as its replay takes it.")
        return redirect(bulk_action_url(action, back=_back(request, "errors")))
    ids = _errors_of_org(request.org, selection.cleaned_data["ids"])
    level, text = _retry_summary(errors_retry(organization=request.org, error_ids=ids,
                                              resolution=Resolution.BULK_RETRY))
    messages.add_message(request, level, text)
    return redirect(_back(request, "errors"))


@org_required
def errors_ignore_view(request):
    """Ignore errors with a reason: GET confirms every error matching the filter; a POST from the list (the
    selected ids) asks for the reason; a POST with the reason closes them."""
    _refuse_viewers(request)
    if request.method == "GET":
        return _confirm_all(request, "ignore")
    selection = SelectionForm(request.POST)
    if not selection.is_valid():
        messages.error(request, " ".join(selection.errors.get("__all__", []) or selection.errors.get("ids", [])))
        return redirect(_back(request, "errors"))
    form = IgnoreForm(request.POST if "confirm" in request.POST else None)
    if selection.cleaned_data["all_matching"]:
        filters = _filters(request, request.POST)
        if not form.is_valid() or not filters.is_valid():
            return _confirm_all(request, "ignore", form=form, status=400 if form.is_bound else 200)
        count = _matching_counts(filters)["unresolved"]
        action = bulk_action_request(organization=request.org, kind=BulkActionKind.IGNORE,
                                     selection={"filter": filters.as_body()},
                                     options={"note": form.cleaned_data["reason"]})
        messages.success(request, f"Ignoring the {count} matching error{'s' if count != 1 else ''} in the "
                                  "background.")
        return redirect(bulk_action_url(action, back=_back(request, "errors")))
    ids = _errors_of_org(request.org, selection.cleaned_data["ids"])
    if not form.is_valid():
        return render(request, "syncs/errors_confirm.html", {
            "kind": "ignore", "form": form, "ids": selection.cleaned_data["ids"], "selected": len(ids),
            "back": _back(request, "errors"), "all_matching": False,
        }, status=400 if form.is_bound else 200)
    summary = errors_close(organization=request.org, status=ErrorStatus.IGNORED, error_ids=ids,
                           note=form.cleaned_data["reason"])
    closed = summary["closed"]
    skipped = summary["skipped"].get("already_resolved", 0)
    already = f" {skipped} {'was' if skipped == 1 else 'were'} already resolved." if skipped else ""
    messages.success(request, f"Ignored {closed} error{'s' if closed != 1 else ''}.{already}")
    return redirect(_back(request, "errors"))


# --- one error ------------------------------------------------------------------------------------------------------


def _get_error(request, code):
    queryset = RecordError.objects.select_related("mapping__source_connection", "mapping__target_connection",
                                                  "run", "origin_run", "batch")
    return get_object_for_org_or_404(queryset, request.org, code=code)


def snapshot_rows(before, after, pairs=()):
    """The two snapshots side by side: one row per field mapping, the source field's value read (before) next to
    the target field's value to be written (after), then the keys no field mapping names.

    `pairs` are (before key, after key) in the mapping's order. A paired row `differs` when the transforms changed
    the value (or dropped it); a key no field mapping names is shown on its side alone, marked `unmapped`, not as
    a difference: the names of two systems differ by design (first_name → firstname), their values need not.
    """
    before, after = before or {}, after or {}
    missing = object()
    rows, seen_before, seen_after = [], set(), set()
    for source, target in pairs:
        if source not in before and target not in after:
            continue
        old, new = before.get(source, missing) if source else missing, after.get(target, missing)
        seen_before.add(source)
        seen_after.add(target)
        rows.append({"key": target if source in ("", target) else f"{source} → {target}", "before": old,
                     "after": new, "in_before": old is not missing, "in_after": new is not missing,
                     "differs": old is not missing and (new is missing or old != new), "unmapped": False})
    keys = [key for key in dict.fromkeys([*before, *after]) if key not in seen_before and key not in seen_after]
    for key in keys:
        old, new = before.get(key, missing), after.get(key, missing)
        both = old is not missing and new is not missing
        rows.append({"key": key, "before": old, "after": new, "in_before": old is not missing,
                     "in_after": new is not missing, "differs": both and old != new, "unmapped": not both})
    return rows


def _snapshot_pairs(error):
    """(before key, after key) per field mapping: source → target, or target → source for a two-way mapping's
    reverse direction, whose before is read from the target system."""
    fields = error.mapping.field_mappings.order_by("position", "pk").values_list("source_field", "target_field")
    if error.direction == REVERSE:
        return [(target, source) for source, target in fields if source]
    return list(fields)


def _error_page(request, error, *, ignore_form=None, resolve_form=None, status=200):
    history = []
    if error.source_record_id:
        history = list(RecordError.objects.for_org(request.org).filter(
            mapping_id=error.mapping_id, direction=error.direction, source_record_id=error.source_record_id,
        ).select_related("run").order_by("-created_at", "-pk")[:HISTORY_SHOWN])
    return render(request, "syncs/error_detail.html", {
        "error": error,
        "snapshots": snapshot_rows(error.snapshot_before, error.snapshot_after, _snapshot_pairs(error)),
        "history": history,
        "unresolved": error.status in UNRESOLVED_ERROR_STATUSES,
        "retriable": error.level in RETRIABLE_LEVELS and error.status in UNRESOLVED_ERROR_STATUSES
                     and error.status != ErrorStatus.RETRYING and not error.run.is_test,
        "ignore_form": ignore_form or IgnoreForm(),
        "resolve_form": resolve_form or ResolveForm(),
    }, status=status)


@org_required
def error_detail(request, code):
    return _error_page(request, _get_error(request, code))


@require_POST
@org_required
def error_retry_view(request, code):
    error = _get_error(request, code)
    try:
        summary = error_retry(error=error)
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
    else:
        level, text = _retry_summary(summary)
        messages.add_message(request, level, text.replace("Retrying 1 error in 1 run.",
                                                          "Retrying this record now, read fresh from its source "
                                                          "where it can be."))
    return redirect("error_detail", code=error.code)


@require_POST
@org_required
def error_ignore_view(request, code):
    error = _get_error(request, code)
    form = IgnoreForm(request.POST)
    if not form.is_valid():
        return _error_page(request, error, ignore_form=form, status=400)
    try:
        error_ignore(error=error, reason=form.cleaned_data["reason"])
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
    else:
        messages.success(request, "Ignored: this record is no longer counted as unsynced.")
    return redirect("error_detail", code=error.code)


@require_POST
@org_required
def error_resolve_view(request, code):
    error = _get_error(request, code)
    form = ResolveForm(request.POST)
    if not form.is_valid():
        return _error_page(request, error, resolve_form=form, status=400)
    try:
        error_resolve(error=error, note=form.cleaned_data["note"])
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
    else:
        messages.success(request, "Marked as resolved.")
    return redirect("error_detail", code=error.code)


@require_POST
@org_required
def error_preview(request, code):
    """What a replay of this error would write, next to the target's current values (htmx partial). Nothing is
    written: the replay runs as a test run in this process."""
    error = _get_error(request, code)
    plans = errors_replay_preview(organization=request.org, error_ids=[error.pk])
    return render(request, "syncs/partials/error_preview.html", {"error": error, "plans": plans})
