"""The sync engine: a SyncRun through the lifecycle of the architecture, one module per stage (what a run was
asked to do is syncs.options.RunOptions).

    claims       who runs a run (conditional claim), heartbeats, cancel
    batches      a run's pages staged for any worker: claims per batch, a limit per connection, who finishes
    passes       the checks before a run, and its passes: near side read, far side written, per direction
    reading      pages of the delta from the cursor, or the units of a retry; resuming after a killed worker
    planning     per record: filters, unchanged, transforms, validation; per batch: matching, conflicts
    writing      the far side written in as few calls as it allows (Writer), or a test run's plan (PlanWriter)
    bookkeeping  errors, links, counts, saved per batch in a few statements (BatchOutcome); a test's plan
    finishing    counts, status, cursor, and what follows a finished run
    executor     the stages in order: the worker that holds a run reads it, any worker helps with its batches
"""

from syncs.engine.bookkeeping import error_fingerprint
from syncs.engine.claims import sync_run_claim
from syncs.engine.executor import RunExecutor, sync_run_execute, sync_run_help
from syncs.engine.passes import record_hash

__all__ = ["RunExecutor", "error_fingerprint", "record_hash", "sync_run_claim", "sync_run_execute",
           "sync_run_help"]
