"""The secrets canary: fake credentials seeded everywhere a secret lives (connections, an inbound webhook endpoint,
notification channels), then a day's work that touches every one of them (syncs with record errors and a
flaky target, a signed inbound webhook, alerts sent by email, Slack and a signed outbound webhook that fails
once), then a search of everything Resync writes: every row of every table (snapshots and error details
included), every log line, every task payload, every notification body and header sent, every API answer.

0 plaintext hits. A positive control proves each canary was live (the credentials decrypt, the signatures
verify): a canary that nothing used would find nothing by construction.
"""

import base64
import json
import logging

import pytest
import responses
from django.apps import apps
from django.core import mail
from django.test import TestCase
from django_q import signing
from rest_framework.test import APIClient
from standardwebhooks import Webhook

from accounts.models import TokenRole
from accounts.services import api_token_create
from integrations.connectors import http
from integrations.connectors.sandbox import seed_records
from integrations.models import Connection
from integrations.webhooks import webhook_endpoint_create
from notifications.models import ChannelKind, Condition, Level
from notifications.services import channel_create, rule_create
from syncs.events import JsonFormatter
from syncs.models import SyncRun
from tests.integrations.test_webhooks import changed, deliver, signed
from tests.syncs.helpers import person, run_mapping

pytestmark = pytest.mark.django_db

ENDPOINT_KEY = b"canary-endpoint-signing-key-0a7f31b2"
CHANNEL_KEY = b"canary-channel-signing-key-55e0d9c4a1"
CANARIES = {
    "source API key": "canary-source-api-key-7d41a0e3",
    "target API key": "canary-target-api-key-1c9e55b8",
    "inbound webhook secret": "whsec_" + base64.b64encode(ENDPOINT_KEY).decode(),
    "inbound webhook key": ENDPOINT_KEY.decode(),
    "outbound webhook secret": "whsec_" + base64.b64encode(CHANNEL_KEY).decode(),
    "outbound webhook key": CHANNEL_KEY.decode(),
    "Slack webhook token": "canarySlackToken9f3e2b7741",
}
SLACK_URL = f"https://hooks.slack.com/services/T0CANARY/B0CANARY/{CANARIES['Slack webhook token']}"
HOOK_URL = "https://hooks.example.com/resync/alerts"


def hits(text, where):
    return [f"{name} in {where}" for name, canary in CANARIES.items() if canary in text]


