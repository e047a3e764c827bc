"""/api/v1/runs/: the list and its filters, a run's detail with its batches and retry chain, retry failures, cancel."""

import pytest
import time_machine
from rest_framework.test import APIClient

from accounts.models import TokenRole
from integrations.connectors.sandbox import seed_records
from syncs.models import ErrorStatus, RecordError, RunStatus, SyncRun, Trigger
from syncs.retries import errors_retry
from syncs.services import sync_run_queue
from tests.api.test_foundation import assert_problem
from tests.syncs.helpers import person, records, run_mapping

pytestmark = pytest.mark.django_db

MISSING = "00000000-0000-0000-0000-000000000000"


def without_uuid(response):
    return {key: value for key, value in response.json().items() if key != "uuid"}


def set_faults(connection, **faults):
    connection.config = {"faults": faults} if faults else {}
    connection.save()


@pytest.fixture
def failed_run(make_mapping, failing_target):
    """A run whose every write failed on a 503 of the target."""
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])
    return run_mapping(mapping)


@pytest.fixture
def viewer_api(make_token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(role=TokenRole.VIEWER)}")
    return client


def queued_runs(mapping, count, **options):
    return [sync_run_queue(mapping=mapping, trigger=Trigger.RETRY, enqueue=False, **options) for _ in range(count)]


# --- list ----------------------------------------------------------------------------------------------------------


def test_runs_are_listed_newest_first_with_their_mapping_and_counts(api, failed_run, make_mapping):
    newer = run_mapping(make_mapping())

    rows = api.get("/api/v1/runs/").json()["results"]

    assert [row["id"] for row in rows] == [str(newer.code), str(failed_run.code)]
    failed = rows[1]
    assert failed["mapping"] == {"id": str(failed_run.mapping.code), "name": failed_run.mapping.name}
    assert failed["status"] == RunStatus.PARTIALLY_FAILED
    assert failed["counts"]["read"] == 2 and failed["counts"]["failed"] == 2
    assert failed["parent"] is None and failed["root"] is None


def test_runs_are_filtered_by_mapping_status_trigger_test_flag_and_queue_time(api, make_mapping, failed_run):
    other = make_mapping()
    with time_machine.travel("2026-01-01 10:00:00+00:00", tick=False):
        (early,) = queued_runs(other, 1)
    test_run = sync_run_queue(mapping=other, trigger=Trigger.TEST, is_test=True, enqueue=False)

    def ids(query):
        response = api.get(f"/api/v1/runs/?{query}")
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids(f"mapping={failed_run.mapping.code}") == {str(failed_run.code)}
    assert ids("status=partially_failed&status=canceled") == {str(failed_run.code)}
    assert ids("trigger=retry") == {str(early.code)}
    assert ids("is_test=true") == {str(test_run.code)}
    assert ids("queued_before=2026-01-02T00:00:00Z") == {str(early.code)}
    assert str(early.code) not in ids("queued_after=2026-01-02T00:00:00Z")


def test_bad_run_filters_answer_400_problems(api):
    assert_problem(api.get("/api/v1/runs/?status=exploded"), 400, "validation_error")
    assert_problem(api.get("/api/v1/runs/?mapping=not-a-uuid"), 400)
    assert_problem(api.get("/api/v1/runs/?queued_after=yesterday"), 400)


def test_the_run_list_pages_with_a_cursor_without_repeating_or_skipping(api, make_mapping):
    mapping = make_mapping()
    runs = queued_runs(mapping, 5)

    seen, url, pages = [], "/api/v1/runs/?page_size=2", 0
    while url:
        page = api.get(url).json()
        seen += [row["id"] for row in page["results"]]
        url, pages = page["next"], pages + 1

    assert pages == 3
    assert seen == [str(run.code) for run in reversed(runs)]


@pytest.mark.parametrize("count", [3, 30])
def test_listing_runs_costs_the_same_queries_for_3_or_30_runs(api, make_mapping, count, django_assert_max_num_queries):
    mapping = make_mapping()
    (root,) = queued_runs(mapping, 1)
    queued_runs(mapping, count - 1, parent=root)

    # token, last use, the page (mapping, parent and root joined)
    with django_assert_max_num_queries(3):
        response = api.get("/api/v1/runs/?page_size=100")

    assert len(response.json()["results"]) == count


# --- detail --------------------------------------------------------------------------------------------------------


