"""Recovery from the Django admin: retry, ignore (with a reason) and resolve errors, retry a run's failures."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from integrations.connectors.sandbox import seed_records
from syncs.models import ErrorStatus, LinkStatus, RecordError, RecordLink, Resolution, RunStatus, SyncRun, Trigger
from syncs.review import error_ignore
from tests.syncs.helpers import person, records, run_mapping

pytestmark = pytest.mark.django_db

WRITE_503 = {"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"}
ERRORS_URL = reverse("admin:syncs_recorderror_changelist")
RUNS_URL = reverse("admin:syncs_syncrun_changelist")


def act(client, url, action, objects, **data):
    return client.post(url, {"action": action, "_selected_action": [obj.pk for obj in objects], **data}, follow=True)


def page(response):
    return response.content.decode()


@pytest.fixture
def outages(org, other_org, make_mapping, make_connection):
    """In each of acme and globex, a mapping whose target answers 503: acme fails two records, globex one."""
    failing = {}
    for organization, rows in ((org, [person(1), person(2)]), (other_org, [person(3)])):
        crm = make_connection(f"{organization.name} CRM", organization=organization, faults=WRITE_503)
        mapping = make_mapping(organization=organization, target=crm, match_keys=[])
        seed_records(mapping.source_connection, "contacts", rows)
        run = run_mapping(mapping)
        failing[organization.slug] = {
            "crm": crm,
            "mapping": mapping,
            "run": run,
            "errors": list(RecordError.objects.filter(run=run).order_by("pk")),
        }
    return failing


@pytest.fixture
def invalid_record(make_mapping):
    """An acme record that fails validation: nothing a retry can fix."""
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(5, last_name="")])
    run = run_mapping(mapping)
    return RecordError.objects.get(run=run)


# --- retry ------------------------------------------------------------------------------------------------------


def test_retry_selected_errors_queues_a_replay_run_per_organization(admin_client, outages):
    selected = outages["acme"]["errors"] + outages["globex"]["errors"]

    response = act(admin_client, ERRORS_URL, "retry_selected", selected)

    retry_runs = SyncRun.objects.filter(trigger=Trigger.RETRY).order_by("pk")
    assert [(run.organization.slug, len(run.options["errors"])) for run in retry_runs] == [("acme", 2), ("globex", 1)]
    assert all(run.options["resolution"] == Resolution.MANUAL_RETRY for run in retry_runs)
    assert f"Queued 3 errors for retry in runs #{retry_runs[0].pk}, #{retry_runs[1].pk}." in page(response)
    assert set(RecordError.objects.values_list("status", flat=True)) == {ErrorStatus.RETRYING}


def test_retried_errors_resolve_when_the_replay_succeeds(admin_client, outages, django_capture_on_commit_callbacks):
    acme = outages["acme"]
    acme["crm"].config = {}
    acme["crm"].save()

    with django_capture_on_commit_callbacks(execute=True):
        act(admin_client, ERRORS_URL, "retry_selected", acme["errors"])

    assert {(e.status, e.resolution) for e in RecordError.objects.filter(run=acme["run"])} == {
        (ErrorStatus.RESOLVED, Resolution.MANUAL_RETRY)
    }
    assert len(records(acme["crm"])) == 2


def test_retry_reports_what_it_skipped(admin_client, outages):
    first, second = outages["acme"]["errors"]
    error_ignore(error=second, reason="Test record")

    response = act(admin_client, ERRORS_URL, "retry_selected", [first, second])

    assert "Queued 1 error for retry in runs #" in page(response)
    assert "Skipped 1 error already resolved or ignored." in page(response)


def test_retry_of_nothing_retriable_is_a_warning_not_a_crash(admin_client, outages):
    error = outages["acme"]["errors"][0]
    error_ignore(error=error, reason="Test record")

    response = act(admin_client, ERRORS_URL, "retry_selected", [error])

    assert response.status_code == 200
    assert "Queued 0 errors for retry. Skipped 1 error already resolved or ignored." in page(response)
    assert not SyncRun.objects.filter(trigger=Trigger.RETRY).exists()


# --- ignore -----------------------------------------------------------------------------------------------------


def test_ignore_asks_for_a_reason_first_and_changes_nothing_yet(admin_client, outages):
    errors = outages["acme"]["errors"]

    response = act(admin_client, ERRORS_URL, "ignore_selected", errors)

    assert response.status_code == 200
    assert response.templates[0].name == "admin/syncs/recorderror/ignore_reason.html"
    content = page(response)
    assert 'name="reason"' in content
    for error in errors:
        assert f'name="_selected_action" value="{error.pk}"' in content
        assert error.source_record_id in content
    assert set(RecordError.objects.values_list("status", flat=True)) == {ErrorStatus.OPEN}


def test_ignore_without_a_reason_shows_a_form_error(admin_client, outages):
    errors = outages["acme"]["errors"]

    response = act(admin_client, ERRORS_URL, "ignore_selected", errors, post="yes", reason="   ")

    assert response.status_code == 200
    assert "This field is required." in page(response)
    assert set(RecordError.objects.values_list("status", flat=True)) == {ErrorStatus.OPEN}


def test_ignore_with_a_reason_ignores_each_error_and_keeps_the_reason(admin_client, outages):
    errors = outages["acme"]["errors"]

    response = act(
        admin_client, ERRORS_URL, "ignore_selected", errors, post="yes", reason="Test contacts from the QA import"
    )

    assert response.redirect_chain[-1][0] == ERRORS_URL
    assert "2 errors ignored." in page(response)
    ignored = RecordError.objects.filter(pk__in=[e.pk for e in errors])
    assert {(e.status, e.resolution, e.resolution_note) for e in ignored} == {
        (ErrorStatus.IGNORED, Resolution.IGNORED, "Test contacts from the QA import")
    }
    links = RecordLink.objects.filter(mapping=outages["acme"]["mapping"])
    assert set(links.values_list("status", flat=True)) == {LinkStatus.IGNORED}
    assert RecordError.objects.get(organization=outages["globex"]["mapping"].organization).status == ErrorStatus.OPEN


def test_ignore_reports_already_resolved_errors_as_skipped(admin_client, outages):
    first, second = outages["acme"]["errors"]
    error_ignore(error=first, reason="Earlier reason")

    response = act(admin_client, ERRORS_URL, "ignore_selected", [first, second], post="yes", reason="Later reason")

    assert response.status_code == 200
    assert "1 error ignored. Skipped 1 error already resolved or ignored." in page(response)
    first.refresh_from_db()
    assert first.resolution_note == "Earlier reason"


# --- resolve ----------------------------------------------------------------------------------------------------


def test_mark_resolved_closes_the_errors_and_says_who(admin_client, admin_user, outages, invalid_record):
    response = act(admin_client, ERRORS_URL, "resolve_selected", [invalid_record])

    assert "1 error marked resolved." in page(response)
    invalid_record.refresh_from_db()
    assert (invalid_record.status, invalid_record.resolution) == (ErrorStatus.RESOLVED, Resolution.FIXED)
    assert invalid_record.resolved_at is not None
    assert admin_user.username in invalid_record.resolution_note


def test_mark_resolved_skips_errors_already_resolved(admin_client, outages):
    first, second = outages["acme"]["errors"]
    error_ignore(error=first, reason="Test record")

    response = act(admin_client, ERRORS_URL, "resolve_selected", [first, second])

    assert "1 error marked resolved. Skipped 1 error already resolved or ignored." in page(response)
    first.refresh_from_db()
    assert first.status == ErrorStatus.IGNORED


# --- runs: retry failures ---------------------------------------------------------------------------------------


def test_retry_failures_queues_a_child_run_per_selected_run(admin_client, outages):
    acme_run, globex_run = outages["acme"]["run"], outages["globex"]["run"]

    response = act(admin_client, RUNS_URL, "retry_failures", [acme_run, globex_run])

    children = SyncRun.objects.filter(parent__in=[acme_run, globex_run]).order_by("pk")
    assert [(child.parent, child.organization) for child in children] == [
        (acme_run, acme_run.organization),
        (globex_run, globex_run.organization),
    ]
    assert f"2 retry runs queued: #{children[0].pk}, #{children[1].pk}." in page(response)


def test_retry_failures_recovers_the_run_when_the_child_succeeds(
    admin_client, outages, django_capture_on_commit_callbacks
):
    acme = outages["acme"]
    acme["crm"].config = {}
    acme["crm"].save()

    with django_capture_on_commit_callbacks(execute=True):
        act(admin_client, RUNS_URL, "retry_failures", [acme["run"]])

    acme["run"].refresh_from_db()
    assert acme["run"].status == RunStatus.RECOVERED


def test_retry_failures_reports_runs_with_nothing_to_retry(admin_client, outages, make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(8)])
    clean_run = run_mapping(mapping)
    failed_run = outages["acme"]["run"]
    act(admin_client, RUNS_URL, "retry_failures", [failed_run])

    response = act(admin_client, RUNS_URL, "retry_failures", [clean_run, failed_run])

    assert response.status_code == 200
    content = page(response)
    assert f"run {clean_run.pk}: Only a finished run with failures can be retried." in content
    assert f"run {failed_run.pk}: This run has no failed batch or record left to retry." in content
    assert SyncRun.objects.filter(parent=failed_run).count() == 1


# --- who may recover --------------------------------------------------------------------------------------------


def test_staff_who_may_only_view_errors_cannot_recover_them(client, outages):
    viewer = get_user_model().objects.create_user("vera", "vera@example.org", "vera-password", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_recorderror", "view_syncrun"]))
    client.force_login(viewer)
    errors = outages["acme"]["errors"]

    changelist = client.get(ERRORS_URL)
    assert changelist.status_code == 200
    assert "retry_selected" not in page(changelist)
    act(client, ERRORS_URL, "retry_selected", errors)
    act(client, ERRORS_URL, "ignore_selected", errors, post="yes", reason="No")
    act(client, RUNS_URL, "retry_failures", [outages["acme"]["run"]])

    assert set(RecordError.objects.values_list("status", flat=True)) == {ErrorStatus.OPEN}
    assert not SyncRun.objects.filter(trigger=Trigger.RETRY).exists()


def test_staff_with_the_change_permission_can_recover(client, outages):
    operator = get_user_model().objects.create_user("otto", "otto@example.org", "otto-password", is_staff=True)
    operator.user_permissions.add(*Permission.objects.filter(codename__in=["view_recorderror", "change_recorderror"]))
    client.force_login(operator)

    assert "retry_selected" in page(client.get(ERRORS_URL))
    act(client, ERRORS_URL, "retry_selected", outages["acme"]["errors"])

    assert RecordError.objects.filter(status=ErrorStatus.RETRYING).count() == 2
