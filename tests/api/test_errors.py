"""/api/v1/errors/ and /api/v1/error-groups/: the error list and its filters, detail with snapshots and history,
retry, bulk retry, resolve, ignore, edit and retry, replay preview, the review queue, and error groups."""

from datetime import date

import pytest
import time_machine
from rest_framework.test import APIClient

from accounts.models import IdempotencyRecord, TokenRole
from integrations.connectors.sandbox import SandboxConnector, seed_records
from syncs.models import ErrorGroupRetry, ErrorLevel, ErrorStatus, RecordError, Resolution, SyncRun
from syncs.selectors import record_errors_matching
from tests.api.test_foundation import assert_problem
from tests.syncs.helpers import person, records, run_mapping

pytestmark = pytest.mark.django_db

MISSING = "00000000-0000-0000-0000-000000000000"


def answer_time(moment):
    """A datetime as DRF writes it in an answer."""
    return moment.isoformat().replace("+00:00", "Z")


def without_uuid(response):
    return {key: value for key, value in response.json().items() if key != "uuid"}


def set_faults(connection, **faults):
    connection.config = {"faults": faults} if faults else {}
    connection.save()


def codes(errors):
    return {str(error.code) for error in errors}


def listed(api, query=""):
    response = api.get(f"/api/v1/errors/?page_size=500&{query}")
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


@pytest.fixture
def down_mapping(make_mapping, failing_target):
    """Two records whose writes failed on a 503 of the target (open, retryable connection errors)."""
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])
    run_mapping(mapping)
    return mapping


@pytest.fixture
def review_mapping(make_mapping):
    """Two records that failed validation (empty last name) and wait in the review queue."""
    mapping = make_mapping(error_strategy="manual_review")
    seed_records(mapping.source_connection, "contacts", [person(1, last_name=""), person(2, last_name="")])
    run_mapping(mapping)
    return mapping


@pytest.fixture
def viewer_api(make_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(role=TokenRole.VIEWER)}")
    return client


def error_of(mapping):
    return RecordError.objects.filter(mapping=mapping, level=ErrorLevel.RECORD).order_by("pk").first()


# --- list ----------------------------------------------------------------------------------------------------------


def test_errors_are_listed_newest_first_with_their_run_and_mapping(api, down_mapping):
    rows = api.get("/api/v1/errors/").json()["results"]

    newest = RecordError.objects.order_by("-created_at", "-pk")
    assert [row["id"] for row in rows] == [str(error.code) for error in newest]
    row = rows[0]
    assert row["run"] == str(newest[0].run.code)
    assert row["mapping"] == {"id": str(down_mapping.code), "name": down_mapping.name}
    assert (row["category"], row["code"], row["level"], row["status"]) == ("connection", "http_503", "record", "open")
    assert "snapshot_before" not in row  # snapshots are in the detail only


def test_every_error_filter_selects_what_record_errors_matching_selects(api, org, down_mapping, review_mapping):
    with time_machine.travel("2026-01-01 10:00:00+00:00", tick=False):
        run_mapping(down_mapping)  # the same records fail again, long ago
    run = SyncRun.objects.filter(mapping=review_mapping).get()
    filters = {
        "category=validation": {"category": "validation"},
        "category=validation&category=connection": {"category": ["validation", "connection"]},
        "code=http_503": {"code": "http_503"},
        "level=record": {"level": "record"},
        "status=in_review": {"status": "in_review"},
        f"mapping={down_mapping.code}": {"mapping": down_mapping},
        f"target_connection={down_mapping.target_connection.code}": {"target_connection":
                                                                       down_mapping.target_connection},
        f"run={run.code}": {"run": run},
        "since=2026-01-02T00:00:00Z": {"since": "2026-01-02"},
        "until=2026-01-02T00:00:00Z": {"until": "2026-01-02"},
        "search=EMPTY": {"search": "EMPTY"},
        "search=503": {"search": "503"},
    }
    for query, arguments in filters.items():
        arguments = {key: date.fromisoformat(value) if key in ("since", "until") else value
                     for key, value in arguments.items()}
        expected = codes(record_errors_matching(organization=org, **arguments))
        assert expected, query
        assert listed(api, query) == expected, query
    assert len(listed(api)) == RecordError.objects.count()


