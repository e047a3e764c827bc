"""Inbound webhooks: endpoints and their secrets, receiving a delivery, and turning it into webhook runs.

Receiving verifies and stores, and does nothing else: the connector checks the signature (nothing is stored
when it fails), the delivery is stored once per event id (the unique constraint decides, even for concurrent
deliveries), and processing is queued for a worker. Processing asks the connector which records changed and
queues one webhook run per active mapping of that source object; the run re-fetches exactly those records.
"""

import base64
import json
import logging
import re
import secrets as random_secrets
import uuid
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from config.api import problem
from integrations.connectors.base import (
    WEBHOOK_SECRET_PREFIX,
    WebhookPayloadError,
    WebhookSignatureError,
    webhook_secret_check,
)
from integrations.crypto import CredentialsDecryptionError
from integrations.models import WebhookEndpoint, WebhookEvent, WebhookEventStatus
from integrations.redaction import SECRET_KEY_PATTERN, scrub_text
from syncs.events import log_event

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_RECORDS_PER_WEBHOOK_RUN",
    "WebhookPayloadError",
    "WebhookSignatureError",
    "webhook_endpoint_create",
    "webhook_endpoint_drop_old_secrets",
    "webhook_endpoint_rotate_secret",
    "webhook_event_process",
    "webhook_event_replay",
    "webhook_events_requeue_lost",
    "webhook_receive",
]

MAX_BODY_BYTES = 1024 * 1024
# A queued webhook run takes the records of later events until it holds this many; then a new run starts.
MAX_RECORDS_PER_WEBHOOK_RUN = 1000
MAX_EVENT_ID_LENGTH = WebhookEvent._meta.get_field("event_id").max_length
# Headers that carry or derive from a secret are never stored: signatures (Stripe-Signature, X-Hub-Signature-256),
# HMACs (X-Shopify-Hmac-Sha256), authorization, cookies, tokens.
SECRET_HEADER_PATTERN = re.compile(rf"{SECRET_KEY_PATTERN.pattern}|hmac|sign|digest", re.IGNORECASE)


# --- endpoints and secrets --------------------------------------------------------------------------------------


