"""Channels end to end: email received by a real SMTP server on loopback, Slack's Block Kit body as posted,
outbound webhooks verified with the independent `standardwebhooks` library (after a secret rotation too),
retries over about a day, a channel disabled after repeated failures or a 410, the SSRF guard at save and at
send, and a channel's secrets in no API answer after creation, no log line and no delivery record."""

import json
import logging
from datetime import timedelta

import pytest
import responses
from django.core.exceptions import ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

from integrations.connectors import http
from notifications.alerts import notifications_sweep, notify_run_finished
from notifications.deliveries import MAX_ATTEMPTS, RETRY_DELAYS
from notifications.models import (
    Channel,
    ChannelKind,
    Condition,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Level,
)
from notifications.services import channel_create, channel_enable, channel_rotate_secret, channel_send_test, rule_create
from tests.notifications.conftest import SLACK_URL, WEBHOOK_URL

pytestmark = pytest.mark.django_db


def webhook_channel(org, **kwargs):
    return channel_create(organization=org, name=kwargs.pop("name", "Ops webhook"), kind=ChannelKind.WEBHOOK,
                          url=kwargs.pop("url", WEBHOOK_URL), **kwargs)


# --- email through a real SMTP server -----------------------------------------------------------------------------


def test_email_is_received_by_a_real_smtp_server(org, smtp_server, queued, make_mapping, finish_run):
    channel, _ = channel_create(organization=org, name="Team", kind=ChannelKind.EMAIL,
                                recipients=["ops@acme.example", "cto@acme.example"])
    rule_create(organization=org, name="Errors", condition=Condition.EVERY_ERROR, channels=[channel],
                level=Level.CRITICAL)
    mapping = make_mapping()
    finish_run(mapping, errors=42)

    [envelope] = smtp_server.messages
    assert sorted(envelope.rcpt_tos) == ["cto@acme.example", "ops@acme.example"]
    text = envelope.content.decode()
    assert f"Subject: [Resync] [CRITICAL] 42 errors syncing {mapping.name}" in text
    assert "42 of 52 records failed" in text
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 1)
    assert DeliveryAttempt.objects.get(delivery=delivery).succeeded


def test_send_test_on_an_email_channel_and_a_mail_server_that_is_down(org, smtp_server, queued, settings):
    channel, _ = channel_create(organization=org, name="Team", kind=ChannelKind.EMAIL, recipients=["a@acme.example"])
    with queued():
        delivery = channel_send_test(channel=channel)
    assert "Test message from Resync to Team" in smtp_server.messages[0].content.decode()

    settings.EMAIL_PORT = 1  # nothing listens there
    with queued():
        delivery = channel_send_test(channel=channel)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.RETRYING
    assert "ConnectionRefusedError" in delivery.error


# --- Slack ------------------------------------------------------------------------------------------------------------


@responses.activate
def test_the_slack_message_is_a_block_kit_summary_with_counts_and_a_link(org, queued, make_mapping, finish_run):
    responses.post(SLACK_URL, body="ok")
    channel, secret = channel_create(organization=org, name="#alerts", kind=ChannelKind.SLACK, url=SLACK_URL)
    assert secret is None
    rule_create(organization=org, name="Errors", condition=Condition.EVERY_ERROR, channels=[channel])
    mapping = make_mapping()
    run, _ = finish_run(mapping, errors=7, category="validation")

    [call] = responses.calls
    body = json.loads(call.request.body)
    assert body["text"] == f":warning: 7 errors syncing {mapping.name}"
    header, summary, counts, actions, context = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": body["text"], "emoji": True}}
    assert summary["type"] == "section" and "7 of 17 records failed" in summary["text"]["text"]
    assert {"type": "mrkdwn", "text": "*Errors*\n7"} in counts["fields"]
    assert {"type": "mrkdwn", "text": "*Category validation*\n7"} in counts["fields"]
    [button] = actions["elements"]
    assert button["url"] == f"http://127.0.0.1:8000/runs/{run.code}/"
    assert context["elements"][0]["text"] == "*Warning* · Rule: Errors"
    assert Delivery.objects.get().status == DeliveryStatus.DELIVERED


