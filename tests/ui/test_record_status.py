"""The record status page with Django's test client: source records × targets (a cell per mapping with the
link's status, last sync and open error), the API's filters ("POS sync failed": a target and a status), the
search by record id, keyset pages; re-sync of one record and of every unsynced record after a confirmation,
through syncs.record_status; tenancy (404), viewers (403 on every action) and queries that do not grow with the
rows."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, Role
from integrations.connectors.sandbox import seed_records
from syncs.models import LinkStatus, RecordError, RecordLink, SyncRun
from tests.syncs.helpers import person, run_mapping, set_faults


@pytest.fixture
def viewer(org, django_user_model):
    user = django_user_model.objects.create_user("victor", "victor@example.org", "victor-password")
    Membership.objects.create(user=user, organization=org, role=Role.VIEWER)
    return user


@pytest.fixture
def shop(org, make_connection, make_mapping):
    """A shop's customers mapped to a CRM and to a POS; customers c1…c4 linked in both with these statuses."""
    source = make_connection("Shop", organization=org)
    crm = make_mapping(source=source, target=make_connection("CRM", organization=org))
    pos = make_mapping(source=source, target=make_connection("POS", organization=org))
    crm.name, pos.name = "Customers to CRM", "Customers to POS"
    crm.save(update_fields=["name"])
    pos.save(update_fields=["name"])
    statuses = {"c1": ("synced", "synced"), "c2": ("synced", "failed"), "c3": ("failed", "pending"),
                "c4": ("ignored", "failed")}
    for record, (in_crm, in_pos) in statuses.items():
        for mapping, status in ((crm, in_crm), (pos, in_pos)):
            error = None
            if status in ("failed", "pending"):
                error = RecordError.objects.create(
                    organization=org, run=SyncRun.objects.create(organization=org, mapping=mapping),
                    mapping=mapping, category="validation", message=f"{record} refused by {mapping.name}",
                    source_record_id=record, fingerprint="f" * 40)
            RecordLink.objects.create(organization=org, mapping=mapping, source_record_id=record, status=status,
                                      last_error=error, last_synced_at=timezone.now() if status == "synced" else None)
    return {"crm": crm, "pos": pos, "source": source}


def page_of(client, user, **params):
    client.force_login(user)
    response = client.get(reverse("record_status"), params)
    assert response.status_code == 200, response.status_code
    return response


def table(response):
    """{record id: [status of each column, or None]} of every group of the page, and the column names."""
    rows, columns = {}, []
    for group in response.context["groups"]:
        columns.append([mapping.name for mapping in group["columns"]])
        for row in group["rows"]:
            rows[row["record_id"]] = [cell["link"].status if cell else None for cell in row["cells"]]
    return rows, columns


# --- the table --------------------------------------------------------------------------------------------------


def test_each_record_is_a_row_with_a_cell_per_target(client, alice, shop):
    response = page_of(client, alice)

    rows, columns = table(response)
    assert columns == [["Customers to CRM", "Customers to POS"]]  # by target name
    assert rows == {"c1": ["synced", "synced"], "c2": ["synced", "failed"], "c3": ["failed", "pending"],
                    "c4": ["ignored", "failed"]}
    page = response.content.decode()
    assert "From Shop · contacts" in page
    error = RecordError.objects.get(mapping=shop["pos"], source_record_id="c2")
    assert reverse("error_detail", args=[error.code]) in page  # the cell links its open error
    assert "synced" in page and "ago" in page
    # The counts per target, their failures a link to the filtered table.
    targets = {row["target"].name: (row["synced"], row["unsynced"], row["failed"])
               for row in response.context["targets"]}
    assert targets == {"CRM": (2, 1, 1), "POS": (1, 3, 2)}
    pos = shop["pos"].target_connection
    assert f"?target_connection={pos.code}&amp;status=failed" in page


def test_a_record_not_yet_seen_by_a_mapping_has_an_empty_cell(client, alice, org, shop):
    RecordLink.objects.create(organization=org, mapping=shop["crm"], source_record_id="c5", status="synced")

    rows, _columns = table(page_of(client, alice))

    assert rows["c5"] == ["synced", None]


