"""/api/v1/record-status/: each source record × target with its sync status, the counts per target, re-syncs."""

import pytest
from rest_framework.test import APIClient

from accounts.models import TokenRole
from integrations.connectors.sandbox import seed_records
from syncs.models import LinkStatus, RecordError, RecordLink, SyncRun, Trigger
from syncs.services import sync_run_queue
from tests.api.test_foundation import assert_problem
from tests.syncs.helpers import person, records, run_mapping

pytestmark = pytest.mark.django_db

MISSING = "00000000-0000-0000-0000-000000000000"


def set_faults(connection, **faults):
    connection.config = {"faults": faults} if faults else {}
    connection.save()


@pytest.fixture
def half_synced(make_mapping, make_connection, failing_target):
    """One shop synced into a healthy CRM (2 records) and, through a second mapping, failing into a down one."""
    shop = make_connection("Shop")
    healthy = make_mapping(source=shop, target=make_connection("CRM"))
    down = make_mapping(source=shop, target=failing_target, match_keys=[])
    rows = seed_records(shop, "contacts", [person(1), person(2)])
    run_mapping(healthy)
    run_mapping(down)
    return healthy, down, rows


def test_each_record_is_listed_once_per_target_with_its_status(api, half_synced):
    healthy, down, rows = half_synced

    listed = api.get("/api/v1/record-status/").json()["results"]

    assert len(listed) == 4
    first = rows[0].external_id
    by_target = {row["target_connection"]["name"]: row for row in listed if row["source_record_id"] == first}
    assert by_target["CRM"]["status"] == LinkStatus.SYNCED
    assert by_target["CRM"]["target_record_id"] and by_target["CRM"]["last_synced_at"]
    assert by_target["CRM"]["last_error"] is None
    assert by_target["CRM"]["mapping"] == {"id": str(healthy.code), "name": healthy.name}
    failed = by_target["Down CRM"]
    error = RecordError.objects.get(mapping=down, source_record_id=first)
    assert failed["status"] == LinkStatus.FAILED
    assert failed["target_connection"] == {"id": str(down.target_connection.code), "name": "Down CRM"}
    assert failed["last_error"] == {"id": str(error.code), "message": error.message}


def test_record_status_is_filtered_by_mapping_status_target_and_record(api, half_synced):
    healthy, down, rows = half_synced

    def listed(query):
        response = api.get(f"/api/v1/record-status/?{query}")
        assert response.status_code == 200, response.content
        return {(row["mapping"]["name"], row["source_record_id"]) for row in response.json()["results"]}

    assert listed(f"mapping={down.code}") == {(down.name, row.external_id) for row in rows}
    assert listed("status=synced") == {(healthy.name, row.external_id) for row in rows}
    assert listed(f"target_connection={healthy.target_connection.code}") == listed("status=synced")
    assert listed(f"source_record_id={rows[1].external_id}") == {(healthy.name, rows[1].external_id),
                                                                 (down.name, rows[1].external_id)}
    assert listed(f"mapping={MISSING}") == set()
    assert_problem(api.get("/api/v1/record-status/?status=lost"), 400)


@pytest.mark.parametrize("count", [3, 30])
def test_listing_record_status_costs_the_same_queries_for_3_or_30_records(
    api, make_mapping, failing_target, count, django_assert_max_num_queries
):
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(count)])
    run_mapping(mapping)

    # token, last use, the count, the page (mapping, target and last error joined)
    with django_assert_max_num_queries(4):
        response = api.get("/api/v1/record-status/?limit=100")

    assert len(response.json()["results"]) == count


def test_the_counts_say_per_target_how_many_records_are_synced_unsynced_and_failed(api, half_synced):
    healthy, down, _rows = half_synced

    counts = api.get("/api/v1/record-status/counts/").json()

    assert counts == [
        {"connection": {"id": str(healthy.target_connection.code), "name": "CRM"}, "synced": 2, "unsynced": 0,
         "failed": 0},
        {"connection": {"id": str(down.target_connection.code), "name": "Down CRM"}, "synced": 0, "unsynced": 2,
         "failed": 2},
    ]


def test_resyncing_records_syncs_them_again_now(api, half_synced, failing_target, django_capture_on_commit_callbacks):
    _healthy, down, rows = half_synced
    set_faults(failing_target)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/record-status/resync/",
                            {"mapping": str(down.code), "source_record_ids": [rows[0].external_id]}, format="json")

    assert response.status_code == 202, response.content
    run = SyncRun.objects.get(code=response.json()["id"])
    assert (run.trigger, run.options["records"]) == (Trigger.MANUAL, [rows[0].external_id])
    assert RecordLink.objects.get(mapping=down, source_record_id=rows[0].external_id).status == LinkStatus.SYNCED
    assert len(records(failing_target)) == 1


