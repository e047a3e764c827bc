"""Bookkeeping: what a run writes down about what it did. Per batch (BatchOutcome): counts, record errors, the
links of the records it settled, and the earlier errors of those records it resolves or supersedes, saved
together in a few statements at the end of the batch. Per run (RunBook): errors of a page, of the run itself,
and pages recovered.

A test run keeps a plan instead (PlanBook, PlanOutcome): per record, what a real run would do, next to the
target's current values. Its errors never reach the dashboard or analytics, and it links nothing.
"""

import contextlib
import hashlib
import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from integrations.connectors.base import WriteAction
from integrations.crypto import CredentialsDecryptionError
from integrations.errors import ConnectorError, ErrorCategory
from integrations.redaction import scrub, scrub_text
from integrations.services import connection_needs_reauth
from mappings.models import ErrorStrategy, LoggingLevel
from syncs.engine.passes import FORWARD, record_hash
from syncs.engine.rows import rows_insert, rows_update
from syncs.events import log_event
from syncs.models import (
    COUNT_FIELDS,
    UNRESOLVED_ERROR_STATUSES,
    BatchStatus,
    ErrorLevel,
    ErrorStatus,
    LinkStatus,
    RecordError,
    RecordLink,
    Resolution,
    SyncBatch,
    SyncRun,
)
from syncs.policy import error_routing
from syncs.rollups import REVISIT, error_rollups_recount

LINK_FIELDS = ["source_record_id", "target_record_id", "source_hash", "target_hash", "status", "last_error",
               "last_synced_at", "updated_at"]


def batch_errors_discard(batch):
    """What a dead worker wrote down of a batch it did not finish, dropped before the batch is done again; the
    hourly error counts are recounted where they already hold those errors."""
    errors = RecordError.objects.filter(batch=batch)
    span = errors.aggregate(since=Min("created_at"), until=Max("created_at"))
    if errors.delete()[0] and span["since"] < timezone.now() - REVISIT:
        error_rollups_recount(since=span["since"], until=span["until"])


def error_fingerprint(*, mapping_id, category, code, field):
    """What groups the same error across records: mapping, category, code and field."""
    return hashlib.sha1(f"{mapping_id}|{category}|{code}|{field}".encode()).hexdigest()


def _credential_values(mapping):
    values = []
    for connection in (mapping.source_connection, mapping.target_connection):
        # Undecryptable credentials have nothing to scrub.
        with contextlib.suppress(CredentialsDecryptionError):
            values.extend(str(v) for v in connection.credentials.values())
    return values


