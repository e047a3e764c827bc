"""The inbound webhook receiver: signatures, dedupe, storage, and the webhook runs it leads to."""

import base64
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import time_machine
from django.db import connection as default_connection

from integrations import webhooks
from integrations.connectors.base import webhook_signature
from integrations.connectors.sandbox import change_record, seed_records
from integrations.models import WebhookEndpoint, WebhookEvent, WebhookEventStatus
from integrations.webhooks import (
    MAX_BODY_BYTES,
    webhook_endpoint_create,
    webhook_endpoint_drop_old_secrets,
    webhook_endpoint_rotate_secret,
    webhook_event_process,
    webhook_event_replay,
    webhook_events_requeue_lost,
)
from syncs.events import JsonFormatter
from syncs.models import ErrorLevel, RecordError, SyncRun, Trigger
from tests.syncs.helpers import person, records

# A canary: it must never show up in a table, a log line or an admin page.
SECRET = "whsec_" + base64.b64encode(b"canary-webhook-key-4f9a!").decode()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def changed(*ids, object_name="contacts"):
    return json.dumps({"type": "records.changed", "object": object_name, "ids": list(ids)}).encode()


def signed(raw, *, secret=SECRET, webhook_id="msg_1", at=None):
    timestamp = str(int(at.timestamp() if at else time.time()))
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": webhook_signature(secret, webhook_id=webhook_id, timestamp=timestamp, raw_body=raw),
    }


def deliver(client, endpoint, raw, headers):
    return client.post(endpoint.receive_path, data=raw, content_type="application/json", headers=headers)


def nothing_stored():
    return not WebhookEvent.objects.exists() and not SyncRun.objects.exists()


@pytest.fixture
def hook(make_mapping):
    """A contacts mapping whose source connection has a webhook endpoint, and three source records."""
    mapping = make_mapping()
    source = mapping.source_connection
    seed_records(source, "contacts", [person(1), person(2), person(3)], ids=["ct_1", "ct_2", "ct_3"])
    endpoint, secret = webhook_endpoint_create(connection=source, name="Shop events", secret=SECRET)
    return SimpleNamespace(endpoint=endpoint, secret=secret, mapping=mapping, source=source,
                           target=mapping.target_connection)