def test_resyncing_every_unsynced_record_queues_one_run_per_mapping(
    api, half_synced, failing_target, django_capture_on_commit_callbacks
):
    _healthy, down, _rows = half_synced
    set_faults(failing_target)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/record-status/resync-unsynced/",
                            {"target_connection": str(failing_target.code)}, format="json")

    assert response.status_code == 202, response.content
    (run,) = response.json()["runs"]
    assert run["mapping"]["id"] == str(down.code)
    assert set(RecordLink.objects.values_list("status", flat=True)) == {LinkStatus.SYNCED}
    assert len(records(failing_target)) == 2
    nothing_left = api.post("/api/v1/record-status/resync-unsynced/", {}, format="json")
    assert nothing_left.status_code == 202 and nothing_left.json() == {"runs": []}


def test_a_resync_of_a_mapping_with_a_run_under_way_waits_for_it_and_then_runs(api, half_synced, failing_target):
    from syncs.engine import sync_run_claim, sync_run_execute

    _healthy, down, rows = half_synced
    set_faults(failing_target)
    in_progress = sync_run_queue(mapping=down, enqueue=False)
    assert sync_run_claim(run_id=in_progress.pk) is not None  # a worker has it

    single = api.post("/api/v1/record-status/resync/",
                      {"mapping": str(down.code), "source_record_ids": [rows[0].external_id]}, format="json")

    assert single.status_code == 202, single.content
    waiting = SyncRun.objects.get(code=single.json()["id"])
    assert sync_run_execute(run_id=waiting.pk) is None  # one run of a mapping at a time: it waits
    waiting.refresh_from_db()
    assert waiting.status == "queued"
    SyncRun.objects.filter(pk=in_progress.pk).update(status="succeeded")
    sync_run_execute(run_id=waiting.pk)
    waiting.refresh_from_db()
    assert waiting.status == "succeeded"
    assert RecordLink.objects.get(mapping=down, source_record_id=rows[0].external_id).status == LinkStatus.SYNCED


def test_a_resync_naming_another_organizations_mapping_answers_404_like_a_missing_one(
    other_api, half_synced
):
    _healthy, down, rows = half_synced

    foreign = other_api.post("/api/v1/record-status/resync/",
                             {"mapping": str(down.code), "source_record_ids": [rows[0].external_id]}, format="json")
    missing = other_api.post("/api/v1/record-status/resync/",
                             {"mapping": MISSING, "source_record_ids": [rows[0].external_id]}, format="json")
    unsynced = other_api.post("/api/v1/record-status/resync-unsynced/",
                              {"target_connection": str(down.target_connection.code)}, format="json")

    assert_problem(foreign, 404)
    assert foreign.json()["detail"].replace(str(down.code), "") == missing.json()["detail"].replace(MISSING, "")
    assert_problem(unsynced, 404)
    assert SyncRun.objects.count() == 2
    assert other_api.get("/api/v1/record-status/").json()["results"] == []
    assert other_api.get("/api/v1/record-status/counts/").json() == []


@pytest.mark.parametrize(("body", "status"), [
    ({}, 400),
    ({"source_record_ids": ["ct_1"]}, 400),
    ({"mapping": "not-a-uuid", "source_record_ids": ["ct_1"]}, 404),
    ({"mapping": "OWN", "source_record_ids": []}, 400),
    ({"mapping": "OWN", "source_record_ids": "ct_1"}, 400),
    ({"mapping": "OWN", "source_record_ids": [{"id": 1}]}, 400),
    ({"mapping": "OWN", "source_record_ids": ["ct_1"], "force": "yes please"}, 400),
])
def test_a_bad_resync_answers_a_problem_and_queues_nothing(api, half_synced, body, status):
    _healthy, down, _rows = half_synced
    if body.get("mapping") == "OWN":
        body = {**body, "mapping": str(down.code)}

    assert_problem(api.post("/api/v1/record-status/resync/", body, format="json"), status)
    assert SyncRun.objects.count() == 2


def test_a_viewer_reads_record_status_but_cannot_resync(make_token, half_synced):
    _healthy, down, rows = half_synced
    viewer = APIClient()
    viewer.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(role=TokenRole.VIEWER)}")

    assert viewer.get("/api/v1/record-status/").status_code == 200
    assert viewer.get("/api/v1/record-status/counts/").status_code == 200
    assert_problem(viewer.post("/api/v1/record-status/resync/",
                               {"mapping": str(down.code), "source_record_ids": [rows[0].external_id]},
                               format="json"), 403)
    assert_problem(viewer.post("/api/v1/record-status/resync-unsynced/", {}, format="json"), 403)
    assert SyncRun.objects.count() == 2
