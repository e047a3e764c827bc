"""Reading: what a pass processes, batch by batch.

A run reads its delta page by page from the cursor (each page is a SyncBatch that keeps its page token, so a page
that failed to load can be fetched again). A retry or replay run reads units instead: failed pages fetched again
by their token (and, when the first run could not get past that page, every page after it), and loose records
replayed in batches (fetched fresh from the source where the connector can, else from their snapshots).

A run taken over after a killed worker resumes after its last finished batch: a batch interrupted half way is
processed again from scratch (its half-written errors dropped), and RecordLink plus the match keys keep what it
had already written from being written twice.
"""

from django.db.models import Q
from django.utils import timezone

from integrations.connectors.base import SourceRecord
from integrations.errors import ConnectorError, ErrorCategory
from syncs.engine.bookkeeping import batch_errors_discard
from syncs.engine.claims import worker_name
from syncs.engine.passes import FORWARD
from syncs.models import BatchStatus, ErrorLevel, ErrorStatus, RecordError, SyncBatch
from syncs.retries import NO_SNAPSHOT_MESSAGE

FINISHED_BATCH_STATUSES = (BatchStatus.SUCCEEDED, BatchStatus.PARTIALLY_FAILED, BatchStatus.FAILED)


def pass_cursor(run, sync_pass):
    """Where a pass of `run` reads from: the connector's opaque cursor, None to read everything."""
    cursor = run.cursor_from if sync_pass.direction == FORWARD else run.reverse_cursor_from
    return cursor or None


