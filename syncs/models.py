"""The record of what happened: runs, their batches, every record error, and the source ↔ target links."""

import uuid

from django.db import models
from django.utils import timezone

from accounts.tenancy import TenantModel
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
    # What the run was asked to do (syncs.engine.options.RunOptions); its state and outputs have fields of their
    # own.
    options = models.JSONField(default=dict, blank=True)
    # Where the reverse pass of a two-way mapping started reading (the mapping's target cursor at the first claim).
    reverse_cursor_from = models.TextField(blank=True, default="")
    # A test run's output: per record, what a real run would do.
    plan = models.JSONField(default=list, blank=True)
    claims = models.PositiveSmallIntegerField(default=0, help_text="How many times a worker started this run.")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
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

    class Meta:
        ordering = ["run", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["run", "direction", "sequence"], name="batch_unique_sequence"),
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


class RecordError(TenantModel):
    """One failing, warned or ignored record of a run (or the run's system error, or a batch's error).

    `snapshot_before` is the source record as read, `snapshot_after` the payload after transforms; both are
    empty when the mapping's logging level is none. `detail` is technical and already scrubbed of secrets.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="record_errors")
    batch = models.ForeignKey(SyncBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="errors")
    mapping = models.ForeignKey("mappings.Mapping", on_delete=models.CASCADE, related_name="record_errors")
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
    claim_token = models.UUIDField(null=True, blank=True, db_index=True)
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
    fingerprint = models.CharField(max_length=40, db_index=True)
    # When this record first failed: carried forward when a later run's error supersedes this one, so
    # resolution time counts from the first failure, not the last.
    first_seen_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "status", "-created_at"], name="error_org_status_idx"),
            models.Index(fields=["status", "next_retry_at"], name="error_due_retry_idx"),
            models.Index(fields=["mapping", "source_record_id"], name="error_mapping_record_idx"),
            # Analytics windows: errors by category/code and the trend, resolution time, retry success.
            models.Index(fields=["organization", "level", "created_at"], name="error_org_level_created_idx"),
            models.Index(fields=["organization", "resolved_at"], name="error_org_resolved_idx"),
            models.Index(fields=["organization", "last_retried_at"], name="error_org_retried_idx"),
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
            models.Index(fields=["organization", "status"], name="link_org_status_idx"),
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