@pytest.fixture
def sync_log():
    """The structured log lines of the `resync` loggers (they do not propagate to pytest's caplog)."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("resync")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


# --- accepted deliveries ------------------------------------------------------------------------------------------


def test_a_signed_event_is_stored_and_syncs_exactly_the_records_it_names(
    client, hook, django_capture_on_commit_callbacks
):
    raw = changed("ct_1", "ct_3")

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(client, hook.endpoint, raw, signed(raw))

    assert response.status_code == 202
    assert response["Content-Type"] == "application/json"
    event = WebhookEvent.objects.get()
    assert response.json() == {"status": "accepted", "event": str(event.code)}
    assert event.event_id == "msg_1"
    assert event.payload == json.loads(raw)
    assert event.organization == hook.endpoint.organization
    assert event.status == WebhookEventStatus.PROCESSED
    assert event.record_ids == ["ct_1", "ct_3"]
    assert event.object_name == "contacts"
    assert event.attempts == 1
    run = event.runs.get()
    assert run.trigger == Trigger.WEBHOOK
    assert run.mapping == hook.mapping
    assert run.options["records"] == ["ct_1", "ct_3"]
    assert run.read == 2 and run.created == 2
    assert sorted(r.data["email"] for r in records(hook.target)) == ["person1@example.com", "person3@example.com"]
    hook.endpoint.refresh_from_db()
    assert hook.endpoint.last_received_at is not None


def test_receiving_does_no_sync_work_before_the_transaction_commits(client, hook, django_capture_on_commit_callbacks):
    raw = changed("ct_1")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = deliver(client, hook.endpoint, raw, signed(raw))

    assert response.status_code == 202
    assert WebhookEvent.objects.get().status == WebhookEventStatus.RECEIVED
    assert not SyncRun.objects.exists()
    assert len(callbacks) == 1  # the processing task, queued for when the event is committed


def test_stored_headers_keep_the_event_id_but_never_the_signature(client, hook):
    raw = changed("ct_1")
    headers = {**signed(raw), "Authorization": "Bearer other-canary", "X-Shopify-Hmac-Sha256": "abc", "X-Trace": "t1"}

    deliver(client, hook.endpoint, raw, headers)

    stored = WebhookEvent.objects.get().headers
    assert stored["webhook-id"] == "msg_1"
    assert stored["x-trace"] == "t1"
    assert not {"webhook-signature", "authorization", "x-shopify-hmac-sha256"} & set(stored)


def test_a_webhook_run_is_queued_for_every_active_mapping_of_that_source_object(
    client, hook, make_mapping, django_capture_on_commit_callbacks
):
    second = make_mapping(source=hook.source)
    make_mapping(source=hook.source, is_active=False)
    raw = changed("ct_2")

    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, hook.endpoint, raw, signed(raw))

    runs = WebhookEvent.objects.get().runs.order_by("pk")
    assert [run.mapping for run in runs] == [hook.mapping, second]
    assert [len(records(run.mapping.target_connection)) for run in runs] == [1, 1]


def test_several_signatures_in_one_header_are_accepted_when_one_matches(client, hook):
    raw = changed("ct_1")
    headers = signed(raw)
    wrong = signed(raw, secret="whsec_" + base64.b64encode(b"another key").decode())["webhook-signature"]
    headers["webhook-signature"] = f"{wrong} v1a,c2lnbmF0dXJl {headers['webhook-signature']}"

    assert deliver(client, hook.endpoint, raw, headers).status_code == 202


def test_the_timestamp_may_be_five_minutes_off_either_way(client, hook):
    for n, offset in enumerate((-300, 300)):
        raw = changed("ct_1")
        headers = signed(raw, webhook_id=f"msg_{n}", at=NOW + timedelta(seconds=offset))
        with time_machine.travel(NOW, tick=False):
            assert deliver(client, hook.endpoint, raw, headers).status_code == 202


# --- rejected deliveries: nothing stored --------------------------------------------------------------------------


def assert_problem(response, status, code):
    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert {"type", "title", "detail", "uuid"} <= set(body)
    return body


def test_a_wrong_signature_is_rejected_with_401_and_nothing_stored(client, hook):
    raw = changed("ct_1")
    headers = signed(raw, secret="whsec_" + base64.b64encode(b"not the endpoint's key").decode())

    response = deliver(client, hook.endpoint, raw, headers)

    assert_problem(response, 401, "signature_invalid")
    assert nothing_stored()
    hook.endpoint.refresh_from_db()
    assert hook.endpoint.last_received_at is None


def test_a_body_changed_after_signing_is_rejected(client, hook):
    headers = signed(changed("ct_1"))

    assert_problem(deliver(client, hook.endpoint, changed("ct_2"), headers), 401, "signature_invalid")
    assert nothing_stored()


@pytest.mark.parametrize("offset", [-360, 360], ids=["six minutes old", "six minutes ahead"])
def test_a_timestamp_more_than_five_minutes_off_is_rejected(client, hook, offset):
    raw = changed("ct_1")
    headers = signed(raw, at=NOW + timedelta(seconds=offset))

    with time_machine.travel(NOW, tick=False):
        response = deliver(client, hook.endpoint, raw, headers)

    assert_problem(response, 401, "timestamp_out_of_tolerance")
    assert nothing_stored()


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_delivery_without_a_signature_header_is_rejected(client, hook, missing):
    raw = changed("ct_1")
    headers = signed(raw)
    del headers[missing]

    assert_problem(deliver(client, hook.endpoint, raw, headers), 401, "signature_missing")
    assert nothing_stored()


def test_a_timestamp_that_is_not_a_number_is_rejected(client, hook):
    raw = changed("ct_1")
    headers = {**signed(raw), "webhook-timestamp": "yesterday"}

    assert_problem(deliver(client, hook.endpoint, raw, headers), 401, "timestamp_invalid")


def test_an_unknown_endpoint_answers_404_problem_json(client, db):
    raw = changed("ct_1")
    url = "/hooks/00000000-0000-4000-8000-000000000000/"

    response = client.post(url, data=raw, content_type="application/json", headers=signed(raw))

    assert_problem(response, 404, "webhook_endpoint_not_found")
    assert_problem(client.post("/hooks/not-a-code/", data=raw, content_type="application/json"), 404,
                   "webhook_endpoint_not_found")


def test_an_inactive_endpoint_answers_exactly_like_an_unknown_one(client, hook):
    raw = changed("ct_1")
    WebhookEndpoint.objects.filter(pk=hook.endpoint.pk).update(is_active=False)

    inactive = deliver(client, hook.endpoint, raw, signed(raw))
    unknown = client.post("/hooks/00000000-0000-4000-8000-000000000000/", data=raw,
                          content_type="application/json", headers=signed(raw))

    without_uuid = [{k: v for k, v in r.json().items() if k != "uuid"} for r in (inactive, unknown)]
    assert inactive.status_code == unknown.status_code == 404
    assert without_uuid[0] == without_uuid[1]
    assert nothing_stored()


def test_a_signed_body_that_is_not_json_is_rejected_with_400(client, hook):
    raw = b"type=records.changed&ids=ct_1"

    assert_problem(deliver(client, hook.endpoint, raw, signed(raw)), 400, "body_not_json")
    assert nothing_stored()


def test_a_body_with_nan_is_not_json(client, hook):
    raw = b'{"type": "records.changed", "object": "contacts", "ids": ["ct_1"], "score": NaN}'

    assert_problem(deliver(client, hook.endpoint, raw, signed(raw)), 400, "body_not_json")
    assert nothing_stored()


def test_a_body_with_a_nul_character_is_refused_on_every_database(client, hook):
    raw = json.dumps({"type": "records.changed", "object": "contacts", "ids": ["ct\u00001"]}).encode()

    assert_problem(deliver(client, hook.endpoint, raw, signed(raw)), 400, "body_not_storable")
    assert nothing_stored()


def test_a_body_over_one_mebibyte_is_rejected_with_413(client, hook):
    raw = b'{"padding": "' + b"x" * MAX_BODY_BYTES + b'"}'

    assert_problem(deliver(client, hook.endpoint, raw, signed(raw)), 413, "body_too_large")
    assert nothing_stored()


def test_only_post_is_allowed(client, hook):
    response = client.get(hook.endpoint.receive_path)

    assert_problem(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST"


def test_the_url_works_without_its_trailing_slash(client, hook):
    raw = changed("ct_1")

    response = client.post(hook.endpoint.receive_path.rstrip("/"), data=raw, content_type="application/json",
                           headers=signed(raw))

    assert response.status_code == 202


# --- secrets and rotation -----------------------------------------------------------------------------------------


def test_a_new_endpoint_gets_a_generated_whsec_secret_stored_encrypted(make_connection):
    endpoint, secret = webhook_endpoint_create(connection=make_connection(), name="Events")

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    endpoint.refresh_from_db()
    assert endpoint.secrets == [secret]
    assert secret not in endpoint.secrets_ciphertext


def test_a_rotated_secret_and_the_old_one_are_both_accepted_until_the_old_one_is_dropped(client, hook):
    new_secret = webhook_endpoint_rotate_secret(endpoint=hook.endpoint)

    def status(secret, webhook_id):
        raw = changed("ct_1")
        return deliver(client, hook.endpoint, raw, signed(raw, secret=secret, webhook_id=webhook_id)).status_code

    assert new_secret != SECRET
    assert status(SECRET, "msg_old") == 202
    assert status(new_secret, "msg_new") == 202

    webhook_endpoint_drop_old_secrets(endpoint=hook.endpoint)

    assert status(SECRET, "msg_old_again") == 401
    assert status(new_secret, "msg_new_again") == 202


def test_rotating_without_keeping_the_old_secret_rejects_it_at_once(client, hook):
    webhook_endpoint_rotate_secret(endpoint=hook.endpoint, keep_old=False)
    raw = changed("ct_1")

    assert deliver(client, hook.endpoint, raw, signed(raw)).status_code == 401


def test_a_vendor_secret_without_the_whsec_prefix_signs_with_its_own_bytes(client, make_connection):
    endpoint, _ = webhook_endpoint_create(connection=make_connection(), name="Vendor",
                                          secret="plain-vendor-secret-of-28-chars")
    raw = changed("ct_1")

    assert deliver(client, endpoint, raw, signed(raw, secret="plain-vendor-secret-of-28-chars")).status_code == 202


def test_the_secret_never_appears_in_tables_logs_or_admin_pages(
    client, admin_client, hook, sync_log, django_capture_on_commit_callbacks
):
    raw = changed("ct_1")
    headers = signed(raw)
    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, hook.endpoint, raw, headers)
        deliver(client, hook.endpoint, raw, headers)  # a duplicate
        deliver(client, hook.endpoint, changed("ct_2"), headers)  # a bad signature
    event = WebhookEvent.objects.get()
    responses = [
        admin_client.get(url)
        for url in (
            "/admin/integrations/webhookendpoint/",
            f"/admin/integrations/webhookendpoint/{hook.endpoint.pk}/change/",
            "/admin/integrations/webhookendpoint/add/",
            "/admin/integrations/webhookevent/",
            f"/admin/integrations/webhookevent/{event.pk}/change/",
        )
    ]
    assert [r.status_code for r in responses] == [200] * 5
    pages = [r.content.decode() for r in responses]
    tables = []
    with default_connection.cursor() as cursor:
        for table in default_connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            tables.extend(repr(row) for row in cursor.fetchall())

    key = SECRET.removeprefix("whsec_")
    signature = headers["webhook-signature"].removeprefix("v1,")
    assert sync_log and any("webhook_received" in line for line in sync_log)
    for text in ("\n".join(sync_log), "\n".join(pages), "\n".join(tables)):
        assert key not in text
        assert signature not in text


# --- dedupe -------------------------------------------------------------------------------------------------------


def test_a_redelivered_event_id_answers_duplicate_and_is_processed_once(
    client, hook, django_capture_on_commit_callbacks
):
    raw = changed("ct_1")

    with django_capture_on_commit_callbacks(execute=True):
        first = deliver(client, hook.endpoint, raw, signed(raw))
        again = deliver(client, hook.endpoint, raw, signed(raw))

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate"}
    event = WebhookEvent.objects.get()
    assert event.attempts == 1
    assert SyncRun.objects.count() == 1


def test_a_burst_of_the_same_event_is_stored_and_processed_once(client, hook, django_capture_on_commit_callbacks):
    raw = changed("ct_1", "ct_2")

    with django_capture_on_commit_callbacks(execute=True):
        statuses = [deliver(client, hook.endpoint, raw, signed(raw)).status_code for _ in range(5)]

    assert statuses == [202, 200, 200, 200, 200]
    assert WebhookEvent.objects.count() == 1
    assert SyncRun.objects.count() == 1
    assert len(records(hook.target)) == 2


def test_processing_an_event_twice_queues_its_runs_once(hook, client, django_capture_on_commit_callbacks):
    raw = changed("ct_1")
    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, hook.endpoint, raw, signed(raw))
    event = WebhookEvent.objects.get()

    assert webhook_event_process(event_pk=event.pk) is None  # a redelivered task finds it processed
    assert SyncRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_event_store_and_process_it_once(hook):
    from django.test import Client

    raw = changed("ct_1", "ct_2", "ct_3")
    headers = signed(raw)
    barrier, statuses = threading.Barrier(5), []

    def sender():
        try:
            barrier.wait()
            statuses.append(deliver(Client(), hook.endpoint, raw, headers).status_code)
        finally:
            default_connection.close()

    threads = [threading.Thread(target=sender) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(statuses) == [200, 200, 200, 200, 202]
    event = WebhookEvent.objects.get()
    assert event.status == WebhookEventStatus.PROCESSED
    assert event.attempts == 1
    assert SyncRun.objects.count() == 1
    assert len(records(hook.target)) == 3


def test_an_event_whose_processing_task_was_lost_is_queued_again(
    client, hook, django_capture_on_commit_callbacks
):
    raw = changed("ct_1")
    with time_machine.travel(NOW, tick=False), django_capture_on_commit_callbacks(execute=False):
        deliver(client, hook.endpoint, raw, signed(raw))  # the task never runs: the broker lost it

    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        assert webhook_events_requeue_lost() == []
    with time_machine.travel(NOW + timedelta(minutes=11), tick=False), django_capture_on_commit_callbacks(
        execute=True
    ):
        assert webhook_events_requeue_lost() == [WebhookEvent.objects.get().pk]

    assert WebhookEvent.objects.get().status == WebhookEventStatus.PROCESSED
    assert len(records(hook.target)) == 1


class WorkerKilled(BaseException):
    """Stands in for SIGKILL in-process: nothing catches it, so its transaction is rolled back and nothing else runs."""


def test_an_event_whose_worker_died_while_processing_it_is_processed_again_once_without_losing_records(
    client, hook, django_capture_on_commit_callbacks, monkeypatch
):
    with time_machine.travel(NOW, tick=False), django_capture_on_commit_callbacks(execute=False) as queued:
        for n in (1, 2):
            raw = changed(f"ct_{n}")
            deliver(client, hook.endpoint, raw, signed(raw, webhook_id=f"msg_{n}"))
        first, second = WebhookEvent.objects.order_by("pk")
        webhook_event_process(event_pk=first.pk)
    (run,) = SyncRun.objects.all()  # queued, not yet claimed: later events of the mapping join it
    queue_runs = webhooks._queue_webhook_runs

    def queue_then_die(*args, **kwargs):
        queue_runs(*args, **kwargs)  # the second event's record is merged into the queued run ...
        raise WorkerKilled  # ... and the worker is killed before it commits

    monkeypatch.setattr(webhooks, "_queue_webhook_runs", queue_then_die)
    with time_machine.travel(NOW, tick=False), pytest.raises(WorkerKilled):
        webhook_event_process(event_pk=second.pk)
    monkeypatch.setattr(webhooks, "_queue_webhook_runs", queue_runs)

    second.refresh_from_db()
    assert (second.status, second.attempts, second.processing_started_at) == (
        WebhookEventStatus.PROCESSING, 1, NOW)
    run.refresh_from_db()
    assert run.options["records"] == ["ct_1"]  # the dead worker's merge went with it
    assert not second.runs.exists()

    with time_machine.travel(NOW + timedelta(minutes=5), tick=False):
        assert webhook_events_requeue_lost() == []  # its worker may only be slow
        assert webhook_event_process(event_pk=second.pk) is None  # and a redelivered task leaves it alone
    with time_machine.travel(NOW + timedelta(minutes=11), tick=False):
        assert webhook_events_requeue_lost() == [second.pk]  # processed again, inline in tests

    second.refresh_from_db()
    assert (second.status, second.attempts) == (WebhookEventStatus.PROCESSED, 2)
    assert list(second.runs.all()) == [run]
    assert f"run {run.code} of" in second.outcome
    run.refresh_from_db()
    assert run.options["records"] == ["ct_1", "ct_2"]
    assert SyncRun.objects.count() == 1
    for callback in queued:
        callback()  # the run's task
    assert sorted(r.data["email"] for r in records(hook.target)) == ["person1@example.com", "person2@example.com"]


def test_a_worker_taken_for_dead_does_not_queue_the_runs_of_an_event_processed_since(
    client, hook, django_capture_on_commit_callbacks, monkeypatch
):
    raw = changed("ct_1")
    with time_machine.travel(NOW, tick=False), django_capture_on_commit_callbacks(execute=False):
        deliver(client, hook.endpoint, raw, signed(raw))
    event = WebhookEvent.objects.get()
    load, outcomes = webhooks._event_for_processing, []

    def load_then_stall(event_pk):
        if not outcomes:
            # The first worker stalls right after its claim for longer than the stale threshold: the sweep hands
            # the event to a second worker, which processes it.
            outcomes.append(None)
            with time_machine.travel(NOW + timedelta(minutes=11), tick=False):
                outcomes.append(webhook_events_requeue_lost())
        return load(event_pk)

    monkeypatch.setattr(webhooks, "_event_for_processing", load_then_stall)
    with time_machine.travel(NOW, tick=False), django_capture_on_commit_callbacks(execute=True):
        # The first worker wakes up to find the event claimed by the second: it queues nothing.
        assert webhook_event_process(event_pk=event.pk) is None

    assert outcomes == [None, [event.pk]]
    event.refresh_from_db()
    assert (event.status, event.attempts) == (WebhookEventStatus.PROCESSED, 2)
    assert SyncRun.objects.count() == 1
    assert list(event.runs.all()) == list(SyncRun.objects.all())


def test_an_event_whose_workers_keep_dying_is_failed_and_an_old_processing_one_is_processed_again(
    client, hook, django_capture_on_commit_callbacks
):
    with time_machine.travel(NOW, tick=False), django_capture_on_commit_callbacks(execute=False):
        for n in (1, 2):
            raw = changed(f"ct_{n}")
            deliver(client, hook.endpoint, raw, signed(raw, webhook_id=f"msg_{n}"))
    dying, old = WebhookEvent.objects.order_by("pk")
    WebhookEvent.objects.filter(pk=dying.pk).update(status=WebhookEventStatus.PROCESSING, processing_started_at=NOW,
                                                    attempts=webhooks.MAX_PROCESSING_ATTEMPTS)
    # Left processing before processing_started_at existed: taken for a dead worker's once it is old enough.
    WebhookEvent.objects.filter(pk=old.pk).update(status=WebhookEventStatus.PROCESSING, attempts=1)

    with time_machine.travel(NOW + timedelta(minutes=11), tick=False), django_capture_on_commit_callbacks(
        execute=True
    ):
        assert webhook_events_requeue_lost() == [old.pk]

    dying.refresh_from_db()
    assert dying.status == WebhookEventStatus.FAILED
    assert "stopped 3 times" in dying.outcome
    assert not dying.runs.exists()
    old.refresh_from_db()
    assert (old.status, old.attempts) == (WebhookEventStatus.PROCESSED, 2)
    assert [r.data["email"] for r in records(hook.target)] == ["person2@example.com"]


def test_a_burst_of_different_events_becomes_one_run_per_mapping(client, hook, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        for n in (1, 2, 3):
            raw = changed(f"ct_{n}")
            deliver(client, hook.endpoint, raw, signed(raw, webhook_id=f"msg_{n}"))
    events = list(WebhookEvent.objects.order_by("pk"))

    with django_capture_on_commit_callbacks(execute=False) as queued_runs:
        for event in events:
            webhook_event_process(event_pk=event.pk)

    run = SyncRun.objects.get()
    assert run.options["records"] == ["ct_1", "ct_2", "ct_3"]
    assert all(list(event.runs.all()) == [run] for event in events)
    for callback in queued_runs:
        callback()
    assert len(records(hook.target)) == 3


# --- processing outcomes ------------------------------------------------------------------------------------------


def test_a_record_that_fails_to_sync_becomes_a_classified_record_error_of_the_webhook_run(
    client, hook, django_capture_on_commit_callbacks
):
    seed_records(hook.source, "contacts", [person(4, email="not-an-email")], ids=["ct_bad"])
    raw = changed("ct_1", "ct_bad", "ct_gone")

    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(client, hook.endpoint, raw, signed(raw))

    assert response.status_code == 202
    run = WebhookEvent.objects.get().runs.get()
    errors = {e.source_record_id: e for e in RecordError.objects.filter(run=run, level=ErrorLevel.RECORD)}
    assert errors["ct_bad"].category == "validation"
    assert errors["ct_bad"].field == "email"
    assert errors["ct_gone"].category == "not_found"
    assert [r.data["email"] for r in records(hook.target)] == ["person1@example.com"]


def test_replaying_a_stored_event_syncs_its_records_again(client, hook, django_capture_on_commit_callbacks):
    raw = changed("ct_1")
    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, hook.endpoint, raw, signed(raw))
    change_record(hook.source, "contacts", "ct_1", {"first_name": "Renamed"})
    event = WebhookEvent.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        webhook_event_replay(event=event)

    event.refresh_from_db()
    assert event.status == WebhookEventStatus.PROCESSED
    assert event.attempts == 2
    assert event.runs.count() == 2
    assert [r.data["first_name"] for r in records(hook.target)] == ["Renamed"]


def test_the_admin_replays_selected_events(admin_client, client, hook, django_capture_on_commit_callbacks):
    raw = changed("ct_1")
    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, hook.endpoint, raw, signed(raw))
    event = WebhookEvent.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/integrations/webhookevent/", {"action": "replay_events", "_selected_action": [event.pk]}
        )

    assert response.status_code == 302
    assert WebhookEvent.objects.get().runs.count() == 2


def test_an_event_for_an_object_no_mapping_syncs_is_ignored(client, hook, django_capture_on_commit_callbacks):
    raw = changed("dl_1", object_name="deals")

    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(client, hook.endpoint, raw, signed(raw)).status_code == 202

    event = WebhookEvent.objects.get()
    assert event.status == WebhookEventStatus.IGNORED
    assert "No active mapping" in event.outcome
    assert not SyncRun.objects.exists()


def test_an_event_type_that_names_no_records_is_ignored(client, hook, django_capture_on_commit_callbacks):
    raw = json.dumps({"type": "endpoint.ping"}).encode()

    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(client, hook.endpoint, raw, signed(raw)).status_code == 202

    assert WebhookEvent.objects.get().status == WebhookEventStatus.IGNORED
    assert not SyncRun.objects.exists()


def test_a_payload_of_the_wrong_shape_is_stored_and_marked_failed(client, hook, django_capture_on_commit_callbacks):
    raw = json.dumps({"type": "records.changed", "object": "contacts", "ids": "ct_1"}).encode()

    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(client, hook.endpoint, raw, signed(raw)).status_code == 202

    event = WebhookEvent.objects.get()
    assert event.status == WebhookEventStatus.FAILED
    assert '"ids" must be a list' in event.outcome
    assert not SyncRun.objects.exists()


def test_the_admin_creates_an_endpoint_with_a_pasted_secret_and_never_echoes_it(admin_client, make_connection):
    connection = make_connection()
    form = {"connection": connection.pk, "name": "From the vendor", "is_active": "on"}

    invalid = admin_client.post("/admin/integrations/webhookendpoint/add/", {**form, "new_secret": "whsec_#canary#"})
    created = admin_client.post("/admin/integrations/webhookendpoint/add/", {**form, "new_secret": SECRET})

    assert invalid.status_code == 200 and "#canary#" not in invalid.content.decode()
    assert created.status_code == 302
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.organization == connection.organization
    assert endpoint.secrets == [SECRET]
