"""Connections to external systems, and the sandbox system Resync simulates in its own database."""

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from accounts.tenancy import TenantModel
from integrations import crypto


class ConnectionStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    NEEDS_REAUTH = "needs_reauth", "Needs reauthentication"
    PAUSED = "paused", "Paused"
    DISABLED = "disabled", "Disabled"


class Connection(TenantModel):
    """An organization's account in one external system.

    `config` holds what is not secret (base URL, default phone country, sandbox fault injection);
    credentials are encrypted at rest and only ever decrypted in the connector that uses them.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    provider = models.CharField(max_length=50)
    config = models.JSONField(default=dict, blank=True)
    credentials_ciphertext = models.TextField(blank=True, default="", editable=False)
    status = models.CharField(max_length=20, choices=ConnectionStatus.choices, default=ConnectionStatus.ACTIVE)
    status_reason = models.CharField(max_length=500, blank=True, default="")
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # The objects and fields the system last described ({object: ObjectSchema.as_dict()}), kept until someone
    # refreshes the schema: runs and forms do not describe the system again every time.
    schema_cache = models.JSONField(default=dict, blank=True)
    schema_refreshed_at = models.DateTimeField(null=True, blank=True)
    # The system's rate limits bound how hard Resync may press it: batches of every run that reads from or
    # writes to this connection are processed at most this many at a time, whatever the number of workers.
    max_concurrency = models.PositiveSmallIntegerField(
        default=4, validators=[MinValueValidator(1), MaxValueValidator(32)],
        help_text="Batches processed against this system at the same time, across all runs (1–32).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="connection_unique_name_per_org"),
        ]

    def __str__(self):
        return self.name

    @property
    def credentials(self):
        if not self.credentials_ciphertext:
            return {}
        return crypto.decrypt_json(self.credentials_ciphertext)

    @credentials.setter
    def credentials(self, value):
        self.credentials_ciphertext = crypto.encrypt_json(value) if value else ""

    def get_connector(self):
        from integrations.connectors import get_connector

        return get_connector(self)


class SandboxRecord(TenantModel):
    """One record of a simulated external system, owned by one sandbox connection."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="sandbox_records")
    object_name = models.CharField(max_length=50)
    external_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict)
    # The lower-cased value of the object's unique field (a contact's email, a company's domain): the sandbox
    # API checks uniqueness through this index, not by scanning every record. Not a constraint: seeded source
    # data may hold duplicates, as real data does.
    unique_key = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["modified_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "object_name", "external_id"], name="sandbox_record_unique_external_id"
            ),
        ]
        indexes = [
            # Keyset reads: (modified_at, id) after the cursor.
            models.Index(fields=["connection", "object_name", "modified_at", "id"], name="sandbox_read_idx"),
            models.Index(fields=["connection", "object_name", "unique_key"], name="sandbox_unique_key_idx"),
        ]

    def __str__(self):
        return f"{self.object_name}/{self.external_id}"


class SandboxCallCounter(models.Model):
    """Counts API calls made to a sandbox connection, so injected faults are deterministic."""

    connection = models.OneToOneField(Connection, on_delete=models.CASCADE, related_name="sandbox_counter")
    calls = models.PositiveBigIntegerField(default=0)
    # SHA-256 digests of API keys the sandbox has expired (faults.expire_after_calls): a new key works again.
    expired_keys = models.JSONField(default=list, blank=True)

    def __str__(self):
        return f"{self.connection}: {self.calls} calls"


class WebhookEndpoint(TenantModel):
    """A URL (/hooks/<code>/) where an external system posts change events for one connection.

    `code` is the public id in the URL. The signing secrets are encrypted at rest, newest first: while a secret
    rotates, the old one is still accepted until it is dropped. They are write-only: shown once when created or
    rotated (integrations.webhooks), never in the admin, the API or a log line.
    """

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="webhook_endpoints")
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    secrets_ciphertext = models.TextField(blank=True, default="", editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_received_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name

    @property
    def secrets(self):
        """The plain signing secrets, newest first."""
        if not self.secrets_ciphertext:
            return []
        return list(crypto.decrypt_json(self.secrets_ciphertext))

    @secrets.setter
    def secrets(self, value):
        self.secrets_ciphertext = crypto.encrypt_json(list(value)) if value else ""

    @property
    def receive_path(self):
        from django.urls import reverse

        return reverse("integrations:webhook-receive", kwargs={"code": self.code})


class WebhookEventStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    PROCESSING = "processing", "Processing"
    PROCESSED = "processed", "Processed"
    FAILED = "failed", "Failed"
    IGNORED = "ignored", "Ignored"


class WebhookEvent(TenantModel):
    """One verified delivery to a webhook endpoint, stored as received so it can be processed again.

    `event_id` is the provider's id of the event, unique per endpoint: a retried or duplicated delivery is
    recognized by it and never stored or processed twice. `headers` keeps only headers that are not secret
    (no signature, no authorization). Processing names the changed records (`object_name`, `record_ids`; an
    event naming several objects lists them comma-separated) and queues webhook runs (`runs`).
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="events")
    event_id = models.CharField(max_length=255)
    received_at = models.DateTimeField()
    payload = models.JSONField(default=dict, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=WebhookEventStatus.choices, default=WebhookEventStatus.RECEIVED)
    outcome = models.TextField(blank=True, default="")
    object_name = models.CharField(max_length=200, blank=True, default="")
    record_ids = models.JSONField(default=list, blank=True)
    runs = models.ManyToManyField("syncs.SyncRun", blank=True, related_name="webhook_events")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="How many times the event was processed.")
    processing_started_at = models.DateTimeField(
        null=True, blank=True, help_text="When the worker processing it took it: a processing event this old is a "
                                         "dead worker's, and is processed again (integrations.webhooks).")
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            # The dedupe key: concurrent deliveries of one event race on this constraint, not on a read.
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="webhook_event_unique_per_endpoint"),
        ]
        indexes = [
            # The API lists an organization's events, newest first, optionally by endpoint or status.
            models.Index(fields=["organization", "-received_at"], name="webhook_event_org_recent_idx"),
            models.Index(fields=["endpoint", "-received_at"], name="webhook_event_endpoint_idx"),
            # The sweep for events whose processing task was lost: received, oldest first.
            models.Index(fields=["status", "received_at"], name="webhook_event_status_idx"),
        ]

    def __str__(self):
        return f"{self.event_id} ({self.status})"