def test_bad_error_filters_answer_400_problems(api, other_org, make_mapping):
    foreign = make_mapping(organization=other_org)

    assert_problem(api.get("/api/v1/errors/?category=weather"), 400, "validation_error")
    assert_problem(api.get("/api/v1/errors/?mapping=not-a-uuid"), 400)
    assert_problem(api.get("/api/v1/errors/?since=last-week"), 400)
    unknown = api.get(f"/api/v1/errors/?mapping={MISSING}")
    other = api.get(f"/api/v1/errors/?mapping={foreign.code}")
    assert_problem(other, 400)
    assert other.json()["errors"] == unknown.json()["errors"]


def test_the_error_list_pages_with_a_cursor_without_repeating_or_skipping(api, make_mapping, failing_target):
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(5)])
    run_mapping(mapping)

    seen, url, pages = [], "/api/v1/errors/?page_size=2", 0
    while url:
        page = api.get(url).json()
        seen += [row["id"] for row in page["results"]]
        url, pages = page["next"], pages + 1

    assert pages == 3
    assert seen == [str(error.code) for error in RecordError.objects.order_by("-created_at", "-pk")]


@pytest.mark.parametrize("count", [3, 30])
def test_listing_errors_costs_the_same_queries_for_3_or_30_errors(
    api, make_mapping, failing_target, count, django_assert_max_num_queries
):
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(count)])
    run_mapping(mapping)

    # token, last use, the mapping filter's lookup, the page
    with django_assert_max_num_queries(4):
        response = api.get(f"/api/v1/errors/?page_size=100&mapping={mapping.code}")

    assert len(response.json()["results"]) == count


# --- detail --------------------------------------------------------------------------------------------------------


def test_an_error_shows_its_snapshots_and_the_history_of_its_record(api, down_mapping):
    second = run_mapping(down_mapping)  # the same records fail again
    error = RecordError.objects.filter(run=second).order_by("pk").first()
    earlier = RecordError.objects.exclude(run=second).get(source_record_id=error.source_record_id)

    detail = api.get(f"/api/v1/errors/{error.code}/").json()

    assert detail["snapshot_before"]["email"] == detail["snapshot_after"]["email"]
    assert detail["first_seen_at"] and detail["fingerprint"] == error.fingerprint
    assert detail["edited_payload"] is None and detail["resolution_note"] == ""
    assert [(h["id"], h["run"], h["status"]) for h in detail["history"]] == [
        (str(earlier.code), str(earlier.run.code), ErrorStatus.RESOLVED),
        (str(error.code), str(second.code), ErrorStatus.OPEN),
    ]
    assert detail["history"][0]["resolution"] == Resolution.SUPERSEDED


def test_no_secret_appears_in_an_errors_detail(api, down_mapping):
    error = error_of(down_mapping)

    response = api.get(f"/api/v1/errors/{error.code}/")

    assert response.status_code == 200
    assert "sk_test_canary_4f9a" not in response.content.decode()


def test_another_organizations_error_answers_404_like_a_missing_one(other_api, down_mapping):
    error = error_of(down_mapping)
    bodies = {"retry/": {}, "resolve/": {}, "ignore/": {"reason": "x"}, "edit-and-retry/": {"payload": {}}}

    for suffix in ("", *bodies):
        method = other_api.post if suffix else other_api.get
        foreign = method(f"/api/v1/errors/{error.code}/{suffix}", bodies.get(suffix), format="json")
        missing = method(f"/api/v1/errors/{MISSING}/{suffix}", bodies.get(suffix), format="json")
        assert_problem(foreign, 404)
        assert without_uuid(foreign) == without_uuid(missing)
    assert other_api.get("/api/v1/errors/").json()["results"] == []
    error.refresh_from_db()
    assert error.status == ErrorStatus.OPEN


# --- retry ---------------------------------------------------------------------------------------------------------


def test_retrying_an_error_replays_its_record(api, down_mapping, failing_target, django_capture_on_commit_callbacks):
    set_faults(failing_target)
    error = error_of(down_mapping)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/errors/{error.code}/retry/", {"force": False}, format="json")

    assert response.status_code == 202, response.content
    (run,) = SyncRun.objects.filter(trigger="retry")
    assert response.json() == {"queued": 1, "runs": [str(run.code)], "skipped": {}}
    error.refresh_from_db()
    assert (error.status, error.resolution) == (ErrorStatus.RESOLVED, Resolution.MANUAL_RETRY)
    assert len(records(failing_target)) == 1


