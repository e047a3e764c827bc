"""Notifications: where an organization wants to hear about failures (channels), what it wants to hear about
(rules), the incidents those rules opened (alerts) and every message sent for them (deliveries and their attempts).

Secrets stay in one place: a channel's `secrets_ciphertext` (encrypted at rest, write-only in the API). A
delivery keeps the message it carries and what the receiver answered, never a URL or a key it was sent with.
"""

import uuid

from django.db import models

from accounts.tenancy import TenantModel
from integrations import crypto


class ChannelKind(models.TextChoices):
    EMAIL = "email", "Email"
    SLACK = "slack", "Slack (incoming webhook)"
    WEBHOOK = "webhook", "Webhook (Standard Webhooks, signed)"


class Channel(TenantModel):
    """One place an organization's alerts go: email recipients, a Slack incoming webhook, or a signed webhook.

    `recipients` (email) and `url` (webhook) are not secret. A Slack incoming-webhook URL is itself the
    credential, so it lives encrypted with the webhook signing secrets in `secrets_ciphertext`:
    {"url": ...} for Slack, {"secrets": [{"secret": "whsec_…", "expires_at": iso or null}, ...]} for a webhook,
    newest first (an old secret keeps signing until it expires, so a receiver can switch over).
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=ChannelKind.choices)
    recipients = models.JSONField(default=list, blank=True, help_text="Email addresses (email channels).")
    # Checked by the SSRF guard in notifications.services, not by a form field: a CharField.
    url = models.CharField(max_length=2000, blank=True, default="", help_text="Where a webhook channel posts.")
    secrets_ciphertext = models.TextField(blank=True, default="", editable=False)
    is_enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Deliveries that gave up in a row (a success resets it): the channel is disabled when it reaches the limit.
    failed_deliveries_in_a_row = models.PositiveIntegerField(default=0)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="channel_unique_name_per_org"),
        ]

    def __str__(self):
        return f"{self.name} ({self.kind})"

    @property
    def secrets(self):
        """The decrypted secret material (see the class docstring); {} when there is none."""
        if not self.secrets_ciphertext:
            return {}
        return crypto.decrypt_json(self.secrets_ciphertext)

    @secrets.setter
    def secrets(self, value):
        self.secrets_ciphertext = crypto.encrypt_json(value) if value else ""


class Condition(models.TextChoices):
    EVERY_ERROR = "every_error", "Every error (one message per run)"
    DAILY_DIGEST = "daily_digest", "Daily digest"
    FAILURES_PER_HOUR = "failures_per_hour", "Failures per hour above N"
    TARGET_FAILING = "target_failing", "A target failing for N minutes"
    UNSYNCED_RECORDS = "unsynced_records", "Unsynced records above N"
    AUTH_ERROR = "auth_error", "Authentication error"
    RUN_FAILED = "run_failed", "A run failed"
    AUTO_PAUSED = "auto_paused", "A connection or mapping paused itself"


class Scope(models.TextChoices):
    ORGANIZATION = "organization", "The whole organization"
    CONNECTION = "connection", "One connection"
    MAPPING = "mapping", "One mapping"


class Level(models.TextChoices):
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class Rule(TenantModel):
    """What to be told about, for which part of the organization, through which channels.

    `threshold` is the N of failures per hour (default 5) and unsynced records (default 100); `minutes` the N of
    a target failing (default 10). A customer-facing rule also emails `customer_contacts` (the organization's own
    customer, such as the shop owner whose system is failing) in wording written for them.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    condition = models.CharField(max_length=30, choices=Condition.choices)
    scope = models.CharField(max_length=20, choices=Scope.choices, default=Scope.ORGANIZATION)
    connection = models.ForeignKey("integrations.Connection", null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="notification_rules")
    mapping = models.ForeignKey("mappings.Mapping", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="notification_rules")
    threshold = models.PositiveIntegerField(null=True, blank=True)
    minutes = models.PositiveIntegerField(null=True, blank=True)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.WARNING)
    cooldown_minutes = models.PositiveIntegerField(
        default=60, help_text="While an alert lasts, at most one reminder per this many minutes.")
    digest_hour = models.PositiveSmallIntegerField(default=8, help_text="UTC hour of the daily digest (0–23).")
    channels = models.ManyToManyField(Channel, blank=True, related_name="rules")
    is_enabled = models.BooleanField(default=True)
    customer_facing = models.BooleanField(default=False)
    customer_contacts = models.JSONField(default=list, blank=True, help_text="Email addresses of the customer.")
    customer_name = models.CharField(max_length=200, blank=True, default="")
    last_digest_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["organization", "is_enabled", "condition"], name="rule_org_enabled_idx")]

    def __str__(self):
        return self.name