@pytest.fixture
def log_lines():
    """Every log record of every logger, as its handlers would write it: the `resync` JSON lines (they do not
    propagate), and everything else with its message and traceback."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            formatter = JsonFormatter() if record.name.startswith("resync") else logging.Formatter()
            lines.append(formatter.format(record))

    handler = Collect(level=logging.DEBUG)
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield lines
    for logger in loggers:
        logger.removeHandler(handler)
        logger.setLevel(levels[logger])


@pytest.fixture
def task_payloads(monkeypatch):
    """Every task handed to django-q2, unpacked (what the broker would store, signed and pickled)."""
    payloads = []
    dumps = signing.SignedPackage.dumps

    def capture(obj, *args, **kwargs):
        payloads.append(repr(obj))
        return dumps(obj, *args, **kwargs)

    monkeypatch.setattr(signing.SignedPackage, "dumps", staticmethod(capture))
    return payloads


def test_no_secret_appears_in_any_table_log_task_notification_or_api_answer(org, make_mapping, monkeypatch, log_lines,
                                                                            task_payloads, client, fault_figures):
    # -- seed: credentials, an inbound endpoint, three channels and the rules that use them --------------------
    monkeypatch.setattr(http, "_resolve", lambda host, port: ["93.184.216.34"])  # made-up public hook hosts
    mapping = make_mapping()
    source, target = mapping.source_connection, mapping.target_connection
    source.credentials = {"api_key": CANARIES["source API key"]}
    source.save()
    target.credentials = {"api_key": CANARIES["target API key"]}
    target.config = {"faults": {"operations": ["write"], "failure_rate": 0.3, "failure_kind": "503", "seed": 7}}
    target.save()
    rows = [person(n) for n in range(20)] + [person(20, email="not-an-email"), person(21, email="")]
    seed_records(source, "contacts", rows, ids=[f"ct_{n}" for n in range(len(rows))])
    endpoint, _ = webhook_endpoint_create(connection=source, name="Shop events",
                                          secret=CANARIES["inbound webhook secret"])
    outbound, shown_once = channel_create(organization=org, name="Ops webhook", kind=ChannelKind.WEBHOOK,
                                          url=HOOK_URL, secret=CANARIES["outbound webhook secret"])
    slack, _ = channel_create(organization=org, name="Ops Slack", kind=ChannelKind.SLACK, url=SLACK_URL)
    email, _ = channel_create(organization=org, name="Ops email", kind=ChannelKind.EMAIL,
                              recipients=["ops@acme.example"])
    for condition in (Condition.EVERY_ERROR, Condition.RUN_FAILED):
        rule_create(organization=org, name=condition.label, condition=condition, level=Level.CRITICAL,
                    channels=[outbound, slack, email])
    # An API token is a secret too: only its digest may be stored.
    _, CANARIES["API token"] = api_token_create(organization=org, name="Canary reader", role=TokenRole.ADMIN)

    # -- a day's work --------------------------------------------------------------------------------------------
    with responses.RequestsMock(assert_all_requests_are_fired=False) as outside:
        # The outbound webhook fails once, echoing what it was sent (a careless receiver), then takes the rest.
        outside.add(responses.POST, HOOK_URL, status=500, body="upstream unavailable")
        outside.add(responses.POST, HOOK_URL, status=204)
        outside.add(responses.POST, SLACK_URL, status=200, body="ok")
        outside.add_passthru("http://sandbox.resync.test")
        with TestCase.captureOnCommitCallbacks(execute=True):
            run_mapping(mapping)
        with TestCase.captureOnCommitCallbacks(execute=True):
            raw = changed("ct_1", "ct_2")
            assert deliver(client, endpoint, raw, signed(raw, secret=CANARIES["inbound webhook secret"])
                           ).status_code == 202
        with TestCase.captureOnCommitCallbacks(execute=True):
            run_mapping(mapping)
        sent = [(call.request.url, dict(call.request.headers), call.request.body or b"") for call in outside.calls
                if not call.request.url.startswith("http://sandbox")]

    # -- positive controls: every canary was live ------------------------------------------------------------------
    assert Connection.objects.get(pk=target.pk).credentials["api_key"] == CANARIES["target API key"]
    assert shown_once == CANARIES["outbound webhook secret"]
    webhook_posts = [(headers, body) for url, headers, body in sent if url == HOOK_URL]
    assert webhook_posts, "the outbound webhook channel was never used"
    for headers, body in webhook_posts:
        Webhook(CANARIES["outbound webhook secret"]).verify(body, {k.lower(): v for k, v in headers.items()})
    assert any(url == SLACK_URL for url, _, _ in sent) and mail.outbox

    # -- the search -------------------------------------------------------------------------------------------------
    found, searched = [], {"rows": 0, "log lines": len(log_lines), "task payloads": len(task_payloads),
                           "messages sent": len(sent) + len(mail.outbox), "API answers": 0}
    for model in apps.get_models():
        for row in model._base_manager.values():
            searched["rows"] += 1
            found += hits(json.dumps(row, default=str), f"table {model._meta.db_table}")
    for line in log_lines:
        found += hits(line, "the log")
    for payload in task_payloads:
        found += hits(payload, "a task payload")
    for url, headers, body in sent:
        # A Slack incoming webhook's URL is its credential: only the request to Slack itself may carry it.
        found += hits(json.dumps(headers) + (body.decode() if isinstance(body, bytes) else body), f"a post to {url}")
    for message in mail.outbox:
        found += hits(message.subject + message.body + json.dumps(message.extra_headers), "an email")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {CANARIES['API token']}")
    for path in ("connections/", "webhook-endpoints/", "notification-channels/", "notification-rules/", "alerts/",
                 "deliveries/", "errors/", "runs/", f"connections/{source.code}/",
                 f"webhook-endpoints/{endpoint.code}/", f"notification-channels/{outbound.code}/",
                 f"notification-channels/{slack.code}/"):
        answer = api.get(f"/api/v1/{path}")
        assert answer.status_code == 200, (path, answer.status_code)
        searched["API answers"] += 1
        # The token rides in the request, so only the answer is searched.
        found += hits(answer.content.decode(), f"GET /api/v1/{path}")

    assert searched["rows"] > 100 and searched["log lines"] > 20 and searched["task payloads"] > 3
    assert not found, found
    fault_figures(runs=SyncRun.objects.count(), canaries=len(CANARIES), hits=len(found),
                  **{what.replace(" ", "_"): count for what, count in searched.items()})
