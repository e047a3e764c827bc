"""Record status in the browser: every source record against every target it is mapped to (seed 000's
customer × target table), filtered like the API's record status, in keyset pages; re-sync of one record, and of
every unsynced record after a confirmation that says how many.

A row is a source record (a source connection, its object and the record's id); a column is a mapping from
that source, named by its target; a cell is the record's link in that mapping. A page costs the same few
queries whatever it shows: the page's record keys, their links, the mappings they belong to.

The actions call what the API's call: `record_resync` and `records_resync_unsynced` (syncs.record_status).
"""

from dataclasses import dataclass

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts.access import VIEWER_REFUSAL, org_required
from integrations.models import Connection
from mappings.models import Mapping
from syncs.models import ErrorStatus, LinkStatus, RecordLink, SyncRun
from syncs.record_forms import RecordStatusFilters, ResyncRowForm, ResyncUnsyncedForm
from syncs.record_status import (
    UNSYNCED_STATUSES,
    record_resync,
    records_resync_unsynced,
    sync_status_counts,
    unsynced_counts,
)
from syncs.views.paging import cursor_decode, cursor_encode

ROWS_PER_PAGE = 50
# A link's error worth opening from its cell: the record's failure, while it is not closed.
OPEN_ERROR_STATUSES = (ErrorStatus.OPEN, ErrorStatus.RETRY_SCHEDULED, ErrorStatus.RETRYING, ErrorStatus.IN_REVIEW,
                       ErrorStatus.EXHAUSTED)
# The messages after a re-sync name this many runs, then say how many more.
RUNS_NAMED = 5
KEY_FIELDS = ("mapping__source_connection_id", "mapping__source_object", "source_record_id")


# --- keyset pages of source records -------------------------------------------------------------------------------


@dataclass
class RowsPage:
    keys: list  # (source connection pk, source object, source record id), in order
    next: str | None
    previous: str | None


def _decode(cursor):
    key = cursor_decode(cursor)
    if not (key and len(key) == 3 and isinstance(key[0], int) and all(isinstance(part, str) for part in key[1:])):
        return None
    return tuple(key)


def _beyond(key, lookup):
    """Links whose row key comes after (`gt`) or before (`lt`) `key`, in the key's column order."""
    connection, object_name, record_id = key
    return (Q(**{f"mapping__source_connection_id__{lookup}": connection})
            | Q(mapping__source_connection_id=connection, **{f"mapping__source_object__{lookup}": object_name})
            | Q(mapping__source_connection_id=connection, mapping__source_object=object_name,
                **{f"source_record_id__{lookup}": record_id}))


def rows_page(links, *, after=None, before=None, size=ROWS_PER_PAGE):
    """One page of the distinct source records of `links`, in (source, object, record id) order."""
    keys = links.exclude(source_record_id="").values_list(*KEY_FIELDS).distinct()
    position = _decode(after or before or "")
    if position is None:
        rows = list(keys.order_by(*KEY_FIELDS)[:size + 1])
        more_next, more_previous = len(rows) > size, False
        rows = rows[:size]
    elif after:
        rows = list(keys.filter(_beyond(position, "gt")).order_by(*KEY_FIELDS)[:size + 1])
        more_next, more_previous = len(rows) > size, True
        rows = rows[:size]
    else:
        backwards = [f"-{name}" for name in KEY_FIELDS]
        rows = list(keys.filter(_beyond(position, "lt")).order_by(*backwards)[:size + 1])
        more_next, more_previous = True, len(rows) > size
        rows = rows[:size][::-1]
    return RowsPage(keys=rows, next=cursor_encode(*rows[-1]) if rows and more_next else None,
                    previous=cursor_encode(*rows[0]) if rows and more_previous else None)


def status_table(organization, keys):
    """The page's records grouped by source: per source its mappings (the columns, by target name) and per
    record a cell per column (its link, or None where the mapping has not seen the record). Three queries."""
    if not keys:
        return []
    sources = {(connection, object_name) for connection, object_name, _record in keys}
    mappings = [mapping for mapping in Mapping.objects.for_org(organization)
                .filter(source_connection_id__in={connection for connection, _object in sources})
                .select_related("source_connection", "target_connection")
                .order_by("target_connection__name", "name", "pk")
                if (mapping.source_connection_id, mapping.source_object) in sources]
    links = (RecordLink.objects.for_org(organization)
             .filter(mapping__in=[mapping.pk for mapping in mappings],
                     source_record_id__in={record for _connection, _object, record in keys})
             .select_related("last_error")
             .only("mapping_id", "source_record_id", "target_record_id", "status", "last_synced_at",
                   "last_error__code", "last_error__status", "last_error__message"))
    by_cell = {(link.mapping_id, link.source_record_id): link for link in links}
    groups = {}
    for connection, object_name, record_id in keys:
        group = groups.get((connection, object_name))
        if group is None:
            columns = [mapping for mapping in mappings
                       if (mapping.source_connection_id, mapping.source_object) == (connection, object_name)]
            group = groups[(connection, object_name)] = {
                "source": columns[0].source_connection if columns else None, "object": object_name,
                "columns": columns, "rows": [],
            }
        cells = [_cell(by_cell.get((mapping.pk, record_id))) for mapping in group["columns"]]
        group["rows"].append({
            "record_id": record_id, "cells": cells,
            "mappings": [str(mapping.code) for mapping, cell in zip(group["columns"], cells, strict=True) if cell],
            "unsynced": any(cell and cell["link"].status in UNSYNCED_STATUSES for cell in cells),
        })
    return list(groups.values())


