"""Pausing and resuming mappings, by hand or automatically after too many failed runs in a row."""

from notifications import hooks as notification_hooks
from syncs.events import log_event
from syncs.models import RunStatus, SyncRun
from syncs.schedules import mapping_schedule_sync


def pause_after_failed_runs(run):
    mapping = run.mapping
    limit = mapping.pause_after_failed_runs
    if not limit or run.status != RunStatus.FAILED or not mapping.is_active:
        return False
    recent = list(SyncRun.objects.filter(mapping=mapping, is_test=False, finished_at__isnull=False)
                  .order_by("-finished_at", "-pk").values_list("status", flat=True)[:limit])
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
    log_event("mapping_paused", mapping=mapping.name, reason=reason)


def mapping_resume(*, mapping):
    mapping.is_active = True
    mapping.paused_reason = ""
    mapping.save(update_fields=["is_active", "paused_reason", "updated_at"])
    mapping_schedule_sync(mapping=mapping)