def webhook_secret_generate():
    """A new signing secret in the Standard Webhooks format: "whsec_" + base64 of 24 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(24)).decode()


def _checked_secret(secret):
    if secret is None:
        return webhook_secret_generate()
    try:
        webhook_secret_check(secret)
    except ValueError as exc:
        raise ValidationError({"secret": str(exc)}) from None
    return secret


def webhook_endpoint_create(*, connection, name, secret=None):
    """Create an endpoint of `connection`; returns (endpoint, plain secret). The secret is shown only now.

    `secret` is for providers that generate their own (paste it here); without it one is generated.
    """
    plain = _checked_secret(secret)
    endpoint = WebhookEndpoint(organization=connection.organization, connection=connection, name=name)
    endpoint.secrets = [plain]
    endpoint.save()
    log_event("webhook_endpoint_created", endpoint=str(endpoint.code), connection=str(connection.code))
    return endpoint, plain


def webhook_endpoint_rotate_secret(*, endpoint, keep_old=True, secret=None):
    """Put a new secret first and return it (shown only now).

    With keep_old the previous secrets are still accepted, so the sender can switch over without losing a
    delivery; call webhook_endpoint_drop_old_secrets once it has. Without keep_old they stop working at once.
    """
    plain = _checked_secret(secret)
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.secrets = [plain, *(locked.secrets if keep_old else [])]
        locked.save(update_fields=["secrets_ciphertext"])
    endpoint.secrets_ciphertext = locked.secrets_ciphertext
    log_event("webhook_secret_rotated", endpoint=str(endpoint.code), kept_old=keep_old)
    return plain


def webhook_endpoint_drop_old_secrets(*, endpoint):
    """Keep only the newest secret: deliveries signed with an older one are rejected from now on."""
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.secrets = locked.secrets[:1]
        locked.save(update_fields=["secrets_ciphertext"])
    endpoint.secrets_ciphertext = locked.secrets_ciphertext
    log_event("webhook_old_secrets_dropped", endpoint=str(endpoint.code))
    return endpoint


# --- receiving ----------------------------------------------------------------------------------------------------


def _rejected(status_code, *, code, detail, endpoint=None, title=None):
    body = problem(status_code, code=code, detail=detail, title=title)
    log_event(
        "webhook_rejected",
        level=logging.WARNING,
        endpoint=str(endpoint.code) if endpoint else None,
        status=status_code,
        reason=code,
        problem_uuid=body["uuid"],
    )
    return status_code, body


def _stored_headers(headers, secrets):
    return {
        name: scrub_text(str(value), secrets=secrets)
        for name, value in sorted(headers.items())
        if not SECRET_HEADER_PATTERN.search(name)
    }


def _reject_constant(name):
    # NaN and Infinity are not JSON: the database would refuse to store them (a 500, or on SQLite an
    # IntegrityError that would pass for a duplicate).
    raise ValueError(f"{name} is not JSON")


def _contains_nul(value):
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


def _active_endpoint(code):
    try:
        code = uuid.UUID(str(code))
    except ValueError:
        return None
    return (
        WebhookEndpoint.objects.select_related("connection", "organization")
        .filter(code=code, is_active=True)
        .first()
    )


def webhook_receive(*, code, headers, raw_body, method="POST", url="", now=None):
    """Verify and store one delivery; returns (HTTP status, body). Never does sync work: processing is queued.

    202 {"status": "accepted", "event": <event code>} for a new event; 200 {"status": "duplicate"} for an event
    id already received (nothing stored or processed again); problem JSON otherwise: 404 for an unknown or
    inactive endpoint (the same body for both), 413 for a body over MAX_BODY_BYTES, 401 for a missing, stale or
    wrong signature and 400 for a body that is not JSON or has no event id, with nothing stored. `method` and
    `url` (the full URL as received) go to the connector for schemes that sign them.
    """
    now = now or timezone.now()
    headers = {str(name).lower(): str(value) for name, value in headers.items()}
    endpoint = _active_endpoint(code)
    if endpoint is None:
        return _rejected(404, code="webhook_endpoint_not_found", detail="There is no webhook endpoint at this URL.")
    if len(raw_body) > MAX_BODY_BYTES:
        return _body_too_large(endpoint)
    connector = endpoint.connection.get_connector()
    try:
        secrets = endpoint.secrets
    except CredentialsDecryptionError:
        # The encryption keys changed without re-encrypting: nothing can be verified, so nothing is trusted.
        log_event("webhook_secrets_unreadable", level=logging.ERROR, endpoint=str(endpoint.code))
        secrets = []
    try:
        connector.verify_webhook(secrets=secrets, method=method, url=url, headers=headers, raw_body=raw_body,
                                 now=now)
    except WebhookSignatureError as exc:
        return _rejected(401, code=exc.code, detail=exc.message, endpoint=endpoint, title="Invalid signature")
    try:
        payload = json.loads(raw_body, parse_constant=_reject_constant)
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return _rejected(400, code="body_not_json", detail="The body is not JSON.", endpoint=endpoint)
    if _contains_nul(payload):
        # Valid JSON, but PostgreSQL cannot store U+0000 in jsonb: refuse it the same way on every database.
        return _rejected(400, code="body_not_storable", detail="The body contains a U+0000 character.",
                         endpoint=endpoint)
    try:
        event_id = connector.webhook_event_id(headers=headers, payload=payload)
    except WebhookPayloadError as exc:
        return _rejected(400, code=exc.code, detail=exc.message, endpoint=endpoint)
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        # Not truncated: two events whose ids share a prefix would dedupe into one.
        return _rejected(400, code="event_id_too_long", detail="The event id is too long.", endpoint=endpoint)
    with transaction.atomic():
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(last_received_at=now)
        try:
            # The unique (endpoint, event_id) constraint is the dedupe: two concurrent deliveries of one event
            # both reach this insert, and exactly one of them wins.
            with transaction.atomic():
                event = WebhookEvent.objects.create(
                    organization=endpoint.organization,
                    endpoint=endpoint,
                    event_id=event_id,
                    received_at=now,
                    payload=payload,
                    headers=_stored_headers(headers, secrets),
                )
        except IntegrityError:
            if not WebhookEvent.objects.filter(endpoint=endpoint, event_id=event_id).exists():
                raise  # not the dedupe constraint: a real error
            event = None
        else:
            transaction.on_commit(
                lambda: async_task(
                    "integrations.tasks.process_webhook_event", event.pk, task_name=f"webhook-event-{event.pk}"
                )
            )
    if event is None:
        log_event("webhook_duplicate", endpoint=str(endpoint.code), webhook_event_id=event_id)
        return 200, {"status": "duplicate"}
    log_event("webhook_received", endpoint=str(endpoint.code), webhook_event_id=event_id, webhook_event=str(event.code))
    return 202, {"status": "accepted", "event": str(event.code)}


def _body_too_large(endpoint=None):
    return _rejected(
        413,
        code="body_too_large",
        detail=f"The body is larger than {MAX_BODY_BYTES} bytes.",
        endpoint=endpoint,
    )


def webhook_body_too_large():
    """The answer to a delivery whose body is too large to read (the view checks Content-Length first)."""
    return _body_too_large()


# --- processing ----------------------------------------------------------------------------------------------------


# A processing event whose worker went quiet this long is taken for a dead worker's and processed again. Processing
# only parses the payload and queues runs (seconds); the lost-events schedule looks every 5 minutes.
PROCESSING_STALE_AFTER = timedelta(minutes=10)
# An event whose workers died this many times while processing it is failed, not processed again: what kills them
# would kill the next one too. An operator's replay is still possible.
MAX_PROCESSING_ATTEMPTS = 3


class _TakenOver(Exception):
    """Another worker claimed the event since this one did (this one was taken for dead): it acts no further."""


def _claimable(now):
    """Events a worker may claim: received, or processing by a worker that died (its claim is stale)."""
    stale = Q(processing_started_at__lt=now - PROCESSING_STALE_AFTER) | Q(processing_started_at__isnull=True)
    return Q(status=WebhookEventStatus.RECEIVED) | (
        Q(status=WebhookEventStatus.PROCESSING, attempts__lt=MAX_PROCESSING_ATTEMPTS) & stale)


def _claim(event_pk, condition, *, now):
    """Take the event for this worker; its claim (the attempt number) or None. Under the row's lock, so the number
    read is this claim's: the event is finished only by the claim that is still the latest."""
    with transaction.atomic():
        attempts = (WebhookEvent.objects.select_for_update().filter(condition, pk=event_pk)
                    .values_list("attempts", flat=True).first())
        if attempts is None:
            return None
        WebhookEvent.objects.filter(pk=event_pk).update(
            status=WebhookEventStatus.PROCESSING, processing_started_at=now, attempts=attempts + 1)
    return attempts + 1