def test_a_run_shows_its_batches_errors_by_category_and_its_retry_chain(
    api, failed_run, failing_target, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        child = api.post(f"/api/v1/runs/{failed_run.code}/retry-failures/").json()  # fails again: target still down

    root = api.get(f"/api/v1/runs/{failed_run.code}/").json()
    retry = api.get(f"/api/v1/runs/{child['id']}/").json()

    assert root["batches"] == [{
        "sequence": 1, "direction": "forward", "page_token": "", "status": "failed", "record_count": 2,
        "error": "", "attempts": root["batches"][0]["attempts"], "started_at": root["batches"][0]["started_at"],
        "finished_at": root["batches"][0]["finished_at"],
    }]
    assert root["errors_by_category"] == {"connection": 2}
    assert [run["id"] for run in root["children"]] == [child["id"]]
    assert root["descendants"] == {"count": 1, "by_status": {"partially_failed": 1}}
    assert (retry["parent"], retry["root"], retry["trigger"]) == (str(failed_run.code), str(failed_run.code), "retry")
    assert retry["children"] == [] and retry["descendants"] == {"count": 0, "by_status": {}}


def test_another_organizations_run_answers_404_like_a_missing_one(api, other_api, failed_run):
    for method, suffix in (("get", ""), ("post", "retry-failures/"), ("post", "cancel/")):
        foreign = getattr(other_api, method)(f"/api/v1/runs/{failed_run.code}/{suffix}")
        missing = getattr(other_api, method)(f"/api/v1/runs/{MISSING}/{suffix}")
        assert_problem(foreign, 404)
        assert without_uuid(foreign) == without_uuid(missing)
    assert other_api.get("/api/v1/runs/").json()["results"] == []
    assert SyncRun.objects.count() == 1


# --- retry failures ------------------------------------------------------------------------------------------------


def test_retrying_a_runs_failures_queues_a_child_run_that_recovers_it(
    api, failed_run, failing_target, django_capture_on_commit_callbacks
):
    set_faults(failing_target)  # the target is back

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/runs/{failed_run.code}/retry-failures/", {"force": False}, format="json")

    assert response.status_code == 202, response.content
    child = response.json()
    assert (child["parent"], child["trigger"], child["status"]) == (str(failed_run.code), "retry", "queued")
    failed_run.refresh_from_db()
    assert failed_run.status == RunStatus.RECOVERED
    assert len(records(failing_target)) == 2


def test_retrying_a_run_without_failures_answers_409(api, make_mapping):
    run = run_mapping(make_mapping())

    body = assert_problem(api.post(f"/api/v1/runs/{run.code}/retry-failures/"), 409, "no_failures")

    assert "Only a finished run with failures" in body["detail"]


def test_retrying_a_run_whose_failures_are_all_being_retried_answers_409(api, failed_run):
    assert api.post(f"/api/v1/runs/{failed_run.code}/retry-failures/").status_code == 202  # queued, never run

    assert_problem(api.post(f"/api/v1/runs/{failed_run.code}/retry-failures/"), 409, "nothing_to_retry")


def test_retry_failures_refuses_a_force_that_is_not_a_boolean(api, failed_run):
    body = assert_problem(api.post(f"/api/v1/runs/{failed_run.code}/retry-failures/", {"force": "maybe"},
                                   format="json"), 400)
    assert set(body["errors"]) == {"force"}


# --- cancel -------------------------------------------------------------------------------------------------------


def test_a_queued_run_is_canceled_and_the_errors_it_was_to_retry_go_back(api, failed_run):
    summary = errors_retry(organization=failed_run.organization, queryset=RecordError.objects.all())  # not run
    retry = SyncRun.objects.get(pk=summary["runs"][0])
    assert set(RecordError.objects.values_list("status", flat=True)) == {ErrorStatus.RETRYING}

    response = api.post(f"/api/v1/runs/{retry.code}/cancel/")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == RunStatus.CANCELED and response.json()["finished_at"]
    errors = list(RecordError.objects.all())
    assert {(error.status, error.attempts, error.claim_token) for error in errors} == {(ErrorStatus.OPEN, 0, None)}
    # The errors can be retried again at once.
    assert api.post(f"/api/v1/runs/{failed_run.code}/retry-failures/").status_code == 202


def test_a_finished_run_cannot_be_canceled(api, failed_run):
    assert_problem(api.post(f"/api/v1/runs/{failed_run.code}/cancel/"), 409, "run_finished")


def test_a_running_run_stops_before_its_next_batch_when_canceled(api, make_mapping, monkeypatch):
    from integrations.connectors.sandbox import seed_records
    from syncs.engine import RunExecutor, sync_run_execute
    from syncs.services import sync_run_queue
    from tests.syncs.helpers import person, records

    mapping = make_mapping(batch_size=2)
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(6)])
    run = sync_run_queue(mapping=mapping, enqueue=False)
    original = RunExecutor.process_batch

    def cancel_during_the_first_batch(self, sync_pass, batch, records_, **kwargs):
        if batch.sequence == 1:
            assert api.post(f"/api/v1/runs/{run.code}/cancel/").status_code == 200
        return original(self, sync_pass, batch, records_, **kwargs)

    monkeypatch.setattr(RunExecutor, "process_batch", cancel_during_the_first_batch)
    sync_run_execute(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELED
    assert (run.read, run.created) == (2, 2)  # the batch under way finished; no other batch started
    assert len(records(mapping.target_connection)) == 2
    mapping.refresh_from_db()
    assert mapping.source_cursor == ""


# --- roles --------------------------------------------------------------------------------------------------------


def test_a_viewer_reads_runs_but_cannot_retry_or_cancel_them(viewer_api, failed_run, make_mapping):
    (queued,) = queued_runs(make_mapping(), 1)

    assert viewer_api.get(f"/api/v1/runs/{failed_run.code}/").status_code == 200
    assert_problem(viewer_api.post(f"/api/v1/runs/{failed_run.code}/retry-failures/"), 403)
    assert_problem(viewer_api.post(f"/api/v1/runs/{queued.code}/cancel/"), 403)

    queued.refresh_from_db()
    assert queued.status == RunStatus.QUEUED
    assert SyncRun.objects.count() == 2
