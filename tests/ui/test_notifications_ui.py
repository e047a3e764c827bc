"""Settings → Notifications with Django's test client: channels (each kind's form, where they send shown without a
secret, a generated signing secret shown once and never again, send test with its outcome, rotate, enable again,
delete), rules (the form with its defaults, scopes limited to the organization's own objects, enable / disable
closing firing alerts), alerts (firing first) and deliveries with their attempts; tenancy (another organization's
objects answer 404 on every page and action), roles (a viewer sees but cannot act) and query bounds."""

import re
import uuid
from datetime import timedelta

import pytest
import responses
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, Role
from integrations.connectors import http
from notifications.alerts import notify_run_finished
from notifications.models import (
    Alert,
    AlertState,
    Channel,
    ChannelKind,
    Condition,
    Delivery,
    DeliveryStatus,
    Rule,
    Scope,
)
from notifications.services import channel_create, channel_send_test, rule_create, rule_update
from notifications.ui import destination
from syncs.models import RunStatus, SyncRun, Trigger

UNKNOWN = uuid.UUID(int=0)
SLACK_TOKEN = "slacktokenCanary0123456789"
SLACK_URL = f"https://hooks.slack.com/services/T0RESYNC/B0ALERTS/{SLACK_TOKEN}"
WEBHOOK_URL = "https://hooks.example.com/resync/alerts?key=querytokenCanary42"
OWN_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="  # base64 of 32 bytes


@pytest.fixture(autouse=True)
def _public_dns(monkeypatch):
    # The made-up hook hosts resolve to a public address, so the SSRF guard lets them through without DNS;
    # `responses` answers in their place.
    monkeypatch.setattr(http, "_resolve", lambda host, port: ["93.184.216.34"])


@pytest.fixture
def viewer(org, django_user_model):
    user = django_user_model.objects.create_user("victor", "victor@example.org", "victor-password")
    Membership.objects.create(user=user, organization=org, role=Role.VIEWER)
    return user


def url(name, *args):
    return reverse(f"notifications:{name}", args=args)


def html(response):
    return response.content.decode()


def email_channel(org, name="Ops on-call", recipients=("ops@example.org",)):
    return channel_create(organization=org, name=name, kind=ChannelKind.EMAIL, recipients=list(recipients))[0]


def slack_channel(org, name="#sync-alerts"):
    return channel_create(organization=org, name=name, kind=ChannelKind.SLACK, url=SLACK_URL)[0]


def failed_run(mapping, *, when=None):
    when = when or timezone.now()
    return SyncRun.objects.create(organization=mapping.organization, mapping=mapping, trigger=Trigger.SCHEDULE,
                                  status=RunStatus.FAILED, read=10, failed=10, system_error="The CRM did not answer",
                                  started_at=when, finished_at=when)


def fire(rule, mapping, queued):
    """A failed run of `mapping` observed by the rules, its deliveries sent (inline, as the worker would)."""
    with queued(execute=True):
        notify_run_finished(failed_run(mapping))
    return Alert.objects.get(rule=rule, state=AlertState.FIRING)


@pytest.fixture
def queued(django_capture_on_commit_callbacks):
    return django_capture_on_commit_callbacks


# --- the section ---------------------------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login(client, org):
    channel = email_channel(org)
    for target in (url("index"), url("channels"), url("channel_detail", channel.code), url("rules"), url("alerts"),
                   url("deliveries")):
        response = client.get(target, follow=True)
        assert response.redirect_chain[-1][0].startswith(reverse("login")), target
    assert client.post(url("channel_test", channel.code)).status_code == 302
    assert not Delivery.objects.exists()


def test_settings_has_a_notifications_page_next_to_the_api_tokens(client, alice, bob):
    client.force_login(alice)
    tokens = html(client.get(reverse("api_tokens")))
    assert f'<a href="{url("index")}">Notifications</a>' in tokens

    response = client.get(url("index"))
    assert response.status_code == 302 and response.url == url("channels")
    page = html(client.get(url("channels")))
    assert f'<a href="{url("index")}" aria-current="page">Notifications</a>' in page
    assert f'<a href="{reverse("settings")}" aria-current="page">Settings</a>' in page
    assert f'href="{reverse("api_tokens")}"' in page

    # A member may manage notifications (as in the API) but not API tokens: that tab is not offered.
    client.force_login(bob)
    page = html(client.get(url("channels")))
    assert f'href="{reverse("api_tokens")}"' not in page and "Add a channel" in page


