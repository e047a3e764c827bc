"""Settings → Notifications in a real browser, as a new operator sets them up: add an email channel, send it a test
message and see it delivered, add a rule routed to it (the form shows only the inputs its condition uses), see
the alert a failed run opens and its delivery, and add a webhook channel whose generated secret is shown once.
Each page is checked with axe-core and saved as a screenshot in var/screenshots/."""

import re
from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import expect

from accounts.management.commands.demo import PASSWORD, USERNAME
from accounts.models import Organization
from integrations.connectors import http
from mappings.models import Mapping
from notifications.alerts import notify_run_finished
from notifications.models import Alert, Channel, Rule
from syncs.models import RunStatus, SyncRun, Trigger
from tests.ui.conftest import assert_no_horizontal_overflow

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1400, "height": 900}


@pytest.fixture
def demo(monkeypatch):
    call_command("demo", stdout=StringIO())
    # The made-up webhook host resolves to a public address, so the SSRF guard accepts it without DNS.
    monkeypatch.setattr(http, "_resolve", lambda host, port: ["93.184.216.34"])
    organization = Organization.objects.get(slug="demo")
    # Without the demo's starting channel and rules: these walks are an operator's first visit.
    Rule.objects.filter(organization=organization).delete()
    Channel.objects.filter(organization=organization).delete()
    return organization


def log_in(page, live_server):
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def fits_a_phone(page):
    page.set_viewport_size(PHONE)
    assert_no_horizontal_overflow(page)
    page.set_viewport_size(DESKTOP)


def test_an_operator_sets_up_notifications_and_sees_an_alert(page, live_server, demo, axe, screenshot):
    log_in(page, live_server)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    page.get_by_role("navigation", name="Settings").get_by_role("link", name="Notifications").click()
    expect(page.get_by_role("heading", name="Add a channel, then a rule")).to_be_visible()
    axe("notifications, empty")
    screenshot("notifications-empty")

    # An email channel, and a test message through it.
    page.get_by_role("button", name="Add a channel").click()
    page.get_by_role("link", name=re.compile("^Email")).click()
    page.get_by_label("Name").fill("Ops on-call")
    page.get_by_label("Email addresses").fill("ops@example.org\nlead@example.org")
    axe("add a channel")
    screenshot("notifications-channel-add")
    page.get_by_role("button", name="Add channel").click()
    expect(page.get_by_role("heading", name="Ops on-call", level=1)).to_be_visible()
    expect(page.get_by_text("Send a test message to see that it arrives")).to_be_visible()

    page.get_by_role("button", name="Send test").click()
    expect(page.get_by_text("A test message to Ops on-call is queued.")).to_be_visible()
    status = page.locator("#delivery-status")
    expect(status).to_contain_text("Delivered", timeout=10_000)
    assert [message.to for message in mail.outbox] == [["ops@example.org", "lead@example.org"]]
    axe("a delivered test message")
    screenshot("notifications-test-delivered")

    # A rule routed to it: the form shows the N a condition has, and only then.
    page.get_by_role("navigation", name="Notifications").get_by_role("link", name="Rules").click()
    expect(page.get_by_role("heading", name="Now add a rule")).to_be_visible()
    page.get_by_role("button", name="Add a rule").click()
    page.get_by_label("Name:", exact=True).fill("Runs failing")
    threshold = page.get_by_label("Threshold (N)")
    page.get_by_label("Condition").select_option("failures_per_hour")
    expect(threshold).to_be_visible()
    page.get_by_label("Condition").select_option("run_failed")
    expect(threshold).to_be_hidden()
    page.get_by_label("Critical").check()
    page.get_by_label("Ops on-call (Email)").check()
    axe("the rule form")
    screenshot("notifications-rule-form")
    page.get_by_role("button", name="Add rule").click()
    expect(page.get_by_text("Runs failing is added.")).to_be_visible()
    rules = page.get_by_role("region", name="Rules")
    expect(rules).to_contain_text("A run failed")
    expect(rules).to_contain_text("Ops on-call")
    axe("the rules")
    screenshot("notifications-rules")
    fits_a_phone(page)

    # A run fails: the rule opens an alert and emails the channel.
    rule = Rule.objects.get(organization=demo, name="Runs failing")
    mapping = Mapping.objects.for_org(demo).order_by("name").first()
    now = timezone.now()
    run = SyncRun.objects.create(organization=demo, mapping=mapping, trigger=Trigger.SCHEDULE,
                                 status=RunStatus.FAILED, read=10, failed=10, started_at=now, finished_at=now,
                                 system_error="The CRM did not answer")
    notify_run_finished(run)
    alert = Alert.objects.get(rule=rule)

    page.get_by_role("navigation", name="Notifications").get_by_role("link", name=re.compile("^Alerts")).click()
    firing = page.get_by_role("region", name="Firing")
    expect(firing).to_contain_text(f"A run of {mapping.name} failed")
    expect(firing).to_contain_text("Critical")
    axe("the alerts")
    screenshot("notifications-alerts")
    fits_a_phone(page)
    firing.get_by_role("link", name=alert.title).click()
    expect(page.get_by_role("heading", name=alert.title, level=1)).to_be_visible()
    deliveries = page.get_by_role("region", name="Deliveries")
    expect(deliveries).to_contain_text("Ops on-call")
    expect(deliveries).to_contain_text("Delivered")
    axe("an alert")
    screenshot("notifications-alert")
    assert len(mail.outbox) == 2 and "A run of" in mail.outbox[1].subject

    page.get_by_role("navigation", name="Notifications").get_by_role("link", name="Deliveries").click()
    expect(page.get_by_role("region", name="Deliveries")).to_contain_text("Test message")
    axe("the deliveries")
    screenshot("notifications-deliveries")
    fits_a_phone(page)


def test_a_webhook_channels_secret_is_shown_once(page, live_server, demo, axe, screenshot):
    log_in(page, live_server)
    page.goto(f"{live_server.url}/settings/notifications/channels/add/?kind=webhook")
    page.get_by_label("Name").fill("Our API")
    page.get_by_label("URL:", exact=True).fill("https://hooks.example.com/resync/alerts")
    page.get_by_role("button", name="Add channel").click()

    secret = Channel.objects.get(organization=demo, name="Our API").secrets["secrets"][0]["secret"]
    field = page.get_by_label("Signing secret of Our API")
    expect(field).to_have_value(secret)
    expect(page.get_by_role("button", name="Copy")).to_be_visible()
    axe("a new webhook channel's secret")
    screenshot("notifications-webhook-secret")

    page.get_by_role("button", name="Done: open Our API").click()
    expect(page.get_by_role("heading", name="Our API", level=1)).to_be_visible()
    expect(page.get_by_text("https://hooks.example.com/…")).to_be_visible()
    assert secret not in page.content()
    axe("a webhook channel")
    screenshot("notifications-webhook-channel")
