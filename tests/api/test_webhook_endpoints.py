"""The webhook API: endpoints (CRUD, secrets shown once, rotation) and received events (list, detail, replay)."""

import base64
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import TokenRole
from integrations.connectors.sandbox import change_record, seed_records
from integrations.models import WebhookEndpoint, WebhookEvent, WebhookEventStatus
from integrations.webhooks import webhook_endpoint_create
from syncs.models import RunStatus, SyncRun, Trigger
from tests.api.test_foundation import assert_problem
from tests.integrations.test_webhooks import changed, signed
from tests.syncs.helpers import person, records

pytestmark = pytest.mark.django_db

ENDPOINTS = "/api/v1/webhook-endpoints/"
EVENTS = "/api/v1/webhook-events/"
MISSING = "00000000-0000-0000-0000-000000000000"
# A canary: it must never show up in an answer other than the one that creates or rotates it.
SECRET = "whsec_" + base64.b64encode(b"canary-api-webhook-key-7c2e").decode()


def url(prefix, obj, suffix=""):
    code = obj if isinstance(obj, str) else obj.code
    return f"{prefix}{code}/{suffix}"


def without_uuid(response):
    return {key: value for key, value in response.json().items() if key != "uuid"}


def secret_material(secret):
    """The secret and, for a whsec_ secret, its key alone: neither may appear in an answer."""
    return {secret, secret.removeprefix("whsec_")}


def assert_no_secret(response, secret):
    text = response.content.decode()
    assert not any(material in text for material in secret_material(secret)), text[:500]


def deliver(client, receive_url, raw, headers):
    """A POST to the receiver, the way the sending system would make it (through the full URL)."""
    return client.post(receive_url, data=raw, content_type="application/json", headers=headers)


@pytest.fixture
def client_with_role(make_token):
    def make(role):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(role=role)}")
        return client

    return make


@pytest.fixture
def hook(make_mapping):
    """A contacts mapping whose source connection has a webhook endpoint, and three source records."""
    mapping = make_mapping()
    source = mapping.source_connection
    seed_records(source, "contacts", [person(1), person(2), person(3)], ids=["ct_1", "ct_2", "ct_3"])
    endpoint, _ = webhook_endpoint_create(connection=source, name="Shop events", secret=SECRET)
    return SimpleNamespace(endpoint=endpoint, mapping=mapping, source=source, target=mapping.target_connection,
                           receive_url=f"http://testserver{endpoint.receive_path}")


@pytest.fixture
def received(client, hook, django_capture_on_commit_callbacks):
    """Deliver a signed event naming some records and process it for real; returns the stored event."""

    def receive(*ids, webhook_id="msg_1", object_name="contacts", execute=True):
        raw = changed(*ids, object_name=object_name)
        with django_capture_on_commit_callbacks(execute=execute):
            response = deliver(client, hook.receive_url, raw, signed(raw, secret=SECRET, webhook_id=webhook_id))
        assert response.status_code == 202, response.content
        return WebhookEvent.objects.get(code=response.json()["event"])

    return receive


# --- create ------------------------------------------------------------------------------------------------------