def test_a_new_organization_is_told_what_to_do_first(client, alice, org):
    client.force_login(alice)

    assert "Add a channel, then a rule" in html(client.get(url("channels")))
    assert "Add a channel, then a rule" in html(client.get(url("rules")))
    assert "No rules, so no alerts" in html(client.get(url("alerts")))
    assert "Nothing sent yet" in html(client.get(url("deliveries")))
    form = html(client.get(url("rule_add")))
    assert "No channel yet." in form

    email_channel(org)
    assert "Now add a rule" in html(client.get(url("rules")))


# --- channels ------------------------------------------------------------------------------------------------------


def test_the_kind_picker_leads_to_each_kinds_own_form(client, alice):
    client.force_login(alice)

    assert "Choose a kind above" in html(client.get(url("channel_add")))
    email = client.get(url("channel_add"), {"kind": "email"})
    assert set(email.context["form"].fields) == {"name", "recipients"}
    slack = client.get(url("channel_add"), {"kind": "slack"})
    assert set(slack.context["form"].fields) == {"name", "url"}
    assert 'type="password"' in html(slack)  # the Slack URL is a credential
    webhook = client.get(url("channel_add"), {"kind": "webhook"})
    assert set(webhook.context["form"].fields) == {"name", "url", "secret"}


def test_adding_an_email_channel(client, alice, org):
    client.force_login(alice)

    response = client.post(url("channel_add"), {"kind": "email", "name": "Ops on-call",
                                                "recipients": "ops@example.org\nlead@example.org, ops@example.org"})

    channel = Channel.objects.get(organization=org)
    assert response.status_code == 302 and response.url == url("channel_detail", channel.code)
    assert channel.kind == ChannelKind.EMAIL and channel.recipients == ["ops@example.org", "lead@example.org"]
    page = html(client.get(url("channels")))
    assert "Ops on-call" in page and "ops@example.org, lead@example.org" in page and "Enabled" in page


def test_bad_channel_input_is_a_form_error_and_nothing_is_created(client, alice, org, monkeypatch):
    client.force_login(alice)
    email_channel(org, name="Taken")

    cases = [
        ({"kind": "email", "name": "Ops", "recipients": "ops@example.org, not-an-address"}, "recipients",
         "is not an email address"),
        ({"kind": "email", "name": "Taken", "recipients": "ops@example.org"}, "name", "has this name"),
        ({"kind": "slack", "name": "Slack", "url": ""}, "url", "required"),
        ({"kind": "webhook", "name": "Hook", "url": "ftp://hooks.example.com/x"}, "url", ""),
        ({"kind": "webhook", "name": "Hook", "url": WEBHOOK_URL, "secret": "whsec_c2hvcnQ="}, "secret", "24 to 64"),
        ({"kind": "webhook", "name": "Hook", "url": WEBHOOK_URL, "secret": "hunter2"}, "secret", "whsec_"),
    ]
    for data, field, text in cases:
        response = client.post(url("channel_add"), data)
        assert response.status_code == 400, data
        errors = response.context["form"].errors
        assert field in errors and text in " ".join(errors[field]), (data, errors)
    # A typed secret is never rendered back, not even after an error.
    assert "hunter2" not in html(response)

    # The SSRF guard: a private address is refused next to the URL field.
    monkeypatch.setattr(http, "_resolve", lambda host, port: ["10.1.2.3"])
    response = client.post(url("channel_add"), {"kind": "slack", "name": "Slack", "url": SLACK_URL})
    assert response.status_code == 400 and "url" in response.context["form"].errors
    assert SLACK_TOKEN not in html(response)
    assert list(Channel.objects.filter(organization=org).values_list("name", flat=True)) == ["Taken"]


def test_a_slack_url_is_never_shown_only_its_host(client, alice, org):
    client.force_login(alice)

    response = client.post(url("channel_add"), {"kind": "slack", "name": "#sync-alerts", "url": SLACK_URL})

    channel = Channel.objects.get(organization=org)
    assert channel.secrets == {"url": SLACK_URL}
    assert destination(channel) == "https://hooks.slack.com/…"
    pages = [client.get(response.url), client.get(url("channels")), client.get(url("channel_edit", channel.code))]
    for page in map(html, pages):
        assert "https://hooks.slack.com/…" in page
        assert SLACK_TOKEN not in page and "T0RESYNC" not in page and "B0ALERTS" not in page


