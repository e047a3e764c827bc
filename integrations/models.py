"""Connections to external systems, and the sandbox system Resync simulates in its own database."""

import uuid

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
    created_at = models.DateTimeField(auto_now_add=True)
    modified_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["modified_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "object_name", "external_id"], name="sandbox_record_unique_external_id"
            ),
        ]
        indexes = [models.Index(fields=["connection", "object_name", "modified_at"], name="sandbox_read_idx")]

    def __str__(self):
        return f"{self.object_name}/{self.external_id}"


class SandboxCallCounter(models.Model):
    """Counts API calls made to a sandbox connection, so injected faults are deterministic."""

    connection = models.OneToOneField(Connection, on_delete=models.CASCADE, related_name="sandbox_counter")
    calls = models.PositiveBigIntegerField(default=0)

    def __str__(self):
        return f"{self.connection}: {self.calls} calls"