class RunBook:
    """What a run writes down outside its batches' records, and the factory of its batches' outcomes."""

    def __init__(self, context):
        self.context = context
        self.mapping = context.mapping
        self.secrets = _credential_values(context.mapping)  # scrubbed from every message and detail

    def outcome(self, sync_pass, batch):
        return BatchOutcome(self, sync_pass, batch)

    def new_error(self, exc, *, level, batch, direction, record, payload, force_status=None):
        """An unsaved RecordError; record and batch errors get their status from route() once attempts are
        known. Snapshots follow the mapping's logging level, scrubbed of secrets."""
        mapping, run = self.mapping, self.context.run
        keep_snapshot = mapping.logging_level == LoggingLevel.ALL or (
            mapping.logging_level == LoggingLevel.ERRORS and level in (ErrorLevel.RECORD, ErrorLevel.BATCH)
        )
        status, retry_after_until = force_status or ErrorStatus.OPEN, None
        now = timezone.now()
        if exc.retry_after:
            retry_after_until = now + timedelta(seconds=float(exc.retry_after))
        if level == ErrorLevel.WARNING:
            status = ErrorStatus.RESOLVED
        elif level == ErrorLevel.IGNORED:
            status = ErrorStatus.IGNORED
        return RecordError(
            organization=self.context.org, run=run, batch=batch, mapping=mapping, level=level,
            category=exc.category.value, error_code=exc.code[:100], field=exc.field[:100],
            message=scrub_text(exc.message, self.secrets), detail=scrub_text(exc.detail or "", self.secrets),
            retryable=exc.retryable, durability=exc.durability.value, direction=direction,
            source_record_id=(record.id if record else "")[:255],
            snapshot_before=scrub({"id": record.id, **record.data}) if (keep_snapshot and record) else None,
            snapshot_after=scrub(payload) if (keep_snapshot and payload is not None) else None,
            status=status, retry_after_until=retry_after_until,
            resolved_at=now if status in (ErrorStatus.RESOLVED, ErrorStatus.IGNORED) else None,
            resolution={ErrorLevel.WARNING: Resolution.SUCCEEDED_WITH_WARNING,
                        ErrorLevel.IGNORED: Resolution.IGNORED}.get(level, ""),
            fingerprint=error_fingerprint(mapping_id=mapping.pk, category=exc.category.value, code=exc.code,
                                          field=exc.field),
            first_seen_at=now, origin_run=run,
        )

    def route(self, error, *, forced=False):
        """The strategy's verdict on a record or batch error: open, retry scheduled, exhausted, in review."""
        if forced or error.level not in (ErrorLevel.RECORD, ErrorLevel.BATCH):
            return
        error.status, error.next_retry_at = error_routing(mapping=self.mapping, error=error, now=timezone.now())

    def batch_failed(self, batch, exc, sync_pass, *, retrying=None):
        """A page that did not load: the batch fails with a batch error; fetching it again later can recover it.
        A retry of a page that fails again takes over the earlier error, attempts and all."""
        context = self.context
        _mark_failed(batch, exc)
        error = self.new_error(exc, level=ErrorLevel.BATCH, batch=batch, direction=sync_pass.direction, record=None,
                               payload=None)
        if retrying is not None:
            previous = RecordError.objects.filter(batch=retrying, level=ErrorLevel.BATCH).order_by("-pk").first()
            if previous is not None:
                error.attempts = previous.attempts + 1
                error.first_seen_at = previous.first_seen_at
                error.origin_run_id = previous.origin_run_id or previous.run_id
                context.touched_runs.update({previous.run_id, error.origin_run_id})
                RecordError.objects.filter(pk=previous.pk).update(
                    status=ErrorStatus.RESOLVED, resolution=Resolution.SUPERSEDED, resolved_at=timezone.now(),
                    next_retry_at=None,
                )
        self.route(error)
        error.save()
        log_event("batch_failed", level=logging.ERROR, run=str(context.run.code), error=str(error.code),
                  batch=batch.sequence,
                  page_token=batch.page_token, sync_target=sync_pass.near_object, error_type=exc.category.value,
                  error_message=exc.message, will_retry=error.status == ErrorStatus.RETRY_SCHEDULED)
        if context.strategy == ErrorStrategy.FAIL_FAST:
            context.stopped = True

    def batch_recovered(self, original):
        """The page loads now: the failed batch (and the batches it was a retry of) are recovered."""
        now = timezone.now()
        chain, batch = [], original
        while batch is not None and batch.pk not in chain:
            chain.append(batch.pk)
            batch = batch.source_batch
        SyncBatch.objects.filter(pk__in=chain, status=BatchStatus.FAILED).update(status=BatchStatus.RECOVERED)
        errors = RecordError.objects.filter(batch_id__in=chain, level=ErrorLevel.BATCH).exclude(
            status__in=(ErrorStatus.RESOLVED, ErrorStatus.IGNORED))
        self.context.touch_runs(errors)
        errors.update(status=ErrorStatus.RESOLVED, resolved_at=now, next_retry_at=None, updated_at=now,
                      resolution=self.context.options.resolution or Resolution.REPLAY)

    def system_error(self, exc):
        """The run stops: a system error, and a connection whose credentials were refused waits for a reconnect."""
        context = self.context
        context.run.system_error = exc.message
        # At once, not when the run finishes: the run's other workers stop before their next batch.
        SyncRun.objects.filter(pk=context.run.pk).update(system_error=exc.message)
        if context.halt is not None:
            # The same flag a failed check sets: schedules and retries stop until someone reconnects.
            connection_needs_reauth(connection=context.halt[1], error=exc)
        self.new_error(exc, level=ErrorLevel.SYSTEM, batch=None, direction=FORWARD, record=None, payload=None).save()
        self.log_system_error(exc)

    def log_system_error(self, exc):
        log_event("run_system_error", level=logging.ERROR, run=str(self.context.run.code),
                  mapping=str(self.mapping.code), mapping_name=self.mapping.name, error_type=exc.category.value,
                  error_message=exc.message, will_retry=False)

    def plan(self):
        """A real run keeps no plan."""
        return []


def _mark_failed(batch, exc):
    batch.status = BatchStatus.FAILED
    batch.error = exc.message
    batch.finished_at = timezone.now()
    batch.save()