def test_a_webhook_channels_generated_secret_is_shown_once(client, alice, org):
    client.force_login(alice)

    response = client.post(url("channel_add"), {"kind": "webhook", "name": "Our API", "url": WEBHOOK_URL})

    channel = Channel.objects.get(organization=org)
    [stored] = channel.secrets["secrets"]
    secret = stored["secret"]
    assert response.status_code == 200 and secret.startswith("whsec_")
    assert f'value="{secret}"' in html(response) and "only time it is shown" in html(response)
    assert "no-store" in response["Cache-Control"]
    # Nowhere else, ever: not on the channel's pages, nor in a message waiting for the next page.
    for target in (url("channel_detail", channel.code), url("channels"), url("channel_edit", channel.code),
                   url("channel_rotate", channel.code)):
        page = html(client.get(target))
        assert secret not in page and "querytokenCanary42" not in page, target
        assert "https://hooks.example.com/…" in page or target == url("channel_rotate", channel.code)


def test_a_webhook_channel_with_its_own_secret_does_not_show_it(client, alice, org):
    client.force_login(alice)

    response = client.post(url("channel_add"), {"kind": "webhook", "name": "Our API", "url": WEBHOOK_URL,
                                                "secret": OWN_SECRET})

    channel = Channel.objects.get(organization=org)
    assert response.status_code == 302 and channel.secrets["secrets"][0]["secret"] == OWN_SECRET
    assert OWN_SECRET not in html(client.get(response.url))


def test_editing_a_channel_keeps_an_url_left_empty(client, alice, org):
    channel = slack_channel(org)
    client.force_login(alice)

    response = client.post(url("channel_edit", channel.code), {"name": "#alerts", "url": ""})

    assert response.status_code == 302
    channel.refresh_from_db()
    assert channel.name == "#alerts" and channel.secrets == {"url": SLACK_URL}

    other = "https://hooks.slack.com/services/T0/B1/anothertokenCanary"
    client.post(url("channel_edit", channel.code), {"name": "#alerts", "url": other})
    channel.refresh_from_db()
    assert channel.secrets == {"url": other}

    email = email_channel(org)
    response = client.post(url("channel_edit", email.code), {"name": "#alerts", "recipients": "a@example.org"})
    assert response.status_code == 400 and "has this name" in " ".join(response.context["form"].errors["name"])
    assert response.context["channel"].name == "Ops on-call"


def test_send_test_through_an_email_channel_shows_it_delivered(client, alice, org, queued):
    channel = email_channel(org)
    client.force_login(alice)

    with queued(execute=True):
        response = client.post(url("channel_test", channel.code))

    delivery = Delivery.objects.get(channel=channel)
    assert response.status_code == 302 and response.url == url("delivery_detail", delivery.code)
    [message] = mail.outbox
    assert message.to == ["ops@example.org"] and "Test message from Resync" in message.subject
    page = html(client.get(response.url))
    assert "A test message to Ops on-call is queued." in page
    assert "Delivered" in page and "#1" in page and "hx-trigger" not in page  # done: nothing to poll for


def test_a_test_message_waiting_for_a_worker_is_followed_live(client, alice, org):
    channel = email_channel(org)
    client.force_login(alice)

    response = client.post(url("channel_test", channel.code))  # on commit never comes: no worker has it yet

    page = html(client.get(response.url))
    assert "Waiting for a worker" in page and "hx-trigger=\"every 2s\"" in page
    partial = client.get(response.url, HTTP_HX_REQUEST="true")
    assert 'id="delivery-status"' in html(partial) and "<html" not in html(partial)


@responses.activate
def test_a_failed_test_message_shows_why_without_the_secret(client, alice, org, queued):
    channel = slack_channel(org)
    responses.post(SLACK_URL, status=500, body=f"invalid_token for {SLACK_URL}")
    client.force_login(alice)

    with queued(execute=True):
        response = client.post(url("channel_test", channel.code))

    page = html(client.get(response.url))
    assert "Attempt 1 failed: HTTP 500" in page and "HTTP 500" in page and "tried again" in page
    assert SLACK_TOKEN not in page
    deliveries = html(client.get(url("deliveries"), {"channel": str(channel.code)}))
    assert "Waiting to retry" in deliveries and "HTTP 500" in deliveries and SLACK_TOKEN not in deliveries