def _cell(link):
    if link is None:
        return None
    error = link.last_error
    open_error = error if error is not None and error.status in OPEN_ERROR_STATUSES else None
    return {"link": link, "error": open_error,
            "in_review": open_error is not None and open_error.status == ErrorStatus.IN_REVIEW}


# --- the page -------------------------------------------------------------------------------------------------------


def _targets_summary(organization):
    """Per target: synced, unsynced and failed records, with the target's id for the filter links."""
    rows = sync_status_counts(organization=organization)
    connections = Connection.objects.for_org(organization).in_bulk([row["connection_id"] for row in rows])
    return [{**row, "target": connections[row["connection_id"]]} for row in rows
            if row["connection_id"] in connections]


@org_required
def record_status(request):
    """Every source record × target, with the filters of the API's record status and a search by record id."""
    filters = RecordStatusFilters(request.GET, request=request, queryset=RecordLink.objects.for_org(request.org))
    links = filters.qs if filters.is_valid() else RecordLink.objects.none()
    page = rows_page(links, after=request.GET.get("after"), before=request.GET.get("before"), size=ROWS_PER_PAGE)
    query = request.GET.copy()
    for name in ("after", "before"):
        query.pop(name, None)
    scope = {name: request.GET[name] for name in ("mapping", "target_connection") if request.GET.get(name)}
    return render(request, "syncs/record_status.html", {
        "filters": filters, "page": page, "groups": status_table(request.org, page.keys),
        "query": query.urlencode(), "filtered": filters.is_filtered,
        "targets": _targets_summary(request.org), "scope_query": _urlencode(scope),
        "failed": LinkStatus.FAILED,
    })


def _urlencode(params):
    query = QueryDict(mutable=True)
    query.update(params)
    return query.urlencode()


# --- re-syncs -------------------------------------------------------------------------------------------------------


def _safe_back(request, back):
    """`back` if it is a path of this site, else ""."""
    if back.startswith("/") and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        return back
    return ""


def _back(request):
    """Where an action returns: the page it came from, or the record status."""
    return _safe_back(request, request.POST.get("back", "")) or reverse("record_status")


def _runs_message(prefix, runs):
    """A message naming the queued runs, each a link to its page (the first RUNS_NAMED of them)."""
    named = format_html_join(", ", '<a href="{}">run {}</a> of {}', (
        (reverse("run_detail", kwargs={"code": run.code}), str(run.code)[:8], run.mapping.name)
        for run in runs[:RUNS_NAMED]))
    more = len(runs) - RUNS_NAMED
    if more > 0:
        return format_html('{} {} and {} more (see <a href="{}">Runs</a>).', prefix, named, more, reverse("runs"))
    return format_html("{} {}.", prefix, named)


@require_POST
@org_required
def record_resync_view(request):
    """Re-sync one source record in each mapping of its row, read fresh from the source: one run per mapping."""
    form = ResyncRowForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a record to re-sync.")
        return redirect(_back(request))
    codes = form.cleaned_data["mapping"]
    mappings = list(Mapping.objects.for_org(request.org).filter(code__in=codes).order_by("name", "pk"))
    if len(mappings) != len(codes):
        raise Http404("No such mapping.")
    record = form.cleaned_data["record"]
    runs = [record_resync(mapping=mapping, source_record_ids=[record]) for mapping in mappings]
    runs = list(SyncRun.objects.for_org(request.org).filter(pk__in=[run.pk for run in runs])
                .select_related("mapping").order_by("pk"))
    messages.success(request, _runs_message(format_html("Re-syncing record {} in", record), runs))
    return redirect(_back(request))


@org_required
def records_resync_unsynced_view(request):
    """GET: confirm, with how many records of which mappings. POST: re-sync them, one run per mapping."""
    if not request.membership.can_write:
        # The confirmation is a form a viewer could only fail to submit.
        raise PermissionDenied(VIEWER_REFUSAL)
    data = request.GET if request.method == "GET" else request.POST
    form = ResyncUnsyncedForm(data, organization=request.org)
    if not form.is_valid():
        raise Http404("No such mapping or target.")
    scope = form.cleaned_data
    if request.method == "GET":
        per_mapping = unsynced_counts(organization=request.org, **scope)
        chosen = {name: value for name, value in data.items() if name in scope and value}
        back = _safe_back(request, data.get("back", "")) or f"{reverse('record_status')}?{_urlencode(chosen)}"
        return render(request, "syncs/record_status_confirm.html", {
            "scope": scope, "per_mapping": per_mapping, "total": sum(row["records"] for row in per_mapping),
            "back": back, "form_data": chosen,
        })
    runs = records_resync_unsynced(organization=request.org, **scope)
    if not runs:
        messages.info(request, "Nothing to re-sync: every record is synced, skipped or ignored.")
        return redirect(_back(request))
    runs = list(SyncRun.objects.for_org(request.org).filter(pk__in=[run.pk for run in runs])
                .select_related("mapping").order_by("pk"))
    count = sum(len(run.options.get("records", [])) for run in runs)
    messages.success(request, _runs_message(
        format_html("Re-syncing {} unsynced record{} in", count, "s" if count != 1 else ""), runs))
    return redirect(_back(request))
