"""The sync engine: one SyncRun through the lifecycle of ARCHITECTURE.md.

claim (conditional update) → check both connections → read page by page into batches → per record: filters,
transforms, validation, matching through RecordLink and the match keys, create / update / unchanged → write in
bulk → classify each result and apply the mapping's error strategy → finish (counts, status, cursor).

A two-way mapping runs a forward pass (source → target) and then a reverse pass (target → source). Each pass
talks about its "near" side (read from) and "far" side (written to); RecordLink keeps the last hash of both
sides, which is how unchanged records, echoes of Resync's own writes, and conflicts are recognised.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from integrations.connectors.base import SourceRecord, WriteAction, WriteOperation
from integrations.crypto import CredentialsDecryptionError
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import ConnectionStatus
from integrations.redaction import scrub, scrub_text
from integrations.services import connection_check, connection_needs_reauth, connection_schema
from mappings.models import ConflictPolicy, Direction, ErrorStrategy, LoggingLevel, Mapping, WriteMode
from mappings.transforms import TransformContext, TransformError, apply_transforms
from mappings.validation import validate_payload
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
    RunStatus,
    SyncBatch,
    SyncRun,
    Trigger,
)
from syncs.policy import error_routing
from syncs.recovery import sync_run_after_finish
from syncs.retries import sync_run_claim_errors

FORWARD, REVERSE = "forward", "reverse"
HEARTBEAT_EVERY = 10  # seconds; well inside RESYNC_HEARTBEAT_STALE_SECONDS
# A write call that fails on a transient error is split and its halves sent again, down to single records; after
# this many failed calls in a row the target is taken to be down and the rest fail at once (retried later).
MAX_FAILED_CALLS_IN_A_ROW = 3
FINISHED_BATCH_STATUSES = (BatchStatus.SUCCEEDED, BatchStatus.PARTIALLY_FAILED, BatchStatus.FAILED)
# Only runs that read everything since the cursor may move it; replays and webhook runs see a subset.
CURSOR_TRIGGERS = (Trigger.SCHEDULE, Trigger.MANUAL)


# --- entry point -------------------------------------------------------------------------------------------


def sync_run_claim(*, run_id):
    """Move a queued run to running, or take over a running one whose worker died; None if someone has it.

    One run of a mapping at a time: a run whose mapping has another live run stays queued (the finishing run,
    or else the reaper, hands it to a worker later). Claims of one mapping are serialized by a row lock on the
    mapping (PostgreSQL; SQLite serializes every write transaction anyway).
    """
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.RESYNC_HEARTBEAT_STALE_SECONDS)
    with transaction.atomic():
        row = SyncRun.objects.filter(pk=run_id).values_list("mapping_id", "is_test").first()
        if row is None:
            return None
        mapping_id, is_test = row
        list(Mapping.objects.select_for_update().filter(pk=mapping_id).values_list("pk", flat=True))
        # Dry test runs write nothing, so they neither wait for nor hold up the mapping's real runs.
        busy = not is_test and SyncRun.objects.filter(
            mapping_id=mapping_id, status=RunStatus.RUNNING, heartbeat_at__gte=stale_before, is_test=False
        ).exclude(pk=run_id).exists()
        if busy:
            log_event("run_deferred", run_id=run_id, reason="another run of the mapping is running")
            return None
        claimed = SyncRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING, started_at=now, heartbeat_at=now, claims=F("claims") + 1
        )
        if not claimed:
            # Nothing got updated: another worker has it, unless its heartbeat stopped (killed worker).
            claimed = SyncRun.objects.filter(
                pk=run_id, status=RunStatus.RUNNING, heartbeat_at__lt=stale_before
            ).update(heartbeat_at=now, claims=F("claims") + 1)
    if not claimed:
        return None
    return SyncRun.objects.select_related(
        "organization", "mapping", "mapping__source_connection", "mapping__target_connection"
    ).get(pk=run_id)


def sync_run_execute(*, run_id):
    """Claim and execute one run. Returns the run, or None when it was not ours to run."""
    run = sync_run_claim(run_id=run_id)
    if run is None:
        log_event("run_claim_skipped", run_id=run_id)
        return None
    RunExecutor(run).execute()
    return run


# --- hashing and small pure helpers ----------------------------------------------------------------------------


def _normalize(value):
    if isinstance(value, str):
        return value.strip()
    return value


def record_hash(data, fields):
    """A stable hash of `data` restricted to `fields`: what a side of a link looked like when last synced."""
    canonical = json.dumps({name: _normalize(data.get(name)) for name in sorted(fields)}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def error_fingerprint(*, mapping_id, category, code, field):
    return hashlib.sha1(f"{mapping_id}|{category}|{code}|{field}".encode()).hexdigest()


def _is_empty(value):
    return value is None or (isinstance(value, str) and not value.strip())


def filter_reason(filters, data):
    """The reason of the first mapping filter that ignores this record, or None."""
    for rule in filters or ():
        value = data.get(rule.get("field", ""))
        op = rule.get("op", "equals")
        expected = rule.get("value")
        if op == "empty":
            hit = _is_empty(value)
        elif op == "not_empty":
            hit = not _is_empty(value)
        elif op == "equals":
            hit = value == expected
        elif op == "not_equals":
            hit = value != expected
        elif op == "contains":
            hit = isinstance(value, str) and str(expected).lower() in value.lower()
        elif op == "in":
            hit = value in (expected or [])
        elif op == "not_in":
            hit = value not in (expected or [])
        else:
            hit = False
        if hit:
            return rule.get("reason") or f"Filtered out: {rule.get('field')} {op} {expected!r}"
    return None


# --- per-pass configuration ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class FieldRule:
    near_field: str
    far_field: str
    transforms: list
    required: bool
    default: str | None
    skip_invalid: bool


@dataclasses.dataclass
class SyncPass:
    """One direction of a mapping, described from the side read ("near") to the side written ("far")."""

    direction: str
    near: Any
    near_object: str
    near_connection: Any
    far: Any
    far_object: str
    far_connection: Any
    far_schema: Any
    rules: list[FieldRule]
    match_keys: list[tuple[str, str]]  # (near field, far field)
    # The fields hashed on each side. Both passes of a two-way mapping hash the same fields of a side (those of
    # field mappings with a source field), so a hash written by one pass is recognised by the other.
    near_fields: list[str]
    far_fields: list[str]

    # RecordLink is stored source → target; the reverse pass reads it the other way round.
    def link_key(self, link):
        return link.source_record_id if self.direction == FORWARD else link.target_record_id

    def link_far_id(self, link):
        return link.target_record_id if self.direction == FORWARD else link.source_record_id

    def link_near_hash(self, link):
        return link.source_hash if self.direction == FORWARD else link.target_hash

    def link_far_hash(self, link):
        return link.target_hash if self.direction == FORWARD else link.source_hash

    def link_set(self, link, *, near_id, far_id, near_hash, far_hash):
        if self.direction == FORWARD:
            link.source_record_id, link.target_record_id = near_id, far_id
            link.source_hash, link.target_hash = near_hash, far_hash
        else:
            link.target_record_id, link.source_record_id = near_id, far_id
            link.target_hash, link.source_hash = near_hash, far_hash


@dataclasses.dataclass
class Item:
    """One record travelling through a batch."""

    record: SourceRecord
    link: RecordLink | None = None
    payload: dict | None = None
    far_id: str | None = None
    far_record: SourceRecord | None = None
    action: str | None = None  # create / update
    warnings: list = dataclasses.field(default_factory=list)
    done: bool = False
    # Replays: the operator's corrected payload (written as is, after validation), and when the record last
    # failed (a target record modified after that is not overwritten without force).
    preset_payload: dict | None = None
    failed_at: datetime | None = None


# --- the executor ---------------------------------------------------------------------------------------------------


class RunExecutor:
    def __init__(self, run):
        self.run = run
        self.mapping: Mapping = run.mapping
        self.org = run.organization
        self.strategy = self.mapping.error_strategy
        self.dry_run = run.is_test
        self.page_size = int(run.options.get("page_size") or self.mapping.batch_size)
        self.sample_limit = run.options.get("sample_size")
        self.stopped = False
        self.canceled = False
        self.last_heartbeat = None
        self.batch_errors = 0
        self.conflicted_links = set()
        self.plan = []
        options = run.options
        # A replay run processes named failed batches, errors or records instead of the cursor's delta.
        self.replay = bool(options.get("errors") or options.get("batches") or options.get("records"))
        self.force = bool(options.get("force"))
        # (direction, record id) of the records this run retries: a failure of one of them uses up an attempt.
        self.retried = self.retried_records()
        # An authentication failure halts the run: (error, connection), set where the call failed.
        self.halt = None
        # Runs whose errors this run resolved or superseded: their chains are re-evaluated when it finishes.
        self.touched_runs = set()
        self.sleep = time.sleep

    def retried_records(self):
        options = self.run.options
        retried = {(FORWARD, str(record_id)) for record_id in options.get("records") or []}
        if options.get("errors"):
            retried |= set(RecordError.objects.filter(pk__in=options["errors"], level=ErrorLevel.RECORD)
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

    def record_plan(self, item, action, **extra):
        """Test runs report, per record, what a real run would do, next to the target's current values."""
        if not self.dry_run:
            return
        entry = {"record_id": item.record.id, "action": action, "payload": scrub(item.payload),
                 "warnings": [w.message for w in item.warnings], "target_id": item.far_id, **extra}
        if item.far_record is not None:
            current = scrub(item.far_record.data)
            entry["current"] = current
            entry["changes"] = {
                field: {"current": current.get(field), "new": value}
                for field, value in scrub(item.payload or {}).items() if current.get(field) != value
            }
        self.plan.append(entry)

    # lifecycle ---------------------------------------------------------------------------------------------

    def execute(self):
        run = self.run
        log_event("run_started", run_id=run.pk, mapping=self.mapping.name, trigger=run.trigger, claims=run.claims)
        if run.claims == 1 and not self.dry_run:
            sync_run_claim_errors(run, now=timezone.now())
        if run.claims == 1 and not run.options.get("full"):
            # Fixed at the first claim, so a run taken over after a killed worker reads the same delta.
            run.cursor_from = self.mapping.source_cursor
            if self.mapping.target_cursor:
                run.options = {**run.options, "reverse_cursor_from": self.mapping.target_cursor}
            run.save(update_fields=["cursor_from", "options"])
        try:
            passes = self.build_passes()
            for sync_pass in passes:
                self.run_pass(sync_pass)
                if self.stopped:
                    break
        except ConnectorError as exc:
            self.system_error(exc)
        except Exception as exc:
            # A bug must not leave the run "running" forever: record it as a system error of category unknown.
            logging.getLogger("resync.sync").exception("run_crashed", extra={"event": "run_crashed"})
            self.system_error(
                ConnectorError(ErrorCategory.UNKNOWN, "The sync stopped on an unexpected internal error",
                               code="internal_error", detail=f"{type(exc).__name__}: {exc}", retryable=False)
            )
        self.finish()

    def build_passes(self):
        mapping = self.mapping
        source_conn, target_conn = mapping.source_connection, mapping.target_connection
        for connection in (source_conn, target_conn):
            # Re-checked in the worker: a task only carries ids, and a crossed mapping must never move data.
            if connection.organization_id != self.org.pk or mapping.organization_id != self.org.pk:
                raise ConnectorError(ErrorCategory.PERMISSION, "The mapping uses a connection of another organization",
                                     code="cross_tenant", retryable=False)
            if connection.status != ConnectionStatus.ACTIVE:
                needs_reauth = connection.status == ConnectionStatus.NEEDS_REAUTH
                raise ConnectorError(
                    ErrorCategory.AUTH if needs_reauth else ErrorCategory.CONNECTION,
                    f"Connection '{connection.name}' is {connection.get_status_display().lower()}"
                    + (f": {connection.status_reason}" if connection.status_reason else ""),
                    code=f"connection_{connection.status}",
                    retryable=False,
                )
        source, target = source_conn.get_connector(), target_conn.get_connector()
        for connection in (source_conn, target_conn):
            self.check_connection(connection)
        field_mappings = list(mapping.field_mappings.all())
        source_schema = self.schema(source_conn, mapping.source_object,
                                    {fm.source_field for fm in field_mappings if fm.source_field})
        target_schema = self.schema(target_conn, mapping.target_object, {fm.target_field for fm in field_mappings})
        for fm in field_mappings:
            if fm.source_field and fm.source_field not in source_schema.fields:
                raise ConnectorError(
                    ErrorCategory.MAPPING,
                    f"Source field '{fm.source_field}' does not exist in {mapping.source_object}",
                    code="field_not_found", field=fm.source_field,
                )
            if fm.target_field not in target_schema.fields:
                raise ConnectorError(
                    ErrorCategory.MAPPING,
                    f"Target field '{fm.target_field}' does not exist in {mapping.target_object}",
                    code="field_not_found", field=fm.target_field,
                )
        source_fields = [fm.source_field for fm in field_mappings if fm.source_field]
        target_fields = [fm.target_field for fm in field_mappings if fm.source_field]
        forward = SyncPass(
            direction=FORWARD, near=source, near_object=mapping.source_object, near_connection=source_conn, far=target,
            far_object=mapping.target_object, far_connection=target_conn, far_schema=target_schema,
            rules=[
                FieldRule(fm.source_field, fm.target_field, fm.transforms, fm.required, fm.default_value,
                          fm.skip_invalid)
                for fm in field_mappings
            ],
            match_keys=[(key["source"], key["target"]) for key in mapping.match_keys or ()],
            near_fields=source_fields, far_fields=target_fields,
        )
        passes = [forward]
        if mapping.direction == Direction.TWO_WAY:
            passes.append(SyncPass(
                direction=REVERSE, near=target, near_object=mapping.target_object, near_connection=target_conn,
                far=source,
                far_object=mapping.source_object, far_connection=source_conn, far_schema=source_schema,
                rules=[
                    FieldRule(fm.target_field, fm.source_field, fm.reverse_transforms, False, None, fm.skip_invalid)
                    for fm in field_mappings if fm.source_field
                ],
                match_keys=[(key["target"], key["source"]) for key in mapping.match_keys or ()],
                near_fields=target_fields, far_fields=source_fields,
            ))
        return passes

    @staticmethod
    def schema(connection, object_name, fields):
        """The object's cached schema, described again once when it lacks a mapped field (added since)."""
        schema = connection_schema(connection=connection, object_name=object_name)
        if not fields <= set(schema.fields):
            schema = connection_schema(connection=connection, object_name=object_name, refresh=True)
        return schema

    def check_connection(self, connection):
        # The same check as "Test connection": it records the outcome and flags an auth failure for reauth.
        error = connection_check(connection=connection)
        if error is not None:
            raise error

    # reading ----------------------------------------------------------------------------------------------------

    def run_pass(self, sync_pass):
        if self.replay:
            self.replay_pass(sync_pass)
            return
        cursor = self.pass_cursor(self.run, sync_pass)
        previous = list(
            SyncBatch.objects.filter(run=self.run, direction=sync_pass.direction).order_by("sequence")
        )
        finished = [b for b in previous if b.status in FINISHED_BATCH_STATUSES]
        self.batch_errors += sum(1 for b in finished if b.status == BatchStatus.FAILED and b.record_count == 0)
        sequence = len(finished)
        token = None
        if finished:
            if not finished[-1].next_page_token:
                return  # this pass was completed by an earlier (killed) attempt
            token = finished[-1].next_page_token
        self.read_pages(sync_pass, token=token, cursor=cursor, sequence=sequence,
                        read_total=sum(b.record_count for b in finished))

    def read_pages(self, sync_pass, *, token, cursor, sequence, read_total=0):
        """Read pages from `token` (None: the first page of the read from `cursor`) to the last one, one batch
        each, numbered after `sequence`. A page that fails to load is a batch error; the read goes on past it
        only where the connector can tell the next page's token without loading it (offset paging)."""
        while True:
            if self.cancel_requested():
                return
            sequence += 1
            batch, _ = SyncBatch.objects.update_or_create(
                run=self.run, direction=sync_pass.direction, sequence=sequence,
                defaults={
                    "organization": self.org, "page_token": token or "", "status": BatchStatus.RUNNING,
                    "started_at": timezone.now(), "heartbeat_at": timezone.now(),
                    "counts": {}, "error": "", "record_count": 0, "next_page_token": "",
                },
            )
            # A batch interrupted by a killed worker is processed again from scratch: drop its half-written errors.
            RecordError.objects.filter(batch=batch).delete()
            self.count_attempt(batch)
            size = self.page_size
            if self.sample_limit:
                size = min(size, int(self.sample_limit) - read_total)
            try:
                page = sync_pass.near.read_page(sync_pass.near_object, page_token=token, cursor=cursor, page_size=size)
            except ConnectorError as exc:
                if self.call_failed(exc, sync_pass.near_connection):
                    batch.delete()  # never read: the records are read again after the reconnect
                    raise exc from None
                self.batch_failed(batch, exc, sync_pass)
                token = sync_pass.near.next_page_token(sync_pass.near_object, token, cursor=cursor, page_size=size)
                if token is None or self.stopped:
                    return
                continue
            records = page.records
            if self.sample_limit:
                records = records[: max(0, int(self.sample_limit) - read_total)]
            read_total += len(records)
            next_token = page.next_token
            if self.sample_limit and read_total >= int(self.sample_limit):
                next_token = None
            batch.record_count = len(records)
            batch.next_page_token = next_token or ""
            batch.cursor = page.cursor or ""
            self.process_batch(sync_pass, batch, records)
            if self.stopped or not next_token:
                return
            token = next_token

    @staticmethod
    def pass_cursor(run, sync_pass):
        """Where a pass of `run` reads from: the connector's opaque cursor, None to read everything."""
        cursor = run.cursor_from if sync_pass.direction == FORWARD else run.options.get("reverse_cursor_from")
        return cursor or None

    def replay_pass(self, sync_pass):
        """Fetch failed batches again by their page token, and replay loose failing records (safe replay)."""
        options, direction = self.run.options, sync_pass.direction
        units = [
            ("batch", batch) for batch in SyncBatch.objects.for_org(self.org).filter(
                pk__in=options.get("batches") or [], direction=direction, run__mapping=self.mapping,
            ).select_related("run").order_by("pk")
        ]
        refs = {}
        errors = RecordError.objects.for_org(self.org).filter(
            pk__in=options.get("errors") or [], level=ErrorLevel.RECORD, direction=direction, mapping=self.mapping,
        ).order_by("pk")
        for error in errors:
            refs.setdefault(error.source_record_id, error)
        if direction == FORWARD:
            for record_id in options.get("records") or []:
                refs.setdefault(str(record_id), None)
        loose = list(refs.items())
        units += [("records", loose[i:i + self.page_size]) for i in range(0, len(loose), self.page_size)]
        finished = set(SyncBatch.objects.filter(
            run=self.run, direction=direction, status__in=FINISHED_BATCH_STATUSES
        ).values_list("sequence", flat=True))
        self.batch_errors += SyncBatch.objects.filter(
            run=self.run, direction=direction, status=BatchStatus.FAILED, record_count=0
        ).count()
        for sequence, (kind, unit) in enumerate(units, start=1):
            if sequence in finished:
                continue  # done by an earlier (killed) attempt of this run
            if self.stopped or self.cancel_requested():
                return
            batch, _ = SyncBatch.objects.update_or_create(
                run=self.run, direction=direction, sequence=sequence,
                defaults={
                    "organization": self.org, "status": BatchStatus.RUNNING, "counts": {},
                    "page_token": unit.page_token if kind == "batch" else "", "error": "", "record_count": 0,
                    "source_batch": unit if kind == "batch" else None, "started_at": timezone.now(),
                    "heartbeat_at": timezone.now(),
                },
            )
            RecordError.objects.filter(batch=batch).delete()
            self.count_attempt(batch)
            if kind == "batch":
                self.replay_batch(sync_pass, batch, unit)
            else:
                records, info, failures = self.load_replay_records(sync_pass, unit)
                if self.halt:
                    batch.delete()
                    raise self.halt[0]
                batch.record_count = len(records) + len(failures)
                self.process_batch(sync_pass, batch, records, replay_info=info, failures=failures)
        if not self.dry_run and not self.stopped and not self.canceled:
            self.read_on_after_replayed_pages(sync_pass, units=len(units))

    def read_on_after_replayed_pages(self, sync_pass, *, units):
        """A run whose read stopped at a page that failed to load (cursor paging cannot skip a page) never read
        the pages after it: once the retry has loaded that page, it reads on to the last page, in batches
        numbered after its units (so a retry taken over after a killed worker picks up where it was)."""
        rows = list(SyncBatch.objects.filter(run=self.run, direction=sync_pass.direction)
                    .select_related("source_batch__run").order_by("sequence"))
        starts = [row for row in rows if row.sequence <= units and row.source_batch is not None
                  and row.status in FINISHED_BATCH_STATUSES and row.next_page_token
                  and self.ended_its_read(row.source_batch)]
        if not starts:
            return
        start = starts[-1]
        finished = [row for row in rows if row.sequence > units and row.status in FINISHED_BATCH_STATUSES]
        token = finished[-1].next_page_token if finished else start.next_page_token
        if not token:
            return
        self.read_pages(sync_pass, token=token, cursor=self.pass_cursor(start.source_batch.run, sync_pass),
                        sequence=units + len(finished))

    @staticmethod
    def ended_its_read(batch):
        """Whether a failed page was the last its first run read in that direction (that run could not get past
        it); a retry of a retry asks about the first failure."""
        seen = set()
        while batch.source_batch_id and batch.pk not in seen:
            seen.add(batch.pk)
            batch = batch.source_batch
        return batch.record_count == 0 and not SyncBatch.objects.filter(
            run_id=batch.run_id, direction=batch.direction, sequence__gt=batch.sequence).exists()

    def replay_batch(self, sync_pass, batch, original):
        cursor = self.pass_cursor(original.run, sync_pass)
        try:
            page = sync_pass.near.read_page(sync_pass.near_object, page_token=original.page_token or None,
                                            cursor=cursor, page_size=self.page_size)
        except ConnectorError as exc:
            if self.call_failed(exc, sync_pass.near_connection):
                batch.delete()
                raise exc from None
            self.batch_failed(batch, exc, sync_pass, retrying=original)
            return
        batch.record_count = len(page.records)
        batch.next_page_token = page.next_token or ""
        self.process_batch(sync_pass, batch, page.records)
        if not self.dry_run:
            self.batch_recovered(original)

    def batch_recovered(self, original):
        """The page loads now: the failed batch (and the batches it was a retry of) are recovered."""
        now = timezone.now()
        chain, batch = [], original
        while batch is not None and batch.pk not in chain:
            chain.append(batch.pk)
            batch = batch.source_batch
        SyncBatch.objects.filter(pk__in=chain, status=BatchStatus.FAILED).update(status=BatchStatus.RECOVERED)
        errors = RecordError.objects.filter(batch_id__in=chain, level=ErrorLevel.BATCH).exclude(
            status__in=(ErrorStatus.RESOLVED, ErrorStatus.IGNORED)
        )
        self.touch_runs(errors)
        errors.update(status=ErrorStatus.RESOLVED, resolved_at=now, next_retry_at=None, updated_at=now,
                 resolution=self.run.options.get("resolution") or Resolution.REPLAY)

    def load_replay_records(self, sync_pass, refs):
        """Records to replay: fetched fresh where the connector can, else from their snapshots.

        Only errors this run still holds are replayed: one a person closed since (ignored, resolved), or that
        another retry took first, is left alone.
        """
        named = RecordError.objects.filter(pk__in=[error.pk for _record_id, error in refs if error is not None])
        token = self.run.options.get("claim_token")
        held = named.filter(status=ErrorStatus.RETRYING, **({"claim_token": token} if token else {}))
        if self.dry_run:
            held = named  # a preview looks at the errors as they are
        held = set(held.values_list("pk", flat=True))
        refs = [(record_id, error) for record_id, error in refs if error is None or error.pk in held]
        info, records, failures = {}, [], []
        fresh, fetch_error = {}, None
        if sync_pass.near.supports_fetch and refs:
            try:
                fresh = sync_pass.near.fetch(sync_pass.near_object, [record_id for record_id, _error in refs])
            except ConnectorError as exc:
                if self.call_failed(exc, sync_pass.near_connection):
                    return [], info, []
                fetch_error = exc
        for record_id, error in refs:
            snapshot = (error.snapshot_before or {}) if error is not None else {}
            placeholder = SourceRecord(id=record_id, data={k: v for k, v in snapshot.items() if k != "id"})
            info[record_id] = (error.edited_payload if error is not None else None,
                               error.created_at if error is not None else None)
            if fetch_error is not None:
                failures.append((placeholder, fetch_error))
            elif record_id in fresh:
                records.append(fresh[record_id])
            elif sync_pass.near.supports_fetch:
                failures.append((placeholder, ConnectorError(
                    ErrorCategory.NOT_FOUND, f"Record {record_id} no longer exists in {sync_pass.near_object}",
                    code="source_deleted", retryable=False)))
            elif snapshot:
                records.append(placeholder)
            else:
                from syncs.retries import NO_SNAPSHOT_MESSAGE

                failures.append((placeholder, ConnectorError(
                    ErrorCategory.MAPPING, NO_SNAPSHOT_MESSAGE, code="no_snapshot", retryable=False)))
        return records, info, failures

    def count_attempt(self, batch):
        batch.attempts += 1
        SyncBatch.objects.filter(pk=batch.pk).update(attempts=batch.attempts)

    def cancel_requested(self):
        """Someone canceled this run (syncs.services.sync_run_cancel): stop before the next batch."""
        if SyncRun.objects.filter(pk=self.run.pk, status=RunStatus.CANCELED).exists():
            self.canceled = self.stopped = True
        return self.canceled

    def batch_failed(self, batch, exc, sync_pass, retrying=None):
        self.batch_errors += 1
        batch.status = BatchStatus.FAILED
        batch.error = exc.message
        batch.finished_at = timezone.now()
        batch.save()
        if self.dry_run:
            self.plan.append({"batch": batch.sequence, "page_token": batch.page_token, "action": "failed",
                              "errors": [exc.message]})
            return
        error = self.new_error(
            exc, level=ErrorLevel.BATCH, batch=batch, direction=sync_pass.direction, record=None, payload=None
        )
        if retrying is not None:
            # The same page failed again: this error takes over from the one being retried, attempts and all.
            previous = RecordError.objects.filter(batch=retrying, level=ErrorLevel.BATCH).order_by("-pk").first()
            if previous is not None:
                error.attempts = previous.attempts + 1
                error.first_seen_at = previous.first_seen_at
                error.origin_run_id = previous.origin_run_id or previous.run_id
                self.touched_runs.update({previous.run_id, error.origin_run_id})
                RecordError.objects.filter(pk=previous.pk).update(
                    status=ErrorStatus.RESOLVED, resolution=Resolution.SUPERSEDED, resolved_at=timezone.now(),
                    next_retry_at=None,
                )
        self.route(error)
        error.save()
        log_event("batch_failed", level=logging.ERROR, run_id=self.run.pk, batch=batch.sequence,
                  page_token=batch.page_token, sync_target=sync_pass.near_object, error_type=exc.category.value,
                  error_message=exc.message, will_retry=error.status == ErrorStatus.RETRY_SCHEDULED)
        if self.strategy == ErrorStrategy.FAIL_FAST:
            self.stopped = True

    # per batch ---------------------------------------------------------------------------------------------

    def process_batch(self, sync_pass, batch, records, *, replay_info=None, failures=()):
        outcome = BatchOutcome(self, sync_pass, batch)
        links = {
            sync_pass.link_key(link): link
            for link in RecordLink.objects.for_org(self.org).filter(
                mapping=self.mapping,
                **{("source_record_id__in" if sync_pass.direction == FORWARD else "target_record_id__in"):
                   [r.id for r in records]},
            )
        }
        items = [Item(record=record, link=links.get(record.id)) for record in records]
        edits = self.operator_edits(sync_pass, records) if replay_info is None else {}
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
            self.heartbeat(batch=batch, force=False)
            if self.strategy == ErrorStrategy.FAIL_FAST and outcome.failed_items:
                self.stopped = True
        outcome.save()
        self.heartbeat()
        if self.halt:
            raise self.halt[0]

    def operator_edits(self, sync_pass, records):
        """record id -> (edited payload, edited at) of the records' open errors an operator corrected."""
        if not records:
            return {}
        rows = RecordError.objects.filter(
            mapping=self.mapping, direction=sync_pass.direction, level=ErrorLevel.RECORD,
            status__in=UNRESOLVED_ERROR_STATUSES, edited_payload__isnull=False,
            source_record_id__in=[record.id for record in records],
        ).order_by("edited_at").values_list("source_record_id", "edited_payload", "edited_at")
        return {record_id: (payload, edited_at or timezone.now()) for record_id, payload, edited_at in rows}

    def process_chunk(self, sync_pass, items, outcome):
        for item in items:
            self.prepare(sync_pass, item, outcome)
        steps = [self.match]
        if self.replay and not self.force:
            steps.append(self.detect_target_changes)
        if self.mapping.direction == Direction.TWO_WAY:
            steps.append(self.detect_conflicts)
        steps.append(self.write)
        for step in steps:
            live = [item for item in items if not item.done]
            if self.halt or not live:
                return
            step(sync_pass, live, outcome)

    def prepare(self, sync_pass, item, outcome):
        record, link = item.record, item.link
        if item.preset_payload is not None:
            self.prepare_preset(sync_pass, item, outcome)
            return
        reason = filter_reason(self.mapping.filters if sync_pass.direction == FORWARD else (), record.data)
        if reason:
            outcome.ignore(item, reason)
            return
        if sync_pass.direction == REVERSE and link is not None and link.pk in self.conflicted_links:
            outcome.skip(item)
            return
        # The near side has not changed since Resync last wrote or read it: unchanged, or our own echo.
        near_hash = record_hash(record.data, sync_pass.near_fields)
        if link is not None and link.status == LinkStatus.SYNCED and sync_pass.link_near_hash(link) == near_hash:
            outcome.unchanged(item)
            return
        payload, problems = {}, []
        context = TransformContext(record=record.data, phone_country=self.mapping.default_phone_country)
        for rule in sync_pass.rules:
            value = record.data.get(rule.near_field) if rule.near_field else None
            try:
                payload[rule.far_field] = apply_transforms(value, rule.transforms, context=context)
            except TransformError as exc:
                problem = ConnectorError(
                    ErrorCategory.MAPPING, f"{rule.far_field}: {exc}", code="transform_failed", field=rule.far_field,
                    detail=f"value {value!r} of {rule.near_field or '(none)'}",
                )
                if rule.skip_invalid:
                    item.warnings.append(problem)
                else:
                    problems.append(problem)
        item.payload = payload
        if problems:
            outcome.fail(item, problems)
            return
        if not self.validate(sync_pass, item, outcome, auto_fix=self.mapping.auto_fix):
            return
        if link is not None and link.status == LinkStatus.SYNCED and link.target_record_id:
            far_hash = record_hash(item.payload, sync_pass.far_fields)
            if sync_pass.link_far_hash(link) == far_hash:
                outcome.unchanged(item, near_hash=near_hash)
                return
        if link is not None and sync_pass.link_far_id(link):
            item.far_id = sync_pass.link_far_id(link)

    def prepare_preset(self, sync_pass, item, outcome):
        """An operator's corrected record skips filters and transforms, but not validation."""
        item.payload = dict(item.preset_payload)
        if self.validate(sync_pass, item, outcome, auto_fix=False) and item.link is not None:
            item.far_id = sync_pass.link_far_id(item.link) or None

    def validate(self, sync_pass, item, outcome, *, auto_fix):
        """Validate item.payload against the far schema; False (and the record failed) when it does not fit."""
        result = validate_payload(
            item.payload,
            sync_pass.far_schema,
            auto_fix=auto_fix,
            phone_country=self.mapping.default_phone_country,
            defaults={r.far_field: r.default for r in sync_pass.rules if r.default is not None},
            required_fields=[r.far_field for r in sync_pass.rules if r.required],
        )
        item.payload = result.payload
        for warning in result.warnings:
            item.warnings.append(ConnectorError(
                ErrorCategory.VALIDATION, warning.message, code=warning.code, field=warning.field, retryable=False
            ))
        errors = []
        for problem in result.errors:
            rule = next((r for r in sync_pass.rules if r.far_field == problem.field), None)
            error = ConnectorError(problem.category, problem.message, code=problem.code, field=problem.field)
            if rule is not None and rule.skip_invalid and problem.category == ErrorCategory.VALIDATION:
                item.payload.pop(problem.field, None)
                item.warnings.append(error)
            else:
                errors.append(error)
        if errors:
            outcome.fail(item, errors)
            return False
        return True

    def match(self, sync_pass, items, outcome):
        """Find the far record of records without a link, by the match keys (one lookup call per key)."""
        unlinked = [item for item in items if item.far_id is None]
        if unlinked and sync_pass.match_keys:
            self.lookup(sync_pass, unlinked, outcome)
            if self.halt:
                return
        claimed = {}
        for item in items:
            if item.done:
                continue
            if item.far_id is not None:
                if item.far_id in claimed and claimed[item.far_id] is not item:
                    outcome.fail(item, [self.duplicate_in_source(sync_pass, item, claimed[item.far_id])])
                    continue
                claimed[item.far_id] = item
                if self.mapping.write_mode == WriteMode.CREATE_ONLY:
                    outcome.ignore(item, "Create-only mapping: the record already exists in the target")
                    continue
                item.action = WriteAction.UPDATE
            else:
                if self.mapping.write_mode == WriteMode.UPDATE_ONLY:
                    outcome.ignore(item, "Update-only mapping: no matching record in the target")
                    continue
                item.action = WriteAction.CREATE
        # Two new records with the same match value would become two target records: keep the first.
        seen = {}
        for item in items:
            if item.done or item.action != WriteAction.CREATE:
                continue
            key = self.match_value(sync_pass, item)
            if key is None:
                continue
            if key in seen:
                outcome.fail(item, [self.duplicate_in_source(sync_pass, item, seen[key])])
            else:
                seen[key] = item

    def lookup(self, sync_pass, items, outcome):
        """Set item.far_id from the far system for items whose match-key value is found exactly once."""
        pending = list(items)
        for _near_field, far_field in sync_pass.match_keys:
            values = {
                item.payload.get(far_field) for item in pending if not _is_empty(item.payload.get(far_field))
            }
            if not values:
                continue
            try:
                found = sync_pass.far.find(sync_pass.far_object, far_field, sorted(values, key=str))
            except ConnectorError as exc:
                if not self.call_failed(exc, sync_pass.far_connection):
                    for item in pending:
                        outcome.fail(item, [exc])
                return
            linked_elsewhere = self.far_ids_linked(sync_pass, [r.id for rs in found.values() for r in rs])
            still_pending = []
            for item in pending:
                candidates = found.get(item.payload.get(far_field), [])
                if len(candidates) > 1:
                    outcome.fail(item, [ConnectorError(
                        ErrorCategory.DUPLICATE,
                        f"{len(candidates)} records in {sync_pass.far_object} have {far_field} = "
                        f"{item.payload.get(far_field)!r}; cannot tell which one to update",
                        code="ambiguous_match", field=far_field,
                        detail="matching ids: " + ", ".join(c.id for c in candidates[:10]),
                    )])
                elif len(candidates) == 1:
                    other = linked_elsewhere.get(candidates[0].id)
                    if other is not None and other != item.record.id:
                        outcome.fail(item, [ConnectorError(
                            ErrorCategory.DUPLICATE,
                            f"The {sync_pass.far_object} record with {far_field} = {item.payload.get(far_field)!r} "
                            f"is already linked to record {other}",
                            code="already_linked", field=far_field,
                        )])
                    else:
                        item.far_id = candidates[0].id
                        item.far_record = candidates[0]
                else:
                    still_pending.append(item)
            pending = still_pending

    def far_ids_linked(self, sync_pass, far_ids):
        """far id -> near id of existing links of this mapping."""
        if not far_ids:
            return {}
        far_column = "target_record_id" if sync_pass.direction == FORWARD else "source_record_id"
        near_column = "source_record_id" if sync_pass.direction == FORWARD else "target_record_id"
        rows = RecordLink.objects.for_org(self.org).filter(mapping=self.mapping, **{f"{far_column}__in": far_ids})
        return dict(rows.values_list(far_column, near_column))

    def match_value(self, sync_pass, item):
        values = tuple(item.payload.get(far) for _near, far in sync_pass.match_keys)
        return None if all(_is_empty(v) for v in values) else values

    def duplicate_in_source(self, sync_pass, item, first):
        return ConnectorError(
            ErrorCategory.DUPLICATE,
            f"Record {first.record.id} of {sync_pass.near_object} matches the same target record; "
            f"only the first is synced",
            code="duplicate_in_source",
            field=sync_pass.match_keys[0][1] if sync_pass.match_keys else "",
        )

    def detect_target_changes(self, sync_pass, items, outcome):
        """Safe replay: a far record modified after the failure is not overwritten without force."""
        candidates = [item for item in items if item.action == WriteAction.UPDATE and item.far_id
                      and item.failed_at is not None]
        if not candidates:
            return
        missing = [item.far_id for item in candidates if item.far_record is None]
        try:
            current = sync_pass.far.fetch(sync_pass.far_object, missing) if missing else {}
        except ConnectorError as exc:
            if not self.call_failed(exc, sync_pass.far_connection):
                for item in candidates:
                    outcome.fail(item, [exc])
            return
        for item in candidates:
            far_record = item.far_record or current.get(item.far_id)
            if far_record is None:
                continue
            item.far_record = far_record
            if record_hash(far_record.data, sync_pass.far_fields) == record_hash(item.payload, sync_pass.far_fields):
                continue  # it already holds what the replay would write (an earlier attempt's answer was lost)
            if far_record.modified_at and far_record.modified_at > item.failed_at:
                outcome.fail(item, [ConnectorError(
                    ErrorCategory.CONFLICT,
                    f"{sync_pass.far_object} record {item.far_id} changed after this record failed; "
                    "replaying would overwrite that change. Retry with force to overwrite it.",
                    code="target_changed", retryable=False,
                    detail=f"failed at {item.failed_at.isoformat()}, target modified at "
                           f"{far_record.modified_at.isoformat()}",
                )], force_status=ErrorStatus.IN_REVIEW)

    def detect_conflicts(self, sync_pass, items, outcome):
        """Two-way: a record changed on both sides since the last sync is a conflict, settled by the policy."""
        linked = [item for item in items if item.link is not None and item.link.status == LinkStatus.SYNCED
                  and item.action == WriteAction.UPDATE]
        if not linked:
            return
        try:
            current = sync_pass.far.fetch(sync_pass.far_object, [item.far_id for item in linked])
        except ConnectorError as exc:
            if not self.call_failed(exc, sync_pass.far_connection):
                for item in linked:
                    outcome.fail(item, [exc])
            return
        policy = self.mapping.conflict_policy
        for item in linked:
            far_record = current.get(item.far_id)
            if far_record is None:
                continue  # deleted on the far side: the update answers not_found, handled by create_if_missing
            item.far_record = far_record
            if record_hash(far_record.data, sync_pass.far_fields) == sync_pass.link_far_hash(item.link):
                continue  # only the near side changed: no conflict
            near_wins = {
                ConflictPolicy.SOURCE_WINS: sync_pass.direction == FORWARD,
                ConflictPolicy.TARGET_WINS: sync_pass.direction == REVERSE,
            }.get(policy)
            if policy == ConflictPolicy.NEWEST_WINS:
                near_time, far_time = item.record.modified_at, far_record.modified_at
                near_wins = near_time is not None and (far_time is None or near_time >= far_time)
            if policy == ConflictPolicy.MANUAL:
                self.conflicted_links.add(item.link.pk)
                outcome.fail(item, [ConnectorError(
                    ErrorCategory.CONFLICT,
                    f"Record {item.record.id} changed in both systems since the last sync",
                    code="both_changed", retryable=False,
                )], force_status=ErrorStatus.IN_REVIEW)
            elif not near_wins:
                outcome.skip(item)

    # writing ----------------------------------------------------------------------------------------------------

    def write(self, sync_pass, items, outcome):
        if not items:
            return
        if self.dry_run:
            unseen = [item for item in items if item.action == WriteAction.UPDATE and item.far_record is None]
            if unseen:
                # A preview shows what would change: the far side's current values, best effort.
                with contextlib.suppress(ConnectorError, NotImplementedError):
                    current = sync_pass.far.fetch(sync_pass.far_object, [item.far_id for item in unseen])
                    for item in unseen:
                        item.far_record = current.get(item.far_id)
            for item in items:
                outcome.planned(item)
            return
        retry_duplicates, recreate = [], []
        for item, result in self.write_call(sync_pass, items, outcome):
            if result.ok:
                outcome.succeeded(item, result)
            elif self.call_failed(result.error, sync_pass.far_connection):
                continue  # left untried: the run halts
            elif (result.error.category == ErrorCategory.DUPLICATE and item.action == WriteAction.CREATE
                  and sync_pass.match_keys):
                retry_duplicates.append((item, result.error))
            elif (result.error.category == ErrorCategory.NOT_FOUND and item.action == WriteAction.UPDATE
                  and self.mapping.create_if_missing):
                recreate.append(item)
            else:
                outcome.fail(item, [result.error])
        second_round = []
        if retry_duplicates:
            # Seed 000: "search the existing record by the match key; found → link and update, else a duplicate".
            dup_items = [item for item, _error in retry_duplicates]
            for item in dup_items:
                item.far_id = None
            self.lookup(sync_pass, dup_items, outcome)
            if self.halt:
                return
            for item, error in retry_duplicates:
                if item.done:
                    continue
                if item.far_id is None:
                    outcome.fail(item, [error])
                else:
                    item.action = WriteAction.UPDATE
                    second_round.append(item)
        for item in recreate:
            item.action, item.far_id = WriteAction.CREATE, None
            second_round.append(item)
        for item, result in self.write_call(sync_pass, second_round, outcome):
            if result.ok:
                outcome.succeeded(item, result)
            elif not self.call_failed(result.error, sync_pass.far_connection):
                outcome.fail(item, [result.error])

    def write_call(self, sync_pass, items, outcome):
        """Write `items` in as few calls as the target allows; (item, result) for every record it answered for.

        A call that fails as a whole on a transient error (or on a validation error of the whole batch) does not
        sink every record of it: its halves are sent again, down to single records, so the failures that remain
        are the records' own. Retry-After is waited for (up to RESYNC_INLINE_RETRY_AFTER_MAX seconds); after
        MAX_FAILED_CALLS_IN_A_ROW failed calls the target is taken to be down and the rest fail at once, to be
        retried later. A create that may have been carried out before the failure is looked up by the match keys
        before it is sent again, and not sent again when there are none: RecordLink cannot see what a lost
        answer created.
        """
        size = max(1, int(sync_pass.far.max_write_batch))
        pairs, failed_in_a_row = [], 0
        groups = [list(items[start:start + size]) for start in range(0, len(items), size)]
        while groups and not self.halt:
            group = [item for item in groups.pop(0) if not item.done]
            if not group:
                continue
            operations = [
                WriteOperation(ref=item.record.id, action=item.action, data=item.payload, target_id=item.far_id)
                for item in group
            ]
            self.heartbeat(batch=outcome.batch, force=False)
            try:
                results = sync_pass.far.write(sync_pass.far_object, operations)
            except ConnectorError as exc:
                if self.call_failed(exc, sync_pass.far_connection):
                    break
                failed_in_a_row += 1
                if not self.worth_splitting(exc, group):
                    outcome.fail_all(group, exc)
                    continue
                if failed_in_a_row >= MAX_FAILED_CALLS_IN_A_ROW or not self.wait_for_retry_after(exc, outcome):
                    for rest in (group, *groups):
                        outcome.fail_all(rest, exc)
                    break
                if exc.may_have_applied:
                    self.find_lost_creates(sync_pass, group, exc, outcome)
                group = [item for item in group if not item.done]
                half = (len(group) + 1) // 2
                groups[:0] = [part for part in (group[:half], group[half:]) if part]
                continue
            failed_in_a_row = 0
            by_ref = {result.ref: result for result in results}
            for item in group:
                result = by_ref.get(item.record.id)
                if result is None:
                    # Never lose a record silently: a connector that forgot one answers for it as an error.
                    outcome.fail(item, [ConnectorError(ErrorCategory.UNKNOWN, "The target did not report on "
                                                       "this record", code="missing_result")])
                else:
                    pairs.append((item, result))
        return pairs

    @staticmethod
    def worth_splitting(exc, group):
        """A smaller call may get through: the failure was transient, or the target refused the whole batch
        for what may be one record's data."""
        if len(group) == 1:
            return False
        return exc.retryable or exc.category in (ErrorCategory.VALIDATION, ErrorCategory.DUPLICATE)

    def wait_for_retry_after(self, exc, outcome):
        """Wait as long as the target asked before the next call; False when that is longer than a worker
        should sleep (the retry scheduler then waits instead)."""
        if not exc.retry_after:
            return True
        if exc.retry_after > settings.RESYNC_INLINE_RETRY_AFTER_MAX:
            return False
        left = float(exc.retry_after)
        while left > 0:
            step = min(left, HEARTBEAT_EVERY)
            self.sleep(step)
            left -= step
            self.heartbeat(batch=outcome.batch, force=False)
        return True

    def find_lost_creates(self, sync_pass, group, exc, outcome):
        """Creates of a call that may have been carried out: look them up before sending them again."""
        creates = [item for item in group if item.action == WriteAction.CREATE]
        if not creates:
            return
        if not sync_pass.match_keys:
            outcome.fail_all(creates, exc)
            return
        self.lookup(sync_pass, creates, outcome)
        for item in creates:
            if not item.done and item.far_id is not None:
                item.action = WriteAction.UPDATE

    # errors and finish ---------------------------------------------------------------------------------------------

    def new_error(self, exc, *, level, batch, direction, record, payload, force_status=None):
        """An unsaved RecordError; record and batch errors get their status from route() once attempts are known."""
        mapping = self.mapping
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
        secrets = _credential_values(self.mapping)
        return RecordError(
            organization=self.org,
            run=self.run,
            batch=batch,
            mapping=mapping,
            level=level,
            category=exc.category.value,
            error_code=exc.code[:100],
            field=exc.field[:100],
            message=scrub_text(exc.message, secrets),
            detail=scrub_text(exc.detail or "", secrets),
            retryable=exc.retryable,
            durability=exc.durability.value,
            direction=direction,
            source_record_id=(record.id if record else "")[:255],
            snapshot_before=scrub({"id": record.id, **record.data}) if (keep_snapshot and record) else None,
            snapshot_after=scrub(payload) if (keep_snapshot and payload is not None) else None,
            status=status,
            retry_after_until=retry_after_until,
            resolved_at=now if status in (ErrorStatus.RESOLVED, ErrorStatus.IGNORED) else None,
            resolution={
                ErrorLevel.WARNING: Resolution.SUCCEEDED_WITH_WARNING,
                ErrorLevel.IGNORED: Resolution.IGNORED,
            }.get(level, ""),
            fingerprint=error_fingerprint(mapping_id=mapping.pk, category=exc.category.value, code=exc.code,
                                          field=exc.field),
            first_seen_at=now,
            origin_run=self.run,
        )

    def route(self, error, *, forced=False):
        """The strategy's verdict on a record or batch error: open, retry scheduled, exhausted, in review."""
        if forced or error.level not in (ErrorLevel.RECORD, ErrorLevel.BATCH):
            return
        error.status, error.next_retry_at = error_routing(mapping=self.mapping, error=error, now=timezone.now())

    def system_error(self, exc):
        self.run.system_error = exc.message
        if self.halt is not None and not self.dry_run:
            # The same flag a failed check sets: schedules and retries stop until someone reconnects.
            connection_needs_reauth(connection=self.halt[1], error=exc)
        if self.dry_run:
            self.plan.append({"action": "failed", "errors": [exc.message], "category": exc.category.value})
        else:
            self.new_error(exc, level=ErrorLevel.SYSTEM, batch=None, direction=FORWARD, record=None,
                           payload=None).save()
        log_event("run_system_error", level=logging.ERROR, run_id=self.run.pk, mapping=self.mapping.name,
                  error_type=exc.category.value, error_message=exc.message, will_retry=False)

    def heartbeat(self, *, batch=None, force=True):
        """Tell the reaper this run is alive. Also beats inside long batches (between chunks and writes), at
        most every HEARTBEAT_EVERY seconds, so a slow batch is never taken for a dead worker's."""
        now = timezone.now()
        if not force and self.last_heartbeat and (now - self.last_heartbeat).total_seconds() < HEARTBEAT_EVERY:
            return
        self.last_heartbeat = now
        SyncRun.objects.filter(pk=self.run.pk).update(heartbeat_at=now)
        if batch is not None and batch.pk:
            SyncBatch.objects.filter(pk=batch.pk).update(heartbeat_at=now)

    def finish(self):
        run = self.run
        totals = dict.fromkeys(COUNT_FIELDS, 0)
        # Pages are read in the cursor's order: the last page that says where to resume is where the next run does.
        reached = {FORWARD: "", REVERSE: ""}
        for batch in SyncBatch.objects.filter(run=run).order_by("direction", "sequence"):
            for name in COUNT_FIELDS:
                totals[name] += int(batch.counts.get(name, 0))
            if batch.cursor:
                reached[batch.direction] = batch.cursor
        for name, value in totals.items():
            setattr(run, name, value)
        run.finished_at = timezone.now()
        if self.canceled:
            run.status = RunStatus.CANCELED
        elif run.system_error or self.stopped or (self.batch_errors and run.read == 0):
            run.status = RunStatus.FAILED
        elif self.batch_errors or run.failed:
            run.status = RunStatus.PARTIALLY_FAILED
        else:
            run.status = RunStatus.SUCCEEDED
        if self.dry_run:
            run.options = {**run.options, "plan": self.plan}
        # The cursor moves only after a full read that left nothing behind: never after a replay or a sample.
        moves_cursor = (run.status == RunStatus.SUCCEEDED and not self.dry_run and not self.replay
                        and not self.sample_limit and run.trigger in CURSOR_TRIGGERS)
        with transaction.atomic():
            if not self.dry_run and not run.system_error:
                # This run got past the connection checks: earlier system errors of the mapping are over.
                over = RecordError.objects.filter(
                    mapping=self.mapping, level=ErrorLevel.SYSTEM, status__in=UNRESOLVED_ERROR_STATUSES
                ).exclude(run=run)
                self.touch_runs(over)
                over.update(status=ErrorStatus.RESOLVED, resolution=Resolution.FIXED,
                            resolved_at=run.finished_at, updated_at=run.finished_at)
            if moves_cursor:
                mapping = Mapping.objects.select_for_update().get(pk=self.mapping.pk)
                update = ["last_successful_sync_at", "updated_at"]
                mapping.last_successful_sync_at = run.finished_at
                if reached[FORWARD]:
                    run.cursor_to = mapping.source_cursor = reached[FORWARD]
                    update.append("source_cursor")
                if reached[REVERSE]:
                    mapping.target_cursor = reached[REVERSE]
                    update.append("target_cursor")
                mapping.save(update_fields=update)
            run.save()
        log_event(
            "run_finished", level=logging.INFO if run.status == RunStatus.SUCCEEDED else logging.WARNING,
            run_id=run.pk, mapping=self.mapping.name, status=run.status, counts=run.counts(),
            sync_target=self.mapping.target_connection.name,
        )
        sync_run_after_finish(run, touched_runs=self.touched_runs)

    def touch_runs(self, errors):
        """Remember the runs of errors this run is about to close, so their chains are re-evaluated."""
        for run_id, origin_id in errors.values_list("run_id", "origin_run_id"):
            self.touched_runs.update({run_id, origin_id})