@responses.activate
def test_a_channel_disabled_after_a_410_says_why_and_can_be_enabled_again(client, alice, org, queued):
    channel = slack_channel(org)
    responses.post(SLACK_URL, status=410)
    client.force_login(alice)

    with queued(execute=True):
        response = client.post(url("channel_test", channel.code))

    assert "The endpoint answered 410 Gone: the channel was disabled." in html(client.get(response.url))
    page = html(client.get(url("channel_detail", channel.code)))
    assert "Disabled: nothing is sent through it" in page and "410 Gone" in page and "Enable again" in page
    assert "Send test" not in page
    listing = html(client.get(url("channels")))
    assert "Disabled" in listing and "410 Gone" in listing
    # A test through a disabled channel is refused with the reason, not queued.
    response = client.post(url("channel_test", channel.code), follow=True)
    assert "enable it first" in html(response) and Delivery.objects.filter(channel=channel).count() == 1

    response = client.post(url("channel_enable", channel.code), follow=True)

    channel.refresh_from_db()
    assert channel.is_enabled and channel.disabled_reason == "" and channel.failed_deliveries_in_a_row == 0
    assert "is enabled again" in html(response) and "Send test" in html(response)


def test_rotating_a_webhooks_secret_shows_the_new_one_once(client, alice, org):
    channel, first = channel_create(organization=org, name="Our API", kind=ChannelKind.WEBHOOK, url=WEBHOOK_URL)
    client.force_login(alice)

    assert 'name="grace_hours"' in html(client.get(url("channel_rotate", channel.code)))
    response = client.post(url("channel_rotate", channel.code), {"grace_hours": "2"})

    channel.refresh_from_db()
    new, old = channel.secrets["secrets"]
    assert old["secret"] == first and old["expires_at"] is not None and new["expires_at"] is None
    assert response.status_code == 200 and f'value="{new["secret"]}"' in html(response)
    assert "for 2 hours" in html(response) and first not in html(response)
    assert "no-store" in response["Cache-Control"]
    assert new["secret"] not in html(client.get(url("channel_detail", channel.code)))

    bad = client.post(url("channel_rotate", channel.code), {"grace_hours": "-1"})
    assert bad.status_code == 400 and "grace_hours" in bad.context["form"].errors

    email = email_channel(org)
    response = client.post(url("channel_rotate", email.code), {"grace_hours": "0"}, follow=True)
    assert "Only webhook channels have a signing secret." in html(response)


def test_deleting_a_channel_asks_first_and_names_the_rules_left_without_one(client, alice, org):
    channel, other = email_channel(org), email_channel(org, name="Backup")
    rule_create(organization=org, name="Run failed", condition=Condition.RUN_FAILED, channels=[channel])
    rule_create(organization=org, name="Digest", condition=Condition.DAILY_DIGEST, channels=[channel, other])
    client.force_login(alice)

    page = html(client.get(url("channel_delete", channel.code)))
    assert "These rules send only here" in page and "Run failed" in page
    assert Channel.objects.filter(pk=channel.pk).exists()

    response = client.post(url("channel_delete", channel.code), follow=True)

    assert not Channel.objects.filter(pk=channel.pk).exists()
    assert "Ops on-call is deleted" in html(response)
    assert "No channel: it tells no one" in html(client.get(url("rules")))


# --- rules ---------------------------------------------------------------------------------------------------------


def rule_data(channels=(), **changes):
    data = {"name": "CRM failing", "condition": Condition.FAILURES_PER_HOUR, "threshold": "", "minutes": "",
            "digest_hour": "8", "scope": Scope.ORGANIZATION, "connection": "", "mapping": "", "level": "warning",
            "channels": [str(channel.code) for channel in channels], "cooldown_minutes": "60",
            "customer_name": "", "customer_contacts": ""}
    data.update(changes)
    return data