def test_a_created_endpoint_shows_its_secret_once_and_that_secret_signs_a_real_delivery(
    api, client, make_mapping, django_capture_on_commit_callbacks
):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1)], ids=["ct_1"])

    response = api.post(ENDPOINTS, {"name": "Shop events", "connection": str(mapping.source_connection.code)},
                        format="json")

    assert response.status_code == 201, response.content
    created = response.json()
    endpoint = WebhookEndpoint.objects.get(code=created["id"])
    assert created["secret"].startswith("whsec_")
    assert created["receive_url"] == f"http://testserver/hooks/{endpoint.code}/"
    assert created["connection"] == str(mapping.source_connection.code)
    assert created["secret_count"] == 1 and created["is_active"] is True and created["last_received_at"] is None
    raw = changed("ct_1")
    with django_capture_on_commit_callbacks(execute=True):
        delivery = deliver(client, created["receive_url"], raw, signed(raw, secret=created["secret"]))
    assert delivery.status_code == 202, delivery.content
    assert [r.data["email"] for r in records(mapping.target_connection)] == ["person1@example.com"]
    # Shown once: never again, in any answer.
    for answer in (api.get(ENDPOINTS), api.get(url(ENDPOINTS, endpoint)),
                   api.patch(url(ENDPOINTS, endpoint), {"name": "Renamed"}, format="json"),
                   api.get(EVENTS), api.get(url(EVENTS, WebhookEvent.objects.get()))):
        assert answer.status_code == 200
        assert "secret" not in answer.json()
        assert_no_secret(answer, created["secret"])
    assert api.get(url(ENDPOINTS, endpoint)).json()["last_received_at"] is not None


def test_a_secret_the_sender_generated_is_pasted_at_creation(api, client, make_connection):
    vendor_secret = "vendor-plain-secret-canary-91"

    created = api.post(ENDPOINTS, {"name": "Vendor", "connection": str(make_connection().code),
                                   "secret": vendor_secret}, format="json").json()

    assert created["secret"] == vendor_secret
    raw = changed("ct_1")
    assert deliver(client, created["receive_url"], raw, signed(raw, secret=vendor_secret)).status_code == 202
    listed = api.get(ENDPOINTS)
    assert [row["id"] for row in listed.json()["results"]] == [created["id"]]
    assert_no_secret(listed, vendor_secret)


def test_an_endpoint_may_be_created_inactive(api, client, make_connection):
    created = api.post(ENDPOINTS, {"name": "Later", "connection": str(make_connection().code), "is_active": False},
                       format="json").json()

    assert created["is_active"] is False
    raw = changed("ct_1")
    assert_problem(deliver(client, created["receive_url"], raw, signed(raw, secret=created["secret"])), 404)


def test_a_bad_secret_is_refused_without_quoting_it(api, make_connection):
    response = api.post(ENDPOINTS, {"name": "Bad", "connection": str(make_connection().code),
                                    "secret": "whsec_#not-base64-canary#"}, format="json")

    body = assert_problem(response, 400, "validation_error")
    assert set(body["errors"]) == {"secret"}
    assert "not-base64-canary" not in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


DROP = object()


@pytest.mark.parametrize("payload, field", [
    ({"name": DROP}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"connection": DROP}, "connection"),
    ({"name": ["a list"]}, "name"),
    ({"is_active": "maybe"}, "is_active"),
    ({"secret": ["a", "list"]}, "secret"),
    ({"secret": {"an": "object"}}, "secret"),
    ({"secret": "x" * 501}, "secret"),
    ({"secret": "nul\u0000byte"}, "secret"),
    ({"secret": "x"}, "secret"),  # a one-character secret could be guessed from one signed delivery
    ({"secret": "twenty-three-characters"}, "secret"),
    ({"secret": "whsec_" + base64.b64encode(b"23 bytes are not enough").decode()}, "secret"),
    ({"secret": "whsec_" + base64.b64encode(b"k" * 65).decode()}, "secret"),  # Standard Webhooks: at most 64
])
def test_bad_input_is_a_400_naming_the_field(api, make_connection, payload, field):
    body = {"name": "Events", "connection": str(make_connection().code), **payload}
    body = {key: value for key, value in body.items() if value is not DROP}

    problem = assert_problem(api.post(ENDPOINTS, body, format="json"), 400, "validation_error")

    assert field in problem["errors"]
    assert not WebhookEndpoint.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(api):
    assert_problem(api.post(ENDPOINTS, ["Events"], format="json"), 400)
    assert_problem(api.post(ENDPOINTS, "{not json", content_type="application/json"), 400)