class PlanBook(RunBook):
    """A test run's book: nothing is written down but the plan (and its batches' counts)."""

    def __init__(self, context):
        super().__init__(context)
        self.entries = []

    def outcome(self, sync_pass, batch):
        return PlanOutcome(self, sync_pass, batch)

    def batch_failed(self, batch, exc, sync_pass, *, retrying=None):
        _mark_failed(batch, exc)
        self.entries.append({"batch": batch.sequence, "page_token": batch.page_token, "action": "failed",
                             "errors": [exc.message]})

    def batch_recovered(self, original):
        pass

    def system_error(self, exc):
        self.context.run.system_error = exc.message
        self.entries.append({"action": "failed", "errors": [exc.message], "category": exc.category.value})
        self.log_system_error(exc)

    def plan(self):
        return self.entries


class BatchOutcome:
    """What one batch produced: counts, errors, link changes; saved together at the end of the batch."""

    def __init__(self, book, sync_pass, batch):
        self.book = book
        self.context = book.context
        self.sync_pass = sync_pass
        self.batch = batch
        # A staged batch may hold counts already: the records its reader found unchanged.
        self.counts = {**dict.fromkeys(COUNT_FIELDS, 0),
                       **{name: int(n) for name, n in (batch.counts or {}).items() if name in COUNT_FIELDS}}
        self.errors = []
        self.failed_items = []
        self.links = {}  # near id -> RecordLink to save
        self.succeeded_ids = []
        self.failed_ids = []
        self.ignored_reasons = {}  # near id -> why a filter ignored it (its earlier error is closed with it)
        self.error_for_link = {}
        self.previous = {}  # near record id -> the history of its earlier unresolved error (_supersede_and_resolve)
        self.touched_runs = set()  # runs whose errors this batch closed (kept on the batch for the finisher)

    def _link(self, item):
        if item.link is None:
            item.link = self.sync_pass.new_link(organization=self.context.org, mapping=self.context.mapping,
                                                near_id=item.record.id)
        self.links[item.record.id] = item.link
        return item.link

    def _error(self, exc, item, *, level, force_status=None):
        return self.book.new_error(exc, level=level, batch=self.batch, direction=self.sync_pass.direction,
                                   record=item.record, payload=item.payload, force_status=force_status)

    # -- what happened to each record --------------------------------------------------------------------------

    def warn(self, item):
        if not item.warnings:
            return
        self.counts["warned"] += 1
        self.errors.extend(self._error(warning, item, level=ErrorLevel.WARNING) for warning in item.warnings)

    def ignore(self, item, reason):
        item.done = True
        self.counts["ignored"] += 1
        error = ConnectorError(ErrorCategory.MAPPING, reason, code="ignored", retryable=False)
        self.errors.append(self._error(error, item, level=ErrorLevel.IGNORED))
        self.ignored_reasons[item.record.id] = reason
        # A record that failed before and is now filtered out is no longer unsynced; one synced before stays so.
        if self.sync_pass.direction == FORWARD and (item.link is None or item.link.status == LinkStatus.FAILED):
            self._link(item).status = LinkStatus.IGNORED

    def skip(self, item):
        item.done = True
        self.counts["skipped"] += 1

    def untried(self, items):
        """Records a halted run did not get to: no error (they are read again), counted as skipped."""
        for item in items:
            if not item.done:
                self.skip(item)

    def fail_all(self, items, exc):
        for item in items:
            if not item.done:
                self.fail(item, [exc])

    def unchanged(self, item, near_hash=None):
        item.done = True
        self.counts["unchanged"] += 1
        if near_hash:
            self.sync_pass.set_near_hash(self._link(item), near_hash)
        self.succeeded_ids.append(item.record.id)

    def planned(self, item):
        """A test run's record that a real run would write."""
        item.done = True
        self.counts["created" if item.action == WriteAction.CREATE else "updated"] += 1
        self.warn(item)

    def succeeded(self, item, result):
        item.done = True
        action = result.action or item.action
        self.counts["created" if action == WriteAction.CREATE else "updated"] += 1
        self.warn(item)
        link = self._link(item)
        written = result.record if result.record is not None else item.payload
        self.sync_pass.link_set(
            link, near_id=item.record.id, far_id=result.target_id or item.far_id or "",
            near_hash=item.near_hash or record_hash(item.record.data, self.sync_pass.near_fields),
            far_hash=record_hash(written, self.sync_pass.far_fields),
        )
        link.status = LinkStatus.SYNCED
        link.last_synced_at = timezone.now()
        link.last_error = None
        self.succeeded_ids.append(item.record.id)

    def fail(self, item, problems, force_status=None):
        item.done = True
        self.counts["failed"] += 1
        self.failed_items.append(item)
        self.failed_ids.append(item.record.id)
        for problem in problems:
            error = self._error(problem, item, level=ErrorLevel.RECORD, force_status=force_status)
            error.forced_status = force_status is not None
            self.errors.append(error)
            self.error_for_link.setdefault(item.record.id, error)
        # Even a record synced before is now failed: the far side holds an older version of it.
        self._link(item).status = LinkStatus.FAILED

    # -- saving ----------------------------------------------------------------------------------------------

    def save(self):
        """Everything the batch did, in one transaction and a few statements: earlier errors resolved or
        superseded, the new errors, the links, the batch's counts and status."""
        now = timezone.now()
        with transaction.atomic():
            self._supersede_and_resolve(now)
            for error in self.errors:
                if error.level == ErrorLevel.RECORD:
                    earlier = self.previous.get(error.source_record_id)
                    if earlier is not None:
                        error.attempts = earlier.attempts
                        error.first_seen_at = earlier.first_seen_at
                        error.origin_run_id = earlier.origin_run_id
                        if error.edited_payload is None:
                            error.edited_payload, error.edited_at = earlier.edited_payload, earlier.edited_at
                    self.book.route(error, forced=getattr(error, "forced_status", False))
            RecordError.objects.bulk_create(self.errors)
            self._save_links(now)
            self._save_batch(now)
        self._log_errors()

    def _save_batch(self, now):
        batch = self.batch
        batch.counts = self.counts
        batch.status = (
            BatchStatus.SUCCEEDED if not self.counts["failed"]
            else BatchStatus.FAILED if self.counts["failed"] == self.counts["read"]
            else BatchStatus.PARTIALLY_FAILED
        )
        batch.finished_at = now
        batch.heartbeat_at = now
        batch.records = None  # processed: the staged copy is no longer needed
        batch.touched_runs = sorted(run_id for run_id in self.touched_runs if run_id is not None)
        self.context.touched_runs.update(self.touched_runs)
        batch.save()

    def _log_errors(self):
        context = self.context
        # The same for every line of the batch: formatted once (the errors' codes were set when they were built).
        run, mapping = str(context.run.code), str(context.mapping.code)
        for error in self.errors:
            if error.level in (ErrorLevel.RECORD, ErrorLevel.WARNING):
                log_event(
                    "record_failed" if error.level == ErrorLevel.RECORD else "record_warning",
                    level=logging.ERROR if error.level == ErrorLevel.RECORD else logging.WARNING,
                    run=run, error=str(error.code), mapping=mapping, mapping_name=context.mapping.name,
                    record_id=error.source_record_id,
                    sync_target=self.sync_pass.far_connection.name, error_type=error.category,
                    error_code=error.error_code, field=error.field, error_message=error.message,
                    retry_count=error.attempts, will_retry=error.status == ErrorStatus.RETRY_SCHEDULED,
                    next_retry_at=error.next_retry_at,
                )

    def _supersede_and_resolve(self, now):
        """Close the earlier unresolved errors of the records this batch settled.

        A record that failed again takes over its earlier error's history (self.previous): the attempts (one
        more if this run retried it), when it first failed and in which run, and an operator's correction.
        """
        context = self.context
        ignored = self.ignored_reasons
        touched = set(self.succeeded_ids) | set(self.failed_ids) | set(ignored)
        self.previous = {}
        if not touched:
            return
        earlier = RecordError.objects.for_org(context.org).filter(
            mapping=context.mapping, direction=self.sync_pass.direction, source_record_id__in=touched,
            level=ErrorLevel.RECORD, status__in=UNRESOLVED_ERROR_STATUSES,
        ).exclude(run=context.run)
        rows = list(earlier.order_by("first_seen_at", "pk").only(
            "pk", "run_id", "origin_run_id", "source_record_id", "attempts", "status", "first_seen_at",
            "edited_payload", "edited_at",
        ))
        failed = set(self.failed_ids)
        direction = self.sync_pass.direction
        # A record whose call the target refused with a Retry-After was not tried: the target asked to be called
        # later (a rate limit, a 503 for maintenance). Counting it would let a throttled target use up every
        # record's attempts and leave them exhausted, waiting for a person, for no fault of theirs.
        throttled = {error.source_record_id for error in self.errors
                     if error.level == ErrorLevel.RECORD and error.retry_after_until is not None}
        for row in rows:
            self.touched_runs.update({row.run_id, row.origin_run_id})
            if row.source_record_id not in failed:
                continue
            # One open error per record; should there be several, the oldest is its history.
            history = self.previous.setdefault(row.source_record_id, RecordError(
                attempts=0, first_seen_at=row.first_seen_at, origin_run_id=row.origin_run_id or row.run_id,
            ))
            # Only a record this run retried used up an attempt; a run that merely read it again did not.
            tried = 1 if (direction, row.source_record_id) in context.retried and row.source_record_id not in \
                throttled else 0
            history.attempts = max(history.attempts, row.attempts + tried)
            if row.edited_payload is not None and (history.edited_at is None or
                                                   (row.edited_at and row.edited_at > history.edited_at)):
                history.edited_payload, history.edited_at = row.edited_payload, row.edited_at
        succeeded = set(self.succeeded_ids)
        chosen = context.options.resolution
        auto = [r.pk for r in rows if r.source_record_id in succeeded
                and (chosen or r.status in (ErrorStatus.RETRY_SCHEDULED, ErrorStatus.RETRYING))]
        fixed = [r.pk for r in rows if r.source_record_id in succeeded and r.pk not in set(auto)]
        superseded = [r.pk for r in rows if r.source_record_id not in succeeded and r.source_record_id not in ignored]
        for pks, resolution in ((auto, chosen or Resolution.AUTO_RETRY), (fixed, Resolution.FIXED),
                                (superseded, Resolution.SUPERSEDED)):
            if pks:
                RecordError.objects.filter(pk__in=pks).update(
                    status=ErrorStatus.RESOLVED, resolution=resolution, resolved_at=now, next_retry_at=None,
                    claim_token=None, updated_at=now,
                )
        # A failed record a filter now ignores (a filter added to fix it): its error is closed as ignored on
        # purpose, with the filter's reason, as an operator's ignore would.
        by_reason = {}
        for row in rows:
            if row.source_record_id in ignored:
                by_reason.setdefault(ignored[row.source_record_id], []).append(row.pk)
        for reason, pks in by_reason.items():
            RecordError.objects.filter(pk__in=pks).update(
                status=ErrorStatus.IGNORED, resolution=Resolution.IGNORED, resolved_at=now,
                resolution_note=reason[:2000], next_retry_at=None, claim_token=None, updated_at=now,
            )

    def _save_links(self, now):
        if not self.links:
            return
        new, existing = [], []
        for near_id, link in self.links.items():
            if near_id in self.error_for_link:
                link.last_error = self.error_for_link[near_id]
            link.updated_at = now
            (existing if link.pk else new).append(link)
        rows_update(RecordLink, existing, LINK_FIELDS)
        # A concurrent run of the same mapping may have linked the same record: keep the first link.
        rows_insert(RecordLink, new, ["organization", "mapping", *LINK_FIELDS], ignore_conflicts=True)