def test_adding_a_rule_with_the_issues_defaults(client, alice, org, make_mapping):
    channel = email_channel(org)
    mapping = make_mapping()
    client.force_login(alice)

    form = html(client.get(url("rule_add")))
    assert str(channel.code) in form and "Ops on-call" in form and 'type="checkbox"' in form
    for condition, default in ((Condition.FAILURES_PER_HOUR, ("threshold", 5)),
                               (Condition.UNSYNCED_RECORDS, ("threshold", 100)),
                               (Condition.TARGET_FAILING, ("minutes", 10))):
        response = client.post(url("rule_add"), rule_data([channel], name=condition.label, condition=condition,
                                                          scope=Scope.MAPPING, mapping=str(mapping.code)))
        assert response.status_code == 302, response.context["form"].errors
        rule = Rule.objects.get(name=condition.label)
        assert getattr(rule, default[0]) == default[1], condition
        assert rule.scope == Scope.MAPPING and rule.mapping == mapping and list(rule.channels.all()) == [channel]

    response = client.post(url("rule_add"), rule_data([channel], name="Auth", condition=Condition.AUTH_ERROR))
    assert Rule.objects.get(name="Auth").level == "critical"  # authentication rules are always critical
    page = html(client.get(url("rules")))
    assert "Auth" in page and "N = 5" in page and "N = 100" in page and "N = 10 minutes" in page
    assert f'href="{reverse("mappings:detail", args=[mapping.code])}"' in page


def test_another_organizations_objects_are_form_errors_not_choices(client, alice, org, other_org, make_mapping,
                                                                   make_connection):
    ours = email_channel(org)
    theirs_channel = email_channel(other_org, name="Globex ops")
    theirs_mapping = make_mapping(organization=other_org)
    theirs_connection = make_connection("Globex CRM", organization=other_org)
    client.force_login(alice)

    form = html(client.get(url("rule_add")))
    assert "Globex" not in form and str(theirs_channel.code) not in form

    for data, field in [
        (rule_data([ours], scope=Scope.MAPPING, mapping=str(theirs_mapping.code)), "mapping"),
        (rule_data([ours], scope=Scope.CONNECTION, connection=str(theirs_connection.code)), "connection"),
        (rule_data([theirs_channel]), "channels"),
        (rule_data([ours], scope=Scope.MAPPING, mapping="not-an-id"), "mapping"),
    ]:
        response = client.post(url("rule_add"), data)
        assert response.status_code == 400 and field in response.context["form"].errors, field
        assert "Globex" not in html(response)
    assert not Rule.objects.exists()


def test_the_services_refusals_land_next_to_their_fields(client, alice, org):
    channel = email_channel(org)
    client.force_login(alice)

    cases = [
        (rule_data(), "channels", "Choose at least one channel"),
        (rule_data([channel], scope=Scope.MAPPING), "mapping", "names its mapping"),
        (rule_data([channel], customer_facing="on", customer_contacts="shop owner"), "customer_contacts",
         "not an email address"),
        (rule_data([channel], threshold="0"), "threshold", ""),
    ]
    for data, field, text in cases:
        response = client.post(url("rule_add"), data)
        assert response.status_code == 400, data
        errors = response.context["form"].errors
        assert text in " ".join(errors.get(field, [])), (field, errors)
    assert not Rule.objects.exists()

    # A customer-facing rule may tell only the customer.
    response = client.post(url("rule_add"), rule_data(customer_facing="on", customer_name="Ms. Rivera",
                                                      customer_contacts="owner@shop.example\nshop@shop.example"))
    rule = Rule.objects.get()
    assert response.status_code == 302 and rule.customer_contacts == ["owner@shop.example", "shop@shop.example"]
    assert "The customer only" in html(client.get(url("rules")))


def test_editing_a_rule(client, alice, org, make_connection):
    channel, other = email_channel(org), email_channel(org, name="Backup")
    crm = make_connection("CRM")
    rule = rule_create(organization=org, name="Failures", condition=Condition.FAILURES_PER_HOUR, threshold=7,
                       channels=[channel])
    client.force_login(alice)

    form = client.get(url("rule_edit", rule.code))
    assert form.context["form"]["threshold"].value() == 7 and "Failures" in html(form)

    response = client.post(url("rule_edit", rule.code), rule_data(
        [other], name="CRM failures", threshold="12", scope=Scope.CONNECTION, connection=str(crm.code),
        level="critical"))

    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.threshold, rule.scope, rule.connection, rule.level) == (
        "CRM failures", 12, Scope.CONNECTION, crm, "critical")
    assert list(rule.channels.all()) == [other]


