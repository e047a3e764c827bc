"""The executor: one SyncRun through the stages of the engine, in one worker.

claim (claims) → checks and passes (passes) → read page by page, or the units of a retry (reading) → per
batch: plan each record (planning), write (writing), write it all down (bookkeeping) → finish (finishing).
A test run goes through the same stages with a PlanWriter and a PlanBook: it writes nothing and keeps a plan.

A run's pages are staged for any worker to process (batches): the executor that holds the run reads, and
RunExecutor is also the state a helper worker processes a staged batch with.
"""

import contextlib
import logging
import time

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone

from integrations.errors import ConnectorError, ErrorCategory
from mappings.models import Direction, ErrorStrategy
from syncs.engine.batches import (
    HELPER_SLICE,
    WAIT,
    announce,
    batch_work,
    fans_out,
    in_flight,
    staged_fields,
    stale_before,
    sync_run_try_finish,
)
from syncs.engine.bookkeeping import PlanBook, RunBook
from syncs.engine.claims import HEARTBEAT_EVERY, Heartbeat, stop_requested, sync_run_claim
from syncs.engine.finishing import sync_run_finish
from syncs.engine.passes import FORWARD, build_passes
from syncs.engine.planning import Item, Planner, operator_edits
from syncs.engine.reading import Reader
from syncs.engine.writing import PlanWriter, Writer
from syncs.events import log_event
from syncs.models import (
    UNRESOLVED_ERROR_STATUSES,
    BatchStatus,
    ErrorLevel,
    RecordError,
    RecordLink,
    RunStatus,
    SyncBatch,
    SyncRun,
)
from syncs.options import RunOptions
from syncs.retries import sync_run_claim_errors


class _Stopped(Exception):
    pass


def sync_run_execute(*, run_id):
    """Claim and execute one run. Returns the run, or None when it was not ours to run."""
    run = sync_run_claim(run_id=run_id)
    if run is None:
        return None  # not ours: sync_run_claim said why
    RunExecutor(run, holds_run=True).execute()
    return run


def sync_run_help(*, run_id):
    """A helper's share of a run: the staged batches it can take, then the run closed if it was the last."""
    run = SyncRun.objects.select_related(
        "organization", "mapping", "mapping__source_connection", "mapping__target_connection"
    ).filter(pk=run_id, status__in=(RunStatus.RUNNING, RunStatus.CANCELED), finished_at__isnull=True).first()
    if run is None:
        return 0
    claimable = SyncBatch.objects.filter(run=run, records__isnull=False).filter(
        Q(status=BatchStatus.STAGED) | Q(status=BatchStatus.RUNNING, heartbeat_at__lt=stale_before())).exists()
    if not claimable and run.read_finished_at is None:
        return 0  # the reader or another helper got there first; nothing to close yet
    context = RunExecutor(run)
    done = 0
    if claimable and run.status == RunStatus.RUNNING:
        deadline = time.monotonic() + HELPER_SLICE
        try:
            # The reader checked the connections and the schema when it started the run.
            passes = context.use(build_passes(run, check=False))
            done = batch_work(context, passes, deadline=deadline)
        except ConnectorError as exc:
            context.book.system_error(exc)  # an authentication failure halts the run: its other workers stop
        except Exception as exc:
            context.crashed(exc)
        finally:
            context.held.close()
        if time.monotonic() >= deadline and in_flight(run).filter(status=BatchStatus.STAGED).exists():
            announce(run)  # make way for the other tasks in this cluster's queue; any worker picks the run up

    if sync_run_try_finish(context):
        sync_run_finish(context)
    return done