def test_retrying_an_error_without_a_snapshot_explains_why_it_cannot(api, make_mapping, failing_target, monkeypatch):
    mapping = make_mapping(target=failing_target, logging_level="none", match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run_mapping(mapping)
    monkeypatch.setattr(SandboxConnector, "supports_fetch", False)

    body = assert_problem(api.post(f"/api/v1/errors/{error_of(mapping).code}/retry/"), 409, "no_snapshot")

    assert "logging level is none" in body["detail"]
    assert not SyncRun.objects.filter(trigger="retry").exists()


def test_retrying_a_resolved_error_answers_409(api, down_mapping):
    error = error_of(down_mapping)
    assert api.post(f"/api/v1/errors/{error.code}/resolve/").status_code == 200

    assert_problem(api.post(f"/api/v1/errors/{error.code}/retry/"), 409, "already_resolved")


# --- bulk retry ----------------------------------------------------------------------------------------------------


def test_a_bulk_retry_by_ids_queues_one_run_per_mapping(api, down_mapping, make_mapping, failing_target):
    other = make_mapping(target=failing_target, match_keys=[])
    seed_records(other.source_connection, "contacts", [person(3)])
    run_mapping(other)
    ids = [str(error.code) for error in RecordError.objects.all()]

    response = api.post("/api/v1/errors/bulk-retry/", {"ids": ids}, format="json")

    assert response.status_code == 202, response.content
    runs = SyncRun.objects.filter(trigger="retry").order_by("pk")
    assert response.json() == {"queued": 3, "runs": [str(run.code) for run in runs], "skipped": {}}
    assert sorted(run.mapping_id for run in runs) == [down_mapping.pk, other.pk]
    assert set(RecordError.objects.values_list("status", flat=True)) == {ErrorStatus.RETRYING}


def test_a_bulk_retry_naming_another_organizations_error_retries_nothing(api, other_org, down_mapping,
                                                                         make_mapping, make_connection):
    foreign_target = make_connection("Their CRM", organization=other_org,
                                     faults={"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"})
    foreign_mapping = make_mapping(organization=other_org, target=foreign_target, match_keys=[])
    seed_records(foreign_mapping.source_connection, "contacts", [person(9)])
    run_mapping(foreign_mapping)
    mine = [str(error.code) for error in RecordError.objects.filter(mapping=down_mapping)]
    foreign = str(error_of(foreign_mapping).code)

    with_foreign = api.post("/api/v1/errors/bulk-retry/", {"ids": [*mine, foreign]}, format="json")
    with_missing = api.post("/api/v1/errors/bulk-retry/", {"ids": [*mine, MISSING]}, format="json")

    assert_problem(with_foreign, 404)
    assert with_foreign.json()["detail"] == f"No record error with id {foreign}."
    assert without_uuid(with_missing)["detail"] == f"No record error with id {MISSING}."
    assert {key: value for key, value in without_uuid(with_foreign).items() if key != "detail"} == {
        key: value for key, value in without_uuid(with_missing).items() if key != "detail"}
    assert not SyncRun.objects.filter(trigger="retry").exists()
    assert set(RecordError.objects.values_list("status", flat=True)) == {ErrorStatus.OPEN}


def test_a_bulk_retry_by_filter_is_done_by_a_worker_and_retries_only_the_matching_errors(
    api, down_mapping, review_mapping, django_capture_on_commit_callbacks
):
    matching = {"category": ["connection"], "status": "open"}
    with django_capture_on_commit_callbacks() as worker_tasks:
        response = api.post("/api/v1/errors/bulk-retry/", {"filter": matching, "all_matching": True},
                            format="json")

    assert response.status_code == 202, response.content
    action = response.json()
    assert (action["kind"], action["status"], action["filter"], action["summary"]) == (
        "retry", "queued", matching, None)
    with django_capture_on_commit_callbacks():  # the worker's task; the replay it queues is not run here
        for task in worker_tasks:
            task()
    done = api.get(action["url"]).json()
    (run,) = SyncRun.objects.filter(trigger="retry")
    assert done["status"] == "succeeded"
    assert done["summary"] == {"queued": 2, "runs": [str(run.code)], "skipped": {}}
    # The replay takes its errors when it starts; the review queue's errors are not among them.
    assert sorted(run.options["errors"]) == sorted(
        RecordError.objects.filter(mapping=down_mapping).values_list("pk", flat=True))
    assert run.options["claim_on_start"] is True
    assert set(RecordError.objects.filter(mapping=review_mapping).values_list("status", flat=True)) == {
        ErrorStatus.IN_REVIEW}


@pytest.mark.parametrize(("body", "field"), [
    ({}, "non_field_errors"),
    ({"ids": [MISSING], "filter": {}}, "non_field_errors"),
    ({"ids": []}, "ids"),
    ({"ids": ["not-a-uuid"]}, "ids"),
    ({"ids": "all"}, "ids"),
    ({"filter": [], "all_matching": True}, "filter"),
    ({"filter": {"colour": "red"}, "all_matching": True}, "filter"),
    ({"filter": {"category": "weather"}, "all_matching": True}, "filter"),
    ({"filter": {"code": ["a", "b"]}, "all_matching": True}, "filter"),
    ({"filter": {"status": [{"nested": True}]}, "all_matching": True}, "filter"),
    ({"filter": {"mapping": MISSING}, "all_matching": True}, "filter"),
    ({"filter": {}, "all_matching": True, "force": "sometimes"}, "force"),
    ({"filter": {}, "all_matching": True, "forse": True}, "forse"),
    # Every error matching a filter (an empty one matches them all) only with the explicit confirmation.
    ({"filter": {}}, "all_matching"),
    ({"filter": {"category": ["connection"]}, "all_matching": False}, "all_matching"),
])
def test_a_bad_bulk_retry_answers_400_naming_the_field(api, down_mapping, body, field):
    response = api.post("/api/v1/errors/bulk-retry/", body, format="json")

    assert field in assert_problem(response, 400)["errors"]
    assert not SyncRun.objects.filter(trigger="retry").exists()


def test_a_repeated_idempotency_key_answers_the_first_result_and_retries_once(api, down_mapping):
    ids = [str(error.code) for error in RecordError.objects.all()]
    headers = {"HTTP_IDEMPOTENCY_KEY": "retry-monday-503s"}

    first = api.post("/api/v1/errors/bulk-retry/", {"ids": ids}, format="json", **headers)
    again = api.post("/api/v1/errors/bulk-retry/", {"ids": ids}, format="json", **headers)
    other_body = api.post("/api/v1/errors/bulk-retry/", {"ids": ids[:1]}, format="json", **headers)

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and first.json()["queued"] == 2
    assert again["Idempotent-Replayed"] == "true"
    assert_problem(other_body, 422, "idempotency_key_reused")
    assert SyncRun.objects.filter(trigger="retry").count() == 1
    assert IdempotencyRecord.objects.count() == 1


# --- resolve, ignore ----------------------------------------------------------------------------------------------


def test_resolving_an_error_keeps_the_note_and_answers_the_error(api, down_mapping):
    error = error_of(down_mapping)

    response = api.post(f"/api/v1/errors/{error.code}/resolve/", {"note": "Fixed in the CRM by hand"}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["resolution"], body["resolution_note"]) == (
        ErrorStatus.RESOLVED, Resolution.FIXED, "Fixed in the CRM by hand")
    assert body["resolved_at"]
    assert_problem(api.post(f"/api/v1/errors/{error.code}/resolve/"), 409, "already_resolved")


def test_ignoring_an_error_needs_a_reason(api, review_mapping):
    error = error_of(review_mapping)

    for body in ({}, {"reason": ""}, {"reason": ["a list"]}):
        problem = assert_problem(api.post(f"/api/v1/errors/{error.code}/ignore/", body, format="json"), 400)
        assert set(problem["errors"]) == {"reason"}
    response = api.post(f"/api/v1/errors/{error.code}/ignore/", {"reason": "Test customer"}, format="json")

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["resolution_note"]) == (ErrorStatus.IGNORED, "Test customer")