class PlanOutcome(BatchOutcome):
    """A test run's batch: per record, a plan entry of what a real run would do; nothing else is saved."""

    def entry(self, item, action, **extra):
        entry = {"record_id": item.record.id, "action": action, "payload": scrub(item.payload),
                 "warnings": [w.message for w in item.warnings], "target_id": item.far_id, **extra}
        if item.far_record is not None:
            current = scrub(item.far_record.data)
            entry["current"] = current
            entry["changes"] = {field: {"current": current.get(field), "new": value}
                                for field, value in scrub(item.payload or {}).items() if current.get(field) != value}
        self.book.entries.append(entry)

    def ignore(self, item, reason):
        super().ignore(item, reason)
        self.entry(item, "ignored", reason=reason)

    def skip(self, item):
        super().skip(item)
        self.entry(item, "skipped")

    def unchanged(self, item, near_hash=None):
        super().unchanged(item, near_hash=None)  # nothing is linked: the hash is not worth keeping
        self.entry(item, "unchanged")

    def planned(self, item):
        super().planned(item)
        self.entry(item, item.action)

    def fail(self, item, problems, force_status=None):
        super().fail(item, problems, force_status)
        self.entry(item, "failed", errors=[p.message for p in problems])

    def save(self):
        """Only the batch's counts: a test run's errors stay in its plan, out of the dashboard and analytics."""
        self._save_batch(timezone.now())