def test_disabling_a_rule_closes_its_firing_alerts(client, alice, org, make_mapping, queued):
    channel = email_channel(org)
    mapping = make_mapping()
    rule = rule_create(organization=org, name="Run failed", condition=Condition.RUN_FAILED, channels=[channel])
    alert = fire(rule, mapping, queued)
    sent = len(mail.outbox)
    client.force_login(alice)

    response = client.post(url("rule_disable", rule.code), follow=True)

    rule.refresh_from_db()
    alert.refresh_from_db()
    assert not rule.is_enabled and alert.state == AlertState.RESOLVED and alert.resolved_at is not None
    assert "Its 1 firing alert was closed without a recovery notice." in html(response)
    assert len(mail.outbox) == sent  # the condition did not clear: nobody is told it did
    assert "the rule was disabled" in html(client.get(url("alert_detail", alert.code)))

    response = client.post(url("rule_enable", rule.code), follow=True)
    rule.refresh_from_db()
    assert rule.is_enabled and "is enabled" in html(response)
    assert Alert.objects.get(pk=alert.pk).state == AlertState.RESOLVED


def test_a_rule_that_lost_its_channel_can_still_be_disabled_but_not_enabled(client, alice, org):
    channel = email_channel(org)
    rule = rule_create(organization=org, name="Run failed", condition=Condition.RUN_FAILED, channels=[channel])
    channel.delete()
    client.force_login(alice)

    client.post(url("rule_disable", rule.code))
    rule.refresh_from_db()
    assert not rule.is_enabled

    response = client.post(url("rule_enable", rule.code), follow=True)
    rule.refresh_from_db()
    assert not rule.is_enabled and "cannot be enabled" in html(response)


def test_rule_update_closes_alerts_only_when_the_rule_watches_something_else(org, make_mapping, queued):
    channel = email_channel(org)
    mapping = make_mapping()
    rule = rule_create(organization=org, name="Run failed", condition=Condition.RUN_FAILED, channels=[channel],
                       cooldown_minutes=60)
    alert = fire(rule, mapping, queued)

    rule_update(rule=rule, cooldown_minutes=5, name="Runs failing")
    assert Alert.objects.get(pk=alert.pk).state == AlertState.FIRING

    rule_update(rule=rule, scope=Scope.MAPPING, mapping=mapping)
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED
    assert "watches another condition or scope" in alert.details["closed_reason"]

    # Under its new scope the next failure opens a new incident.
    assert fire(rule, mapping, queued).pk != alert.pk


def test_deleting_a_rule_asks_first(client, alice, org):
    rule = rule_create(organization=org, name="Run failed", condition=Condition.RUN_FAILED,
                       channels=[email_channel(org)])
    client.force_login(alice)

    assert "What deleting does" in html(client.get(url("rule_delete", rule.code)))
    assert Rule.objects.filter(pk=rule.pk).exists()
    client.post(url("rule_delete", rule.code))
    assert not Rule.objects.filter(pk=rule.pk).exists()


# --- alerts and deliveries -------------------------------------------------------------------------------------


def test_alerts_firing_first_then_resolved_with_their_deliveries(client, alice, org, make_mapping, queued):
    channel = email_channel(org)
    first, second = make_mapping(), make_mapping()
    rule = rule_create(organization=org, name="Run failed", condition=Condition.RUN_FAILED, channels=[channel])
    old = fire(rule, first, queued)
    Alert.objects.filter(pk=old.pk).update(state=AlertState.RESOLVED, resolved_at=timezone.now())
    firing = fire(rule, second, queued)
    client.force_login(alice)

    response = client.get(url("alerts"))

    assert response.context["firing"] == [firing]
    assert list(response.context["page"].object_list) == [Alert.objects.get(pk=old.pk)]
    page = html(response)
    assert page.index(f"A run of {second.name} failed") < page.index(f"A run of {first.name} failed")
    assert '<span class="visually-hidden">, </span>1<span class="visually-hidden"> firing</span>' in page

    detail = html(client.get(url("alert_detail", firing.code)))
    assert "The CRM did not answer" in detail and "Ops on-call" in detail and "Delivered" in detail
    assert f'href="{reverse("run_detail", args=[firing.run.code])}" role="button"' in detail  # relative, not absolute

    only_rule = client.get(url("alerts"), {"rule": str(rule.code)})
    assert only_rule.context["rule"] == rule
    unknown = client.get(url("alerts"), {"rule": "nope"}, follow=True)
    assert "No rule with this id" in html(unknown)


