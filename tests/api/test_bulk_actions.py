"""Bulk retry, ignore and resolve by filter (or by a long id list): answered at once with a bulk action, done by a
worker, followed at /api/v1/bulk-actions/{id}/ inside the caller's organization only."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import TokenRole
from integrations.connectors.sandbox import seed_records
from syncs.api import errors as errors_api
from syncs.bulk import bulk_action_perform
from syncs.models import BulkAction, ErrorStatus, RecordError, RecordLink, Resolution, RunStatus, SyncRun
from syncs.rollups import error_rollups_refresh
from tests.api.test_foundation import assert_problem
from tests.syncs.helpers import person, records, run_mapping, set_faults

pytestmark = pytest.mark.django_db

MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def down_mapping(make_mapping, failing_target):
    """Three records whose writes failed on a 503 of the target."""
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2), person(3)])
    run_mapping(mapping)
    return mapping


@pytest.fixture
def worker(django_capture_on_commit_callbacks):
    """What a request queued for the workers: `with worker() as queued` captures, `worker.run(queued)` runs."""

    class Worker:
        def __call__(self):
            return django_capture_on_commit_callbacks()

        def run(self, queued, *, replays=False):
            # The bulk action's task; the replays it queues run too only when asked.
            with django_capture_on_commit_callbacks(execute=replays):
                for task in queued:
                    task()

    return Worker()


def follow(api, answer):
    response = api.get(answer["url"])
    assert response.status_code == 200, response.content
    return response.json()


def test_a_bulk_resolve_by_filter_answers_at_once_and_a_worker_resolves_the_errors(api, down_mapping, worker):
    already = RecordError.objects.order_by("pk").first()
    api.post(f"/api/v1/errors/{already.code}/resolve/")

    with worker() as queued:
        response = api.post("/api/v1/errors/bulk-resolve/", {"filter": {"code": "http_503"}, "all_matching": True,
                                                              "note": "Fixed in the CRM"}, format="json")

    assert response.status_code == 202, response.content
    answer = response.json()
    action = BulkAction.objects.get()
    assert answer["id"] == str(action.code) and answer["url"].endswith(f"/api/v1/bulk-actions/{action.code}/")
    assert (answer["kind"], answer["status"], answer["filter"], answer["ids"], answer["summary"]) == (
        "resolve", "queued", {"code": "http_503"}, None, None)
    assert set(RecordError.objects.exclude(pk=already.pk).values_list("status", flat=True)) == {ErrorStatus.OPEN}
    worker.run(queued)
    done = follow(api, answer)
    assert done["status"] == "succeeded" and done["started_at"] and done["finished_at"]
    assert done["summary"] == {"closed": 2, "skipped": {"already_resolved": 1}}
    assert set(RecordError.objects.values_list("status", "resolution_note")) == {
        (ErrorStatus.RESOLVED, ""), (ErrorStatus.RESOLVED, "Fixed in the CRM")}
    # Nothing of the run is left open: it is recovered.
    assert SyncRun.objects.get(mapping=down_mapping).status == RunStatus.RECOVERED


def test_a_bulk_ignore_by_filter_keeps_the_reason_and_marks_the_links_ignored(api, down_mapping, worker):
    with worker() as queued:
        answer = api.post("/api/v1/errors/bulk-ignore/", {"filter": {}, "all_matching": True,
                                                          "reason": "Test contacts"}, format="json").json()
    worker.run(queued)

    assert follow(api, answer)["summary"] == {"closed": 3, "skipped": {}}
    assert set(RecordError.objects.values_list("status", "resolution_note")) == {(ErrorStatus.IGNORED,
                                                                                  "Test contacts")}
    assert set(RecordLink.objects.values_list("status", flat=True)) == {"ignored"}


def test_a_bulk_retry_by_filter_ends_with_every_matching_record_synced(api, down_mapping, failing_target, worker):
    set_faults(failing_target)  # the target is back

    with worker() as queued:
        answer = api.post("/api/v1/errors/bulk-retry/", {"filter": {"category": "connection"},
                                                         "all_matching": True}, format="json").json()
    worker.run(queued, replays=True)

    done = follow(api, answer)
    (run,) = SyncRun.objects.filter(trigger="retry")
    assert done["summary"] == {"queued": 3, "runs": [str(run.code)], "skipped": {}}
    assert set(RecordError.objects.values_list("status", "resolution")) == {
        (ErrorStatus.RESOLVED, Resolution.BULK_RETRY)}
    assert len(records(failing_target)) == 3


def test_a_bulk_retry_counts_what_it_skipped_and_why(api, down_mapping, worker):
    first, second, _third = RecordError.objects.order_by("pk")
    RecordError.objects.filter(pk=first.pk).update(status=ErrorStatus.RETRYING)
    api.post(f"/api/v1/errors/{second.code}/ignore/", {"reason": "Not ours"}, format="json")

    with worker() as queued:
        answer = api.post("/api/v1/errors/bulk-retry/", {"filter": {}, "all_matching": True}, format="json").json()
    worker.run(queued)

    summary = follow(api, answer)["summary"]
    assert (summary["queued"], summary["skipped"]) == (1, {"already_retrying": 1})


def test_more_ids_than_an_answer_waits_for_are_done_by_a_worker(api, down_mapping, worker, monkeypatch):
    monkeypatch.setattr(errors_api, "SYNC_IDS", 2)
    codes = [str(code) for code in RecordError.objects.order_by("pk").values_list("code", flat=True)]

    with worker() as queued:
        response = api.post("/api/v1/errors/bulk-resolve/", {"ids": codes}, format="json")

    assert response.status_code == 202, response.content
    assert (response.json()["ids"], response.json()["filter"]) == (3, None)
    worker.run(queued)
    assert follow(api, response.json())["summary"] == {"closed": 3, "skipped": {}}
    # Two ids are still answered at once, as before.
    assert api.post("/api/v1/errors/bulk-resolve/", {"ids": codes[:2]}, format="json").json() == {
        "closed": 0, "skipped": {"already_resolved": 2}}


def test_a_long_id_list_naming_another_organizations_error_records_nothing(
    api, down_mapping, other_org, make_mapping, make_connection, monkeypatch
):
    monkeypatch.setattr(errors_api, "SYNC_IDS", 1)
    theirs = make_mapping(organization=other_org, match_keys=[],
                          target=make_connection("Their CRM", organization=other_org,
                                                 faults={"operations": ["write"], "failure_rate": 1.0}))
    seed_records(theirs.source_connection, "contacts", [person(9)])
    run_mapping(theirs)
    mine = [str(code) for code in RecordError.objects.filter(mapping=down_mapping).values_list("code", flat=True)]
    foreign = str(RecordError.objects.get(mapping=theirs).code)

    with_foreign = api.post("/api/v1/errors/bulk-retry/", {"ids": [*mine, foreign]}, format="json")
    with_missing = api.post("/api/v1/errors/bulk-retry/", {"ids": [*mine, MISSING]}, format="json")

    assert_problem(with_foreign, 404)
    assert with_foreign.json()["detail"].replace(foreign, "") == with_missing.json()["detail"].replace(MISSING, "")
    assert not BulkAction.objects.exists()


def test_a_bad_filter_answers_400_and_records_nothing(api, down_mapping):
    response = api.post("/api/v1/errors/bulk-resolve/", {"filter": {"mapping": MISSING}, "all_matching": True},
                        format="json")

    assert "filter" in assert_problem(response, 400)["errors"]
    assert not BulkAction.objects.exists()


def test_another_organizations_bulk_action_answers_404_like_a_missing_one(api, other_api, down_mapping, worker):
    with worker():
        answer = api.post("/api/v1/errors/bulk-resolve/", {"filter": {}, "all_matching": True},
                          format="json").json()

    foreign = other_api.get(f"/api/v1/bulk-actions/{answer['id']}/")
    missing = other_api.get(f"/api/v1/bulk-actions/{MISSING}/")

    assert_problem(foreign, 404)
    assert {k: v for k, v in foreign.json().items() if k != "uuid"} == {
        k: v for k, v in missing.json().items() if k != "uuid"}
    assert other_api.get("/api/v1/bulk-actions/").json()["results"] == []
    assert [row["id"] for row in api.get("/api/v1/bulk-actions/").json()["results"]] == [answer["id"]]


def test_a_bulk_action_whose_filter_no_longer_holds_fails_with_the_reason(api, make_mapping, down_mapping, worker):
    doomed = make_mapping()
    with worker() as queued:
        answer = api.post("/api/v1/errors/bulk-resolve/", {"filter": {"mapping": str(doomed.code)},
                                                           "all_matching": True}, format="json").json()
    doomed.delete()

    worker.run(queued)

    done = follow(api, answer)
    assert done["status"] == "failed" and done["summary"] is None
    assert "no longer valid" in done["failure"] and "mapping" in done["failure"]
    assert set(RecordError.objects.values_list("status", flat=True)) == {ErrorStatus.OPEN}


def test_a_bulk_action_is_carried_out_once_whatever_runs_its_task_again(api, down_mapping, worker):
    with worker():
        api.post("/api/v1/errors/bulk-retry/", {"filter": {}, "all_matching": True}, format="json")
    action = BulkAction.objects.get()

    assert bulk_action_perform(action_id=action.pk) is not None
    assert bulk_action_perform(action_id=action.pk) is None  # done already: nothing got updated

    assert SyncRun.objects.filter(trigger="retry").count() == 1


def test_a_repeated_idempotency_key_answers_the_same_bulk_action(api, down_mapping):
    body, headers = {"filter": {}, "all_matching": True}, {"HTTP_IDEMPOTENCY_KEY": "retry-everything"}

    first = api.post("/api/v1/errors/bulk-retry/", body, format="json", **headers)
    again = api.post("/api/v1/errors/bulk-retry/", body, format="json", **headers)

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert BulkAction.objects.count() == 1


def test_a_viewer_follows_bulk_actions_but_cannot_start_one(api, make_token, down_mapping):
    viewer = APIClient()
    viewer.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(role=TokenRole.VIEWER)}")
    answer = api.post("/api/v1/errors/bulk-resolve/", {"filter": {}, "all_matching": True}, format="json").json()

    assert viewer.get(f"/api/v1/bulk-actions/{answer['id']}/").status_code == 200
    assert_problem(viewer.post("/api/v1/errors/bulk-resolve/", {"filter": {}, "all_matching": True},
                               format="json"), 403)
    assert BulkAction.objects.count() == 1


# --- query counts of the lists ----------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [3, 30])
def test_listing_bulk_actions_costs_the_same_queries_for_3_or_30(api, org, count, django_assert_max_num_queries):
    from syncs.bulk import bulk_action_request

    for _ in range(count):
        bulk_action_request(organization=org, kind="resolve", selection={"filter": {}})

    # token, last use, the count, the page
    with django_assert_max_num_queries(4):
        response = api.get("/api/v1/bulk-actions/?limit=100")

    assert len(response.json()["results"]) == count


@pytest.mark.parametrize("count", [3, 30])
def test_listing_errors_with_every_filter_costs_the_same_queries_for_3_or_30_errors(
    api, make_mapping, failing_target, count, django_assert_max_num_queries
):
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(count)])
    run = run_mapping(mapping)
    query = (f"mapping={mapping.code}&target_connection={failing_target.code}&run={run.code}&category=connection"
             "&status=open&level=record&code=http_503&since=2000-01-01T00:00:00Z&search=503")

    # token, last use, the mapping, connection and run filters' lookups, the target's mappings, the page
    with django_assert_max_num_queries(7):
        response = api.get(f"/api/v1/errors/?page_size=100&{query}")

    assert len(response.json()["results"]) == count


@pytest.mark.parametrize("count", [3, 30])
@pytest.mark.parametrize("rolled_up", [False, True])
def test_the_analytics_cost_the_same_queries_for_3_or_30_errors(
    api, make_mapping, failing_target, count, rolled_up, django_assert_max_num_queries
):
    mapping = make_mapping(target=failing_target, match_keys=[])
    with time_machine.travel(timezone.now() - timedelta(hours=3)):
        seed_records(mapping.source_connection, "contacts", [person(n) for n in range(count)])
        run_mapping(mapping)
    if rolled_up:
        error_rollups_refresh()

    # token, last use; the rollup's watermark, what it counted per code and per hour, the rest of the window
    # counted live; one query per other figure (two for the links: mappings, then links); the connections' names
    with django_assert_max_num_queries(14):
        response = api.get("/api/v1/analytics/?window=7d")

    assert sum(bucket["count"] for bucket in response.json()["error_trend"]) == count
    assert response.json()["errors_by_code"] == [{"category": "connection", "code": "http_503", "count": count}]
