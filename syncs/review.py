"""The review queue and closing errors by hand: correct a record and retry it, ignore it with a reason, or
resolve it."""

from django.core.exceptions import ValidationError
from django.utils import timezone

from integrations.errors import ConnectorError
from integrations.services import connector_for
from mappings.validation import validate_payload
from syncs.models import ErrorLevel, ErrorStatus, LinkStatus, RecordError, RecordLink, Resolution
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
        schema = connector_for(far).schema_for(far_object)
    except ConnectorError as exc:
        # The correction cannot be checked against a schema the target does not give: say so, change nothing.
        raise ValidationError(f"The target's schema is not available: {exc.message}", code=exc.code) from exc
    result = validate_payload(payload, schema, auto_fix=False, phone_country=mapping.default_phone_country)
    if result.errors:
        raise ValidationError({problem.field or "payload": problem.message for problem in result.errors})
    error.edited_payload = result.payload
    error.save(update_fields=["edited_payload", "updated_at"])
    return errors_retry(organization=error.organization, error_ids=[error.pk], resolution=Resolution.FIXED,
                        force=force)


def error_ignore(*, error, reason):
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why this record is ignored."})
    _close(error, status=ErrorStatus.IGNORED, resolution=Resolution.IGNORED, note=reason)
    RecordLink.objects.filter(mapping=error.mapping, source_record_id=error.source_record_id,
                              status=LinkStatus.FAILED).update(status=LinkStatus.IGNORED)


def error_resolve(*, error, note=""):
    _close(error, status=ErrorStatus.RESOLVED, resolution=Resolution.FIXED, note=note)


def _close(error, *, status, resolution, note):
    if error.is_resolved:
        raise ValidationError("This error is already resolved.", code="already_resolved")
    now = timezone.now()
    error.status, error.resolution, error.resolved_at = status, resolution, now
    error.resolution_note = note
    # Closed by a person even while a retry has it: the replay then leaves this error alone.
    error.next_retry_at, error.claim_token = None, None
    error.save(update_fields=["status", "resolution", "resolved_at", "resolution_note", "next_retry_at",
                              "claim_token", "updated_at"])

