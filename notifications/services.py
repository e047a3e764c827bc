"""Channels and rules: creating and changing them after every check, rotating a webhook's signing secret, and
"send test". The API, the admin and the UI call these; evaluation lives in notifications.alerts and sending in
notifications.deliveries.

A channel's secrets (a Slack webhook URL, webhook signing secrets) are write-only: a webhook's secret is returned
once, by create and rotate, to show to the person who asked; nothing else ever returns or logs one.
"""

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.connectors import http
from integrations.connectors.base import WEBHOOK_SECRET_PREFIX, webhook_secret_check
from integrations.errors import ConnectorError
from integrations.webhooks import webhook_secret_generate
from notifications.alerts import alerts_close
from notifications.deliveries import channel_disable, deliveries_queue
from notifications.models import (
    Channel,
    ChannelKind,
    Condition,
    DeliveryEvent,
    Level,
    Rule,
    Scope,
)
from notifications.senders import active_signing_secrets
from syncs.events import log_event

__all__ = [
    "DEFAULT_MINUTES",
    "DEFAULT_THRESHOLDS",
    "channel_create",
    "channel_delete",
    "channel_disable",
    "channel_enable",
    "channel_rotate_secret",
    "channel_send_test",
    "channel_update",
    "rule_create",
    "rule_delete",
    "rule_update",
]

MAX_RECIPIENTS = 50
ROTATION_GRACE = timedelta(hours=24)
DEFAULT_THRESHOLDS = {Condition.FAILURES_PER_HOUR: 5, Condition.UNSYNCED_RECORDS: 100}
DEFAULT_MINUTES = {Condition.TARGET_FAILING: 10}
# Conditions that are about one mapping's runs, or about connections: a scope must be able to contain them.
ALWAYS_CRITICAL = {Condition.AUTH_ERROR}


# --- channels ------------------------------------------------------------------------------------------------------


def _clean_recipients(recipients, field="recipients"):
    if not isinstance(recipients, list | tuple) or not recipients:
        raise ValidationError({field: "Give at least one email address."})
    if len(recipients) > MAX_RECIPIENTS:
        raise ValidationError({field: f"At most {MAX_RECIPIENTS} addresses."})
    cleaned = []
    for address in recipients:
        try:
            validate_email(address)
        except (ValidationError, TypeError):
            raise ValidationError({field: f"{str(address)[:100]!r} is not an email address."}) from None
        cleaned.append(address.strip())
    return list(dict.fromkeys(cleaned))


def _checked_url(url, *, field="url"):
    """The URL if Resync may call it: http(s), and (unless private URLs are allowed) a public address."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationError({field: "This field is required."})
    url = url.strip()
    if len(url) > 2000:
        raise ValidationError({field: "At most 2000 characters."})
    try:
        http.guard_url(url)
    except ConnectorError as exc:
        # The guard's message names the host, never the path or query where a token would be.
        raise ValidationError({field: exc.message}) from None
    return url


def _checked_secret(secret):
    if secret is None:
        return webhook_secret_generate()
    if not isinstance(secret, str) or not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValidationError({"secret": 'A signing secret is "whsec_" followed by base64.'})
    try:
        webhook_secret_check(secret)  # the same rule as a webhook endpoint's: 24 to 64 bytes of key
    except ValueError as exc:
        raise ValidationError({"secret": str(exc)}) from None
    return secret


def _unique_name(model, organization, name, instance=None):
    if not isinstance(name, str) or not name.strip():
        raise ValidationError({"name": "This field is required."})
    others = model.objects.for_org(organization).filter(name=name.strip())
    if instance is not None:
        others = others.exclude(pk=instance.pk)
    if others.exists():
        raise ValidationError({"name": f"Another {model._meta.verbose_name} of your organization has this name."})
    return name.strip()


def _save_unique(instance, **kwargs):
    # The check above answers the usual case; this is for two requests racing to take the same name.
    try:
        with transaction.atomic():
            instance.save(**kwargs)
    except IntegrityError:
        raise ValidationError({"name": "Another channel of your organization has this name."}) from None


def channel_create(*, organization, name, kind, recipients=None, url=None, secret=None):
    """Create a channel; returns (channel, plain secret). The secret is a webhook's signing secret (generated
    unless given), shown only now; None for other kinds."""
    if kind not in ChannelKind.values:
        raise ValidationError({"kind": f"One of {', '.join(ChannelKind.values)}."})
    channel = Channel(organization=organization, kind=kind, name=_unique_name(Channel, organization, name))
    plain = None
    if kind == ChannelKind.EMAIL:
        channel.recipients = _clean_recipients(recipients)
    elif kind == ChannelKind.SLACK:
        channel.secrets = {"url": _checked_url(url)}
    else:
        channel.url = _checked_url(url)
        plain = _checked_secret(secret)
        channel.secrets = {"secrets": [{"secret": plain, "expires_at": None}]}
    _refuse_foreign_settings(kind, recipients=recipients, url=url if kind == ChannelKind.EMAIL else None,
                             secret=secret if kind != ChannelKind.WEBHOOK else None)
    _save_unique(channel)
    log_event("notification_channel_created", channel=str(channel.code), kind=kind)
    return channel, plain


def _refuse_foreign_settings(kind, *, recipients=None, url=None, secret=None):
    if kind != ChannelKind.EMAIL and recipients:
        raise ValidationError({"recipients": "Only email channels have recipients."})
    if url:
        raise ValidationError({"url": "Email channels have recipients, not a URL."})
    if secret:
        raise ValidationError({"secret": "Only webhook channels have a signing secret."})


def channel_update(*, channel, name=None, recipients=None, url=None):
    """Change a channel's name, recipients (email) or URL (Slack, webhook; checked again by the SSRF guard)."""
    if name is not None:
        channel.name = _unique_name(Channel, channel.organization, name, instance=channel)
    _refuse_foreign_settings(channel.kind, recipients=recipients, url=url if channel.kind == ChannelKind.EMAIL
                             else None)
    if recipients is not None:
        channel.recipients = _clean_recipients(recipients)
    if url is not None and channel.kind == ChannelKind.SLACK:
        channel.secrets = {"url": _checked_url(url)}
    elif url is not None and channel.kind == ChannelKind.WEBHOOK:
        channel.url = _checked_url(url)
    _save_unique(channel)
    log_event("notification_channel_updated", channel=str(channel.code))
    return channel