def test_pos_sync_failed_is_the_target_and_the_status_together(client, alice, shop):
    pos = shop["pos"].target_connection

    rows, _columns = table(page_of(client, alice, target_connection=str(pos.code), status="failed"))

    assert set(rows) == {"c2", "c4"}  # c3 failed in the CRM, not in the POS
    assert rows["c2"] == ["synced", "failed"]  # the other targets' cells stay in view
    rows, _ = table(page_of(client, alice, mapping=str(shop["crm"].code), status=["failed", "ignored"]))
    assert set(rows) == {"c3", "c4"}
    rows, _ = table(page_of(client, alice, search="C3"))
    assert set(rows) == {"c3"}


def test_an_invalid_filter_is_a_form_error_not_a_500(client, alice, shop):
    response = page_of(client, alice, mapping="not-a-uuid", status="exploded")

    assert set(response.context["filters"].errors) == {"mapping", "status"}
    assert response.context["groups"] == []
    assert "No record matches these filters" in response.content.decode()


def test_records_come_in_keyset_pages(client, alice, org, shop, monkeypatch):
    monkeypatch.setattr("syncs.views.records.ROWS_PER_PAGE", 3)
    for number in range(5, 12):
        RecordLink.objects.create(organization=org, mapping=shop["crm"], source_record_id=f"c{number:02d}",
                                  status="synced")
    client.force_login(alice)

    seen, query = [], {}
    while True:
        response = client.get(reverse("record_status"), query)
        page = response.context["page"]
        seen.extend(record for _connection, _object, record in page.keys)
        if not page.next:
            break
        query = {"after": page.next}
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 11
    assert len(page.keys) == 2  # 3 + 3 + 3 + 2
    back = client.get(reverse("record_status"), {"before": page.previous}).context["page"]
    assert [key[2] for key in back.keys] == seen[-5:-2]


def test_an_empty_organization_is_told_how_records_get_here(client, alice):
    page = page_of(client, alice).content.decode()

    assert "No record has been synced yet" in page and reverse("mappings:list") in page
    assert "Re-sync all unsynced" not in page


# --- re-sync ----------------------------------------------------------------------------------------------------


def test_re_sync_of_a_row_queues_the_record_in_each_of_its_mappings(client, alice, shop):
    client.force_login(alice)
    back = reverse("record_status") + "?search=c2"

    response = client.post(reverse("record_resync"), {
        "record": "c2", "mapping": [str(shop["crm"].code), str(shop["pos"].code)], "back": back})

    assert response.status_code == 302 and response.url == back
    runs = list(SyncRun.objects.filter(options__records=["c2"]).order_by("pk"))
    assert {run.mapping for run in runs} == {shop["crm"], shop["pos"]}
    message = str(next(iter(response.wsgi_request._messages)))
    assert "Re-syncing record c2 in" in message
    assert all(f'href="{reverse("run_detail", args=[run.code])}"' in message for run in runs)


def test_re_sync_reads_the_record_again_and_syncs_it(client, alice, make_mapping, failing_target,
                                                    django_capture_on_commit_callbacks):
    mapping = make_mapping(target=failing_target, match_keys=[])
    seed_records(mapping.source_connection, "contacts", [person(1), person(2)])
    run_mapping(mapping)
    first, second = RecordLink.objects.filter(mapping=mapping).order_by("source_record_id")
    assert first.status == second.status == LinkStatus.FAILED
    set_faults(failing_target)  # the target is back
    client.force_login(alice)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("record_resync"), {"record": first.source_record_id, "mapping": str(mapping.code)})

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (LinkStatus.SYNCED, LinkStatus.FAILED)
    rows, _ = table(page_of(client, alice))
    assert rows[first.source_record_id] == ["synced"]


