"""Deliveries: queuing the messages of an alert, sending each one from a worker, and retrying over about a day.

A delivery is a row first and a task on commit (carrying only its id), so a sync that opens an alert never waits
for a channel: the worker that finishes the run writes rows and nothing else. Each attempt claims the delivery
with a conditional update, so two workers never send it twice at once. A failed attempt waits for the next delay
of RETRY_DELAYS (the periodic sweep re-queues it when it is due); after the last one the delivery has failed,
and a channel whose deliveries fail DISABLE_AFTER_FAILED_DELIVERIES times in a row, or that answers 410 Gone,
is disabled with its reason.
"""

import logging
import uuid
from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.tasks import async_task

from notifications import senders
from notifications.models import Audience, Channel, ChannelKind, Delivery, DeliveryAttempt, DeliveryStatus
from syncs.events import log_event

# After the first attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (Standard Webhooks' suggested schedule,
# about 27 hours in all). The sweep runs every minute, so the first retry comes within a minute.
RETRY_DELAYS = (
    timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=5),
    timedelta(hours=10), timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
DISABLE_AFTER_FAILED_DELIVERIES = 3
# A delivery left "sending" this long belongs to a worker that died mid-attempt: it is tried again.
STALE_SENDING = timedelta(minutes=10)
SWEEP_LIMIT = 500
LOST_TASK_AFTER = timedelta(minutes=2)


def new_message_id():
    return f"msg_{uuid.uuid4().hex}"


def deliveries_queue(*, organization, channels=(), message, event, now, alert=None, rule=None,
                     customer_message=None, customer_contacts=()):
    """One delivery per channel (a disabled channel's is recorded as skipped), plus one email to the customer's
    contacts when `customer_message` is given; each enabled one is queued for a worker on commit."""
    rows = []
    for channel in channels:
        enabled = channel.is_enabled
        rows.append(Delivery(
            organization=organization, channel=channel, alert=alert, rule=rule, event=event, kind=channel.kind,
            message=message, message_id=new_message_id(), created_at=now,
            status=DeliveryStatus.PENDING if enabled else DeliveryStatus.SKIPPED,
            error="" if enabled else f"The channel is disabled: {channel.disabled_reason}"[:500],
        ))
    if customer_message is not None and customer_contacts:
        rows.append(Delivery(
            organization=organization, channel=None, alert=alert, rule=rule, event=event, kind=ChannelKind.EMAIL,
            audience=Audience.CUSTOMER, recipients=list(customer_contacts), message=customer_message,
            message_id=new_message_id(), created_at=now,
        ))
    if not rows:
        return []
    created = Delivery.objects.bulk_create(rows)
    due = [delivery.pk for delivery in created if delivery.status == DeliveryStatus.PENDING]
    transaction.on_commit(lambda: [_enqueue(pk) for pk in due])
    return created


def _enqueue(delivery_id):
    async_task("notifications.tasks.deliver", delivery_id, task_name=f"notification-delivery-{delivery_id}")


