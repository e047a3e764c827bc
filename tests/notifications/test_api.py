"""The notifications API: channels, rules, alerts and deliveries, tenant-scoped like every resource. Another
organization's object answers 404 on every route, a viewer reads but gets 403 on every write, and bad input is a
problem-JSON 4xx, never a 500."""

import pytest
import responses

from notifications.models import Alert, Channel, ChannelKind, Condition, Delivery, Rule
from notifications.services import channel_create, rule_create
from tests.notifications.conftest import WEBHOOK_URL

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


@pytest.fixture
def notified(org, make_mapping, finish_run):
    """One of each: an email channel, a webhook channel, a rule, a fired alert and its delivery."""
    email, _ = channel_create(organization=org, name="Team", kind=ChannelKind.EMAIL, recipients=["ops@acme.example"])
    hook, _ = channel_create(organization=org, name="Hook", kind=ChannelKind.WEBHOOK, url=WEBHOOK_URL)
    mapping = make_mapping()
    rule = rule_create(organization=org, name="Errors", condition=Condition.EVERY_ERROR, channels=[email],
                       scope="mapping", mapping=mapping)
    finish_run(mapping, errors=2)
    return {"email": email, "hook": hook, "rule": rule, "mapping": mapping, "alert": Alert.objects.get(),
            "delivery": Delivery.objects.get()}


def test_channels_are_created_listed_changed_and_deleted(api):
    created = api.post("/api/v1/notification-channels/", {"name": "Team", "kind": "email",
                                                          "recipients": ["ops@acme.example"]}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["destination"] == "ops@acme.example" and body["secret"] is None and body["is_enabled"]
    url = f"/api/v1/notification-channels/{body['id']}/"
    changed = api.patch(url, {"recipients": ["a@acme.example", "b@acme.example"]}, format="json")
    assert changed.json()["recipients"] == ["a@acme.example", "b@acme.example"]
    assert api.get("/api/v1/notification-channels/").json()["count"] == 1
    assert api.patch(url, {"kind": "slack"}, format="json").status_code == 400
    assert api.delete(url).status_code == 204
    assert not Channel.objects.exists()


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "kind": "email", "recipients": ["not an address"]}, "recipients"),
    ({"name": "x", "kind": "email"}, "recipients"),
    ({"name": "x", "kind": "webhook", "url": "http://127.0.0.1:9/"}, "url"),
    ({"name": "x", "kind": "webhook"}, "url"),
    ({"name": "x", "kind": "slack", "url": "https://hooks.slack.com/x", "recipients": ["a@b.example"]}, "recipients"),
    ({"name": "x", "kind": "email", "recipients": ["a@b.example"], "secret": "whsec_QUFB"}, "secret"),
    ({"name": "x", "kind": "webhook", "url": WEBHOOK_URL, "secret": "whsec_c2hvcnQ="}, "secret"),
    ({"name": "x", "kind": "pager"}, "kind"),
    ({"name": "x", "kind": "email", "recipients": ["a@b.example"], "colour": "red"}, "colour"),
])
def test_a_bad_channel_is_a_problem_json_400(api, body, field):
    answer = api.post("/api/v1/notification-channels/", body, format="json")
    assert answer.status_code == 400, answer.content
    assert answer["Content-Type"].startswith(PROBLEM)
    assert field in answer.json()["errors"]
    assert not Channel.objects.exists()


def test_a_duplicate_channel_name_is_a_400(api, notified):
    answer = api.post("/api/v1/notification-channels/", {"name": "Team", "kind": "email",
                                                         "recipients": ["a@b.example"]}, format="json")
    assert answer.status_code == 400 and "name" in answer.json()["errors"]


