"""The executor: one SyncRun through the stages of the engine, in one worker.

claim (claims) → checks and passes (passes) → read page by page, or the units of a retry (reading) → per
batch: plan each record (planning), write (writing), write it all down (bookkeeping) → finish (finishing).
A test run goes through the same stages with a PlanWriter and a PlanBook: it writes nothing and keeps a plan.
"""

import logging
import time

from django.utils import timezone

from integrations.errors import ConnectorError, ErrorCategory
from mappings.models import Direction, ErrorStrategy
from syncs.engine.bookkeeping import PlanBook, RunBook
from syncs.engine.claims import Heartbeat, cancel_requested, sync_run_claim
from syncs.engine.finishing import sync_run_finish
from syncs.engine.passes import FORWARD, build_passes
from syncs.engine.planning import Item, Planner, operator_edits
from syncs.engine.reading import Reader
from syncs.engine.writing import PlanWriter, Writer
from syncs.events import log_event
from syncs.models import ErrorLevel, RecordError
from syncs.options import RunOptions
from syncs.retries import sync_run_claim_errors


def sync_run_execute(*, run_id):
    """Claim and execute one run. Returns the run, or None when it was not ours to run."""
    run = sync_run_claim(run_id=run_id)
    if run is None:
        log_event("run_claim_skipped", run_id=run_id)
        return None
    RunExecutor(run).execute()
    return run


class RunExecutor:
    """The state of one run while a worker executes it, and the stages it goes through."""

    def __init__(self, run):
        self.run = run
        self.mapping = run.mapping
        self.org = run.organization
        self.options = RunOptions.of(run)
        self.strategy = self.mapping.error_strategy
        self.page_size = int(self.options.page_size or self.mapping.batch_size)
        self.stopped = False  # fail fast, or a cancel: no batch after this one
        self.canceled = False
        self.batch_errors = 0
        self.conflicted_links = set()  # links the forward pass sent to review: the reverse pass leaves them
        # An authentication failure halts the run: (error, connection), set where the call failed.
        self.halt = None
        # Runs whose errors this run resolved or superseded: their chains are re-evaluated when it finishes.
        self.touched_runs = set()
        # (direction, record id) of the records this run retries: a failure of one of them uses up an attempt.
        self.retried = self.retried_records()
        self.sleep = time.sleep
        self.heartbeat = Heartbeat(run)
        self.book = (PlanBook if run.is_test else RunBook)(self)
        self.planner = Planner(self)
        self.writer = (PlanWriter if run.is_test else Writer)(self, self.planner)
        self.reader = Reader(self)

    def retried_records(self):
        retried = {(FORWARD, str(record_id)) for record_id in self.options.records}
        if self.options.errors:
            retried |= set(RecordError.objects.filter(pk__in=self.options.errors, level=ErrorLevel.RECORD)
                           .values_list("direction", "source_record_id"))
        return retried

    def call_failed(self, exc, connection):
        """Whether a failed call halts the run. Authentication does: every later call would fail the same way,
        and records are not failed for it; the run ends with a system error and the connection needs a
        reconnect, after which the records are read again."""
        if exc.category != ErrorCategory.AUTH:
            return False
        self.halt = (exc, connection)
        return True

    def cancel_requested(self):
        if cancel_requested(self.run):
            self.canceled = self.stopped = True
        return self.canceled

    def touch_runs(self, errors):
        """Remember the runs of errors this run is about to close, so their chains are re-evaluated."""
        for run_id, origin_id in errors.values_list("run_id", "origin_run_id"):
            self.touched_runs.update({run_id, origin_id})

    # -- the run -----------------------------------------------------------------------------------------------

    def execute(self):
        run = self.run
        log_event("run_started", run_id=run.pk, mapping=self.mapping.name, trigger=run.trigger, claims=run.claims)
        if run.claims == 1:
            if not run.is_test:
                sync_run_claim_errors(run, now=timezone.now())
            if not self.options.full:
                # Fixed at the first claim, so a run taken over after a killed worker reads the same delta.
                run.cursor_from = self.mapping.source_cursor
                run.reverse_cursor_from = self.mapping.target_cursor
                run.save(update_fields=["cursor_from", "reverse_cursor_from"])
        try:
            for sync_pass in build_passes(run):
                self.reader.run_pass(sync_pass)
                if self.stopped:
                    break
        except ConnectorError as exc:
            self.book.system_error(exc)
        except Exception as exc:
            # A bug must not leave the run "running" forever: record it as a system error of category unknown.
            logging.getLogger("resync.sync").exception("run_crashed", extra={"event": "run_crashed"})
            self.book.system_error(ConnectorError(
                ErrorCategory.UNKNOWN, "The sync stopped on an unexpected internal error", code="internal_error",
                detail=f"{type(exc).__name__}: {exc}", retryable=False,
            ))
        sync_run_finish(self)

    # -- one batch ------------------------------------------------------------------------------------------------

    def process_batch(self, sync_pass, batch, records, *, replay_info=None, failures=()):
        """Plan, write and write down one batch. `replay_info` (record id → (an operator's correction, when the
        record last failed)) and `failures` ((record, error) that could not even be loaded) come from a replay."""
        outcome = self.book.outcome(sync_pass, batch)
        links = sync_pass.links(organization=self.org, mapping=self.mapping, near_ids=[r.id for r in records])
        items = [Item(record=record, link=links.get(record.id)) for record in records]
        edits = operator_edits(self, sync_pass, records) if replay_info is None else {}
        for item in items:
            item.preset_payload, item.failed_at = (replay_info or {}).get(item.record.id, (None, None))
            edit = edits.get(item.record.id)
            # An operator's correction lives with the record until it syncs, unless the source changed since.
            if edit is not None and not (item.record.modified_at and item.record.modified_at > edit[1]):
                item.preset_payload = edit[0]
        outcome.counts["read"] = len(items) + len(failures)
        for record, exc in failures:
            outcome.fail(Item(record=record, link=links.get(record.id)), [exc])
        # Fail fast writes one record at a time, so that nothing after the first error is written.
        chunk_size = 1 if self.strategy == ErrorStrategy.FAIL_FAST else max(len(items), 1)
        for start in range(0, len(items), chunk_size):
            chunk = items[start:start + chunk_size]
            if self.stopped:
                outcome.counts["skipped"] += len(chunk)
                continue
            if self.halt:
                outcome.untried(chunk)
                continue
            self.process_chunk(sync_pass, chunk, outcome)
            if self.halt:
                outcome.untried(chunk)
            self.heartbeat.beat(batch=batch, force=False)
            if self.strategy == ErrorStrategy.FAIL_FAST and outcome.failed_items:
                self.stopped = True
        outcome.save()
        self.heartbeat.beat()
        if self.halt:
            raise self.halt[0]

    def process_chunk(self, sync_pass, items, outcome):
        for item in items:
            self.planner.prepare(sync_pass, item, outcome)
        steps = [self.planner.match]
        if self.options.replay and not self.options.force:
            steps.append(self.planner.detect_target_changes)
        if self.mapping.direction == Direction.TWO_WAY:
            steps.append(self.planner.detect_conflicts)
        steps.append(self.writer.write)
        for step in steps:
            live = [item for item in items if not item.done]
            if self.halt or not live:
                return
            step(sync_pass, live, outcome)