def delivery_attempt(*, delivery_id, now=None):
    """Send a due delivery once and record the attempt; returns the delivery, or None when it was not ours to
    send (delivered already, not yet due, or another worker has it)."""
    now = now or timezone.now()
    claimed = Delivery.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        pk=delivery_id, status__in=(DeliveryStatus.PENDING, DeliveryStatus.RETRYING),
    ).update(status=DeliveryStatus.SENDING, attempts=F("attempts") + 1, last_attempt_at=now)
    if not claimed:
        return None
    delivery = Delivery.objects.select_related("channel").get(pk=delivery_id)
    channel = delivery.channel
    if channel is not None and not channel.is_enabled:
        delivery.status, delivery.error = DeliveryStatus.SKIPPED, f"The channel is disabled: {channel.disabled_reason}"
        delivery.attempts -= 1  # nothing was tried
        Delivery.objects.filter(pk=delivery.pk).update(status=delivery.status, error=delivery.error[:500],
                                                       attempts=F("attempts") - 1)
        return delivery
    try:
        result, duration_ms = senders.send(delivery, channel, now=now)
    except Exception as exc:  # a bug or an unreadable secret must fail the attempt, not leave it "sending"
        result, duration_ms = senders.SendResult(False, error=f"{type(exc).__name__}"), 0
        log_event("notification_send_crashed", level=logging.ERROR, delivery=str(delivery.code),
                  error_type=type(exc).__name__)
    DeliveryAttempt.objects.create(
        organization_id=delivery.organization_id, delivery=delivery, number=delivery.attempts, attempted_at=now,
        duration_ms=duration_ms, succeeded=result.ok, response_code=result.response_code, error=result.error,
    )
    delivery.response_code, delivery.error = result.response_code, result.error
    if result.ok:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = DeliveryStatus.DELIVERED, now, None
    elif result.gone or result.permanent or delivery.attempts >= MAX_ATTEMPTS:
        delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
    else:
        delivery.status = DeliveryStatus.RETRYING
        delivery.next_attempt_at = now + RETRY_DELAYS[delivery.attempts - 1]
    delivery.save(update_fields=["status", "response_code", "error", "delivered_at", "next_attempt_at"])
    if channel is not None:
        _channel_after_attempt(channel, delivery, result, now)
    log_event(
        "notification_delivery_attempt", level=logging.INFO if result.ok else logging.WARNING,
        delivery=str(delivery.code), channel=str(channel.code) if channel else None, kind=delivery.kind,
        event_type=delivery.event, attempt=delivery.attempts, status=delivery.status,
        response_code=result.response_code, error_message=result.error or None,
    )
    return delivery


def _channel_after_attempt(channel, delivery, result, now):
    if result.ok:
        Channel.objects.filter(pk=channel.pk).update(failed_deliveries_in_a_row=0, last_success_at=now)
        return
    Channel.objects.filter(pk=channel.pk).update(last_failure_at=now)
    if result.gone:
        channel_disable(channel=channel, reason=f"The endpoint answered 410 Gone on {now:%Y-%m-%d %H:%M} UTC.", now=now)
        return
    if delivery.status != DeliveryStatus.FAILED:
        return
    Channel.objects.filter(pk=channel.pk).update(failed_deliveries_in_a_row=F("failed_deliveries_in_a_row") + 1)
    channel.refresh_from_db(fields=["failed_deliveries_in_a_row"])
    if channel.failed_deliveries_in_a_row >= DISABLE_AFTER_FAILED_DELIVERIES:
        channel_disable(channel=channel, now=now, reason=(
            f"{channel.failed_deliveries_in_a_row} deliveries in a row failed after every retry; last: "
            f"{delivery.error}")[:500])


def channel_disable(*, channel, reason, now=None):
    """Stop sending through a channel (its queued deliveries are skipped) until someone enables it again."""
    now = now or timezone.now()
    Channel.objects.filter(pk=channel.pk).update(is_enabled=False, disabled_reason=reason[:500], disabled_at=now,
                                                 updated_at=now)
    channel.is_enabled, channel.disabled_reason, channel.disabled_at = False, reason[:500], now
    Delivery.objects.filter(channel=channel, status__in=(DeliveryStatus.PENDING, DeliveryStatus.RETRYING)).update(
        status=DeliveryStatus.SKIPPED, next_attempt_at=None, error=f"The channel was disabled: {reason}"[:500])
    log_event("notification_channel_disabled", level=logging.WARNING, channel=str(channel.code), reason=reason)


def deliveries_requeue_due(*, now=None):
    """The sweep's share: deliveries whose retry is due, and those a dead worker left sending; returns their pks."""
    now = now or timezone.now()
    stale = Delivery.objects.filter(status=DeliveryStatus.SENDING, last_attempt_at__lt=now - STALE_SENDING)
    # Back to retrying, due now: the attempt that died counts as made (the receiver may have got it).
    stale.update(status=DeliveryStatus.RETRYING, next_attempt_at=now)
    # A pending delivery's task was queued on commit: it is re-queued only once that task looks lost.
    due = Q(status=DeliveryStatus.RETRYING, next_attempt_at__lte=now) | Q(
        status=DeliveryStatus.PENDING, created_at__lt=now - LOST_TASK_AFTER)
    pks = list(Delivery.objects.filter(due).order_by("pk").values_list("pk", flat=True)[:SWEEP_LIMIT])
    for pk in pks:
        _enqueue(pk)
    return pks