def channel_rotate_secret(*, channel, secret=None, grace=ROTATION_GRACE, now=None):
    """A new signing secret for a webhook channel, returned once. Messages are signed with the new secret and,
    for `grace` (default 24 hours; zero to stop at once), with the previous one too, so the receiver can switch
    over without rejecting a message."""
    if channel.kind != ChannelKind.WEBHOOK:
        raise ValidationError("Only webhook channels have a signing secret.", code="not_a_webhook")
    now = now or timezone.now()
    plain = _checked_secret(secret)
    with transaction.atomic():
        locked = Channel.objects.select_for_update().get(pk=channel.pk)
        old = [entry for entry in locked.secrets.get("secrets", []) if entry["secret"] in
               active_signing_secrets(locked.secrets, now)]
        until = (now + grace).isoformat() if grace else None
        kept = [{"secret": entry["secret"], "expires_at": min(filter(None, [entry["expires_at"], until]))}
                for entry in old if until]
        locked.secrets = {"secrets": [{"secret": plain, "expires_at": None}, *kept]}
        locked.save(update_fields=["secrets_ciphertext", "updated_at"])
    channel.secrets_ciphertext = locked.secrets_ciphertext
    log_event("notification_secret_rotated", channel=str(channel.code), grace_seconds=int(grace.total_seconds()))
    return plain


def channel_enable(*, channel):
    """Send through a disabled channel again (after fixing the endpoint); its failure count starts over."""
    channel.is_enabled, channel.disabled_reason, channel.disabled_at = True, "", None
    channel.failed_deliveries_in_a_row = 0
    channel.save(update_fields=["is_enabled", "disabled_reason", "disabled_at", "failed_deliveries_in_a_row",
                                "updated_at"])
    log_event("notification_channel_enabled", channel=str(channel.code))
    return channel


def channel_delete(*, channel):
    log_event("notification_channel_deleted", channel=str(channel.code))
    channel.delete()


def channel_send_test(*, channel, now=None):
    """Queue a test message through the channel (sent by a worker); returns its delivery."""
    if not channel.is_enabled:
        raise ValidationError("The channel is disabled: enable it first.", code="channel_disabled")
    now = now or timezone.now()
    message = {
        "type": "test", "event": DeliveryEvent.TEST, "level": Level.WARNING, "audience": "team",
        "title": f"Test message from Resync to {channel.name}",
        "summary": f"This is a test of the {channel.get_kind_display()} channel \"{channel.name}\" of "
                   f"{channel.organization.name}. When an alert rule fires, its message arrives here.",
    }
    [delivery] = deliveries_queue(organization=channel.organization, channels=[channel], message=message,
                                  event=DeliveryEvent.TEST, now=now)
    return delivery


# --- rules ---------------------------------------------------------------------------------------------------------