# --- edit and retry, preview, review queue -----------------------------------------------------------------------


def test_an_edited_record_with_field_errors_answers_400_keyed_by_field(api, review_mapping):
    error = error_of(review_mapping)
    payload = {**error.snapshot_after, "email": "not an email"}

    body = assert_problem(api.post(f"/api/v1/errors/{error.code}/edit-and-retry/", {"payload": payload},
                                   format="json"), 400)

    assert set(body["errors"]) == {"email", "last_name"}
    error.refresh_from_db()
    assert error.edited_payload is None and error.status == ErrorStatus.IN_REVIEW


def test_an_edited_record_with_an_unknown_field_answers_400(api, review_mapping):
    error = error_of(review_mapping)
    payload = {**error.snapshot_after, "last_name": "Fixed", "shoe_size": 44}

    body = assert_problem(api.post(f"/api/v1/errors/{error.code}/edit-and-retry/", {"payload": payload},
                                   format="json"), 400)

    assert set(body["errors"]) == {"shoe_size"}


def test_an_edited_record_is_retried_and_written(api, review_mapping, django_capture_on_commit_callbacks):
    error = error_of(review_mapping)
    payload = {**error.snapshot_after, "last_name": "Corrected"}

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/errors/{error.code}/edit-and-retry/", {"payload": payload}, format="json")

    assert response.status_code == 202, response.content
    assert response.json()["queued"] == 1
    error.refresh_from_db()
    assert (error.status, error.resolution, error.edited_payload["last_name"]) == (
        ErrorStatus.RESOLVED, Resolution.FIXED, "Corrected")
    assert [record.data["last_name"] for record in records(review_mapping.target_connection)] == ["Corrected"]


