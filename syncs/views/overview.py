"""Browser views of syncs: the overview, its live "runs in progress" partial, and resuming a paused mapping.

Every view acts for request.org (accounts.access) and reads through `for_org`. The figures come from
syncs.analytics and syncs.groups and the actions from their services: this module only gathers them for a page.
"""

from django.db.models import OuterRef, Subquery
from django.shortcuts import render

from accounts.access import org_required
from integrations.errors import ErrorCategory
from integrations.models import Connection, ConnectionStatus
from mappings.models import Mapping
from syncs.analytics import error_trend, success_rate_per_target, unsynced_per_target
from syncs.groups import error_groups
from syncs.models import FINISHED_RUN_STATUSES, UNRESOLVED_ERROR_STATUSES, RecordError, RunStatus, SyncRun

OVERVIEW_LIST_LENGTH = 10
OVERVIEW_GROUPS = 5
ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
FAILED_RUN_STATUSES = (RunStatus.FAILED, RunStatus.PARTIALLY_FAILED)
# The live partial asks again soon while something runs, and now and then otherwise to notice a run that starts.
POLL_SECONDS_ACTIVE = 3
POLL_SECONDS_IDLE = 15


def _runs_in_progress(org):
    # Test runs (test syncs, replay previews) write nothing: they are not the organization's sync history.
    runs = list(SyncRun.objects.for_org(org).filter(status__in=ACTIVE_RUN_STATUSES, is_test=False)
                .select_related("mapping__target_connection").order_by("queued_at", "id"))
    return {"runs_in_progress": runs, "poll_seconds": POLL_SECONDS_ACTIVE if runs else POLL_SECONDS_IDLE}


def _targets(org, connections, mappings):
    """One row per connection some mapping writes to: its success rate over 24 hours and its unsynced records."""
    success = success_rate_per_target(organization=org)
    rates = {row["connection_id"]: row for row in success["targets"]}
    records = {row["connection_id"]: row for row in unsynced_per_target(organization=org)}
    target_ids = {mapping.target_connection_id for mapping in mappings} | rates.keys() | records.keys()
    targets = [{"connection": connection, "success": rates.get(connection.pk), "records": records.get(connection.pk)}
               for connection in connections if connection.pk in target_ids]
    unsynced = sum(row["unsynced"] for row in records.values())
    return targets, success["overall"], unsynced


def _error_groups(org, mappings):
    """The largest open error groups, each with its mapping and the message of its latest error, and the total."""
    groups = list(error_groups(organization=org))
    shown = groups[:OVERVIEW_GROUPS]
    names = {mapping.pk: mapping.name for mapping in mappings}
    samples = dict(RecordError.objects.for_org(org).filter(pk__in=[group["sample_id"] for group in shown])
                   .values_list("pk", "message"))
    shown = [{**group, "mapping": names.get(group["mapping_id"], ""), "message": samples.get(group["sample_id"], ""),
              "category_label": ErrorCategory(group["category"]).label} for group in shown]
    return shown, len(groups), sum(group["count"] for group in groups)


@org_required
def home(request):
    """The overview: how every target system is doing, what runs now, what failed and what waits for a person."""
    org = request.org
    last_failure = (SyncRun.objects.for_org(org)
                    .filter(mapping__target_connection=OuterRef("pk"), status__in=FAILED_RUN_STATUSES, is_test=False)
                    .order_by("-finished_at", "-id").values("finished_at")[:1])
    connections = list(Connection.objects.for_org(org).annotate(last_failure_at=Subquery(last_failure))
                       .order_by("name", "id"))
    mappings = list(Mapping.objects.for_org(org).order_by("name", "id"))
    targets, overall, unsynced = _targets(org, connections, mappings)
    groups, group_count, open_errors = _error_groups(org, mappings)
    trend = error_trend(organization=org)
    runs = (SyncRun.objects.for_org(org).filter(is_test=False, status__in=FINISHED_RUN_STATUSES)
            .select_related("mapping__source_connection", "mapping__target_connection")
            .order_by("-queued_at", "-id"))
    record_errors = (RecordError.objects.for_org(org).filter(status__in=UNRESOLVED_ERROR_STATUSES)
                     .select_related("mapping").order_by("-created_at", "-id"))
    context = {
        "connections": connections,
        "mappings": mappings,
        "targets": targets,
        "overall": overall,
        "unsynced": unsynced,
        "error_trend": trend,
        "trend_total": sum(hour["count"] for hour in trend),
        "error_groups": groups,
        "error_group_count": group_count,
        "open_errors": open_errors,
        "runs": list(runs[:OVERVIEW_LIST_LENGTH]),
        "record_errors": list(record_errors[:OVERVIEW_LIST_LENGTH]),
        "paused_connections": [c for c in connections if c.status != ConnectionStatus.ACTIVE],
        "paused_mappings": [mapping for mapping in mappings if not mapping.is_active],
        "active_mappings": sum(1 for mapping in mappings if mapping.is_active),
        **_runs_in_progress(org),
    }
    return render(request, "syncs/home.html", context)


@org_required
def runs_in_progress(request):
    """The overview's live section, polled by htmx: the runs queued or running and their counts so far."""
    return render(request, "syncs/partials/runs_in_progress.html", _runs_in_progress(request.org))