RULE_FIELDS = ("name", "condition", "scope", "connection", "mapping", "threshold", "minutes", "level",
               "cooldown_minutes", "digest_hour", "is_enabled", "customer_facing", "customer_contacts",
               "customer_name")


def _rule_clean(rule, channels):
    organization = rule.organization
    rule.name = _unique_name(Rule, organization, rule.name, instance=rule if rule.pk else None)
    if rule.condition not in Condition.values:
        raise ValidationError({"condition": f"One of {', '.join(Condition.values)}."})
    if rule.scope == Scope.CONNECTION:
        if rule.connection is None:
            raise ValidationError({"connection": "A connection-scoped rule names its connection."})
        rule.mapping = None
    elif rule.scope == Scope.MAPPING:
        if rule.mapping is None:
            raise ValidationError({"mapping": "A mapping-scoped rule names its mapping."})
        rule.connection = None
    else:
        rule.connection = rule.mapping = None
    for field in ("connection", "mapping"):
        related = getattr(rule, field)
        if related is not None and related.organization_id != organization.pk:
            raise ValidationError({field: f"No {field} with this id."})
    if rule.condition in DEFAULT_THRESHOLDS:
        rule.threshold = DEFAULT_THRESHOLDS[rule.condition] if rule.threshold is None else rule.threshold
    else:
        rule.threshold = None
    rule.minutes = (DEFAULT_MINUTES[rule.condition] if rule.minutes is None else rule.minutes) \
        if rule.condition in DEFAULT_MINUTES else None
    if rule.minutes is not None and rule.minutes < 1:
        raise ValidationError({"minutes": "At least 1 minute."})
    if rule.condition in ALWAYS_CRITICAL:
        rule.level = Level.CRITICAL  # an authentication failure stops every sync of the connection
    if not 0 <= rule.digest_hour <= 23:
        raise ValidationError({"digest_hour": "An hour from 0 to 23 (UTC)."})
    if rule.customer_facing:
        rule.customer_contacts = _clean_recipients(rule.customer_contacts, field="customer_contacts")
    elif rule.customer_contacts:
        raise ValidationError({"customer_contacts": "Only a customer-facing rule emails customer contacts."})
    for channel in channels:
        if channel.organization_id != organization.pk:
            raise ValidationError({"channels": "No channel with this id."})
    # A disabled rule tells no one anyway: it may lose its last channel (deleted) and still be switched off.
    if not channels and not rule.customer_facing and rule.is_enabled:
        raise ValidationError({"channels": "Choose at least one channel: a rule that sends nowhere tells no one."})


def rule_create(*, organization, channels=(), **fields):
    unknown = set(fields) - set(RULE_FIELDS)
    if unknown:
        raise TypeError(f"unknown rule fields: {sorted(unknown)}")
    channels = list(channels)
    rule = Rule(organization=organization, **fields)
    _rule_clean(rule, channels)
    with transaction.atomic():
        rule.save()
        rule.channels.set(channels)
    log_event("notification_rule_created", rule=str(rule.code), condition=rule.condition)
    return rule


# A change to any of these makes the rule watch something else: its firing alerts were about the old one.
RULE_IDENTITY_FIELDS = ("condition", "scope", "connection_id", "mapping_id")


def rule_update(*, rule, channels=None, now=None, **fields):
    """Change a rule. Disabling it, or making it watch another condition or scope, closes its firing alerts:
    nothing evaluates a disabled rule, nor an old subject of a changed one, so they would otherwise fire forever."""
    unknown = set(fields) - set(RULE_FIELDS)
    if unknown:
        raise TypeError(f"unknown rule fields: {sorted(unknown)}")
    before = {name: getattr(rule, name) for name in ("is_enabled", *RULE_IDENTITY_FIELDS)}
    for name, value in fields.items():
        setattr(rule, name, value)
    channels = list(rule.channels.all()) if channels is None else list(channels)
    _rule_clean(rule, channels)
    if before["is_enabled"] and not rule.is_enabled:
        reason = "the rule was disabled"
    elif any(before[name] != getattr(rule, name) for name in RULE_IDENTITY_FIELDS):
        reason = "the rule now watches another condition or scope"
    else:
        reason = None
    with transaction.atomic():
        rule.save()
        rule.channels.set(channels)
        closed = alerts_close(rule, reason=reason, now=now or timezone.now()) if reason else 0
    log_event("notification_rule_updated", rule=str(rule.code), alerts_closed=closed)
    return rule


def rule_delete(*, rule):
    log_event("notification_rule_deleted", rule=str(rule.code))
    rule.delete()