def test_editing_needs_a_payload_object_and_an_open_error(api, review_mapping):
    error = error_of(review_mapping)
    for body in ({}, {"payload": "text"}, {"payload": [1]}):
        assert "payload" in assert_problem(api.post(f"/api/v1/errors/{error.code}/edit-and-retry/", body,
                                                    format="json"), 400)["errors"]
    api.post(f"/api/v1/errors/{error.code}/ignore/", {"reason": "Not ours"}, format="json")

    assert_problem(api.post(f"/api/v1/errors/{error.code}/edit-and-retry/", {"payload": error.snapshot_after},
                            format="json"), 409, "already_resolved")


def test_the_preview_shows_per_record_what_a_replay_would_write(api, down_mapping, failing_target):
    set_faults(failing_target)
    errors = list(RecordError.objects.order_by("pk"))

    response = api.post("/api/v1/errors/preview/", {"ids": [str(error.code) for error in errors]}, format="json")

    assert response.status_code == 200, response.content
    plan = {entry["record_id"]: entry for entry in response.json()}
    assert set(plan) == {error.source_record_id for error in errors}
    assert {entry["action"] for entry in plan.values()} == {"create"}
    assert plan[errors[0].source_record_id]["payload"]["email"] == errors[0].snapshot_after["email"]
    assert records(failing_target) == []  # nothing written
    assert set(RecordError.objects.values_list("status", flat=True)) == {ErrorStatus.OPEN}


def test_the_preview_of_another_organizations_error_answers_404(other_api, down_mapping):
    response = other_api.post("/api/v1/errors/preview/", {"ids": [str(error_of(down_mapping).code)]}, format="json")

    assert_problem(response, 404)


def test_the_review_queue_lists_errors_in_review_oldest_first(api, review_mapping, down_mapping):
    response = api.get("/api/v1/errors/review-queue/?limit=1")

    page = response.json()
    in_review = RecordError.objects.filter(status=ErrorStatus.IN_REVIEW).order_by("created_at", "pk")
    assert page["count"] == 2
    assert [row["id"] for row in page["results"]] == [str(in_review[0].code)]
    second = api.get(page["next"]).json()
    assert [row["id"] for row in second["results"]] == [str(in_review[1].code)]


# --- roles --------------------------------------------------------------------------------------------------------


def test_a_viewer_reads_errors_but_cannot_change_them(viewer_api, review_mapping):
    error = error_of(review_mapping)
    assert viewer_api.get(f"/api/v1/errors/{error.code}/").status_code == 200
    assert viewer_api.get("/api/v1/errors/review-queue/").status_code == 200

    for url, body in (
        (f"/api/v1/errors/{error.code}/retry/", {}),
        ("/api/v1/errors/bulk-retry/", {"ids": [str(error.code)]}),
        (f"/api/v1/errors/{error.code}/resolve/", {}),
        (f"/api/v1/errors/{error.code}/ignore/", {"reason": "no"}),
        (f"/api/v1/errors/{error.code}/edit-and-retry/", {"payload": error.snapshot_after}),
        ("/api/v1/errors/preview/", {"ids": [str(error.code)]}),
        (f"/api/v1/error-groups/{error.fingerprint}/retry/", None),
    ):
        assert_problem(viewer_api.post(url, body, format="json"), 403)

    error.refresh_from_db()
    assert error.status == ErrorStatus.IN_REVIEW
    assert SyncRun.objects.count() == 1