def test_another_organizations_connection_in_the_body_answers_404_like_a_missing_one(
    api, make_connection, other_org
):
    foreign = make_connection("Theirs", organization=other_org)

    theirs = api.post(ENDPOINTS, {"name": "Intruder", "connection": str(foreign.code)}, format="json")
    missing = api.post(ENDPOINTS, {"name": "Intruder", "connection": MISSING}, format="json")
    not_a_code = api.post(ENDPOINTS, {"name": "Intruder", "connection": "not-a-uuid"}, format="json")

    assert_problem(theirs, 404)
    assert without_uuid(theirs) == {**without_uuid(missing), "detail": without_uuid(theirs)["detail"]}
    assert without_uuid(theirs)["detail"].replace(str(foreign.code), MISSING) == without_uuid(missing)["detail"]
    assert_problem(not_a_code, 404)
    assert not WebhookEndpoint.objects.exists()


# --- read, update, delete ----------------------------------------------------------------------------------------


def test_an_endpoint_is_read_back_with_every_field_and_no_secret(api, hook):
    response = api.get(url(ENDPOINTS, hook.endpoint))

    body = response.json()
    assert set(body) == {"id", "name", "connection", "is_active", "secret_count", "receive_url", "last_received_at",
                         "created_at"}
    assert body["receive_url"] == hook.receive_url and body["connection"] == str(hook.source.code)
    assert_no_secret(response, SECRET)