def test_rules_take_defaults_and_refuse_what_cannot_work(api, notified):
    email = str(notified["email"].code)
    made = api.post("/api/v1/notification-rules/", {"name": "Slow target", "condition": "target_failing",
                                                   "channels": [email]}, format="json")
    assert made.status_code == 201, made.content
    assert (made.json()["minutes"], made.json()["threshold"], made.json()["scope"]) == (10, None, "organization")
    per_hour = api.post("/api/v1/notification-rules/", {"name": "Hourly", "condition": "failures_per_hour",
                                                       "channels": [email]}, format="json").json()
    assert per_hour["threshold"] == 5
    unsynced = api.post("/api/v1/notification-rules/", {"name": "Backlog", "condition": "unsynced_records",
                                                       "channels": [email]}, format="json").json()
    assert unsynced["threshold"] == 100

    for body, field in [
        ({"name": "a", "condition": "run_failed"}, "channels"),
        ({"name": "b", "condition": "run_failed", "channels": [email], "scope": "mapping"}, "mapping"),
        ({"name": "c", "condition": "run_failed", "channels": [email], "scope": "connection"}, "connection"),
        ({"name": "d", "condition": "run_failed", "channels": [email], "customer_facing": True}, "customer_contacts"),
        ({"name": "e", "condition": "run_failed", "channels": [email], "digest_hour": 24}, "digest_hour"),
        ({"name": "f", "condition": "never", "channels": [email]}, "condition"),
    ]:
        answer = api.post("/api/v1/notification-rules/", body, format="json")
        assert answer.status_code == 400, (body, answer.content)
        assert field in answer.json()["errors"], (body, answer.json())
    changed = api.patch(f"/api/v1/notification-rules/{made.json()['id']}/", {"minutes": 30, "level": "critical"},
                        format="json")
    assert (changed.json()["minutes"], changed.json()["level"]) == (30, "critical")


def test_alerts_and_deliveries_are_listed_filtered_and_read(api, notified):
    alerts = api.get("/api/v1/alerts/", {"state": "firing"}).json()["results"]
    assert [a["id"] for a in alerts] == [str(notified["alert"].code)]
    alert = api.get(f"/api/v1/alerts/{notified['alert'].code}/").json()
    assert alert["rule"]["id"] == str(notified["rule"].code) and alert["mapping"]["name"] == notified["mapping"].name
    assert api.get("/api/v1/alerts/", {"state": "resolved"}).json()["results"] == []
    deliveries = api.get("/api/v1/deliveries/", {"alert": str(notified["alert"].code)}).json()["results"]
    [delivery] = deliveries
    assert delivery["status"] == "delivered" and delivery["channel"]["name"] == "Team"
    assert delivery["attempt_log"][0]["succeeded"] is True
    assert api.post("/api/v1/alerts/", {}, format="json").status_code == 405