def webhook_event_process(*, event_pk):
    """Process a received event once: claim it, then queue its webhook runs. None when it was not ours.

    An event left processing by a worker that died is claimed again once its claim is PROCESSING_STALE_AFTER old.
    Its webhook runs and its outcome are saved in one transaction, so a worker that dies in the middle leaves no
    run behind: processing it again queues its runs once.
    """
    now = timezone.now()
    claim = _claim(event_pk, _claimable(now), now=now)
    if claim is None:
        # Processed already, or another worker has it.
        code = WebhookEvent.objects.filter(pk=event_pk).values_list("code", flat=True).first()
        log_event("webhook_event_claim_skipped", webhook_event=str(code) if code else None)
        return None
    event = _event_for_processing(event_pk)
    if claim > 1:  # only a claim of a processing event (its worker died) comes after another
        log_event("webhook_event_taken_over", level=logging.WARNING, webhook_event=str(event.code), attempts=claim)
    return _process(event, claim)


def webhook_event_replay(*, event):
    """Process a stored event again, whatever its status (an operator's action): new runs for its records."""
    claim = _claim(event.pk, Q(), now=timezone.now())
    return _process(_event_for_processing(event.pk), claim)


def webhook_events_requeue_lost(*, older_than=timedelta(minutes=10), now=None):
    """Queue processing again for events still `received` long after they arrived, and for events left
    `processing` by a worker that died; returns their pks. Fails events whose workers died MAX_PROCESSING_ATTEMPTS
    times.

    The task is queued on commit and carries only the id, so a broker that loses it (Redis with a killed worker)
    leaves the event received, not gone; a worker killed while processing leaves it processing with its claim's
    time. Queuing twice is harmless: processing claims the event first.
    """
    now = now or timezone.now()
    given_up = list(WebhookEvent.objects.filter(
        status=WebhookEventStatus.PROCESSING, attempts__gte=MAX_PROCESSING_ATTEMPTS,
        processing_started_at__lt=now - PROCESSING_STALE_AFTER,
    ).values_list("pk", "code"))
    if given_up:
        WebhookEvent.objects.filter(pk__in=[pk for pk, _code in given_up], status=WebhookEventStatus.PROCESSING,
                                    processing_started_at__lt=now - PROCESSING_STALE_AFTER).update(
            status=WebhookEventStatus.FAILED, processed_at=now, outcome=(
                f"Its worker stopped {MAX_PROCESSING_ATTEMPTS} times while processing it; replay it once the "
                "cause is found."))
        log_event("webhook_events_given_up", level=logging.ERROR,
                  webhook_events=[str(code) for _pk, code in given_up])
    lost = (Q(status=WebhookEventStatus.RECEIVED, received_at__lt=now - older_than)
            | (_claimable(now) & Q(status=WebhookEventStatus.PROCESSING, received_at__lt=now - older_than)))
    events = list(WebhookEvent.objects.filter(lost).order_by("pk").values_list("pk", "code", "status")[:1000])
    for pk, _code, _status in events:
        async_task("integrations.tasks.process_webhook_event", pk, task_name=f"webhook-event-{pk}")
    if events:
        log_event("webhook_events_requeued", level=logging.WARNING, count=len(events),
                  webhook_events=[str(code) for _pk, code, _status in events],
                  processing=sum(status == WebhookEventStatus.PROCESSING for _pk, _code, status in events))
    return [pk for pk, _code, _status in events]