class AlertState(models.TextChoices):
    FIRING = "firing", "Firing"
    RESOLVED = "resolved", "Resolved"


class Alert(TenantModel):
    """An incident: a rule's condition holding for one subject (a mapping, a connection, the organization).

    At most one firing alert per rule and subject (`key`): it is opened once, updated while the condition lasts
    (notified again only after the rule's cooldown) and resolved, with a recovery notice, when it clears.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="alerts")
    key = models.CharField(max_length=100, help_text='The subject: "mapping:<id>", "connection:<id>" or "org".')
    state = models.CharField(max_length=10, choices=AlertState.choices, default=AlertState.FIRING)
    level = models.CharField(max_length=10, choices=Level.choices)
    title = models.CharField(max_length=300)
    summary = models.TextField(blank=True, default="")
    details = models.JSONField(default=dict, blank=True, help_text="Counts and links of the latest observation.")
    connection = models.ForeignKey("integrations.Connection", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    mapping = models.ForeignKey("mappings.Mapping", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+")
    run = models.ForeignKey("syncs.SyncRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    started_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    occurrences = models.PositiveIntegerField(default=1, help_text="Times the condition was seen while firing.")
    notifications = models.PositiveIntegerField(default=0, help_text="Messages sent: fired, reminders, recovery.")

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            # The incident's identity: two workers seeing the same condition race on this, not on a read.
            models.UniqueConstraint(fields=["rule", "key"], condition=models.Q(state="firing"),
                                    name="alert_one_firing_per_rule_key"),
        ]
        indexes = [
            models.Index(fields=["organization", "-started_at"], name="alert_org_recent_idx"),
            models.Index(fields=["rule", "state"], name="alert_rule_state_idx"),
        ]

    def __str__(self):
        return f"{self.title} ({self.state})"


class DeliveryEvent(models.TextChoices):
    FIRED = "fired", "Alert fired"
    UPDATED = "updated", "Alert still firing"
    RESOLVED = "resolved", "Alert resolved"
    DIGEST = "digest", "Daily digest"
    TEST = "test", "Test message"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    RETRYING = "retrying", "Waiting to retry"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped (channel disabled)"


class Audience(models.TextChoices):
    TEAM = "team", "The organization's team"
    CUSTOMER = "customer", "The organization's customer"


class Delivery(TenantModel):
    """One message to one channel (or to a customer's contacts), with its attempts.

    `message` is what is sent (title, summary, counts, link), rendered per channel kind when sent; `message_id`
    is the same on every attempt (the webhook-id a receiver deduplicates by). Nothing here is secret: errors are
    scrubbed of the channel's secrets before they are stored.
    """

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    channel = models.ForeignKey(Channel, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries")
    alert = models.ForeignKey(Alert, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries")
    rule = models.ForeignKey(Rule, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries")
    event = models.CharField(max_length=10, choices=DeliveryEvent.choices)
    audience = models.CharField(max_length=10, choices=Audience.choices, default=Audience.TEAM)
    kind = models.CharField(max_length=20, choices=ChannelKind.choices)
    recipients = models.JSONField(default=list, blank=True, help_text="Email addresses a customer message goes to.")
    message = models.JSONField(default=dict)
    message_id = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="delivery_org_recent_idx"),
            # The sweep's due retries and stale sends.
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due_idx"),
        ]

    def __str__(self):
        return f"{self.event} via {self.kind} ({self.status})"


class DeliveryAttempt(TenantModel):
    """One try at sending a delivery: when, how long, and what came back (the delivery log)."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    attempted_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    succeeded = models.BooleanField(default=False)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self):
        return f"Attempt {self.number} of delivery {self.delivery_id}"