def _credential_values(mapping):
    values = []
    for connection in (mapping.source_connection, mapping.target_connection):
        # Undecryptable credentials have nothing to scrub.
        with contextlib.suppress(CredentialsDecryptionError):
            values.extend(str(v) for v in connection.credentials.values())
    return values


class BatchOutcome:
    """What one batch produced: counts, errors, link changes; saved together at the end of the batch."""

    def __init__(self, executor, sync_pass, batch):
        self.executor = executor
        self.sync_pass = sync_pass
        self.batch = batch
        self.counts = dict.fromkeys(COUNT_FIELDS, 0)
        self.errors = []
        self.failed_items = []
        self.links = {}  # near id -> RecordLink to save
        self.succeeded_ids = []
        self.failed_ids = []
        self.error_for_link = {}
        self.previous = {}  # source record id -> (attempts, first seen) of its earlier unresolved errors

    def _link(self, item):
        link = item.link
        if link is None:
            link = RecordLink(organization=self.executor.org, mapping=self.executor.mapping)
            if self.sync_pass.direction == FORWARD:
                link.source_record_id = item.record.id
            else:
                link.target_record_id = item.record.id
            item.link = link
        self.links[item.record.id] = link
        return link

    def warn(self, item):
        if not item.warnings:
            return
        self.counts["warned"] += 1
        for warning in item.warnings:
            self.errors.append(self.executor.new_error(
                warning, level=ErrorLevel.WARNING, batch=self.batch, direction=self.sync_pass.direction,
                record=item.record, payload=item.payload,
            ))

    def ignore(self, item, reason):
        item.done = True
        self.counts["ignored"] += 1
        error = ConnectorError(ErrorCategory.MAPPING, reason, code="ignored", retryable=False)
        self.errors.append(self.executor.new_error(
            error, level=ErrorLevel.IGNORED, batch=self.batch, direction=self.sync_pass.direction,
            record=item.record, payload=item.payload,
        ))
        if not self.executor.dry_run and item.link is None and self.sync_pass.direction == FORWARD:
            self._link(item).status = LinkStatus.IGNORED
        self.executor.record_plan(item, "ignored", reason=reason)

    def skip(self, item):
        item.done = True
        self.counts["skipped"] += 1
        self.executor.record_plan(item, "skipped")

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
        self.executor.record_plan(item, "unchanged")
        if near_hash and not self.executor.dry_run:
            link = self._link(item)
            if self.sync_pass.direction == FORWARD:
                link.source_hash = near_hash
            else:
                link.target_hash = near_hash
        self.succeeded_ids.append(item.record.id)

    def planned(self, item):
        item.done = True
        self.counts["created" if item.action == WriteAction.CREATE else "updated"] += 1
        self.warn(item)
        self.executor.record_plan(item, item.action)

    def succeeded(self, item, result):
        item.done = True
        action = result.action or item.action
        self.counts["created" if action == WriteAction.CREATE else "updated"] += 1
        self.warn(item)
        link = self._link(item)
        written = result.record if result.record is not None else item.payload
        self.sync_pass.link_set(
            link,
            near_id=item.record.id,
            far_id=result.target_id or item.far_id or "",
            near_hash=record_hash(item.record.data, self.sync_pass.near_fields),
            far_hash=record_hash(written, self.sync_pass.far_fields),
        )
        link.status = LinkStatus.SYNCED
        link.last_synced_at = timezone.now()
        link.last_error = None
        self.succeeded_ids.append(item.record.id)
        log_event("record_synced", level=logging.DEBUG, run_id=self.executor.run.pk, record_id=item.record.id,
                  sync_target=self.sync_pass.far_connection.name, action=action, target_id=link.target_record_id)

    def fail(self, item, problems, force_status=None):
        item.done = True
        self.counts["failed"] += 1
        self.failed_items.append(item)
        self.failed_ids.append(item.record.id)
        for problem in problems:
            error = self.executor.new_error(
                problem, level=ErrorLevel.RECORD, batch=self.batch, direction=self.sync_pass.direction,
                record=item.record, payload=item.payload, force_status=force_status,
            )
            error.forced_status = force_status is not None
            self.errors.append(error)
            self.error_for_link.setdefault(item.record.id, error)
        self.executor.record_plan(item, "failed", errors=[p.message for p in problems])
        if not self.executor.dry_run:
            # Even a record synced before is now failed: the far side holds an older version of it.
            self._link(item).status = LinkStatus.FAILED

    def save(self):
        executor, batch = self.executor, self.batch
        now = timezone.now()
        with transaction.atomic():
            if not executor.dry_run:
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
                        executor.route(error, forced=getattr(error, "forced_status", False))
                # Test runs keep their errors in the plan only: they must not reach the dashboard or analytics.
                RecordError.objects.bulk_create(self.errors)
                self._save_links()
            batch.counts = self.counts
            batch.status = (
                BatchStatus.SUCCEEDED if not self.counts["failed"]
                else BatchStatus.FAILED if self.counts["failed"] == self.counts["read"]
                else BatchStatus.PARTIALLY_FAILED
            )
            batch.finished_at = now
            batch.heartbeat_at = now
            batch.save()
        for error in self.errors:
            if error.level in (ErrorLevel.RECORD, ErrorLevel.WARNING):
                log_event(
                    "record_failed" if error.level == ErrorLevel.RECORD else "record_warning",
                    level=logging.ERROR if error.level == ErrorLevel.RECORD else logging.WARNING,
                    run_id=executor.run.pk, mapping=executor.mapping.name, record_id=error.source_record_id,
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
        executor = self.executor
        touched = set(self.succeeded_ids) | set(self.failed_ids)
        self.previous = {}
        if not touched:
            return
        earlier = RecordError.objects.for_org(executor.org).filter(
            mapping=executor.mapping, direction=self.sync_pass.direction, source_record_id__in=touched,
            level=ErrorLevel.RECORD, status__in=UNRESOLVED_ERROR_STATUSES,
        ).exclude(run=executor.run)
        rows = list(earlier.order_by("first_seen_at", "pk").only(
            "pk", "run_id", "origin_run_id", "source_record_id", "attempts", "status", "first_seen_at",
            "edited_payload", "edited_at",
        ))
        failed = set(self.failed_ids)
        direction = self.sync_pass.direction
        for row in rows:
            executor.touched_runs.update({row.run_id, row.origin_run_id})
            if row.source_record_id not in failed:
                continue
            # One open error per record; should there be several, the oldest is its history.
            history = self.previous.setdefault(row.source_record_id, RecordError(
                attempts=0, first_seen_at=row.first_seen_at, origin_run_id=row.origin_run_id or row.run_id,
            ))
            # Only a record this run retried used up an attempt; a run that merely read it again did not.
            tried = 1 if (direction, row.source_record_id) in executor.retried else 0
            history.attempts = max(history.attempts, row.attempts + tried)
            if row.edited_payload is not None and (history.edited_at is None or
                                                   (row.edited_at and row.edited_at > history.edited_at)):
                history.edited_payload, history.edited_at = row.edited_payload, row.edited_at
        succeeded = set(self.succeeded_ids)
        chosen = executor.run.options.get("resolution")
        auto = [r.pk for r in rows if r.source_record_id in succeeded
                and (chosen or r.status in (ErrorStatus.RETRY_SCHEDULED, ErrorStatus.RETRYING))]
        fixed = [r.pk for r in rows if r.source_record_id in succeeded and r.pk not in set(auto)]
        superseded = [r.pk for r in rows if r.source_record_id not in succeeded]
        for pks, resolution in ((auto, chosen or Resolution.AUTO_RETRY), (fixed, Resolution.FIXED),
                                (superseded, Resolution.SUPERSEDED)):
            if pks:
                RecordError.objects.filter(pk__in=pks).update(
                    status=ErrorStatus.RESOLVED, resolution=resolution, resolved_at=now, next_retry_at=None,
                    claim_token=None, updated_at=now,
                )

    def _save_links(self):
        if not self.links:
            return
        errors_by_record = self.error_for_link
        new, existing = [], []
        for near_id, link in self.links.items():
            if near_id in errors_by_record:
                link.last_error = errors_by_record[near_id]
            (existing if link.pk else new).append(link)
        fields = ["source_record_id", "target_record_id", "source_hash", "target_hash", "status", "last_error",
                  "last_synced_at", "updated_at"]
        now = timezone.now()
        for link in existing:
            link.updated_at = now
        if existing:
            RecordLink.objects.bulk_update(existing, fields)
        if new:
            # A concurrent run of the same mapping may have linked the same record: keep the first link.
            RecordLink.objects.bulk_create(new, ignore_conflicts=True)