# --- outbound webhooks: Standard Webhooks ---------------------------------------------------------------------------


@responses.activate
def test_a_webhook_verifies_with_standardwebhooks_before_and_after_a_rotation(org, queued, clock):
    responses.post(WEBHOOK_URL, status=204)
    channel, first = webhook_channel(org)
    assert first.startswith("whsec_") and len(first) >= len("whsec_") + 32  # base64 of 24 bytes

    def send_and_capture():
        with queued():
            channel_send_test(channel=channel)
        request = responses.calls[-1].request
        return request.body, dict(request.headers)

    body, headers = send_and_capture()
    payload = Webhook(first).verify(body, headers)
    assert payload["type"] == "test" and payload["data"]["title"] == "Test message from Resync to Ops webhook"
    assert headers["webhook-id"] == Delivery.objects.get().message_id

    second = channel_rotate_secret(channel=channel)
    body, headers = send_and_capture()
    Webhook(second).verify(body, headers)
    Webhook(first).verify(body, headers)  # the receiver may still hold the old one, for a day

    clock.shift(hours=24, seconds=1)
    body, headers = send_and_capture()
    Webhook(second).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(first).verify(body, headers)

    third = channel_rotate_secret(channel=channel, grace=timedelta(0))  # stop the old one at once
    body, headers = send_and_capture()
    Webhook(third).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(second).verify(body, headers)


def test_a_supplied_secret_must_be_a_standard_webhooks_secret_of_24_bytes_or_more(org):
    for bad in ("plain-text", "whsec_" + "c2hvcnQ=", "whsec_***"):
        with pytest.raises(ValidationError) as refused:
            webhook_channel(org, secret=bad)
        assert "secret" in refused.value.message_dict
    _channel, secret = webhook_channel(org, secret="whsec_" + "QUFB" * 8)
    assert secret == "whsec_" + "QUFB" * 8


# --- retries, backoff, disabling --------------------------------------------------------------------------------------


@responses.activate
def test_a_failing_endpoint_is_retried_over_about_a_day_then_given_up(org, queued, clock):
    responses.post(WEBHOOK_URL, status=503, body="maintenance")
    channel, _ = webhook_channel(org)
    with queued():
        delivery = channel_send_test(channel=channel)
    message_ids = set()
    elapsed = timedelta(0)
    for delay in RETRY_DELAYS:
        delivery.refresh_from_db()
        assert delivery.status == DeliveryStatus.RETRYING
        assert delivery.next_attempt_at == clock.now() + delay
        message_ids.add(responses.calls[-1].request.headers["webhook-id"])
        clock.shift(seconds=delay.total_seconds() - 1)
        with queued():
            notifications_sweep()  # not due yet
        assert len(responses.calls) == delivery.attempts
        clock.shift(seconds=1)
        elapsed += delay
        with queued():
            notifications_sweep()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == (DeliveryStatus.FAILED, MAX_ATTEMPTS, 503)
    assert delivery.error == "HTTP 503: maintenance"
    assert timedelta(hours=20) < elapsed < timedelta(hours=30)  # "about a day"
    assert message_ids == {delivery.message_id}  # one id on every attempt: the receiver can deduplicate
    assert DeliveryAttempt.objects.filter(delivery=delivery).count() == MAX_ATTEMPTS
    channel.refresh_from_db()
    assert channel.is_enabled and channel.failed_deliveries_in_a_row == 1