def test_an_endpoint_is_renamed_and_deactivated_and_then_refuses_deliveries(api, client, hook):
    response = api.patch(url(ENDPOINTS, hook.endpoint), {"name": "Paused hook", "is_active": False}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["name"] == "Paused hook" and response.json()["is_active"] is False
    raw = changed("ct_1")
    assert_problem(deliver(client, hook.receive_url, raw, signed(raw, secret=SECRET)), 404)
    replaced = api.put(url(ENDPOINTS, hook.endpoint),
                       {"name": "Live again", "connection": str(hook.source.code), "is_active": True}, format="json")
    assert replaced.status_code == 200, replaced.content
    assert deliver(client, hook.receive_url, raw, signed(raw, secret=SECRET)).status_code == 202


def test_an_endpoint_cannot_move_to_another_connection_or_take_a_secret_in_an_update(api, hook, make_connection):
    other = make_connection("Other shop")

    moved = assert_problem(api.patch(url(ENDPOINTS, hook.endpoint), {"connection": str(other.code)}, format="json"),
                           400)
    resecret = api.patch(url(ENDPOINTS, hook.endpoint), {"secret": "whsec_" + base64.b64encode(b"new").decode()},
                         format="json")

    assert set(moved["errors"]) == {"connection"}
    assert set(assert_problem(resecret, 400)["errors"]) == {"secret"}
    hook.endpoint.refresh_from_db()
    assert hook.endpoint.connection == hook.source and hook.endpoint.secrets == [SECRET]


def test_deleting_an_endpoint_deletes_its_events_and_its_url_stops_answering(api, client, hook, received):
    received("ct_1")

    assert api.delete(url(ENDPOINTS, hook.endpoint)).status_code == 204

    assert not WebhookEndpoint.objects.exists() and not WebhookEvent.objects.exists()
    raw = changed("ct_1")
    assert_problem(deliver(client, hook.receive_url, raw, signed(raw, secret=SECRET, webhook_id="msg_2")), 404)


def test_the_endpoint_list_filters_by_connection_and_activity(api, hook, make_connection):
    other = make_connection("Billing")
    webhook_endpoint_create(connection=other, name="Billing events")
    paused, _ = webhook_endpoint_create(connection=other, name="Archived events")
    WebhookEndpoint.objects.filter(pk=paused.pk).update(is_active=False)

    def names(query):
        response = api.get(ENDPOINTS + query)
        assert response.status_code == 200, response.content
        return [row["name"] for row in response.json()["results"]]

    assert names("") == ["Archived events", "Billing events", "Shop events"]
    assert names(f"?connection={other.code}") == ["Archived events", "Billing events"]
    assert names("?is_active=false") == ["Archived events"]
    assert names(f"?connection={hook.source.code}&is_active=true") == ["Shop events"]
    assert names("?ordering=-name") == ["Shop events", "Billing events", "Archived events"]
    assert names(f"?connection={MISSING}") == []
    assert_problem(api.get(ENDPOINTS + "?connection=not-a-uuid"), 400)


def test_the_endpoint_list_answers_in_a_bounded_number_of_queries(api, make_connection,
                                                                  django_assert_max_num_queries):
    connections = [make_connection(f"Shop {n}") for n in range(3)]
    for n in range(3):
        webhook_endpoint_create(connection=connections[n], name=f"Hook {n}")
    api.get(ENDPOINTS)  # the token's first use is recorded once

    with django_assert_max_num_queries(4):
        assert len(api.get(ENDPOINTS).json()["results"]) == 3
    for n in range(3, 30):
        webhook_endpoint_create(connection=connections[n % 3], name=f"Hook {n}")
    with django_assert_max_num_queries(4):
        assert len(api.get(ENDPOINTS).json()["results"]) == 30


# --- secrets: rotation --------------------------------------------------------------------------------------------


def test_a_rotated_secret_is_shown_once_and_the_old_one_works_until_it_is_dropped(api, client, hook):
    def status(secret, webhook_id):
        raw = changed("ct_1")
        return deliver(client, hook.receive_url, raw, signed(raw, secret=secret, webhook_id=webhook_id)).status_code

    rotated = api.post(url(ENDPOINTS, hook.endpoint, "rotate-secret/"), {"keep_old": True}, format="json")

    assert rotated.status_code == 200, rotated.content
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != SECRET
    assert rotated.json()["secret_count"] == 2
    assert_no_secret(rotated, SECRET)  # the old secret is not shown again either
    assert status(SECRET, "msg_old") == 202
    assert status(new_secret, "msg_new") == 202
    shown = api.get(url(ENDPOINTS, hook.endpoint))
    assert shown.json()["secret_count"] == 2
    assert_no_secret(shown, new_secret)

    dropped = api.post(url(ENDPOINTS, hook.endpoint, "drop-old-secrets/"))

    assert dropped.status_code == 200, dropped.content
    assert dropped.json()["secret_count"] == 1 and "secret" not in dropped.json()
    assert status(SECRET, "msg_old_again") == 401
    assert status(new_secret, "msg_new_again") == 202


def test_rotating_without_keeping_the_old_secret_rejects_it_at_once(api, client, hook):
    rotated = api.post(url(ENDPOINTS, hook.endpoint, "rotate-secret/"), {"keep_old": False}, format="json").json()

    raw = changed("ct_1")
    assert rotated["secret_count"] == 1
    assert deliver(client, hook.receive_url, raw, signed(raw, secret=SECRET)).status_code == 401
    assert deliver(client, hook.receive_url, raw, signed(raw, secret=rotated["secret"])).status_code == 202


def test_rotation_keeps_the_old_secret_by_default_and_accepts_the_senders_new_one(api, client, hook):
    vendor_secret = "vendor-rotated-secret-canary"

    rotated = api.post(url(ENDPOINTS, hook.endpoint, "rotate-secret/"), {"secret": vendor_secret}, format="json")

    assert rotated.json()["secret"] == vendor_secret and rotated.json()["secret_count"] == 2
    hook.endpoint.refresh_from_db()
    assert hook.endpoint.secrets == [vendor_secret, SECRET]


@pytest.mark.parametrize("payload, field", [
    ({"keep_old": "sometimes"}, "keep_old"),
    ({"secret": "whsec_%%%"}, "secret"),
    ({"secret": ""}, "secret"),
    ({"secret": True}, "secret"),
    ({"secret": "short-vendor-secret"}, "secret"),
])
def test_a_bad_rotation_is_a_400_and_leaves_the_secrets_alone(api, hook, payload, field):
    response = api.post(url(ENDPOINTS, hook.endpoint, "rotate-secret/"), payload, format="json")

    assert field in assert_problem(response, 400)["errors"]
    hook.endpoint.refresh_from_db()
    assert hook.endpoint.secrets == [SECRET]


def test_secrets_that_cannot_be_decrypted_are_a_null_count_and_a_409_when_keeping_them(api, hook):
    WebhookEndpoint.objects.filter(pk=hook.endpoint.pk).update(secrets_ciphertext="not-a-fernet-token")

    assert api.get(url(ENDPOINTS, hook.endpoint)).json()["secret_count"] is None
    assert_problem(api.post(url(ENDPOINTS, hook.endpoint, "rotate-secret/"), {}, format="json"), 409,
                   "webhook_secrets_unreadable")
    assert_problem(api.post(url(ENDPOINTS, hook.endpoint, "drop-old-secrets/")), 409, "webhook_secrets_unreadable")
    fresh = api.post(url(ENDPOINTS, hook.endpoint, "rotate-secret/"), {"keep_old": False}, format="json")
    assert fresh.status_code == 200 and fresh.json()["secret_count"] == 1


# --- events -------------------------------------------------------------------------------------------------------


def test_received_events_are_listed_newest_first_with_their_outcome_and_runs(api, hook, received):
    first = received("ct_1", "ct_2", webhook_id="msg_1")
    ignored = received("dl_1", webhook_id="msg_2", object_name="deals")

    response = api.get(EVENTS)

    assert response.status_code == 200, response.content
    rows = response.json()["results"]
    assert [row["id"] for row in rows] == [str(ignored.code), str(first.code)]
    processed = rows[1]
    assert set(processed) == {"id", "endpoint", "event_id", "status", "outcome", "object_name", "record_ids", "runs",
                              "attempts", "received_at", "processed_at"}
    assert processed["endpoint"] == str(hook.endpoint.code) and processed["event_id"] == "msg_1"
    assert processed["status"] == "processed" and "2 record(s) queued" in processed["outcome"]
    assert processed["record_ids"] == ["ct_1", "ct_2"] and processed["object_name"] == "contacts"
    run = first.runs.get()
    assert processed["runs"] == [{"id": str(run.code), "status": run.status}]
    assert run.status == RunStatus.SUCCEEDED and run.trigger == Trigger.WEBHOOK
    assert rows[0]["status"] == "ignored" and "No active mapping" in rows[0]["outcome"] and rows[0]["runs"] == []


def test_an_event_is_read_back_with_its_payload_and_headers_but_no_signature(api, hook, received):
    event = received("ct_3")

    response = api.get(url(EVENTS, event))

    body = response.json()
    assert body["payload"] == {"type": "records.changed", "object": "contacts", "ids": ["ct_3"]}
    assert body["headers"]["webhook-id"] == "msg_1"
    assert "webhook-signature" not in body["headers"]
    assert body["attempts"] == 1 and body["processed_at"] is not None
    assert body["runs"] == [{"id": str(event.runs.get().code), "status": "succeeded"}]
    assert_no_secret(response, SECRET)


def test_the_event_list_filters_by_endpoint_status_and_time(api, hook, received, make_connection):
    old = received("ct_1", webhook_id="msg_old")
    WebhookEvent.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=2))
    failed = received("ct_2", webhook_id="msg_failed", execute=False)
    WebhookEvent.objects.filter(pk=failed.pk).update(status=WebhookEventStatus.FAILED, outcome="Broken.")
    recent = received("ct_3", webhook_id="msg_recent")
    elsewhere, _ = webhook_endpoint_create(connection=make_connection("Elsewhere"), name="Other hook")
    yesterday = (timezone.now() - timedelta(days=1)).isoformat()

    def ids(query):
        response = api.get(EVENTS, query)
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert ids({"endpoint": str(hook.endpoint.code)}) == [str(recent.code), str(failed.code), str(old.code)]
    assert ids({"endpoint": str(elsewhere.code)}) == []
    assert ids({"status": "failed"}) == [str(failed.code)]
    assert ids({"status": ["failed", "processed"]}) == [str(recent.code), str(failed.code), str(old.code)]
    assert ids({"received_before": yesterday}) == [str(old.code)]
    assert ids({"received_after": yesterday, "status": "processed"}) == [str(recent.code)]
    assert ids({"ordering": "received_at"}) == [str(old.code), str(failed.code), str(recent.code)]
    assert_problem(api.get(EVENTS, {"status": "lost"}), 400)
    assert_problem(api.get(EVENTS, {"received_after": "last tuesday"}), 400)
    assert_problem(api.get(EVENTS, {"endpoint": "not-a-uuid"}), 400)