class Reader:
    def __init__(self, context):
        self.context = context

    def run_pass(self, sync_pass):
        if self.context.options.replay:
            self.replay_pass(sync_pass)
        else:
            self.delta_pass(sync_pass)

    def delta_pass(self, sync_pass):
        """The delta since the cursor, from where an earlier (killed) attempt of the run stopped."""
        context = self.context
        finished = self.finished_batches(sync_pass)
        if finished and not finished[-1].next_page_token:
            return  # this pass was completed by an earlier (killed) attempt
        token = finished[-1].next_page_token if finished else None
        self.read_pages(sync_pass, token=token, cursor=pass_cursor(context.run, sync_pass), sequence=len(finished),
                        read_total=sum(b.record_count for b in finished))

    def finished_batches(self, sync_pass):
        """The batches an earlier (killed) attempt of the run read: finished, or staged for the workers."""
        finished = list(SyncBatch.objects.filter(run=self.context.run, direction=sync_pass.direction).filter(
            Q(status__in=FINISHED_BATCH_STATUSES) | Q(records__isnull=False)).defer("records").order_by("sequence"))
        return finished

    def read_pages(self, sync_pass, *, token, cursor, sequence, read_total=0):
        """Read pages from `token` (None: the first page of the read from `cursor`) to the last one, one batch
        each, numbered after `sequence`. A page that fails to load is a batch error; the read goes on past it
        only where the connector can tell the next page's token without loading it (offset paging)."""
        context = self.context
        sample = context.options.sample_size
        while True:
            if context.stop_requested():
                return
            sequence += 1
            size = context.page_size if not sample else min(context.page_size, sample - read_total)
            try:
                page = sync_pass.near.read_page(sync_pass.near_object, page_token=token, cursor=cursor, page_size=size)
            except ConnectorError as exc:
                if context.call_failed(exc, sync_pass.near_connection):
                    raise exc from None  # never read: the records are read again after the reconnect
                batch = self.start_batch(sync_pass, sequence, page_token=token or "")
                context.book.batch_failed(batch, exc, sync_pass)
                token = sync_pass.near.next_page_token(sync_pass.near_object, token, cursor=cursor, page_size=size)
                if token is None or context.stopped:
                    return
                continue
            records, next_token = page.records, page.next_token
            if sample:
                records = records[: max(0, sample - read_total)]
            read_total += len(records)
            if sample and read_total >= sample:
                next_token = None
            fields, rest = context.page_batch(sync_pass, records)
            batch = self.start_batch(sync_pass, sequence, page_token=token or "", record_count=len(records),
                                     next_page_token=next_token or "", cursor=page.cursor or "", **fields)
            context.take(sync_pass, batch, rest)
            if context.stopped or not next_token:
                return
            token = next_token

    def start_batch(self, sync_pass, sequence, **fields):
        """The batch of this sequence, started, or staged when `fields` say so. In a run taken over after a killed
        worker the batch may exist half done: it is started again from scratch, its half-written errors dropped."""
        context, now = self.context, timezone.now()
        values = {"organization": context.org, "status": BatchStatus.RUNNING, "started_at": now,
                  "heartbeat_at": now, "counts": {}, "error": "", "record_count": 0, "next_page_token": "",
                  "page_token": "", "cursor": "", "source_batch": None, "records": None, "worker": worker_name(),
                  **fields}
        staged = values["status"] == BatchStatus.STAGED
        values["attempts"] = 0 if staged else 1  # a staged batch's attempts are counted by its claims
        key = {"run": context.run, "direction": sync_pass.direction, "sequence": sequence}
        if context.run.claims <= 1:
            return SyncBatch.objects.create(**key, **values)  # a first attempt: no row of this sequence yet
        existing = SyncBatch.objects.filter(**key).first()
        if existing is not None:
            batch_errors_discard(existing)
            values["attempts"] += existing.attempts
        batch, _ = SyncBatch.objects.update_or_create(**key, defaults=values)
        return batch

    # -- retries and replays -------------------------------------------------------------------------------------

    def replay_pass(self, sync_pass):
        """Fetch failed batches again by their page token, and replay loose failing records (safe replay)."""
        context, options, direction = self.context, self.context.options, sync_pass.direction
        units = [("batch", batch) for batch in SyncBatch.objects.for_org(context.org).filter(
            pk__in=options.batches, direction=direction, run__mapping=context.mapping,
        ).select_related("run").order_by("pk")]
        refs = {}
        for error in RecordError.objects.for_org(context.org).filter(
                pk__in=options.errors, level=ErrorLevel.RECORD, direction=direction, mapping=context.mapping,
        ).order_by("pk"):
            refs.setdefault(error.source_record_id, error)
        if direction == FORWARD:
            for record_id in options.records:
                refs.setdefault(str(record_id), None)
        loose = list(refs.items())
        units += [("records", loose[i:i + context.page_size]) for i in range(0, len(loose), context.page_size)]
        finished = {batch.sequence for batch in self.finished_batches(sync_pass)}
        for sequence, (kind, unit) in enumerate(units, start=1):
            if sequence in finished:
                continue  # done by an earlier (killed) attempt of this run
            if context.stopped or context.stop_requested():
                return
            if kind == "batch":
                batch = self.start_batch(sync_pass, sequence, page_token=unit.page_token, source_batch=unit)
                self.replay_batch(sync_pass, batch, unit)
            else:
                batch = self.start_batch(sync_pass, sequence)
                records, info, failures = self.load_replay_records(sync_pass, unit)
                if context.halt:
                    batch.delete()
                    raise context.halt[0]
                batch.record_count = len(records) + len(failures)
                context.process_batch(sync_pass, batch, records, replay_info=info, failures=failures)
        if not options.preview and not context.stopped and not context.canceled:
            self.read_on_after_replayed_pages(sync_pass, units=len(units))

    def read_on_after_replayed_pages(self, sync_pass, *, units):
        """A run whose read stopped at a page that failed to load (cursor paging cannot skip a page) never read
        the pages after it: once the retry has loaded that page, it reads on to the last page, in batches
        numbered after its units (so a retry taken over after a killed worker picks up where it was)."""
        rows = list(SyncBatch.objects.filter(run=self.context.run, direction=sync_pass.direction)
                    .select_related("source_batch__run").order_by("sequence"))
        starts = [row for row in rows if row.sequence <= units and row.source_batch is not None
                  and row.status in FINISHED_BATCH_STATUSES and row.next_page_token
                  and self.ended_its_read(row.source_batch)]
        if not starts:
            return
        start = starts[-1]
        finished = [row for row in rows if row.sequence > units and row.status in FINISHED_BATCH_STATUSES]
        token = finished[-1].next_page_token if finished else start.next_page_token
        if token:
            self.read_pages(sync_pass, token=token, cursor=pass_cursor(start.source_batch.run, sync_pass),
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
        context = self.context
        try:
            page = sync_pass.near.read_page(sync_pass.near_object, page_token=original.page_token or None,
                                            cursor=pass_cursor(original.run, sync_pass), page_size=context.page_size)
        except ConnectorError as exc:
            if context.call_failed(exc, sync_pass.near_connection):
                batch.delete()
                raise exc from None
            context.book.batch_failed(batch, exc, sync_pass, retrying=original)
            return
        batch.record_count = len(page.records)
        batch.next_page_token = page.next_token or ""
        context.process_batch(sync_pass, batch, page.records)
        context.book.batch_recovered(original)

    def load_replay_records(self, sync_pass, refs):
        """Records to replay: fetched fresh where the connector can, else from their snapshots.

        Only errors this run still holds are replayed: one a person closed since (ignored, resolved), or that
        another retry took first, is left alone. A preview looks at the errors as they are.
        """
        context = self.context
        named = RecordError.objects.filter(pk__in=[error.pk for _record_id, error in refs if error is not None])
        if not context.options.preview:
            token = context.options.claim_token
            named = named.filter(status=ErrorStatus.RETRYING, **({"claim_token": token} if token else {}))
        held = set(named.values_list("pk", flat=True))
        refs = [(record_id, error) for record_id, error in refs if error is None or error.pk in held]
        info, records, failures = {}, [], []
        fresh, fetch_error = {}, None
        if sync_pass.near.supports_fetch and refs:
            try:
                fresh = sync_pass.near.fetch(sync_pass.near_object, [record_id for record_id, _error in refs])
            except ConnectorError as exc:
                if context.call_failed(exc, sync_pass.near_connection):
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
                failures.append((placeholder, ConnectorError(
                    ErrorCategory.MAPPING, NO_SNAPSHOT_MESSAGE, code="no_snapshot", retryable=False)))
        return records, info, failures

