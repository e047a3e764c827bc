"""The record of what happened: runs, their batches, every record error, and the source ↔ target links."""

import uuid

from django.core.exceptions import EmptyResultSet
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, models, transaction
from django.db.models import Q, sql
from django.utils import timezone

from accounts.tenancy import TenantModel, TenantQuerySet
from integrations.errors import Durability, ErrorCategory


class Trigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"
    WEBHOOK = "webhook", "Webhook"
    RETRY = "retry", "Retry"
    REPLAY = "replay", "Replay"
    TEST = "test", "Test"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIALLY_FAILED = "partially_failed", "Partially failed"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"
    RECOVERED = "recovered", "Recovered"


FINISHED_RUN_STATUSES = {
    RunStatus.SUCCEEDED,
    RunStatus.PARTIALLY_FAILED,
    RunStatus.FAILED,
    RunStatus.CANCELED,
    RunStatus.RECOVERED,
}

COUNT_FIELDS = ("read", "created", "updated", "unchanged", "skipped", "ignored", "warned", "failed")


class SyncRun(TenantModel):
    """One sync event of a mapping: its trigger, lifecycle, counts and place in a retry chain."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    mapping = models.ForeignKey("mappings.Mapping", on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=20, choices=Trigger.choices, default=Trigger.MANUAL)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    is_test = models.BooleanField(default=False)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    root = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="descendants")
    # The connector's opaque cursors: where this run started reading, and where the mapping's cursor moved to.
    cursor_from = models.TextField(blank=True, default="")
    cursor_to = models.TextField(blank=True, default="")
    read = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    ignored = models.PositiveIntegerField(default=0)
    warned = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    system_error = models.TextField(blank=True, default="")
    # What the run was asked to do (syncs.options.RunOptions); its state and outputs have fields of their
    # own.
    options = models.JSONField(default=dict, blank=True)
    # Where the reverse pass of a two-way mapping started reading (the mapping's target cursor at the first claim).
    reverse_cursor_from = models.TextField(blank=True, default="")
    # A test run's output: per record, what a real run would do.
    plan = models.JSONField(default=list, blank=True)
    claims = models.PositiveSmallIntegerField(default=0, help_text="How many times a worker started this run.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Every pass has been read (or the read stopped): what is left is the batches staged for the workers.
    read_finished_at = models.DateTimeField(null=True, blank=True)
    # A worker is closing the run (syncs.engine.batches.sync_run_try_finish); reset when a worker takes it over.
    finishing_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-queued_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-queued_at"], name="run_org_recent_idx"),
            # Analytics: error rate and success rate per target select runs by when they finished.
            models.Index(fields=["organization", "finished_at"], name="run_org_finished_idx"),
            models.Index(fields=["status", "heartbeat_at"], name="run_status_heartbeat_idx"),
        ]

    def __str__(self):
        return f"Run {self.pk} of {self.mapping} ({self.status})"

    @property
    def is_finished(self):
        return self.status in FINISHED_RUN_STATUSES

    def counts(self):
        return {name: getattr(self, name) for name in COUNT_FIELDS}


class BatchStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    STAGED = "staged", "Read, waiting for a worker"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIALLY_FAILED = "partially_failed", "Partially failed"
    FAILED = "failed", "Failed"
    RECOVERED = "recovered", "Recovered by a later run"


class SyncBatch(TenantModel):
    """One page of a run. Its page token is kept so a failed batch can be fetched again."""

    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="batches")
    sequence = models.PositiveIntegerField()
    direction = models.CharField(max_length=10, default="forward")
    page_token = models.TextField(blank=True, default="")
    next_page_token = models.TextField(blank=True, default="")
    status = models.CharField(max_length=20, choices=BatchStatus.choices, default=BatchStatus.PENDING)
    record_count = models.PositiveIntegerField(default=0)
    # This batch's share of the run's counts: a run resumed after a killed worker re-adds them exactly.
    counts = models.JSONField(default=dict, blank=True)
    # Where an incremental read resumes after this page (the connector's Page.cursor).
    cursor = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    # In a retry-failures run: the failed batch of an earlier run that this batch fetches again.
    source_batch = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A page read and staged for any worker to process (syncs.engine.batches): its records, until it is done.
    records = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    # Runs whose errors this batch resolved or superseded: their chains are re-evaluated when the run finishes.
    touched_runs = models.JSONField(default=list, blank=True)
    worker = models.CharField(max_length=100, blank=True, default="", help_text="host:pid of the worker that "
                              "processed the batch (last, if it was taken over).")

    class Meta:
        ordering = ["run", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["run", "direction", "sequence"], name="batch_unique_sequence"),
        ]
        indexes = [
            # Batches in flight: a connection's concurrency limit, and the reaper's stale batches.
            models.Index(fields=["status", "heartbeat_at"], name="batch_status_heartbeat_idx",
                         condition=models.Q(status__in=["staged", "running"])),
        ]

    def __str__(self):
        return f"Batch {self.sequence} of run {self.run_id}"


class ErrorLevel(models.TextChoices):
    SYSTEM = "system", "System"
    BATCH = "batch", "Batch"
    RECORD = "record", "Record"
    WARNING = "warning", "Warning"
    IGNORED = "ignored", "Ignored"


class ErrorStatus(models.TextChoices):
    OPEN = "open", "Open"
    RETRY_SCHEDULED = "retry_scheduled", "Retry scheduled"
    RETRYING = "retrying", "Retrying"
    IN_REVIEW = "in_review", "In review"
    EXHAUSTED = "exhausted", "Retries exhausted"
    RESOLVED = "resolved", "Resolved"
    IGNORED = "ignored", "Ignored"


UNRESOLVED_ERROR_STATUSES = (
    ErrorStatus.OPEN,
    ErrorStatus.RETRY_SCHEDULED,
    ErrorStatus.RETRYING,
    ErrorStatus.IN_REVIEW,
    ErrorStatus.EXHAUSTED,
)


class Resolution(models.TextChoices):
    AUTO_RETRY = "auto_retry", "Automatic retry"
    REPLAY = "replay", "Replay"
    MANUAL_RETRY = "manual_retry", "Manual retry"
    BULK_RETRY = "bulk_retry", "Bulk retry"
    FIXED = "fixed", "Fixed"
    IGNORED = "ignored", "Ignored"
    SUCCEEDED_WITH_WARNING = "succeeded_with_warning", "Succeeded with a warning"
    SUPERSEDED = "superseded", "Failed again in a later run"


RETRY_RESOLUTIONS = (Resolution.AUTO_RETRY, Resolution.REPLAY, Resolution.MANUAL_RETRY, Resolution.BULK_RETRY)

# A superseded error was not fixed (its record failed again, and the newer error carries first_seen_at
# forward), and a warning never failed: timing either would make recovery look faster than it is.
TIMED_RESOLUTIONS = (*RETRY_RESOLUTIONS, Resolution.FIXED, Resolution.IGNORED)


class RecordErrorQuerySet(TenantQuerySet):
    def update_returning(self, returning, **values):
        """update(), in one statement that also answers the `returning` fields of each row it changed.

        Keep the conditions on the errors themselves (pk__in=a subquery, status__in=...): a row another caller
        changed first is then re-checked after its lock, and neither changed nor returned (READ COMMITTED).
        """
        if self.query.is_sliced:
            raise TypeError("Cannot update a query once a slice has been taken.")
        # As update() builds its statement; RETURNING is standard SQL on PostgreSQL and SQLite (3.35+).
        query = self.query.chain(sql.UpdateQuery)
        query.add_update_values(values)
        query.clear_ordering(force=True)
        query.clear_select_clause()
        try:
            update_sql, params = query.get_compiler(self.db).as_sql()
        except EmptyResultSet:
            return []  # a condition nothing can meet (an empty IN list)
        quote = connections[self.db].ops.quote_name
        columns = ", ".join(quote(self.model._meta.get_field(name).column) for name in returning)
        with transaction.mark_for_rollback_on_error(using=self.db), connections[self.db].cursor() as cursor:
            cursor.execute(f"{update_sql} RETURNING {columns}", params)
            return cursor.fetchall()


class RecordError(TenantModel):
    """One failing, warned or ignored record of a run (or the run's system error, or a batch's error).

    `snapshot_before` is the source record as read, `snapshot_after` the payload after transforms; both are
    empty when the mapping's logging level is none. `detail` is technical and already scrubbed of secrets.
    """

    # Indexed only by the composite indexes below that start with it: every index costs each error's every
    # status change (a bulk retry or resolve rewrites a hundred thousand rows).
    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="+",
                                     db_index=False)
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="record_errors")
    batch = models.ForeignKey(SyncBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="errors")
    mapping = models.ForeignKey("mappings.Mapping", on_delete=models.CASCADE, related_name="record_errors",
                                db_index=False)
    level = models.CharField(max_length=10, choices=ErrorLevel.choices, default=ErrorLevel.RECORD)
    category = models.CharField(max_length=20, choices=ErrorCategory.choices)
    error_code = models.CharField(max_length=100, blank=True, default="")
    field = models.CharField(max_length=100, blank=True, default="")
    message = models.TextField()
    detail = models.TextField(blank=True, default="")
    retryable = models.BooleanField(default=False)
    durability = models.CharField(max_length=10, choices=Durability.choices, default=Durability.DURABLE)
    direction = models.CharField(max_length=10, default="forward")
    source_record_id = models.CharField(max_length=255, blank=True, default="")
    target_record_id = models.CharField(max_length=255, blank=True, default="")
    snapshot_before = models.JSONField(null=True, blank=True)
    snapshot_after = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=ErrorStatus.choices, default=ErrorStatus.OPEN)
    attempts = models.PositiveSmallIntegerField(default=0)
    retry_after_until = models.DateTimeField(
        null=True, blank=True, help_text="The target asked not to be called again before this time."
    )
    next_retry_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=30, choices=Resolution.choices, blank=True, default="")
    resolution_note = models.TextField(blank=True, default="", help_text="Why it was ignored or resolved by hand.")
    # Set by the one caller whose conditional update claimed this error for a retry (see syncs.retries).
    claim_token = models.UUIDField(null=True, blank=True)
    last_retried_at = models.DateTimeField(null=True, blank=True)
    # The transformed record as corrected by an operator in the review queue; a retry writes it as is. It moves
    # to the record's next error when a retry fails again, until the record syncs or a newer edit replaces it.
    edited_payload = models.JSONField(null=True, blank=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    # The run where this record (or page) first failed, carried forward like first_seen_at: that run is not
    # recovered while the failure lives on in a later run's error.
    origin_run = models.ForeignKey(
        SyncRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="originated_errors"
    )
    fingerprint = models.CharField(max_length=40)
    # When this record first failed: carried forward when a later run's error supersedes this one, so
    # resolution time counts from the first failure, not the last.
    first_seen_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RecordErrorQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        # Every index is paid for by each insert and each status change, so each one here serves a named query.
        # The search filter's trigram indexes (PostgreSQL only) are in migration 0007.
        indexes = [
            # The errors list (newest first, in pages): the organization's newest errors, or one mapping's. The
            # trailing columns are the list's filters: checked in the index, so a filtered page reads from the
            # table only the rows it shows. A rare status has its own index; the admin's list filters by status
            # across organizations.
            models.Index(fields=["organization", "-created_at", "-id", "status", "category", "level", "mapping",
                                 "error_code"], name="error_org_recent_idx"),
            models.Index(fields=["mapping", "-created_at", "-id", "status", "category", "level", "error_code"],
                         name="error_mapping_recent_idx"),
            models.Index(fields=["organization", "status", "-created_at"], name="error_org_status_idx"),
            models.Index(fields=["status", "next_retry_at"], name="error_due_retry_idx"),
            models.Index(fields=["mapping", "source_record_id"], name="error_mapping_record_idx"),
            models.Index(fields=["claim_token"], name="error_claim_token_idx",
                         condition=Q(claim_token__isnull=False)),
            # Analytics windows, each read from its index alone (index-only scans): errors by category and code
            # and the trend; resolution time; retry success.
            models.Index(fields=["organization", "level", "created_at", "category", "error_code"],
                         name="error_org_window_idx"),
            models.Index(fields=["organization", "resolved_at", "first_seen_at"], name="error_org_resolved_idx",
                         condition=Q(level=ErrorLevel.RECORD, status__in=(ErrorStatus.RESOLVED, ErrorStatus.IGNORED),
                                     resolution__in=TIMED_RESOLUTIONS)),
            models.Index(fields=["organization", "last_retried_at", "status", "resolution"],
                         name="error_org_retried_idx",
                         condition=Q(level=ErrorLevel.RECORD, last_retried_at__isnull=False)),
            # Error groups: the unresolved record errors, in fingerprint order with every column a group shows.
            models.Index(fields=["organization", "fingerprint", "mapping", "category", "error_code", "field",
                                 "status", "first_seen_at", "created_at", "id"],
                         name="error_org_open_group_idx",
                         condition=Q(level=ErrorLevel.RECORD, status__in=UNRESOLVED_ERROR_STATUSES)),
            models.Index(fields=["organization", "fingerprint", "status"], name="error_org_group_idx"),
        ]

    def __str__(self):
        return f"{self.get_level_display()} {self.category} on {self.source_record_id or 'run'}"

    @property
    def is_resolved(self):
        return self.status in (ErrorStatus.RESOLVED, ErrorStatus.IGNORED)


class LinkStatus(models.TextChoices):
    SYNCED = "synced", "Synced"
    FAILED = "failed", "Failed"
    PENDING = "pending", "Pending retry"
    SKIPPED = "skipped", "Skipped"
    IGNORED = "ignored", "Ignored"


class RecordLink(TenantModel):
    """A source record and its counterpart in the mapping's target: what makes every write idempotent.

    The hashes are of the mapped fields as last written or seen on each side; a side whose hash still matches
    has not changed since, which is how two-way syncs recognise (and drop) their own echo.
    """

    mapping = models.ForeignKey("mappings.Mapping", on_delete=models.CASCADE, related_name="links")
    source_record_id = models.CharField(max_length=255)
    target_record_id = models.CharField(max_length=255, blank=True, default="")
    source_hash = models.CharField(max_length=64, blank=True, default="")
    target_hash = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(max_length=10, choices=LinkStatus.choices, default=LinkStatus.PENDING)
    last_error = models.ForeignKey(
        RecordError, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_synced_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # A link is known by either side: the reverse pass of a two-way mapping starts from a target record that
        # has no source record yet (empty source id), so each side is unique only where it is set.
        constraints = [
            models.UniqueConstraint(fields=["mapping", "source_record_id"], condition=~models.Q(source_record_id=""),
                                    name="link_unique_source_record"),
            models.UniqueConstraint(fields=["mapping", "target_record_id"], condition=~models.Q(target_record_id=""),
                                    name="link_unique_target_record"),
        ]
        indexes = [
            models.Index(fields=["mapping", "target_record_id"], name="link_target_idx"),
            # Record status by status, and the analytics' links per mapping and status (from the index alone).
            models.Index(fields=["organization", "status", "mapping"], name="link_org_status_mapping_idx"),
        ]

    def __str__(self):
        return f"{self.source_record_id} → {self.target_record_id or '?'} ({self.status})"


class GroupRetryStatus(models.TextChoices):
    PROBING = "probing", "Retrying one record first"
    RETRIED = "retried", "The rest retried"
    STOPPED = "stopped", "Stopped: the first record still fails"


class ErrorGroupRetry(TenantModel):
    """A retry of an error group: one record (the probe) first, the rest of the group once it has synced.

    The probe may succeed in the run that retried it or in any later one (an automated replay, a scheduled
    retry), so the group's state lives here rather than in the probe run's options.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    mapping = models.ForeignKey("mappings.Mapping", on_delete=models.CASCADE, related_name="group_retries")
    fingerprint = models.CharField(max_length=40)
    direction = models.CharField(max_length=10, default="forward")
    probe_record_id = models.CharField(max_length=255)
    probe_error = models.ForeignKey(RecordError, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=10, choices=GroupRetryStatus.choices, default=GroupRetryStatus.PROBING)
    reason = models.TextField(blank=True, default="", help_text="Why the group retry stopped.")
    retried = models.PositiveIntegerField(default=0, help_text="Errors of the group retried after the probe.")
    # Records tried first before this one, each of which ran out of attempts on transient errors: they are
    # retried with the rest of the group.
    earlier_probe_records = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["mapping", "status"], name="group_retry_mapping_status_idx"),
            models.Index(fields=["organization", "fingerprint", "-created_at"], name="group_retry_fingerprint_idx"),
        ]

    def __str__(self):
        return f"Group retry {self.fingerprint[:8]} ({self.status})"