def test_the_event_list_is_cursor_paginated_newest_first(api, hook, received):
    events = [received(f"ct_{n % 3 + 1}", webhook_id=f"msg_{n}", execute=False) for n in range(5)]

    seen, page = [], api.get(EVENTS, {"page_size": 2}).json()
    while True:
        seen += [row["id"] for row in page["results"]]
        if not page["next"]:
            break
        page = api.get(page["next"]).json()

    assert seen == [str(event.code) for event in reversed(events)]


def test_the_event_list_answers_in_a_bounded_number_of_queries(api, hook, received, django_assert_max_num_queries):
    for n in range(3):
        received(f"ct_{n % 3 + 1}", webhook_id=f"msg_{n}")
    api.get(EVENTS)  # the token's first use is recorded once

    with django_assert_max_num_queries(4):
        assert len(api.get(EVENTS).json()["results"]) == 3
    for n in range(3, 30):
        received(f"ct_{n % 3 + 1}", webhook_id=f"msg_{n}")
    assert SyncRun.objects.count() == 30
    with django_assert_max_num_queries(4):
        assert len(api.get(EVENTS).json()["results"]) == 30


# --- replay -------------------------------------------------------------------------------------------------------


def test_replaying_an_event_queues_its_runs_again_and_syncs_the_records_as_they_are_now(
    api, hook, received, django_capture_on_commit_callbacks
):
    event = received("ct_1")
    change_record(hook.source, "contacts", "ct_1", {"first_name": "Renamed"})

    with django_capture_on_commit_callbacks(execute=True) as queued:
        response = api.post(url(EVENTS, event, "replay/"))

    assert response.status_code == 200, response.content
    assert len(queued) == 1  # one new webhook run, queued on commit
    body = response.json()
    assert body["id"] == str(event.code) and body["status"] == "processed" and body["attempts"] == 2
    runs = list(event.runs.order_by("pk"))
    assert len(runs) == 2 and runs[1].trigger == Trigger.WEBHOOK
    assert [run["id"] for run in body["runs"]] == [str(run.code) for run in runs]
    assert [r.data["first_name"] for r in records(hook.target)] == ["Renamed"]


