"""Read-side queries over the record of what happened. `record_errors_matching` is the one error filter: the
CLI, the admin and the REST API all build their error sets from it, so a filter means the same thing everywhere.
"""

import datetime

from django.db.models import Q
from django.utils import timezone

from mappings.models import Mapping
from syncs.chains import run_open_failures
from syncs.models import RecordError, SyncRun


def record_errors_matching(
    *,
    organization,
    category=None,
    code=None,
    level=None,
    status=None,
    mapping=None,
    target_connection=None,
    run=None,
    blocking=None,
    since=None,
    until=None,
    search=None,
):
    """The organization's record errors that match every filter given; a filter left as None matches all.

    `category`, `code` (the error code, e.g. "INVALID_EMAIL"), `level` and `status` take one value or a list of
    them (an empty list filters nothing). `mapping`, `target_connection` (the mapping's target connection) and
    `run` take an object or its id. `blocking` (a run) keeps the unresolved errors that keep that run from being
    recovered, wherever its failures now live (see syncs.chains). `since` is inclusive and `until` exclusive,
    both on `created_at`; a date means its midnight, and a naive date-time is read in the current time zone.
    `search` is a case-insensitive substring of the message, the source record id or the error code.
    """
    errors = RecordError.objects.for_org(organization)
    for lookup, value in (("category", category), ("error_code", code), ("level", level), ("status", status)):
        values = _as_list(value)
        if values:
            errors = errors.filter(**{f"{lookup}__in": values})
    if mapping is not None:
        errors = errors.filter(mapping_id=_pk(mapping))
    if target_connection is not None:
        # The target's mappings by id (a handful), not a join: the newest errors of those mappings then come
        # straight from the organization's newest-first index.
        mappings = Mapping.objects.for_org(organization).filter(target_connection_id=_pk(target_connection))
        errors = errors.filter(mapping_id__in=list(mappings.values_list("pk", flat=True)))
    if run is not None:
        errors = errors.filter(run_id=_pk(run))
    if blocking is not None:
        if not isinstance(blocking, SyncRun):
            blocking = SyncRun.objects.for_org(organization).get(pk=blocking)
        errors = errors.filter(pk__in=run_open_failures(blocking).values("pk"))
    if since is not None:
        errors = errors.filter(created_at__gte=_as_datetime(since))
    if until is not None:
        errors = errors.filter(created_at__lt=_as_datetime(until))
    if search and (term := str(search).strip()):
        errors = errors.filter(
            Q(message__icontains=term) | Q(source_record_id__icontains=term) | Q(error_code__icontains=term)
        )
    return errors


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return [str(item) for item in value]
    return [str(value)]


def _pk(value):
    return getattr(value, "pk", value)


def _as_datetime(value):
    if isinstance(value, datetime.datetime):
        return timezone.make_aware(value) if timezone.is_naive(value) else value
    if isinstance(value, datetime.date):
        return timezone.make_aware(datetime.datetime.combine(value, datetime.time.min))
    raise TypeError(f"Expected a date or a datetime, not {type(value).__name__}")
