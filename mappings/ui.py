"""The mapping pages of the browser UI, under /mappings/: the list, the editor (new and edit, with the live
preview of a row's transforms), the detail page and its actions (validate, test sync, run now, pause, delete).

Every view acts for request.org (accounts.access) and every action calls the service the API calls:
mappings.services (mapping_create, mapping_update, mapping_validate, mapping_run_now, mapping_delete),
syncs.previews.mapping_test_sync and syncs.pause (mapping_pause, mapping_resume).
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, OuterRef, Subquery
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from accounts.access import VIEWER_REFUSAL, get_object_for_org_or_404, org_required
from integrations.models import Connection
from mappings.forms import MappingEditor
from mappings.models import Mapping
from mappings.services import (
    MappingBusy,
    mapping_create,
    mapping_delete,
    mapping_run_now,
    mapping_update,
    mapping_validate,
)
from syncs.models import RunStatus, SyncRun
from syncs.pause import mapping_pause, mapping_resume
from syncs.previews import mapping_test_sync

RECENT_RUNS = 10
TEST_SYNC_SAMPLE = 10


def _mapping(request, code):
    queryset = Mapping.objects.select_related("source_connection", "target_connection")
    return get_object_for_org_or_404(queryset, request.org, code=code)


def _require_write(request):
    # The editor's pages are forms a viewer could only fail to submit: they are refused already on GET.
    if not request.membership.can_write:
        raise PermissionDenied(VIEWER_REFUSAL)


def _last_run(field):
    return Subquery(SyncRun.objects.filter(mapping=OuterRef("pk"), is_test=False)
                    .order_by("-queued_at", "-id").values(field)[:1])


@org_required
@require_GET
def mapping_list(request):
    """Every mapping: what goes where, whether it is active, its schedule, its last run and its strategy."""
    mappings = list(Mapping.objects.for_org(request.org)
                    .select_related("source_connection", "target_connection")
                    .annotate(last_run_status=_last_run("status"), last_run_at=_last_run("queued_at"),
                              field_count=Count("field_mappings"))
                    .order_by("name", "id"))
    for mapping in mappings:
        if mapping.last_run_status:
            mapping.last_run_label = RunStatus(mapping.last_run_status).label
    connection_count = Connection.objects.for_org(request.org).count()
    return render(request, "mappings/list.html", {"mappings": mappings, "connection_count": connection_count})


def _editor_page(request, *, mapping=None):
    _require_write(request)
    connections = list(Connection.objects.for_org(request.org).order_by("name", "id"))
    options = {"organization": request.org, "connections": connections, "mapping": mapping,
               "editor_url": request.path}
    if request.method == "GET":
        editor = MappingEditor(**options)
    else:
        editor = MappingEditor(**options, data=request.POST)
        action = request.POST.get("editor", "save")
        if action != "save":
            # An editor button or a changed choice: the form again with what was typed, nothing saved.
            editor.apply(action)
        else:
            saved = _save(request, editor, mapping)
            if saved is not None:
                return redirect("mappings:detail", code=saved.code)
    editor.fill_previews()
    context = {"editor": editor, "form": editor.form, "mapping": mapping, "connections": connections}
    return render(request, "mappings/edit.html", context)


def _save(request, editor, mapping):
    arguments = editor.service_arguments()
    if arguments is None:
        messages.error(request, "The mapping was not saved: correct the fields marked below.")
        return None
    try:
        if mapping is None:
            saved = mapping_create(organization=request.org, **arguments)
        else:
            saved = mapping_update(mapping=mapping, **arguments)
    except ValidationError as exc:
        editor.add_service_errors(exc.message_dict)
        messages.error(request, "The mapping was not saved: correct the fields marked below.")
        return None
    messages.success(request, f"{saved.name} is saved." if mapping else f"{saved.name} is created.")
    return saved


@org_required
def mapping_new(request):
    return _editor_page(request)


@org_required
def mapping_edit(request, code):
    return _editor_page(request, mapping=_mapping(request, code))


@org_required
@require_POST
def mapping_preview(request):
    """The live preview of one row (htmx): the engine's compiled plan on the sample values the editor holds."""
    _require_write(request)
    connections = list(Connection.objects.for_org(request.org).order_by("name", "id"))
    editor = MappingEditor(organization=request.org, connections=connections, data=request.POST)
    try:
        row = editor.rows[int(request.POST.get("preview_row", ""))]
    except (ValueError, IndexError):
        return HttpResponse("There is no such row to preview.", status=400)
    row.preview = editor.preview(row)
    return render(request, "mappings/partials/preview.html", {"row": row})