class BulkActionKind(models.TextChoices):
    RETRY = "retry", "Retry"
    IGNORE = "ignore", "Ignore"
    RESOLVE = "resolve", "Resolve"


class BulkActionStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class BulkAction(TenantModel):
    """A retry, ignore or resolve of many record errors, carried out by a worker (syncs.bulk).

    `selection` is what the request named, as it named it: {"filter": {...}} (the errors list's query) or
    {"ids": [primary keys]}; `options` the action's own (force, note). `summary` is the answer the synchronous
    action would have given, filled in when the worker is done.

    A worker does it a mapping at a time, each step in one transaction with its checkpoint (`progress`: the last
    mapping done and the summary so far), beating `heartbeat_at`. A worker that dies loses at most the step it
    was in (rolled back with it); the reaper hands the action to another worker, which claims it under a new
    `claim_token` and goes on after the checkpoint. A worker whose token is no longer the action's stops.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=10, choices=BulkActionKind.choices)
    selection = models.JSONField(default=dict)
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=BulkActionStatus.choices, default=BulkActionStatus.QUEUED)
    summary = models.JSONField(null=True, blank=True)
    failure = models.TextField(blank=True, default="", help_text="Why the action stopped without being done.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="The last sign of life of its worker.")
    claim_token = models.UUIDField(null=True, blank=True, editable=False,
                                   help_text="The worker carrying it out; a takeover gives it a new one.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="How many times a worker took it.")
    progress = models.JSONField(default=dict, blank=True,
                                help_text='The checkpoint: {"after_mapping": pk, "summary": {...}} of the steps done.')

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="bulk_action_org_recent_idx"),
            # The reaper, every minute: queued or running actions, by their worker's last sign of life.
            models.Index(fields=["status", "heartbeat_at"], name="bulk_action_status_idx"),
        ]

    def __str__(self):
        return f"Bulk {self.kind} {self.code} ({self.status})"


class ErrorCountHour(TenantModel):
    """Record-level errors created in one UTC hour, per category and code: what the analytics count a window
    from (syncs.rollups). Only hours the rollup has counted are here; see RollupWatermark."""

    hour = models.DateTimeField()
    category = models.CharField(max_length=20, choices=ErrorCategory.choices)
    error_code = models.CharField(max_length=100, blank=True, default="")
    count = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "hour", "category", "error_code"],
                                    name="error_count_hour_unique"),
        ]

    def __str__(self):
        return f"{self.count} × {self.category}/{self.error_code} at {self.hour:%Y-%m-%d %H:00}"


class RollupWatermark(models.Model):
    """How far a rollup has counted: every hour before `counted_until` is in it (syncs.rollups)."""

    name = models.CharField(max_length=50, unique=True)
    counted_until = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.name} counted until {self.counted_until:%Y-%m-%d %H:00}"