def test_a_channel_is_disabled_after_repeated_failed_deliveries_and_enabled_again(org, queued, clock, monkeypatch):
    channel, _ = webhook_channel(org)
    monkeypatch.setattr("notifications.deliveries.MAX_ATTEMPTS", 1)  # each delivery gives up at its first failure
    with responses.RequestsMock() as mock:
        mock.post(WEBHOOK_URL, status=500)
        for _ in range(3):
            with queued():
                channel_send_test(channel=channel)
    channel.refresh_from_db()
    assert not channel.is_enabled
    assert channel.disabled_reason.startswith("3 deliveries in a row failed after every retry; last: HTTP 500")
    with pytest.raises(ValidationError):
        channel_send_test(channel=channel)

    channel_enable(channel=channel)
    with responses.RequestsMock() as mock:
        mock.post(WEBHOOK_URL, status=200)
        with queued():
            delivery = channel_send_test(channel=channel)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED


@responses.activate
def test_a_410_disables_the_channel_at_once_and_skips_what_waits(org, queued, make_mapping, finish_run):
    channel, _ = webhook_channel(org)
    rule_create(organization=org, name="Errors", condition=Condition.EVERY_ERROR, channels=[channel])
    waiting = Delivery.objects.create(organization=org, channel=channel, event="test", kind=channel.kind,
                                      message={"title": "t"}, message_id="msg_waiting", created_at=channel.created_at,
                                      status=DeliveryStatus.RETRYING, next_attempt_at=channel.created_at)
    responses.post(WEBHOOK_URL, status=410)
    finish_run(make_mapping(), errors=1)
    channel.refresh_from_db()
    assert not channel.is_enabled and "410 Gone" in channel.disabled_reason
    sent = Delivery.objects.exclude(pk=waiting.pk).get()
    assert (sent.status, sent.attempts, sent.response_code) == (DeliveryStatus.FAILED, 1, 410)
    waiting.refresh_from_db()
    assert waiting.status == DeliveryStatus.SKIPPED
    finish_run(make_mapping(), errors=1)  # a new incident: recorded as skipped, nothing sent
    assert len(responses.calls) == 1
    assert Delivery.objects.filter(status=DeliveryStatus.SKIPPED).count() == 2


def test_a_slow_channel_never_holds_the_run_that_alerted(org, make_mapping, finish_run,
                                                         django_capture_on_commit_callbacks, monkeypatch):
    channel, _ = webhook_channel(org)
    rule_create(organization=org, name="Errors", condition=Condition.EVERY_ERROR, channels=[channel])
    sent = []
    monkeypatch.setattr("notifications.senders.send", lambda *a, **k: sent.append(a) or (None, 0))
    run, _ = finish_run(make_mapping(), errors=5, observe=False)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        [_alert] = notify_run_finished(run)
    # The run's worker wrote the alert and its delivery and queued a task: it sent nothing itself.
    assert sent == [] and callbacks
    assert Delivery.objects.get().status == DeliveryStatus.PENDING


# --- the SSRF guard ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/hook", "http://10.0.0.5/", "http://169.254.169.254/latest",
                                 "ftp://hooks.example.com/", "http://user:pw@hooks.example.com/"])
def test_a_channel_url_to_a_private_address_is_refused_when_saved(org, url):
    for kind in (ChannelKind.WEBHOOK, ChannelKind.SLACK):
        with pytest.raises(ValidationError) as refused:
            channel_create(organization=org, name=f"bad {kind}", kind=kind, url=url)
        assert list(refused.value.message_dict) == ["url"]
    assert not Channel.objects.exists()


def test_a_host_that_turns_private_after_saving_is_refused_when_sending(org, queued, monkeypatch):
    channel, _ = webhook_channel(org)
    monkeypatch.setattr(http, "_resolve", lambda host, port: ["10.1.2.3"])
    with queued():
        delivery = channel_send_test(channel=channel)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED  # not retried: it would be refused again
    assert "private or reserved address" in delivery.error


# --- secrets stay secret ----------------------------------------------------------------------------------------------