def test_a_replay_repeated_with_the_same_idempotency_key_queues_once(api, hook, received,
                                                                    django_capture_on_commit_callbacks):
    event = received("ct_1")

    with django_capture_on_commit_callbacks(execute=True):
        first = api.post(url(EVENTS, event, "replay/"), HTTP_IDEMPOTENCY_KEY="replay-1")
        again = api.post(url(EVENTS, event, "replay/"), HTTP_IDEMPOTENCY_KEY="replay-1")

    assert first.status_code == again.status_code == 200
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert event.runs.count() == 2


def test_an_event_that_names_no_mapped_object_is_replayed_as_ignored(api, hook, received):
    event = received("dl_1", object_name="deals")

    body = api.post(url(EVENTS, event, "replay/")).json()

    assert body["status"] == "ignored" and body["attempts"] == 2 and body["runs"] == []


# --- roles and other organizations -------------------------------------------------------------------------------


def test_a_viewer_reads_endpoints_and_events_but_cannot_change_anything(client_with_role, hook, received):
    event = received("ct_1")
    viewer = client_with_role(TokenRole.VIEWER)

    assert viewer.get(ENDPOINTS).status_code == 200
    assert viewer.get(url(ENDPOINTS, hook.endpoint)).status_code == 200
    assert viewer.get(EVENTS).status_code == 200
    assert viewer.get(url(EVENTS, event)).status_code == 200
    for response in (
        viewer.post(ENDPOINTS, {"name": "Mine", "connection": str(hook.source.code)}, format="json"),
        viewer.patch(url(ENDPOINTS, hook.endpoint), {"name": "Mine"}, format="json"),
        viewer.delete(url(ENDPOINTS, hook.endpoint)),
        viewer.post(url(ENDPOINTS, hook.endpoint, "rotate-secret/"), {}, format="json"),
        viewer.post(url(ENDPOINTS, hook.endpoint, "drop-old-secrets/")),
        viewer.post(url(EVENTS, event, "replay/")),
    ):
        assert_problem(response, 403)
    hook.endpoint.refresh_from_db()
    assert hook.endpoint.name == "Shop events" and hook.endpoint.secrets == [SECRET]
    assert WebhookEndpoint.objects.count() == 1 and event.runs.count() == 1