@responses.activate
def test_send_test_rotate_and_enable_through_the_api(api, notified, django_capture_on_commit_callbacks):
    responses.post(WEBHOOK_URL, status=200)
    hook = notified["hook"]
    with django_capture_on_commit_callbacks(execute=True):
        answer = api.post(f"/api/v1/notification-channels/{hook.code}/test/")
    assert answer.status_code == 202 and answer.json()["event"] == "test"
    rotated = api.post(f"/api/v1/notification-channels/{hook.code}/rotate-secret/", {"grace_hours": 0},
                       format="json")
    assert rotated.status_code == 200 and rotated.json()["secret"].startswith("whsec_")
    refused = api.post(f"/api/v1/notification-channels/{notified['email'].code}/rotate-secret/", {}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "not_a_webhook"
    Channel.objects.filter(pk=hook.pk).update(is_enabled=False, disabled_reason="410")
    disabled = api.post(f"/api/v1/notification-channels/{hook.code}/test/")
    assert disabled.status_code == 409 and disabled.json()["code"] == "channel_disabled"
    enabled = api.post(f"/api/v1/notification-channels/{hook.code}/enable/")
    assert enabled.json()["is_enabled"] is True and enabled.json()["disabled_reason"] == ""


def test_a_viewer_reads_everything_and_changes_nothing(viewer_api, notified):
    email, rule = notified["email"], notified["rule"]
    for path in ("/api/v1/notification-channels/", "/api/v1/notification-rules/", "/api/v1/alerts/",
                 "/api/v1/deliveries/", f"/api/v1/alerts/{notified['alert'].code}/"):
        assert viewer_api.get(path).status_code == 200, path
    writes = [
        ("post", "/api/v1/notification-channels/", {"name": "x", "kind": "email", "recipients": ["a@b.example"]}),
        ("patch", f"/api/v1/notification-channels/{email.code}/", {"name": "renamed"}),
        ("delete", f"/api/v1/notification-channels/{email.code}/", None),
        ("post", f"/api/v1/notification-channels/{email.code}/test/", None),
        ("post", f"/api/v1/notification-channels/{notified['hook'].code}/rotate-secret/", {}),
        ("post", f"/api/v1/notification-channels/{email.code}/enable/", None),
        ("post", "/api/v1/notification-rules/",
         {"name": "r", "condition": "run_failed", "channels": [str(email.code)]}),
        ("patch", f"/api/v1/notification-rules/{rule.code}/", {"name": "renamed"}),
        ("delete", f"/api/v1/notification-rules/{rule.code}/", None),
    ]
    for method, path, body in writes:
        answer = getattr(viewer_api, method)(path, body, format="json")
        assert answer.status_code == 403, (method, path, answer.content)
        assert answer["Content-Type"].startswith(PROBLEM)
    assert Channel.objects.count() == 2 and Rule.objects.get().name == "Errors"
    assert Delivery.objects.count() == 1


def test_another_organization_gets_404_on_every_object_and_sees_none_in_lists(other_api, notified):
    email, hook, rule = notified["email"], notified["hook"], notified["rule"]
    alert, delivery = notified["alert"], notified["delivery"]
    calls = [
        ("get", f"/api/v1/notification-channels/{email.code}/", None),
        ("patch", f"/api/v1/notification-channels/{email.code}/", {"name": "mine"}),
        ("delete", f"/api/v1/notification-channels/{hook.code}/", None),
        ("post", f"/api/v1/notification-channels/{email.code}/test/", None),
        ("post", f"/api/v1/notification-channels/{hook.code}/rotate-secret/", {}),
        ("post", f"/api/v1/notification-channels/{hook.code}/enable/", None),
        ("get", f"/api/v1/notification-rules/{rule.code}/", None),
        ("put", f"/api/v1/notification-rules/{rule.code}/", {"name": "mine", "condition": "run_failed"}),
        ("delete", f"/api/v1/notification-rules/{rule.code}/", None),
        ("get", f"/api/v1/alerts/{alert.code}/", None),
        ("get", f"/api/v1/deliveries/{delivery.code}/", None),
    ]
    for method, path, body in calls:
        answer = getattr(other_api, method)(path, body, format="json")
        assert answer.status_code == 404, (method, path, answer.content)
        assert answer["Content-Type"].startswith(PROBLEM)
    for path in ("/api/v1/notification-channels/", "/api/v1/notification-rules/", "/api/v1/alerts/",
                 "/api/v1/deliveries/"):
        page = other_api.get(path).json()
        assert page["results"] == [], path
    # Our channel or mapping named in their rule is as unknown as a made-up id.
    for body in ({"channels": [str(email.code)]},
                 {"channels": [], "customer_facing": True, "customer_contacts": ["x@y.example"], "scope": "mapping",
                  "mapping": str(notified["mapping"].code)}):
        answer = other_api.post("/api/v1/notification-rules/", {"name": "steal", "condition": "run_failed", **body},
                                format="json")
        assert answer.status_code == 404, answer.content
    assert other_api.get("/api/v1/deliveries/", {"channel": str(email.code)}).json()["results"] == []
    assert Rule.objects.count() == 1 and Channel.objects.count() == 2
    hook.refresh_from_db()
    assert hook.is_enabled and hook.name == "Hook"
