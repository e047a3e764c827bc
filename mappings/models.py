"""What to sync: a Mapping between two objects of two connections, and its field-by-field rules."""

import uuid

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from accounts.tenancy import TenantModel

DEFAULT_RETRY_SCHEDULE = [60, 300, 1800]  # seconds: 1 min, 5 min, 30 min, then failed


def default_retry_schedule():
    return list(DEFAULT_RETRY_SCHEDULE)


class Direction(models.TextChoices):
    ONE_WAY = "one_way", "One-way (source → target)"
    TWO_WAY = "two_way", "Two-way"


class WriteMode(models.TextChoices):
    CREATE_ONLY = "create_only", "Create only"
    UPDATE_ONLY = "update_only", "Update only"
    UPSERT = "upsert", "Create or update"


class ConflictPolicy(models.TextChoices):
    SOURCE_WINS = "source_wins", "Source wins"
    TARGET_WINS = "target_wins", "Target wins"
    NEWEST_WINS = "newest_wins", "Newest change wins"
    MANUAL = "manual", "Manual review"


class ErrorStrategy(models.TextChoices):
    SKIP = "skip", "Skip and continue"
    RETRY = "retry", "Retry with backoff"
    FAIL_FAST = "fail_fast", "Fail fast"
    MANUAL_REVIEW = "manual_review", "Manual review"


class LoggingLevel(models.TextChoices):
    NONE = "none", "None (no record snapshots)"
    ERRORS = "errors", "Errors (snapshots of failing records)"
    ALL = "all", "All (snapshots of warnings and ignored records too)"


class ScheduleType(models.TextChoices):
    NONE = "none", "On demand only"
    INTERVAL = "interval", "Every N minutes"
    CRON = "cron", "Cron expression"


class Mapping(TenantModel):
    """Syncs one object of a source connection into one object of a target connection.

    `match_keys` pairs a source field with a target field ([{"source": "email", "target": "email"}]) to find
    the target record of a source record that has no RecordLink yet. `filters` ignore records on purpose,
    each with the reason shown to operators: [{"field": "email", "op": "empty", "reason": "..."}].
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    source_connection = models.ForeignKey(
        "integrations.Connection", on_delete=models.PROTECT, related_name="source_mappings"
    )
    source_object = models.CharField(max_length=100)
    target_connection = models.ForeignKey(
        "integrations.Connection", on_delete=models.PROTECT, related_name="target_mappings"
    )
    target_object = models.CharField(max_length=100)
    direction = models.CharField(max_length=20, choices=Direction.choices, default=Direction.ONE_WAY)
    match_keys = models.JSONField(default=list, blank=True)
    write_mode = models.CharField(max_length=20, choices=WriteMode.choices, default=WriteMode.UPSERT)
    create_if_missing = models.BooleanField(
        default=True, help_text="When an update finds the target record deleted, create it again."
    )
    conflict_policy = models.CharField(
        max_length=20, choices=ConflictPolicy.choices, default=ConflictPolicy.SOURCE_WINS
    )
    error_strategy = models.CharField(max_length=20, choices=ErrorStrategy.choices, default=ErrorStrategy.SKIP)
    retry_schedule = models.JSONField(default=default_retry_schedule, blank=True)
    max_retries = models.PositiveSmallIntegerField(default=3)
    # Per error category: {"timeout": {"retry": true, "attempts": 5, "delays": [60, 300]}, "validation": {"retry":
    # false}}. A category not named here follows syncs.policy (the error table's retryability) and the fields above.
    retry_policy = models.JSONField(default=dict, blank=True)
    pause_after_failed_runs = models.PositiveSmallIntegerField(
        default=5, help_text="Pause the mapping after this many consecutive failed runs (0: never)."
    )
    automated_replay = models.BooleanField(default=False)
    replay_attempts = models.PositiveSmallIntegerField(default=3)
    logging_level = models.CharField(max_length=10, choices=LoggingLevel.choices, default=LoggingLevel.ERRORS)
    auto_fix = models.BooleanField(
        default=False,
        help_text="Change values that are present but do not fit the target (strip phone punctuation, truncate "
        "over-long text), recording each fix as a warning. Field defaults apply either way.",
    )
    default_phone_country = models.CharField(max_length=2, default="US")
    filters = models.JSONField(default=list, blank=True)
    # Each batch has a fixed cost (its rows, a claim, a few statements): 500 keeps it small next to the records'
    # own, while leaving a run enough batches to spread over workers.
    batch_size = models.PositiveIntegerField(
        default=500,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Records per page read, and per batch a worker processes (written in the largest calls the "
                  "target takes). A page that fails to load fails at most one batch.",
    )
    schedule_type = models.CharField(max_length=10, choices=ScheduleType.choices, default=ScheduleType.NONE)
    schedule_interval_minutes = models.PositiveIntegerField(null=True, blank=True)
    schedule_cron = models.CharField(max_length=100, blank=True, default="")
    is_active = models.BooleanField(default=True)
    paused_reason = models.CharField(max_length=500, blank=True, default="")
    # Delta cursors, per direction: where the last run that left nothing behind stopped reading. Opaque: each
    # connector defines its own (a keyset such as (updated_at, id), or a modified-time filter taken inclusively).
    source_cursor = models.TextField(blank=True, default="")
    target_cursor = models.TextField(blank=True, default="")
    last_successful_sync_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="mapping_unique_name_per_org")]

    def __str__(self):
        return self.name

    def clean(self):
        # A mapping that crosses organizations would copy one tenant's records into another's system.
        errors = {}
        for name in ("source_connection", "target_connection"):
            connection = getattr(self, name, None) if getattr(self, f"{name}_id") else None
            if connection is not None and self.organization_id and connection.organization_id != self.organization_id:
                errors[name] = f"“{connection}” belongs to another organization."
        if errors:
            raise ValidationError(errors)

    @property
    def keeps_snapshots(self):
        return self.logging_level != LoggingLevel.NONE


class FieldMapping(TenantModel):
    """One target field: where its value comes from and how it is transformed.

    `transforms` is an ordered list of {"name": ..., "args": {...}} from mappings.transforms' registry;
    `reverse_transforms` apply in the target → source direction of a two-way mapping.
    """

    mapping = models.ForeignKey(Mapping, on_delete=models.CASCADE, related_name="field_mappings")
    source_field = models.CharField(max_length=100, blank=True, default="")
    target_field = models.CharField(max_length=100)
    transforms = models.JSONField(default=list, blank=True)
    reverse_transforms = models.JSONField(default=list, blank=True)
    required = models.BooleanField(default=False)
    default_value = models.CharField(
        max_length=500, null=True, blank=True, help_text="Written when the value is empty after the transforms."
    )
    skip_invalid = models.BooleanField(
        default=False, help_text="Drop this field (with a warning) instead of failing the record."
    )
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["mapping", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["mapping", "target_field"], name="field_mapping_unique_target"),
        ]

    def __str__(self):
        return f"{self.source_field or '∅'} → {self.target_field}"

    def clean(self):
        # A typo in a transform name would otherwise surface only as a mapping error on every record of a run.
        from mappings.transforms import validate_transforms

        errors = {}
        for name in ("transforms", "reverse_transforms"):
            try:
                validate_transforms(getattr(self, name) or [])
            except ValidationError as exc:
                errors[name] = exc.messages
        if errors:
            raise ValidationError(errors)