def test_a_member_manages_endpoints_and_replays_events(client_with_role, hook, received):
    event = received("ct_1")
    member = client_with_role(TokenRole.MEMBER)

    assert member.post(ENDPOINTS, {"name": "Second", "connection": str(hook.source.code)},
                       format="json").status_code == 201
    assert member.post(url(ENDPOINTS, hook.endpoint, "rotate-secret/"), {}, format="json").status_code == 200
    assert member.post(url(EVENTS, event, "replay/")).status_code == 200


def test_another_organizations_endpoint_answers_404_exactly_like_a_missing_one(other_api, hook):
    for method, suffix, body in (
        ("get", "", None), ("patch", "", {"name": "Mine"}), ("put", "", {"name": "Mine"}), ("delete", "", None),
        ("post", "rotate-secret/", {"keep_old": False}), ("post", "drop-old-secrets/", None),
    ):
        theirs = getattr(other_api, method)(url(ENDPOINTS, hook.endpoint, suffix), body, format="json")
        missing = getattr(other_api, method)(url(ENDPOINTS, MISSING, suffix), body, format="json")
        assert_problem(theirs, 404)
        assert without_uuid(theirs) == without_uuid(missing)
        assert_no_secret(theirs, SECRET)
    assert other_api.get(ENDPOINTS).json()["results"] == []
    hook.endpoint.refresh_from_db()
    assert hook.endpoint.name == "Shop events" and hook.endpoint.secrets == [SECRET]


def test_another_organizations_event_answers_404_exactly_like_a_missing_one(other_api, hook, received):
    event = received("ct_1")

    for method, suffix in (("get", ""), ("post", "replay/")):
        theirs = getattr(other_api, method)(url(EVENTS, event, suffix))
        missing = getattr(other_api, method)(url(EVENTS, MISSING, suffix))
        assert_problem(theirs, 404)
        assert without_uuid(theirs) == without_uuid(missing)
    assert other_api.get(EVENTS).json()["results"] == []
    assert other_api.get(EVENTS, {"endpoint": str(hook.endpoint.code)}).json()["results"] == []
    assert event.runs.count() == 1


def test_an_id_that_is_not_a_uuid_is_a_404_problem(api):
    assert_problem(api.get(ENDPOINTS + "not-a-uuid/"), 404)
    assert_problem(api.post(EVENTS + "not-a-uuid/replay/"), 404)
