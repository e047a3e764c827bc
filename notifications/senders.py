"""Sending one delivery: the message rendered for its channel kind, sent once, and what came back.

Email goes through Django's mail API (the backend settings.EMAIL_URL configures); Slack and webhooks go through
the one HTTP module (integrations.connectors.http: SSRF guard, timeout). Nothing here retries: a delivery's
attempts are spread over about a day by notifications.services, so one attempt is one request.

Outbound webhooks follow the Standard Webhooks specification with the signer inbound webhooks verify with
(integrations.connectors.base.webhook_signature): webhook-id (the delivery's message id, the same on every
attempt), webhook-timestamp, and webhook-signature with one "v1,<base64>" per secret still signing, so a
receiver keeps verifying while its secret rotates.
"""

import dataclasses
import json
import time
from datetime import datetime

from django.conf import settings
from django.core.mail import EmailMessage
from django.utils import timezone

from integrations.connectors import http
from integrations.connectors.base import webhook_signature
from integrations.errors import ConnectorError
from integrations.redaction import scrub_text
from notifications.models import ChannelKind, DeliveryEvent

MAX_ERROR_LENGTH = 500
USER_AGENT = "Resync-Notifications/1"
LEVEL_EMOJI = {"critical": ":red_circle:", "warning": ":warning:"}
RESOLVED_EMOJI = ":white_check_mark:"


@dataclasses.dataclass
class SendResult:
    ok: bool
    response_code: int | None = None
    error: str = ""
    # The receiver said the endpoint is gone for good (410): the channel is disabled, nothing is retried.
    gone: bool = False
    # Retrying cannot help (an address the SSRF guard refuses, a channel without its secret).
    permanent: bool = False


def active_signing_secrets(material, now):
    """The webhook secrets that still sign at `now`, newest first: the current one and those in their grace."""
    found = []
    for entry in material.get("secrets", []):
        expires_at = entry.get("expires_at")
        if expires_at is None or datetime.fromisoformat(expires_at) > now:
            found.append(entry["secret"])
    return found


def channel_secret_values(channel):
    """Every secret value of a channel, to scrub out of any text that is stored or logged."""
    if channel is None:
        return []
    try:
        material = channel.secrets
    except Exception:  # unreadable with the current keys: nothing to scrub that could be known
        return []
    values = [entry["secret"] for entry in material.get("secrets", [])]
    if material.get("url"):
        values.append(material["url"])
    return values


# --- rendering -----------------------------------------------------------------------------------------------------


def email_text(message):
    lines = [message.get("summary", "")]
    counts = message.get("counts") or {}
    if counts:
        lines.append("")
        lines += [f"  {name.replace('_', ' ')}: {value}" for name, value in counts.items()]
    if message.get("link"):
        lines += ["", f"Open it in Resync: {message['link']}"]
    if message.get("footer"):
        lines += ["", message["footer"]]
    return "\n".join(lines).strip() + "\n"


def email_subject(message):
    if message.get("audience") == "customer":
        return message["title"]
    level = message.get("level", "warning").upper()
    return f"[Resync] [{level}] {message['title']}"


def slack_payload(message):
    """A Block Kit message: header, summary, counts as fields, a button to the run or errors, and context."""
    resolved = message.get("event") == DeliveryEvent.RESOLVED
    emoji = RESOLVED_EMOJI if resolved else LEVEL_EMOJI.get(message.get("level"), "")
    title = f"{emoji} {message['title']}".strip()
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": message.get("summary", "")[:3000] or " "}},
    ]
    counts = message.get("counts") or {}
    if counts:
        fields = [{"type": "mrkdwn", "text": f"*{name.replace('_', ' ').capitalize()}*\n{value}"}
                  for name, value in list(counts.items())[:10]]
        blocks.append({"type": "section", "fields": fields})
    if message.get("link"):
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "text": {"type": "plain_text", "text": message.get("link_label") or "Open in Resync"},
            "url": message["link"],
        }]})
    context = [f"*{message.get('level', 'warning').capitalize()}*"]
    if message.get("rule"):
        context.append(f"Rule: {message['rule']['name']}")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]})
    return {"text": title, "blocks": blocks}


