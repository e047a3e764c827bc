"""What follows a finished run: its claims, the chains it settled, automated replay, group retries waiting on
it, the retries it kept waiting, the next queued run of its mapping and auto-pause. The engine calls
`sync_run_after_finish` once per finished run."""

from notifications import hooks as notification_hooks
from syncs.chains import chains_settle, sync_run_resume_after_reconnect
from syncs.groups import group_retries_advance
from syncs.pause import pause_after_failed_runs
from syncs.retries import automated_replay, retries_sweep
from syncs.services import sync_run_release_claims, sync_run_start_next_queued


def sync_run_after_finish(run, *, touched_runs=()):
    """`touched_runs` are the runs whose errors this run resolved or superseded."""
    if run.is_test:
        return
    sync_run_release_claims(run)
    chains_settle(run_ids={run.pk, *touched_runs})
    # A run stopped by refused credentials is read again in full once its connection is reconnected (its failed
    # records with it, the cursor never moved past them): no record replay meanwhile, it would only be refused.
    if not sync_run_resume_after_reconnect(run):
        automated_replay(run)
    # After the replay: a probe it has just claimed is on its way, not failed.
    group_retries_advance(mapping=run.mapping)
    # Retries that came due while this run held the mapping go now rather than at the sweeper's next tick.
    retries_sweep(mapping=run.mapping)
    sync_run_start_next_queued(run)
    pause_after_failed_runs(run)
    # Last, once the run's state is final: alert rules observe it (rows only; channels are sent to by workers).
    notification_hooks.run_finished(run)