def test_re_sync_all_unsynced_confirms_how_many_then_queues_a_run_per_mapping(client, alice, shop):
    client.force_login(alice)
    pos = shop["pos"].target_connection

    confirm = client.get(reverse("records_resync_unsynced"))
    assert confirm.status_code == 200
    assert confirm.context["total"] == 4  # c3 in the CRM; c2, c3 and c4 in the POS (ignored and synced stay)
    assert "4 records will be re-synced" in confirm.content.decode()
    only_pos = client.get(reverse("records_resync_unsynced"), {"target_connection": str(pos.code)})
    assert only_pos.context["total"] == 3 and "to POS" in only_pos.content.decode()

    response = client.post(reverse("records_resync_unsynced"), {"target_connection": str(pos.code)}, follow=True)

    assert response.redirect_chain[0][1] == 302
    (run,) = SyncRun.objects.filter(options__has_key="records")
    assert run.mapping == shop["pos"] and sorted(run.options["records"]) == ["c2", "c3", "c4"]
    # The message names the run as a link to its page (not its markup escaped).
    page = response.content.decode()
    assert "Re-syncing 3 unsynced records in" in page
    assert f'<a href="{reverse("run_detail", args=[run.code])}">run {str(run.code)[:8]}</a>' in page


def test_re_sync_all_with_nothing_unsynced_says_so(client, alice, org, make_mapping):
    RecordLink.objects.create(organization=org, mapping=make_mapping(), source_record_id="x", status="synced")
    client.force_login(alice)

    assert "Nothing to re-sync" in client.get(reverse("records_resync_unsynced")).content.decode()
    response = client.post(reverse("records_resync_unsynced"), follow=True)
    assert "Nothing to re-sync" in response.content.decode()
    assert not SyncRun.objects.exists()


# --- tenancy, roles, queries -----------------------------------------------------------------------------------


def test_another_organizations_records_and_mappings_answer_404(client, alice, other_org, make_connection,
                                                               make_mapping):
    theirs = make_mapping(source=make_connection("Their shop", organization=other_org),
                          target=make_connection("Their CRM", organization=other_org), organization=other_org)
    RecordLink.objects.create(organization=other_org, mapping=theirs, source_record_id="secret-1", status="failed")
    client.force_login(alice)

    page = client.get(reverse("record_status")).content.decode()
    assert "secret-1" not in page and "Their CRM" not in page
    filtered = client.get(reverse("record_status"), {"mapping": str(theirs.code)})
    assert filtered.context["groups"] == []
    assert client.post(reverse("record_resync"), {"record": "secret-1", "mapping": str(theirs.code)}).status_code == 404
    assert client.post(reverse("record_resync"), {"record": "x", "mapping": str(uuid.uuid4())}).status_code == 404
    for scope in ({"mapping": str(theirs.code)}, {"target_connection": str(theirs.target_connection.code)}):
        assert client.get(reverse("records_resync_unsynced"), scope).status_code == 404
        assert client.post(reverse("records_resync_unsynced"), scope).status_code == 404
    assert not SyncRun.objects.exists()


def test_a_viewer_sees_the_table_but_every_action_is_refused(client, viewer, shop):
    response = page_of(client, viewer)

    page = response.content.decode()
    assert "c2" in page and "Re-sync" not in page
    assert client.post(reverse("record_resync"), {"record": "c2", "mapping": str(shop["pos"].code)}).status_code == 403
    assert client.get(reverse("records_resync_unsynced")).status_code == 403
    assert client.post(reverse("records_resync_unsynced")).status_code == 403
    assert not SyncRun.objects.filter(options__has_key="records").exists()


def queries_of(client, **params):
    client.get(reverse("record_status"), params)  # warm-up: the session's first write, content types
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("record_status"), params)
    assert response.status_code == 200
    return len(captured.captured_queries), response


def test_the_table_costs_the_same_queries_for_50_rows_as_for_5(client, alice, org, shop,
                                                               django_assert_max_num_queries):
    client.force_login(alice)
    with django_assert_max_num_queries(15):
        client.get(reverse("record_status"))
    few, response = queries_of(client)
    assert len(response.context["groups"][0]["rows"]) == 4
    errors = RecordError.objects.filter(mapping=shop["pos"]).first()
    for number in range(5, 60):
        for mapping, status in ((shop["crm"], "synced"), (shop["pos"], "failed")):
            RecordLink.objects.create(organization=org, mapping=mapping, source_record_id=f"c{number}",
                                      status=status, last_error=errors if status == "failed" else None)

    many, response = queries_of(client)

    assert len(response.context["groups"][0]["rows"]) == 50
    assert many == few
    assert queries_of(client, status="failed", target_connection=str(shop["pos"].target_connection.code))[0] == few