def test_deliveries_by_channel_status_and_alert(client, alice, org, other_org, make_mapping, queued):
    ops, backup = email_channel(org), email_channel(org, name="Backup")
    rule = rule_create(organization=org, name="Run failed", condition=Condition.RUN_FAILED, channels=[ops])
    alert = fire(rule, make_mapping(), queued)
    channel_send_test(channel=backup)  # pending: its task is never run here
    client.force_login(alice)

    everything = client.get(url("deliveries")).context["page"].object_list
    assert len(everything) == 2
    by_channel = client.get(url("deliveries"), {"channel": str(backup.code)}).context["page"].object_list
    assert [d.channel for d in by_channel] == [backup]
    by_status = client.get(url("deliveries"), {"status": DeliveryStatus.DELIVERED}).context["page"].object_list
    assert [d.channel for d in by_status] == [ops]
    by_alert = client.get(url("deliveries"), {"alert": str(alert.code)})
    assert [d.alert for d in by_alert.context["page"].object_list] == [alert]

    theirs = email_channel(other_org, name="Globex ops")
    response = client.get(url("deliveries"), {"channel": str(theirs.code)})
    assert "channel" in response.context["form"].errors and not response.context["page"].object_list


# --- tenancy, roles, queries ---------------------------------------------------------------------------------------


def notification_history(org, mapping, queued, *, alerts=1):
    """A channel of each kind, a rule, `alerts` alerts with their deliveries and a test message."""
    email = email_channel(org, name=f"Ops {uuid.uuid4().hex[:6]}")
    slack = slack_channel(org, name=f"Slack {uuid.uuid4().hex[:6]}")
    webhook, _ = channel_create(organization=org, name=f"Hook {uuid.uuid4().hex[:6]}", kind=ChannelKind.WEBHOOK,
                                url=WEBHOOK_URL)
    rule = rule_create(organization=org, name=f"Run failed {uuid.uuid4().hex[:6]}", condition=Condition.RUN_FAILED,
                       channels=[email, slack, webhook])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(SLACK_URL, status=500)
        mock.post(re.compile(r"https://hooks\.example\.com/.*"), status=204)
        for _ in range(alerts):
            with queued(execute=True):
                notify_run_finished(failed_run(mapping))
            Alert.objects.filter(rule=rule, state=AlertState.FIRING).update(state=AlertState.RESOLVED,
                                                                            resolved_at=timezone.now())
        with queued(execute=True):
            notify_run_finished(failed_run(mapping))
    channel_send_test(channel=email)
    return {"channel": email, "rule": rule, "alert": Alert.objects.filter(rule=rule).first(),
            "delivery": Delivery.objects.filter(rule=rule).first()}


def every_page(objects):
    channel, rule, alert, delivery = (objects[k].code for k in ("channel", "rule", "alert", "delivery"))
    return [url("channels"), url("channel_add"), url("channel_add") + "?kind=webhook", url("channel_detail", channel),
            url("channel_edit", channel), url("channel_delete", channel), url("rules"), url("rule_add"),
            url("rule_edit", rule), url("rule_delete", rule), url("alerts"), url("alert_detail", alert),
            url("deliveries"), url("deliveries") + f"?channel={channel}", url("delivery_detail", delivery)]