def _detail_context(request, mapping, **extra):
    runs = list(SyncRun.objects.for_org(request.org).filter(mapping=mapping, is_test=False)
                .order_by("-queued_at", "-id")[:RECENT_RUNS])
    return {"mapping": mapping, "field_mappings": list(mapping.field_mappings.all()), "runs": runs,
            "active_run": next((run for run in runs if run.status in (RunStatus.QUEUED, RunStatus.RUNNING)), None),
            **extra}


@org_required
@require_GET
def mapping_detail(request, code):
    mapping = _mapping(request, code)
    return render(request, "mappings/detail.html", _detail_context(request, mapping))


@org_required
@require_GET
def mapping_validate_view(request, code):
    """Every problem of the saved mapping against both connections' schemas (a read: viewers may ask, as in the
    API)."""
    mapping = _mapping(request, code)
    problems = mapping_validate(mapping)
    context = {"problems": problems, "validated": True}
    if request.htmx:
        return render(request, "mappings/partials/validation.html", {"mapping": mapping, **context})
    return render(request, "mappings/detail.html", _detail_context(request, mapping, **context))


@org_required
@require_POST
def mapping_test_sync_view(request, code):
    """A test sync of a sample: per record, what a real run would do. Nothing is written, the cursor stays."""
    mapping = _mapping(request, code)
    run = mapping_test_sync(mapping=mapping, sample_size=TEST_SYNC_SAMPLE)
    context = {"test_run": run, "plan": run.plan}
    if request.htmx:
        return render(request, "mappings/partials/test_sync.html", {"mapping": mapping, **context})
    return render(request, "mappings/detail.html", _detail_context(request, mapping, **context))


@org_required
@require_POST
def mapping_run_view(request, code):
    mapping = _mapping(request, code)
    _run, already_active = mapping_run_now(mapping=mapping)
    if already_active:
        messages.warning(request, f"A run of {mapping.name} is already queued or running: it was not queued twice.")
    else:
        messages.success(request, f"A run of {mapping.name} is queued: it shows under Recent runs as it goes.")
    return redirect("mappings:detail", code=mapping.code)


@org_required
@require_POST
def mapping_pause_view(request, code):
    mapping = _mapping(request, code)
    reason = request.POST.get("reason", "").strip()
    if not reason:
        messages.error(request, "Say why the mapping is paused: the reason is shown until it is resumed.")
    elif len(reason) > 500:
        messages.error(request, "The reason has at most 500 characters.")
    else:
        mapping_pause(mapping=mapping, reason=reason)
        messages.success(request, f"{mapping.name} is paused: its schedule does not run until it is resumed.")
    return redirect("mappings:detail", code=mapping.code)


@org_required
@require_POST
def mapping_resume_view(request, code):
    """Resume a paused mapping, from its page or from the overview's "Needs attention": back to the page the
    button was on."""
    mapping = _mapping(request, code)
    mapping_resume(mapping=mapping)
    messages.success(request, f"{mapping.name} is active again: its schedule runs from now on.")
    back = request.POST.get("next") or request.headers.get("referer", "")
    if url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return redirect(back)
    return redirect("mappings:detail", code=mapping.code)


@org_required
def mapping_delete_view(request, code):
    """GET: what deleting takes with it, and a confirmation; POST: delete (refused while a run is active)."""
    mapping = _mapping(request, code)
    _require_write(request)
    if request.method == "POST":
        try:
            mapping_delete(mapping=mapping)
        except MappingBusy as exc:
            messages.error(request, str(exc))
            return redirect("mappings:detail", code=mapping.code)
        messages.success(request, f"{mapping.name} is deleted, with its runs, errors and record links.")
        return redirect("mappings:list")
    counts = {"runs": mapping.runs.filter(is_test=False).count(), "links": mapping.links.count()}
    return render(request, "mappings/delete.html", {"mapping": mapping, **counts,
                                                    "cancel_url": reverse("mappings:detail", args=[mapping.code])})
