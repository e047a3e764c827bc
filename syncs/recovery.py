"""What follows a finished run: the next queued run of its mapping, its chain's status, automated replay, the
continuation of a group retry and auto-pause. The engine calls `sync_run_after_finish` once per finished run."""

from syncs.chains import chain_refresh_status, roots_touched
from syncs.groups import group_retry_continue
from syncs.pause import pause_after_failed_runs
from syncs.retries import automated_replay, release_unprocessed
from syncs.services import sync_run_start_next_queued


def sync_run_after_finish(run):
    """What follows a finished run: the chain's status, automated replay, group retries, auto-pause."""
    if run.is_test:
        return
    release_unprocessed(run)
    sync_run_start_next_queued(run)
    for root in roots_touched(run):
        chain_refresh_status(root)
    automated_replay(run)
    group_retry_continue(run)
    pause_after_failed_runs(run)