def _event_for_processing(event_pk):
    return WebhookEvent.objects.select_related("organization", "endpoint", "endpoint__connection").get(pk=event_pk)


def _finish(event, claim, status, outcome):
    """Save the outcome, if the event is still this claim's; raises _TakenOver otherwise (inside a transaction,
    that rolls back the runs this claim queued)."""
    now = timezone.now()
    finished = WebhookEvent.objects.filter(pk=event.pk, status=WebhookEventStatus.PROCESSING, attempts=claim).update(
        status=status, outcome=outcome, object_name=event.object_name, record_ids=event.record_ids,
        processed_at=now)
    if not finished:
        raise _TakenOver
    event.status, event.outcome, event.processed_at = status, outcome, now
    return event


def _logged(event, runs):
    log_event(
        "webhook_event_processed",
        level=logging.WARNING if event.status == WebhookEventStatus.FAILED else logging.INFO,
        webhook_event=str(event.code),
        webhook_event_id=event.event_id,
        status=event.status,
        outcome=event.outcome,
        runs=[str(run.code) for run in runs],
    )
    return event


def _process(event, claim):
    try:
        return _logged(*_outcome(event, claim))
    except _TakenOver:
        log_event("webhook_event_taken_over_elsewhere", level=logging.WARNING, webhook_event=str(event.code))
        return None