# --- error groups -------------------------------------------------------------------------------------------------


def test_error_groups_count_the_unresolved_errors_of_one_fingerprint(api, make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts",
                 [person(1, last_name=""), person(2, last_name=""), person(3, email="bad")])
    run_mapping(mapping)
    newest_last_name = RecordError.objects.filter(field="last_name").order_by("-pk").first()

    groups = api.get("/api/v1/error-groups/").json()["results"]

    assert [(group["field"], group["count"]) for group in groups] == [("last_name", 2), ("email", 1)]
    group = groups[0]
    assert group["mapping"] == {"id": str(mapping.code), "name": mapping.name}
    assert (group["category"], group["code"]) == ("validation", newest_last_name.error_code)
    assert group["fingerprint"] == newest_last_name.fingerprint
    assert group["sample"] == str(newest_last_name.code)
    assert group["first_seen"] <= group["last_seen"]
    ordered = api.get("/api/v1/error-groups/?ordering=count").json()["results"]
    assert [g["field"] for g in ordered] == ["email", "last_name"]
    assert [g["field"] for g in api.get("/api/v1/error-groups/?search=email").json()["results"]] == ["email"]


@pytest.mark.parametrize("count", [3, 30])
def test_listing_error_groups_costs_the_same_queries_for_3_or_30_groups(
    api, make_mapping, count, django_assert_max_num_queries
):
    for _ in range(count):
        mapping = make_mapping()
        seed_records(mapping.source_connection, "contacts", [person(1, last_name="")])
        run_mapping(mapping)

    # token, last use, the count, the groups, their mappings, samples and latest group retries
    with django_assert_max_num_queries(7):
        response = api.get("/api/v1/error-groups/?limit=100")

    assert len(response.json()["results"]) == count


def test_a_group_retry_tries_one_record_first(api, make_mapping, failing_target):
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2), person(3)])
    run_mapping(mapping)
    probe = RecordError.objects.order_by("-pk").first()

    response = api.post(f"/api/v1/error-groups/{probe.fingerprint}/retry/")

    assert response.status_code == 202, response.content
    (run,) = SyncRun.objects.filter(trigger="retry")
    answer = response.json()
    group_retry = ErrorGroupRetry.objects.get()
    assert answer.pop("group_retry") == {
        "id": str(group_retry.code), "status": "probing", "reason": "", "probe_error": str(probe.code),
        "retried": 0, "created_at": answer_time(group_retry.created_at), "updated_at": answer_time(
            group_retry.updated_at)}
    assert answer == {"queued": 1, "runs": [str(run.code)], "skipped": {}, "probe_error": str(probe.code),
                      "remaining": 2}
    assert_problem(api.post(f"/api/v1/error-groups/{'0' * 40}/retry/"), 404)


def test_a_group_retry_of_another_organizations_group_answers_404_like_a_missing_one(other_api, down_mapping):
    fingerprint = error_of(down_mapping).fingerprint

    foreign = other_api.post(f"/api/v1/error-groups/{fingerprint}/retry/")
    missing = other_api.post(f"/api/v1/error-groups/{'0' * 40}/retry/")

    assert_problem(foreign, 404)
    assert without_uuid(foreign)["detail"].replace(fingerprint, "") == without_uuid(missing)["detail"].replace(
        "0" * 40, "")
    assert not SyncRun.objects.filter(trigger="retry").exists()


def test_a_group_with_nothing_left_to_retry_answers_409(api, down_mapping):
    error = error_of(down_mapping)
    for other in RecordError.objects.all():
        api.post(f"/api/v1/errors/{other.code}/resolve/")

    assert_problem(api.post(f"/api/v1/error-groups/{error.fingerprint}/retry/"), 409, "nothing_to_retry")


def test_a_parameter_given_twice_where_one_value_is_read_is_refused(api):
    # Silently reading the last of two would answer another question than the caller asked.
    problem = assert_problem(api.get("/api/v1/errors/?search=a&search=b"), 400)
    assert problem["errors"] == {"search": ["Give this parameter once."]}
    assert api.get("/api/v1/errors/?category=validation&category=connection").status_code == 200  # a list filter
