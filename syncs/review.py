"""The review queue and closing errors by hand: correct a record and retry it, ignore it with a reason, or
resolve it; one error at a time or in bulk (by ids or by the errors list's filter)."""


from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from integrations.errors import ConnectorError
from integrations.services import connection_schema
from mappings.models import Mapping
from mappings.validation import validate_payload
from syncs.chains import chains_settle
from syncs.events import log_event
from syncs.groups import group_retries_advance
from syncs.models import (
    UNRESOLVED_ERROR_STATUSES,
    ErrorLevel,
    ErrorStatus,
    LinkStatus,
    RecordError,
    RecordLink,
    Resolution,
)
from syncs.retries import errors_retry


def review_queue(*, organization):
    return (RecordError.objects.for_org(organization)
            .filter(status=ErrorStatus.IN_REVIEW, level=ErrorLevel.RECORD)
            .select_related("mapping", "run").order_by("created_at", "pk"))


def error_edit_and_retry(*, error, payload, force=False):
    """Replace the transformed record of an error with an operator's correction, validate it, retry it.

    Raises ValidationError keyed by field when the correction does not fit the target's schema.
    """
    if error.level != ErrorLevel.RECORD:
        raise ValidationError("Only a record error can be edited.", code="not_a_record")
    if error.is_resolved:
        raise ValidationError("This error is already resolved.", code="already_resolved")
    if not isinstance(payload, dict):
        raise ValidationError("The record must be an object of field values.", code="invalid")
    mapping = error.mapping
    far = mapping.target_connection if error.direction == "forward" else mapping.source_connection
    far_object = mapping.target_object if error.direction == "forward" else mapping.source_object
    try:
        schema = connection_schema(connection=far, object_name=far_object)
    except ConnectorError as exc:
        # The correction cannot be checked against a schema the target does not give: say so, change nothing.
        raise ValidationError(f"The target's schema is not available: {exc.message}", code=exc.code) from exc
    result = validate_payload(payload, schema, auto_fix=False, phone_country=mapping.default_phone_country)
    if result.errors:
        raise ValidationError({problem.field or "payload": problem.message for problem in result.errors})
    error.edited_payload, error.edited_at = result.payload, timezone.now()
    error.save(update_fields=["edited_payload", "edited_at", "updated_at"])
    return errors_retry(organization=error.organization, error_ids=[error.pk], resolution=Resolution.FIXED,
                        force=force)


def error_ignore(*, error, reason):
    """Close one error on purpose, with the reason shown to operators."""
    _close_one(error, status=ErrorStatus.IGNORED, note=reason)


def error_resolve(*, error, note=""):
    """Close one error as fixed by hand (in the target, say), with an optional note."""
    _close_one(error, status=ErrorStatus.RESOLVED, note=note)


def _close_one(error, *, status, note):
    summary = errors_close(organization=error.organization, error_ids=[error.pk], status=status, note=note)
    if not summary["closed"]:
        raise ValidationError("This error is already resolved.", code="already_resolved")
    error.refresh_from_db()


def errors_close(*, organization, status, note="", queryset=None, error_ids=None):
    """Ignore (status ignored, with a reason) or resolve (status resolved) errors by ids or every error of
    `queryset`, set-based and safe under concurrency: of two overlapping calls each error is closed by one.

    Closed even while a retry has it: the replay then leaves it alone. Ignored records' links say so, the
    chains the errors belong to settle, and group retries waiting on them move on. Returns
    {"closed": n, "skipped": {"already_resolved": n}}.
    """
    note = (note or "").strip()
    if status == ErrorStatus.IGNORED and not note:
        raise ValidationError({"reason": "Say why these records are ignored."})
    if status not in (ErrorStatus.IGNORED, ErrorStatus.RESOLVED):
        raise ValueError(f"Errors are closed as ignored or resolved, not {status}")
    resolution = Resolution.IGNORED if status == ErrorStatus.IGNORED else Resolution.FIXED
    candidates = RecordError.objects.for_org(organization)
    if queryset is not None:
        candidates = candidates.filter(pk__in=queryset.values("pk"))
    if error_ids is not None:
        candidates = candidates.filter(pk__in=list(error_ids))
    total = candidates.count()
    now = timezone.now()
    with transaction.atomic():
        # One conditional UPDATE … RETURNING: the rows this call closed, and none a concurrent call closed first.
        closed = RecordError.objects.filter(
            pk__in=candidates.values("pk"), status__in=UNRESOLVED_ERROR_STATUSES
        ).update_returning(
            CLOSED_FIELDS, status=status, resolution=resolution, resolved_at=now, resolution_note=note[:2000],
            next_retry_at=None, claim_token=None, updated_at=now,
        )
        if status == ErrorStatus.IGNORED:
            _links_ignored(closed)
    chains_settle(run_ids={run_id for row in closed for run_id in (row[1], row[2])})
    for mapping in Mapping.objects.filter(pk__in={row[3] for row in closed}):
        group_retries_advance(mapping=mapping)
    count = len(closed)
    skipped = {"already_resolved": total - count} if total > count else {}
    log_event("errors_closed", organization=organization.slug, status=status, closed=count, skipped=skipped)
    return {"closed": count, "skipped": skipped}


# What closing answers of each error it closed: its chain, its mapping, and its record (for the link).
CLOSED_FIELDS = ("id", "run_id", "origin_run_id", "mapping_id", "level", "direction", "source_record_id")


def _links_ignored(closed):
    """The per-record status of ignored records: ignored, not failed (they no longer count as unsynced)."""
    by_side = {}
    for _pk, _run, _origin, mapping_id, level, direction, record_id in closed:
        if level == ErrorLevel.RECORD:
            by_side.setdefault((direction, mapping_id), []).append(record_id)
    for (direction, mapping_id), record_ids in by_side.items():
        # A reverse error's record is the target's: its link is known by the target side.
        column = {"forward": "source_record_id", "reverse": "target_record_id"}.get(direction)
        if column is None:
            continue
        RecordLink.objects.filter(mapping_id=mapping_id, status=LinkStatus.FAILED,
                                  **{f"{column}__in": record_ids}).update(status=LinkStatus.IGNORED)


def error_editable(error):
    """Whether a person may still correct and retry this error (not closed, not being retried now)."""
    return error.status in UNRESOLVED_ERROR_STATUSES and error.status != ErrorStatus.RETRYING


def error_retry_outcome(error, run=None):
    """How the record's last retry went, as the item's page says it: retrying, synced, still failing (with the
    newer error that says why), ignored, or None while nothing was retried."""
    if error.status == ErrorStatus.RETRYING or (
        run is not None and not run.is_finished and error.status in UNRESOLVED_ERROR_STATUSES
    ):
        return {"state": "retrying", "run": run}
    if error.status == ErrorStatus.IGNORED:
        return {"state": "ignored", "run": run}
    if error.status != ErrorStatus.RESOLVED:
        return {"state": "not_retried", "run": run} if run is not None else None
    if error.resolution != Resolution.SUPERSEDED:
        return {"state": "synced", "run": run}
    # The record failed again: the newer error of the same record carries the reason and the correction.
    newer = (RecordError.objects.for_org(error.organization)
             .filter(mapping_id=error.mapping_id, direction=error.direction, level=ErrorLevel.RECORD,
                     source_record_id=error.source_record_id, pk__gt=error.pk)
             .select_related("run").order_by("-pk").first())
    return {"state": "failing", "run": run or (newer.run if newer else None), "newer": newer}
