"""Worker entry points: each fetches by id and calls one service."""

from syncs.events import log_event


def run_sync(run_id):
    from syncs.engine import sync_run_execute

    sync_run_execute(run_id=run_id)


def run_batches(run_id):
    """A worker's help with a run's staged batches (syncs.engine.batches)."""
    from syncs.engine import sync_run_help

    return sync_run_help(run_id=run_id)


def run_scheduled_mapping(mapping_id):
    from mappings.models import Mapping
    from syncs.models import Trigger
    from syncs.services import sync_run_queue

    mapping = Mapping.objects.select_related("organization").filter(pk=mapping_id).first()
    if mapping is None or not mapping.is_active:
        log_event("schedule_skipped", mapping=str(mapping.code) if mapping else None,
                  reason="mapping missing or inactive")
        return
    sync_run_queue(mapping=mapping, trigger=Trigger.SCHEDULE)


def run_bulk_action(action_id):
    """A bulk retry, ignore or resolve of record errors (syncs.bulk)."""
    from syncs.bulk import bulk_action_perform

    bulk_action_perform(action_id=action_id)


def refresh_error_rollups():
    """Every five minutes (schedule "resync: error rollups"): count the hours of record errors that have ended."""
    from syncs.rollups import error_rollups_refresh

    return error_rollups_refresh().isoformat()


def sweep_retries():
    """Every minute (schedule "resync: retry sweeper"): due record errors → one retry run per mapping; group
    retries whose probe has settled move on."""
    from syncs.groups import group_retries_sweep
    from syncs.retries import retries_sweep

    runs = retries_sweep()
    group_retries_sweep()
    return [run.pk for run in runs]


def reap_runs():
    """Every minute (schedule "resync: reaper"): re-queue runs and bulk actions whose heartbeat stopped or whose
    task was lost. Returns the runs re-queued."""
    from syncs.reaper import bulk_actions_reap, runs_reap

    runs = runs_reap()
    bulk_actions_reap()
    return runs