def webhook_body(message, *, sent_at):
    """The JSON body of an outbound webhook: {"type", "timestamp", "data"}, as Standard Webhooks suggests."""
    data = {key: value for key, value in message.items() if key not in ("type", "audience")}
    body = {"type": message.get("type", "alert"), "timestamp": sent_at.isoformat().replace("+00:00", "Z"),
            "data": data}
    return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str).encode()


# --- sending -------------------------------------------------------------------------------------------------------


def _accept_any_answer(response, secrets=()):
    # Every status comes back to the caller: a webhook's non-2xx is a failed attempt with its status recorded,
    # not a connector error to classify.
    return None


def _post(url, *, secrets, **kwargs):
    try:
        response = http.request("POST", url, retry_delays=[], classify=_accept_any_answer, secrets=secrets,
                                allow_redirects=False, **kwargs)
    except http.UnsafeURL as exc:
        return SendResult(False, error=scrub_text(exc.message, secrets), permanent=True)
    except ConnectorError as exc:
        return SendResult(False, error=scrub_text(f"{exc.message} ({exc.code})", secrets))
    if 200 <= response.status_code < 300:
        return SendResult(True, response.status_code)
    snippet = scrub_text(response.text[:200], secrets).strip()
    error = f"HTTP {response.status_code}" + (f": {snippet}" if snippet else "")
    return SendResult(False, response.status_code, error[:MAX_ERROR_LENGTH], gone=response.status_code == 410)


def send_email(delivery, channel):
    recipients = delivery.recipients if channel is None else channel.recipients
    if not recipients:
        return SendResult(False, error="No recipients.", permanent=True)
    email = EmailMessage(
        subject=email_subject(delivery.message), body=email_text(delivery.message),
        from_email=settings.DEFAULT_FROM_EMAIL, to=list(recipients),
        headers={"X-Resync-Message-Id": delivery.message_id},
    )
    try:
        email.send(fail_silently=False)
    except Exception as exc:  # smtplib's errors, OSError (refused, DNS), a backend's own
        return SendResult(False, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH])
    return SendResult(True)


def send_slack(delivery, channel):
    url = channel.secrets.get("url")
    if not url:
        return SendResult(False, error="The channel has no Slack webhook URL.", permanent=True)
    return _post(url, secrets=[url], json=slack_payload(delivery.message), headers={"User-Agent": USER_AGENT})


def send_webhook(delivery, channel, *, now=None):
    now = now or timezone.now()
    material = channel.secrets
    signing = active_signing_secrets(material, now)
    if not signing:
        return SendResult(False, error="The channel has no signing secret.", permanent=True)
    body = webhook_body(delivery.message, sent_at=now)
    timestamp = str(int(now.timestamp()))
    signatures = " ".join(
        webhook_signature(secret, webhook_id=delivery.message_id, timestamp=timestamp, raw_body=body)
        for secret in signing
    )
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "webhook-id": delivery.message_id,
               "webhook-timestamp": timestamp, "webhook-signature": signatures}
    return _post(channel.url, secrets=[*signing, *channel_secret_values(channel)], data=body, headers=headers)


def send(delivery, channel, *, now=None):
    """Send `delivery` once through `channel` (None: a customer's contacts by email); returns a SendResult with
    its duration in milliseconds."""
    started = time.monotonic()
    if delivery.kind == ChannelKind.EMAIL:
        result = send_email(delivery, channel)
    elif delivery.kind == ChannelKind.SLACK:
        result = send_slack(delivery, channel)
    else:
        result = send_webhook(delivery, channel, now=now)
    result.error = scrub_text(result.error, channel_secret_values(channel))[:MAX_ERROR_LENGTH]
    return result, int((time.monotonic() - started) * 1000)