@responses.activate
def test_channel_secrets_never_appear_in_answers_logs_or_deliveries(org, api, queued, caplog, make_mapping,
                                                                    finish_run):
    # Both endpoints fail and echo what they were sent, secrets included, in their answer.
    responses.post(SLACK_URL, status=500, body=f"invalid_token for {SLACK_URL}")
    responses.post(WEBHOOK_URL, status=400, body="bad signature with secret=whsec_echoed")
    caplog.set_level(logging.DEBUG)

    slack = api.post("/api/v1/notification-channels/", {"name": "#ops", "kind": "slack", "url": SLACK_URL},
                     format="json")
    hook = api.post("/api/v1/notification-channels/", {"name": "hook", "kind": "webhook", "url": WEBHOOK_URL},
                    format="json")
    assert slack.status_code == hook.status_code == 201
    secret = hook.json()["secret"]
    assert secret.startswith("whsec_") and slack.json()["secret"] is None
    rule = api.post("/api/v1/notification-rules/", {
        "name": "Errors", "condition": "every_error", "channels": [slack.json()["id"], hook.json()["id"]],
    }, format="json")
    assert rule.status_code == 201, rule.content
    rotated = api.post(f"/api/v1/notification-channels/{hook.json()['id']}/rotate-secret/", {}, format="json")
    new_secret = rotated.json()["secret"]
    finish_run(make_mapping(), errors=3)
    with queued():
        api.post(f"/api/v1/notification-channels/{slack.json()['id']}/test/")

    secrets = [SLACK_URL, "slacktokenCanary", secret, new_secret.removeprefix("whsec_"), secret.removeprefix("whsec_")]
    answers = [api.get(path).content.decode() for path in (
        "/api/v1/notification-channels/", f"/api/v1/notification-channels/{slack.json()['id']}/",
        f"/api/v1/notification-channels/{hook.json()['id']}/", "/api/v1/deliveries/", "/api/v1/alerts/",
        "/api/v1/notification-rules/")]
    deliveries = json.dumps([list(row) for row in Delivery.objects.values_list()], default=str)
    attempts = json.dumps([list(row) for row in DeliveryAttempt.objects.values_list()], default=str)
    logged = "\n".join(record.getMessage() + json.dumps(getattr(record, "fields", {}), default=str)
                       for record in caplog.records)
    assert Delivery.objects.filter(status=DeliveryStatus.RETRYING).count() == 3
    assert "[redacted]" in deliveries  # the echoed secrets were there to leak, and were scrubbed
    for text in (*answers, deliveries, attempts, logged):
        for value in secrets:
            assert value not in text
    assert "whsec_echoed" not in deliveries
    assert json.loads(answers[1])["destination"] == "Slack incoming webhook"


def test_a_delivery_a_dead_worker_left_sending_is_tried_again(org, queued, clock):
    channel, _ = channel_create(organization=org, name="Team", kind=ChannelKind.EMAIL, recipients=["a@acme.example"])
    stuck = Delivery.objects.create(organization=org, channel=channel, event="test", kind=channel.kind,
                                    message={"title": "Stuck", "summary": "s"}, message_id="msg_stuck",
                                    created_at=clock.now(), status=DeliveryStatus.SENDING, attempts=1,
                                    last_attempt_at=clock.now())
    clock.shift(minutes=9)
    with queued():
        notifications_sweep()
    stuck.refresh_from_db()
    assert stuck.status == DeliveryStatus.SENDING  # its worker may still be at it
    clock.shift(minutes=2)
    with queued():
        notifications_sweep()
    stuck.refresh_from_db()
    assert (stuck.status, stuck.attempts) == (DeliveryStatus.DELIVERED, 2)


def test_the_periodic_schedule_runs_the_sweep():
    from django_q.models import Schedule

    from notifications.tasks import sweep

    schedule = Schedule.objects.get(name="resync: notifications")
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == ("notifications.tasks.sweep", "I", 1)
    assert sweep() == {"alerts": 0, "requeued": 0}
