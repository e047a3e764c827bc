"""Pausing and resuming mappings, by hand or automatically after too many failed runs in a row."""

from django.db.models import Q

from integrations.errors import ErrorCategory
from notifications import hooks as notification_hooks
from syncs.events import log_event
from syncs.models import ErrorLevel, RecordError, RunStatus, SyncRun
from syncs.schedules import mapping_schedule_sync


def throttled_runs(mapping):
    """Runs of `mapping` stopped because a system asked to be called again later (a rate limit, a Retry-After).

    Such a run says nothing is broken: a target refusing calls for a few seconds at a time must not pause a
    mapping that a person would then have to resume; the next run gets through once it lets calls in again.
    """
    return RecordError.objects.filter(mapping=mapping, level=ErrorLevel.SYSTEM).filter(
        Q(category=ErrorCategory.RATE_LIMIT) | Q(retry_after_until__isnull=False)).values("run_id")


def pause_after_failed_runs(run):
    mapping = run.mapping
    limit = mapping.pause_after_failed_runs
    if not limit or run.status != RunStatus.FAILED or not mapping.is_active:
        return False
    throttled = throttled_runs(mapping)
    if throttled.filter(run_id=run.pk).exists():
        return False
    recent = list(SyncRun.objects.filter(mapping=mapping, is_test=False, finished_at__isnull=False)
                  .exclude(pk__in=throttled).order_by("-finished_at", "-pk").values_list("status", flat=True)[:limit])
    if len(recent) < limit or any(status != RunStatus.FAILED for status in recent):
        return False
    last = run.system_error or f"see run {run.pk}"
    mapping_pause(mapping=mapping, reason=f"Paused after {limit} failed runs in a row; last: {last}")
    notification_hooks.mapping_auto_paused(mapping)  # only this pause is automatic: a person's pause is no alert
    return True


def mapping_pause(*, mapping, reason):
    mapping.is_active = False
    mapping.paused_reason = reason[:500]
    mapping.save(update_fields=["is_active", "paused_reason", "updated_at"])
    mapping_schedule_sync(mapping=mapping)
    log_event("mapping_paused", mapping=str(mapping.code), mapping_name=mapping.name, reason=reason)


def mapping_resume(*, mapping):
    mapping.is_active = True
    mapping.paused_reason = ""
    mapping.save(update_fields=["is_active", "paused_reason", "updated_at"])
    mapping_schedule_sync(mapping=mapping)