def _outcome(event, claim):
    """Process the event under `claim`: (event, the runs it queued)."""
    connection = event.endpoint.connection
    try:
        changes = connection.get_connector().parse_webhook(event.payload, headers=event.headers or {})
    except WebhookPayloadError as exc:
        return _finish(event, claim, WebhookEventStatus.FAILED, f"The payload was not understood: {exc.message}"), []
    by_object = {}
    for change in changes:
        by_object.setdefault(change.object_name, {}).update(dict.fromkeys(change.record_ids))
    event.object_name = ", ".join(by_object)[:200]
    event.record_ids = [record_id for ids in by_object.values() for record_id in ids]
    if not event.record_ids:
        return _finish(event, claim, WebhookEventStatus.IGNORED, "The event names no records to sync."), []
    try:
        # The runs and the event's outcome commit together: a worker that dies before the commit leaves the event
        # processing and no run, and the next claim queues them once; a claim taken over rolls its runs back.
        with transaction.atomic():
            if not WebhookEvent.objects.select_for_update().filter(pk=event.pk, attempts=claim).exists():
                raise _TakenOver
            queued = []
            for object_name, ids in by_object.items():
                queued += _queue_webhook_runs(event, connection, object_name, list(ids))
            event.runs.add(*(run for _mapping, run in queued))
            if not queued:
                outcome = (WebhookEventStatus.IGNORED,
                           f"No active mapping syncs {event.object_name} from {connection}.")
            else:
                summary = "; ".join(f"run {run.code} of {mapping}" for mapping, run in queued)
                outcome = (WebhookEventStatus.PROCESSED, f"{len(event.record_ids)} record(s) queued: {summary}.")
            return _finish(event, claim, *outcome), [run for _mapping, run in queued]
    except (_TakenOver, OperationalError, InterfaceError):
        # Losing the database is no fault of the event: it stays processing and is processed again once its claim
        # is stale (webhook_events_requeue_lost).
        raise
    except Exception as exc:
        log_event("webhook_event_failed", level=logging.ERROR, webhook_event=str(event.code), error=repr(exc))
        failure = f"Queuing the sync failed: {exc.__class__.__name__}"
        return _finish(event, claim, WebhookEventStatus.FAILED, failure), []


def _queue_webhook_runs(event, connection, object_name, record_ids):
    """One webhook run per active mapping of this source object; returns [(mapping, run)].

    A webhook run of the mapping that is still queued (no worker has claimed it yet) takes these records too,
    so a burst of events becomes one run per mapping, not one per event: runs of one mapping race on its links.
    """
    from mappings.models import Mapping
    from syncs.models import Resolution, RunStatus, SyncRun, Trigger
    from syncs.services import sync_run_queue

    mappings = Mapping.objects.for_org(event.organization).filter(
        source_connection=connection, source_object=object_name, is_active=True
    ).order_by("pk")
    queued = []
    for mapping in mappings:
        # The worker's claim is a conditional update from queued; this lock makes it wait for the added
        # records, and its re-read after the claim sees them.
        pending = (
            SyncRun.objects.for_org(event.organization)
            .select_for_update()
            .filter(mapping=mapping, trigger=Trigger.WEBHOOK, status=RunStatus.QUEUED, claims=0, is_test=False)
            .order_by("pk")
            .first()
        )
        if pending is not None:
            merged = list(dict.fromkeys([*(pending.options.get("records") or []), *record_ids]))
            if len(merged) <= MAX_RECORDS_PER_WEBHOOK_RUN:
                pending.options = {**pending.options, "records": merged}
                pending.save(update_fields=["options"])
                queued.append((mapping, pending))
                continue
        options = {"records": record_ids, "resolution": Resolution.REPLAY.value}
        run = sync_run_queue(mapping=mapping, trigger=Trigger.WEBHOOK, options=options)
        queued.append((mapping, run))
    return queued
