"""Finishing a run: its counts (the sum of its batches'), its status, the mapping's cursor, the system errors
its success closes, and what follows (syncs.recovery.sync_run_after_finish)."""

import logging

from django.db import transaction
from django.utils import timezone

from mappings.models import Mapping
from syncs.engine.passes import FORWARD, REVERSE
from syncs.events import log_event
from syncs.models import (
    COUNT_FIELDS,
    UNRESOLVED_ERROR_STATUSES,
    BatchStatus,
    ErrorLevel,
    ErrorStatus,
    RecordError,
    Resolution,
    RunStatus,
    SyncBatch,
    Trigger,
)
from syncs.recovery import sync_run_after_finish

# Only runs that read everything since the cursor may move it; replays and webhook runs see a subset.
CURSOR_TRIGGERS = (Trigger.SCHEDULE, Trigger.MANUAL)


def run_status(run, context, *, pages_failed):
    if context.canceled or run.status == RunStatus.CANCELED:
        return RunStatus.CANCELED
    if run.system_error or context.stopped or (pages_failed and run.read == 0):
        return RunStatus.FAILED
    if pages_failed or run.failed:
        return RunStatus.PARTIALLY_FAILED
    return RunStatus.SUCCEEDED


def sync_run_finish(context):
    """Close the run: counts and status; the cursor moves only after a full read that left nothing behind
    (never after a replay, a sample or a test); a run that got past the checks closes the mapping's earlier
    system errors. Then what follows a finished run."""
    run, mapping = context.run, context.mapping
    totals = dict.fromkeys(COUNT_FIELDS, 0)
    # Pages are read in the cursor's order: the last page that says where to resume is where the next run does.
    reached = {FORWARD: "", REVERSE: ""}
    # Whichever worker finishes, the batches hold what every worker did.
    pages_failed = 0
    touched_runs = set(context.touched_runs)
    batches = SyncBatch.objects.filter(run=run).order_by("direction", "sequence").values_list(
        "direction", "status", "record_count", "counts", "cursor", "touched_runs")
    for direction, status, record_count, counts, cursor, touched in batches.iterator():
        for name in COUNT_FIELDS:
            totals[name] += int(counts.get(name, 0))
        if cursor:
            reached[direction] = cursor
        if status == BatchStatus.FAILED and record_count == 0:
            pages_failed += 1  # a page that did not load
        touched_runs.update(touched or ())
    for name, value in totals.items():
        setattr(run, name, value)
    run.finished_at = timezone.now()
    run.status = run_status(run, context, pages_failed=pages_failed)
    run.plan = context.book.plan()
    moves_cursor = (run.status == RunStatus.SUCCEEDED and not run.is_test and not context.options.replay
                    and not context.options.sample_size and run.trigger in CURSOR_TRIGGERS)
    with transaction.atomic():
        if not run.is_test and not run.system_error:
            over = RecordError.objects.filter(
                mapping=mapping, level=ErrorLevel.SYSTEM, status__in=UNRESOLVED_ERROR_STATUSES
            ).exclude(run=run)
            context.touch_runs(over)
            over.update(status=ErrorStatus.RESOLVED, resolution=Resolution.FIXED, resolved_at=run.finished_at,
                        updated_at=run.finished_at)
        if moves_cursor:
            locked = Mapping.objects.select_for_update().get(pk=mapping.pk)
            update = ["last_successful_sync_at", "updated_at"]
            locked.last_successful_sync_at = run.finished_at
            if reached[FORWARD]:
                run.cursor_to = locked.source_cursor = reached[FORWARD]
                update.append("source_cursor")
            if reached[REVERSE]:
                locked.target_cursor = reached[REVERSE]
                update.append("target_cursor")
            locked.save(update_fields=update)
        run.save()
    log_event(
        "run_finished", level=logging.INFO if run.status == RunStatus.SUCCEEDED else logging.WARNING,
        run=str(run.code), mapping=str(mapping.code), mapping_name=mapping.name, status=run.status,
        counts=run.counts(),
        sync_target=mapping.target_connection.name,
    )
    sync_run_after_finish(run, touched_runs=touched_runs)
