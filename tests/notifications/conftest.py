"""Notification test helpers: a real SMTP server on loopback, public DNS for made-up hook hosts, runs that
finished with a given outcome, and running what services queue on commit."""

import socket
from datetime import UTC, datetime

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from integrations.connectors import http
from notifications.alerts import notify_run_finished
from syncs.models import ErrorLevel, RecordError, RunStatus, SyncRun, Trigger

SLACK_URL = "https://hooks.slack.com/services/T0RESYNC/B0ALERTS/slacktokenCanary0123456789"
WEBHOOK_URL = "https://hooks.example.com/resync/alerts"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _public_dns(monkeypatch):
    # The made-up hook hosts resolve to a public address, so the SSRF guard lets them through without DNS;
    # `responses` answers in their place.
    monkeypatch.setattr(http, "_resolve", lambda host, port: ["93.184.216.34"])


@pytest.fixture
def clock(time_machine):
    """The test's clock, stopped at START; `clock.shift(minutes=...)` moves it."""
    time_machine.move_to(START, tick=False)

    class Clock:
        @staticmethod
        def shift(**delta):
            from datetime import timedelta

            time_machine.shift(timedelta(**delta))
            return timezone.now()

        @staticmethod
        def now():
            return timezone.now()

    return Clock()


class _Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd calls the hook by this name
        self.messages.append(envelope)
        return "250 Message accepted"


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server on loopback (aiosmtpd); Django's SMTP backend sends to it. Yields its inbox."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture
def queued(django_capture_on_commit_callbacks):
    """Run what services queue on commit (deliveries are sent inline: tasks run in-process in tests)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def finish_run(queued):
    """A run of `mapping` that finished now with `errors` failed records (bulk-inserted), then observed by the
    rules as the engine's sync_run_after_finish does."""

    def finish(mapping, *, errors=0, status=None, read=None, written=None, system_error="", category="validation",
               observe=True):
        status = status or (RunStatus.PARTIALLY_FAILED if errors else RunStatus.SUCCEEDED)
        read = read if read is not None else errors + 10
        written = written if written is not None else read - errors
        now = timezone.now()
        run = SyncRun.objects.create(
            organization=mapping.organization, mapping=mapping, trigger=Trigger.SCHEDULE, status=status,
            read=read, created=written, failed=errors, system_error=system_error, started_at=now, finished_at=now,
        )
        RecordError.objects.bulk_create([
            RecordError(organization=mapping.organization, run=run, mapping=mapping, level=ErrorLevel.RECORD,
                        category=category, error_code="invalid_email", message="The email is not valid",
                        source_record_id=f"ct_{n}", fingerprint="f" * 40)
            for n in range(errors)
        ], batch_size=1000)
        if not observe:
            return run, []
        with queued():
            changed = notify_run_finished(run)
        return run, changed

    return finish


def _client(organization, role):
    from rest_framework.test import APIClient

    from accounts.services import api_token_create

    _token, plain = api_token_create(organization=organization, name=f"{role} token", role=role)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    return client


@pytest.fixture
def api(org):
    """An API client of `org` with an admin token."""
    return _client(org, "admin")


@pytest.fixture
def viewer_api(org):
    return _client(org, "viewer")


@pytest.fixture
def other_api(other_org):
    """An API client of the other organization (admin)."""
    return _client(other_org, "admin")