def test_another_organizations_notifications_answer_404_on_every_page_and_action(client, alice, other_org,
                                                                                 make_mapping, queued):
    theirs = notification_history(other_org, make_mapping(organization=other_org), queued)
    channel, rule = theirs["channel"], theirs["rule"]
    client.force_login(alice)

    for target in (url("channel_detail", channel.code), url("channel_edit", channel.code),
                   url("channel_delete", channel.code), url("channel_rotate", channel.code),
                   url("rule_edit", rule.code), url("rule_delete", rule.code),
                   url("alert_detail", theirs["alert"].code), url("delivery_detail", theirs["delivery"].code)):
        assert client.get(target).status_code == 404, target
    assert client.get(url("deliveries"), {"alert": str(theirs["alert"].code)}).status_code == 404
    deliveries = Delivery.objects.count()
    for name in ("channel_test", "channel_enable", "channel_delete", "channel_edit", "channel_rotate"):
        assert client.post(url(name, channel.code), {"name": "mine", "grace_hours": "0"}).status_code == 404, name
    for name in ("rule_enable", "rule_disable", "rule_delete", "rule_edit"):
        assert client.post(url(name, rule.code), rule_data()).status_code == 404, name
    assert client.get(url("channel_detail", UNKNOWN)).status_code == 404
    assert Delivery.objects.count() == deliveries
    assert Channel.objects.filter(pk=channel.pk, name=channel.name).exists()
    assert Rule.objects.filter(pk=rule.pk, is_enabled=True).exists()


def test_a_viewer_sees_everything_but_cannot_act(client, viewer, org, make_mapping, queued):
    ours = notification_history(org, make_mapping(), queued)
    channel, rule = ours["channel"], ours["rule"]
    client.force_login(viewer)

    for target in (url("channels"), url("channel_detail", channel.code), url("rules"), url("alerts"),
                   url("alert_detail", ours["alert"].code), url("deliveries"),
                   url("delivery_detail", ours["delivery"].code)):
        response = client.get(target)
        assert response.status_code == 200, target
        assert "Send test" not in html(response) and "Disable" not in html(response), target
    for target in (url("channel_add"), url("channel_edit", channel.code), url("channel_delete", channel.code),
                   url("channel_rotate", channel.code), url("rule_add"), url("rule_edit", rule.code),
                   url("rule_delete", rule.code)):
        assert client.get(target).status_code == 403, target
    deliveries = Delivery.objects.count()
    for name in ("channel_test", "channel_enable", "channel_delete", "channel_edit", "channel_rotate"):
        assert client.post(url(name, channel.code), {"name": "mine"}).status_code == 403, name
    for name in ("rule_enable", "rule_disable", "rule_delete", "rule_edit"):
        assert client.post(url(name, rule.code), rule_data()).status_code == 403, name
    assert client.post(url("channel_add"), {"kind": "email", "name": "x", "recipients": "x@example.org"}
                       ).status_code == 403
    assert Delivery.objects.count() == deliveries and Rule.objects.get(pk=rule.pk).is_enabled
    assert Channel.objects.filter(pk=channel.pk).exists()


def test_actions_are_posts(client, alice, org):
    channel = email_channel(org)
    rule = rule_create(organization=org, name="Run failed", condition=Condition.RUN_FAILED, channels=[channel])
    client.force_login(alice)

    assert client.get(url("channel_test", channel.code)).status_code == 405
    assert client.get(url("channel_enable", channel.code)).status_code == 405
    assert client.get(url("rule_disable", rule.code)).status_code == 405
    assert not Delivery.objects.exists()


def query_counts(client, targets):
    counts = {}
    for target in targets:
        client.get(target)
        with CaptureQueriesContext(connection) as captured:
            response = client.get(target)
        assert response.status_code == 200, target
        counts[target] = len(captured.captured_queries)
    return counts


def test_the_pages_queries_do_not_grow_with_the_notifications(client, alice, org, make_mapping, queued):
    mapping = make_mapping()
    objects = notification_history(org, mapping, queued)
    client.force_login(alice)
    targets = [*every_page(objects), url("alerts") + f"?rule={objects['rule'].code}"]

    before = query_counts(client, targets)
    for _ in range(3):
        notification_history(org, mapping, queued, alerts=4)
    # More of the same on the very objects the pages show: deliveries of the channel, alerts of the rule.
    for _ in range(5):
        channel_send_test(channel=objects["channel"])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.post(SLACK_URL, status=500)
        mock.post(re.compile(r"https://hooks\.example\.com/.*"), status=204)
        for _ in range(3):
            Alert.objects.filter(rule=objects["rule"], state=AlertState.FIRING).update(
                state=AlertState.RESOLVED, resolved_at=timezone.now() - timedelta(minutes=1))
            with queued(execute=True):
                notify_run_finished(failed_run(mapping))
    after = query_counts(client, targets)

    problems = [f"{target}: {before[target]} queries, then {after[target]}" for target in targets
                if after[target] > before[target] or after[target] > 25]
    assert not problems, "\n".join(problems)
