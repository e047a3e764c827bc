"""Per-record sync status (seed 000's customer × target table) and re-syncing records from it."""

from django.db.models import Count, Q

from mappings.models import Mapping
from syncs.models import LinkStatus, RecordLink, Resolution, Trigger
from syncs.services import sync_run_queue


def record_resync(*, mapping, source_record_ids, force=False):
    """Sync these source records again now, read fresh from the source."""
    return sync_run_queue(mapping=mapping, trigger=Trigger.MANUAL, options={
        "records": [str(record_id) for record_id in source_record_ids], "resolution": Resolution.MANUAL_RETRY,
        "force": force,
    })


UNSYNCED_STATUSES = (LinkStatus.FAILED, LinkStatus.PENDING)


def unsynced_links(*, organization, mapping=None, target_connection=None):
    """The links of records not synced to their target (failed or pending): what "re-sync all unsynced" takes,
    and what its confirmation counts."""
    links = RecordLink.objects.for_org(organization).filter(status__in=UNSYNCED_STATUSES)
    if mapping is not None:
        links = links.filter(mapping=mapping)
    if target_connection is not None:
        links = links.filter(mapping__target_connection=target_connection)
    return links


def unsynced_counts(*, organization, mapping=None, target_connection=None):
    """Per mapping, how many records a re-sync of the unsynced would take (its confirmation's figures)."""
    links = unsynced_links(organization=organization, mapping=mapping, target_connection=target_connection)
    return list(links.values("mapping__name", "mapping__target_connection__name").annotate(records=Count("pk"))
                .order_by("mapping__name"))


def records_resync_unsynced(*, organization, mapping=None, target_connection=None):
    """Re-sync every record not synced to a target, one run per mapping. Returns the runs."""
    links = unsynced_links(organization=organization, mapping=mapping, target_connection=target_connection)
    by_mapping = {}
    for mapping_id, source_id in links.values_list("mapping_id", "source_record_id"):
        by_mapping.setdefault(mapping_id, []).append(source_id)
    mappings = Mapping.objects.for_org(organization).in_bulk(list(by_mapping))
    return [record_resync(mapping=mappings[mapping_id], source_record_ids=ids)
            for mapping_id, ids in sorted(by_mapping.items())]


def record_sync_status(*, organization, source_connection=None, source_object=None):
    """The per-record × per-target table of seed 000: one row per (source record, mapping) with its status."""
    links = RecordLink.objects.for_org(organization).select_related("mapping__target_connection", "last_error")
    if source_connection is not None:
        links = links.filter(mapping__source_connection=source_connection)
    if source_object is not None:
        links = links.filter(mapping__source_object=source_object)
    return links.order_by("source_record_id", "mapping__target_connection__name")


def sync_status_counts(*, organization):
    """Per target connection: synced, unsynced (failed or pending) and failed records."""
    rows = (RecordLink.objects.for_org(organization)
            .values("mapping__target_connection_id", "mapping__target_connection__name")
            .annotate(synced=Count("pk", filter=Q(status=LinkStatus.SYNCED)),
                      failed=Count("pk", filter=Q(status=LinkStatus.FAILED)),
                      unsynced=Count("pk", filter=Q(status__in=(LinkStatus.FAILED, LinkStatus.PENDING))))
            .order_by("mapping__target_connection__name"))
    return [
        {"connection_id": row["mapping__target_connection_id"], "connection": row["mapping__target_connection__name"],
         "synced": row["synced"], "unsynced": row["unsynced"], "failed": row["failed"]}
        for row in rows
    ]