class RunExecutor:
    """The state of one run while a worker executes it, and the stages it goes through."""

    def __init__(self, run, *, holds_run=False):
        """`holds_run`: this worker claimed the run and reads it; a helper only processes staged batches."""
        self.run = run
        self.mapping = run.mapping
        self.org = run.organization
        self.options = RunOptions.of(run)
        self.strategy = self.mapping.error_strategy
        self.page_size = int(self.options.page_size or self.mapping.batch_size)
        self.stopped = False  # fail fast, or a cancel: no batch after this one
        self.canceled = False
        self.conflicted_links = set()  # links the forward pass sent to review: the reverse pass leaves them
        self._conflicted_before = None
        self._has_edits = None
        # An authentication failure halts the run: (error, connection), set where the call failed.
        self.halt = None
        # Runs whose errors this run resolved or superseded: their chains are re-evaluated when it finishes.
        self.touched_runs = set()
        # (direction, record id) of the records this run retries: a failure of one of them uses up an attempt.
        self.retried = self.retried_records()
        self.sleep = time.sleep  # a Retry-After between two calls of a batch (tests record it instead)
        self.heartbeat = Heartbeat(run, holds_run=holds_run)
        self.book = (PlanBook if run.is_test else RunBook)(self)
        self.planner = Planner(self)
        self.writer = (PlanWriter if run.is_test else Writer)(self, self.planner)
        self.reader = Reader(self)
        # Pages go to any worker (syncs.engine.batches), or are processed here in order.
        self.fan_out = fans_out(run, self.options, self.strategy)
        self.passes = {}
        self.staged_cache = {}  # batch id -> records this worker staged: no need to read them back
        self.held = contextlib.ExitStack()  # the connectors this worker holds open (use())

    def retried_records(self):
        retried = {(FORWARD, str(record_id)) for record_id in self.options.records}
        if self.options.errors:
            retried |= set(RecordError.objects.filter(pk__in=self.options.errors, level=ErrorLevel.RECORD)
                           .values_list("direction", "source_record_id"))
        return retried

    def wait_for_retry_after(self, exc, batch):
        """Wait as long as the far side asked before the next call of `batch`; False when that is longer than a
        worker should sleep (the retry scheduler then waits instead)."""
        if not exc.retry_after:
            return True
        if exc.retry_after > settings.RESYNC_INLINE_RETRY_AFTER_MAX:
            return False
        left = float(exc.retry_after)
        while left > 0:
            step = min(left, HEARTBEAT_EVERY)
            self.sleep(step)
            left -= step
            self.heartbeat.beat(batch=batch, force=False)
        return True

    def call_failed(self, exc, connection):
        """Whether a failed call halts the run. Authentication does: every later call would fail the same way,
        and records are not failed for it; the run ends with a system error and the connection needs a
        reconnect, after which the records are read again."""
        if exc.category != ErrorCategory.AUTH:
            return False
        self.halt = (exc, connection)
        return True

    def stop_requested(self):
        """Someone canceled the run, or a worker of it stopped it on a system error: no batch after this one."""
        reason = stop_requested(self.run)
        if reason == "canceled":
            self.canceled = True
        if reason:
            self.stopped = True
        return self.stopped

    def mapping_has_edits(self):
        """Whether any open error of the mapping holds an operator's correction: asked once per worker, so that
        a batch of a mapping nobody corrected does not look for corrections record by record."""
        if self._has_edits is None:
            self._has_edits = RecordError.objects.filter(
                mapping=self.mapping, level=ErrorLevel.RECORD, status__in=UNRESOLVED_ERROR_STATUSES,
                edited_payload__isnull=False).exists()
        return self._has_edits

    def use(self, passes):
        """The passes this worker works with, their connectors held open until it is done (self.held)."""
        self.passes = {p.direction: p for p in passes}
        for connector in {id(c): c for p in passes for c in (p.near, p.far)}.values():
            self.held.enter_context(connector)
        return self.passes

    def conflicted(self, link_id):
        """Whether the forward pass sent this link's record to review (two-way, manual policy): the reverse pass
        leaves it. The forward batches may have been processed by other workers: their errors say which."""
        if self._conflicted_before is None:
            near_ids = RecordError.objects.filter(run=self.run, direction=FORWARD, error_code="both_changed").values(
                "source_record_id")
            self._conflicted_before = set(RecordLink.objects.filter(
                mapping=self.mapping, source_record_id__in=near_ids).values_list("pk", flat=True))
        return link_id in self.conflicted_links or link_id in self._conflicted_before

    def crashed(self, exc):
        """A bug must not leave the run "running" forever: a system error of category unknown.

        Losing the database (a dropped connection, a failover) is no bug of the run: the error is raised again
        and the task ends like a killed worker's. A system error written on a fresh connection would stop the
        run for good with its batch half done; instead the heartbeats stop, and another worker or the reaper
        takes the work over, doing the unfinished batch again from scratch (RecordLink and the match keys keep
        it from writing anything twice).
        """
        if isinstance(exc, OperationalError | InterfaceError):
            logging.getLogger("resync.sync").warning("run_lost_database", extra={"event": "run_lost_database"})
            self.held.close()
            raise exc
        logging.getLogger("resync.sync").exception("run_crashed", extra={"event": "run_crashed"})
        self.book.system_error(ConnectorError(
            ErrorCategory.UNKNOWN, "The sync stopped on an unexpected internal error", code="internal_error",
            detail=f"{type(exc).__name__}: {exc}", retryable=False,
        ))

    def touch_runs(self, errors):
        """Remember the runs of errors this run is about to close, so their chains are re-evaluated."""
        for run_id, origin_id in errors.values_list("run_id", "origin_run_id"):
            self.touched_runs.update({run_id, origin_id})

    # -- the run -----------------------------------------------------------------------------------------------

    def execute(self):
        run = self.run
        log_event("run_started", run=str(run.code), mapping=str(self.mapping.code), mapping_name=self.mapping.name,
                  trigger=run.trigger, claims=run.claims)
        if run.claims == 1:
            if not run.is_test:
                sync_run_claim_errors(run, now=timezone.now())
            if not self.options.full:
                # Fixed at the first claim, so a run taken over after a killed worker reads the same delta.
                run.cursor_from = self.mapping.source_cursor
                run.reverse_cursor_from = self.mapping.target_cursor
                run.save(update_fields=["cursor_from", "reverse_cursor_from"])
        try:
            if self.stop_requested():
                raise _Stopped  # canceled while its worker was dead: only closed
            passes = build_passes(run)
            self.use(passes)
            if run.read_finished_at is None:
                for sync_pass in passes:
                    self.reader.run_pass(sync_pass)
                    if self.fan_out and sync_pass is not passes[-1]:
                        self.drain(sync_pass.direction)  # the reverse pass starts from the forward one's outcome
                    if self.stopped:
                        break
        except _Stopped:
            pass
        except ConnectorError as exc:
            self.book.system_error(exc)
        except Exception as exc:
            self.crashed(exc)
        if not self.fan_out:
            self.held.close()
            sync_run_finish(self)
            return
        SyncRun.objects.filter(pk=run.pk).update(read_finished_at=timezone.now())
        # What is left is the staged batches: this worker helps with them, and whichever worker completes the
        # last one closes the run.
        try:
            self.drain(None, wait_for_others=False)
        except ConnectorError as exc:
            self.book.system_error(exc)
        except Exception as exc:
            self.crashed(exc)
        finally:
            self.held.close()
        if sync_run_try_finish(self):
            sync_run_finish(self)

    def page_batch(self, sync_pass, records):
        """How a page's batch is created, and the records left to process. Fanned out, the records unchanged
        since their last sync are counted here and need nothing more; the others are staged for any worker (a
        page of unchanged records is done at once)."""
        if not self.fan_out:
            return {}, (records, None)
        changed, links = self.planner.skim(sync_pass, records)
        unchanged = len(records) - len(changed)
        counts = {"read": unchanged, "unchanged": unchanged} if unchanged else {}
        if not changed:
            return {"status": BatchStatus.SUCCEEDED, "counts": counts, "finished_at": timezone.now()}, ([], None)
        return {**staged_fields(changed), "counts": counts}, (changed, links)

    def take(self, sync_pass, batch, rest):
        """A page that was read, (records, their links) of it left to process: processed here, or staged for
        any worker while this one reads on. The reader stays at most RESYNC_READ_AHEAD batches ahead: past that,
        it processes staged batches itself."""
        if not self.fan_out:
            self.process_batch(sync_pass, batch, rest[0])
            return
        if batch.status != BatchStatus.STAGED:
            return  # nothing in it needed more than its hash
        announce(self.run)
        self.staged_cache[batch.pk] = rest
        while len(self.staged_cache) > settings.RESYNC_READ_AHEAD:
            self.staged_cache.pop(next(iter(self.staged_cache)))  # taken by another worker by now, most likely
        while in_flight(self.run).filter(status=BatchStatus.STAGED).count() >= settings.RESYNC_READ_AHEAD:
            if self.stop_requested():
                return
            if not batch_work(self, self.passes, limit=1):
                self.wait()

    def drain(self, direction, *, wait_for_others=True):
        """Process the staged batches (of one direction); with `wait_for_others`, until the other workers' batches
        are done too."""
        while self.passes:
            if self.stop_requested():
                return
            if batch_work(self, self.passes, direction=direction):
                continue
            pending = in_flight(self.run)
            if direction is not None:
                pending = pending.filter(direction=direction)
            if not wait_for_others:
                pending = pending.filter(status=BatchStatus.STAGED)
            if not pending.exists():
                return
            self.wait()

    def wait(self):
        self.heartbeat.beat(force=False)
        time.sleep(WAIT)

    # -- one batch ------------------------------------------------------------------------------------------------

    def process_batch(self, sync_pass, batch, records, *, links=None, replay_info=None, failures=()):
        """Plan, write and write down one batch. `links`: the records' links, when the caller has them already.
        `replay_info` (record id → (an operator's correction, when the record last failed)) and `failures`
        ((record, error) that could not even be loaded) come from a replay."""
        outcome = self.book.outcome(sync_pass, batch)
        if links is None:
            links = sync_pass.links(organization=self.org, mapping=self.mapping, near_ids=[r.id for r in records])
        items = [Item(record=record, link=links.get(record.id)) for record in records]
        edits = operator_edits(self, sync_pass, records) if replay_info is None else {}
        for item in items:
            item.preset_payload, item.failed_at = (replay_info or {}).get(item.record.id, (None, None))
            edit = edits.get(item.record.id)
            # An operator's correction lives with the record until it syncs, unless the source changed since.
            if edit is not None and not (item.record.modified_at and item.record.modified_at > edit[1]):
                item.preset_payload = edit[0]
        outcome.counts["read"] += len(items) + len(failures)  # on top of what was settled by the reader (skim)
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
        self.heartbeat.beat(force=False)
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
