"""The operator's recovery commands: `errors list|retry` with the shared filters, `runs retry-failures`."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from integrations.connectors.sandbox import seed_records
from syncs.models import ErrorStatus, RecordError, Resolution, RunStatus, SyncRun, Trigger
from syncs.review import error_ignore
from tests.syncs.helpers import person, records, run_mapping

pytestmark = pytest.mark.django_db

WRITE_503 = {"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"}


def command(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def heal(connection):
    """The target is back up."""
    connection.config = {}
    connection.save()


@pytest.fixture
def outage(make_mapping, make_connection):
    """Two mappings writing to one CRM that answers 503 (three connection errors), and a mapping with a record
    that fails validation."""
    crm = make_connection("Down CRM", faults=WRITE_503)
    shop = make_mapping(target=crm, match_keys=[])
    seed_records(shop.source_connection, "contacts", [person(1), person(2)], ids=["ct_1", "ct_2"])
    desk = make_mapping(target=crm, match_keys=[])
    seed_records(desk.source_connection, "contacts", [person(3)], ids=["ct_3"])
    billing = make_mapping()
    seed_records(billing.source_connection, "contacts", [person(4, last_name="")], ids=["ct_4"])
    runs = [run_mapping(mapping) for mapping in (shop, desk, billing)]
    assert [run.status for run in runs] == [RunStatus.PARTIALLY_FAILED] * 3
    return {"crm": crm, "shop": shop, "desk": desk, "billing": billing, "runs": runs}


def connection_errors():
    return RecordError.objects.filter(category="connection")


# --- errors retry ---------------------------------------------------------------------------------------------


def test_retry_queues_one_replay_run_per_mapping_and_prints_the_summary(
    org, outage, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        output = command("errors", "retry", "--org", "acme", "--category", "connection")

    shop_run = SyncRun.objects.get(mapping=outage["shop"], trigger=Trigger.RETRY)
    desk_run = SyncRun.objects.get(mapping=outage["desk"], trigger=Trigger.RETRY)
    assert output == f"Queued 3 errors for retry in runs {shop_run.code}, {desk_run.code}.\n"
    assert len(callbacks) == 2  # one task per replay run, sent when the transaction commits
    assert set(connection_errors().values_list("status", flat=True)) == {ErrorStatus.RETRYING}
    assert sorted(shop_run.options["errors"]) == sorted(
        connection_errors().filter(mapping=outage["shop"]).values_list("pk", flat=True)
    )
    assert shop_run.options["resolution"] == Resolution.BULK_RETRY
    assert RecordError.objects.get(category="validation").status == ErrorStatus.OPEN


def test_retried_errors_are_resolved_once_the_target_is_back(org, outage, django_capture_on_commit_callbacks):
    heal(outage["crm"])

    with django_capture_on_commit_callbacks(execute=True):
        command("errors", "retry", "--org", "acme", "--category", "connection")

    retried = connection_errors()
    assert {(e.status, e.resolution) for e in retried} == {(ErrorStatus.RESOLVED, Resolution.BULK_RETRY)}
    assert sorted(r.data["email"] for r in records(outage["crm"])) == [
        "person1@example.com",
        "person2@example.com",
        "person3@example.com",
    ]
    assert set(SyncRun.objects.filter(trigger=Trigger.RETRY).values_list("status", flat=True)) == {RunStatus.SUCCEEDED}


def test_a_retry_that_fails_again_supersedes_the_errors_it_retried(org, outage, django_capture_on_commit_callbacks):
    before = set(connection_errors().values_list("pk", flat=True))

    with django_capture_on_commit_callbacks(execute=True):
        command("errors", "retry", "--org", "acme", "--category", "connection")

    old = RecordError.objects.filter(pk__in=before)
    assert {(e.status, e.resolution) for e in old} == {(ErrorStatus.RESOLVED, Resolution.SUPERSEDED)}
    again = connection_errors().exclude(pk__in=before)
    assert sorted(again.values_list("source_record_id", "attempts")) == [("ct_1", 1), ("ct_2", 1), ("ct_3", 1)]
    assert set(again.values_list("status", flat=True)) == {ErrorStatus.OPEN}


def test_retry_by_filter_leaves_resolved_and_ignored_errors_alone_without_noise(org, outage):
    ignored = RecordError.objects.get(source_record_id="ct_3")
    error_ignore(error=ignored, reason="Duplicate of ct_1")

    output = command("errors", "retry", "--org", "acme", "--mapping", str(outage["desk"].code))

    assert output == "No error matches: nothing queued.\n"
    assert not SyncRun.objects.filter(trigger=Trigger.RETRY).exists()


def test_retry_twice_queues_nothing_the_second_time(org, outage):
    command("errors", "retry", "--org", "acme", "--code", "http_503")

    output = command("errors", "retry", "--org", "acme", "--code", "http_503")

    assert output == "Queued 0 errors for retry.\nSkipped 3 errors: already being retried.\n"
    assert SyncRun.objects.filter(trigger=Trigger.RETRY).count() == 2


def test_retry_with_json_prints_the_summary_as_json(org, outage):
    output = command("errors", "retry", "--org", "acme", "--mapping", str(outage["shop"].code), "--json")

    run = SyncRun.objects.get(trigger=Trigger.RETRY)
    assert json.loads(output) == {"queued": 2, "runs": [str(run.code)], "skipped": {}}


def test_retry_says_when_nothing_matches(org, outage):
    output = command("errors", "retry", "--org", "acme", "--category", "auth")

    assert output == "No error matches: nothing queued.\n"


def test_retry_filters_by_target_status_run_and_dates(org, outage, make_mapping):
    other_target = make_mapping()
    seed_records(other_target.source_connection, "contacts", [person(5, last_name="")])
    run_mapping(other_target)
    shop_run = outage["runs"][0]

    output = command(
        "errors",
        "retry",
        "--org",
        "acme",
        "--target-connection",
        str(outage["crm"].code),
        "--status",
        "open",
        "--run",
        str(shop_run.code),
        "--since",
        "2000-01-01",
        "--until",
        "2999-01-01T00:00:00Z",
    )

    assert output.startswith("Queued 2 errors for retry")
    assert set(RecordError.objects.filter(status=ErrorStatus.RETRYING).values_list("source_record_id", flat=True)) == {
        "ct_1",
        "ct_2",
    }


def test_retry_never_touches_another_organizations_errors(org, other_org, outage, make_mapping, make_connection):
    foreign_crm = make_connection("Globex CRM", organization=other_org, faults=WRITE_503)
    foreign = make_mapping(organization=other_org, target=foreign_crm, match_keys=[])
    seed_records(foreign.source_connection, "contacts", [person(9)])
    run_mapping(foreign)

    command("errors", "retry", "--org", "acme", "--category", "connection")

    assert RecordError.objects.get(organization=other_org).status == ErrorStatus.OPEN
    assert not SyncRun.objects.filter(organization=other_org, trigger=Trigger.RETRY).exists()


def test_retry_with_force_asks_the_replay_to_overwrite_changed_targets(org, outage):
    command("errors", "retry", "--org", "acme", "--mapping", str(outage["shop"].code), "--force")

    assert SyncRun.objects.get(trigger=Trigger.RETRY).options["force"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "nope"], "No organization with slug 'nope'"),
        (["--org", "acme", "--since", "last tuesday"], "--since 'last tuesday' is not an ISO 8601 date"),
        (["--org", "acme", "--until", "2026-13-45"], "--until '2026-13-45' is not an ISO 8601 date"),
        (["--org", "acme", "--since", "2026-11-22", "--until", "2026-11-01"], "--since must be before --until"),
        (["--org", "acme", "--mapping", "4d1f7b0e-0000-4000-8000-000000000000"],
         "No mapping with id 4d1f7b0e-0000-4000-8000-000000000000 in organization 'acme'"),
        (["--org", "acme", "--mapping", "12"], "'12' is not a mapping id"),
        (["--org", "acme", "--id", "nope"], "'nope' is not an error id"),
    ],
)
def test_retry_refuses_bad_arguments_clearly(org, outage, args, message):
    with pytest.raises(CommandError, match=message):
        command("errors", "retry", *args)

    assert not RecordError.objects.filter(status=ErrorStatus.RETRYING).exists()


def test_an_id_of_another_organization_is_refused_like_an_unknown_one(org, other_org, outage, make_mapping):
    foreign = make_mapping(organization=other_org)

    with pytest.raises(CommandError, match=f"No mapping with id {foreign.code} in organization 'acme'"):
        command("errors", "retry", "--org", "acme", "--mapping", str(foreign.code))
    with pytest.raises(CommandError, match="No connection with id"):
        command("errors", "retry", "--org", "acme", "--target-connection", str(foreign.target_connection.code))


# --- errors list ----------------------------------------------------------------------------------------------


def test_list_prints_one_line_per_matching_error(org, outage):
    output = command("errors", "list", "--org", "acme", "--category", "validation")

    error = RecordError.objects.get(category="validation")
    assert output == (
        f"{error.code}\trecord\tvalidation\trequired_missing\topen\tct_4\t"
        "last_name is required by Contacts but is empty\n"
    )


def test_list_with_json_prints_one_object_per_line(org, outage):
    output = command("errors", "list", "--org", "acme", "--code", "http_503", "--json")

    rows = [json.loads(line) for line in output.splitlines()]
    assert sorted(row["source_record_id"] for row in rows) == ["ct_1", "ct_2", "ct_3"]
    assert {(row["level"], row["category"], row["status"]) for row in rows} == {("record", "connection", "open")}
    assert all(row["message"] == "The target answered 503 Service Unavailable" for row in rows)


def test_list_searches_and_limits(org, outage):
    assert command("errors", "list", "--org", "acme", "--search", "CT_2").count("\n") == 1
    assert command("errors", "list", "--org", "acme", "--limit", "2").count("\n") == 2


def test_list_changes_nothing(org, outage):
    command("errors", "list", "--org", "acme")

    assert set(RecordError.objects.values_list("status", flat=True)) == {ErrorStatus.OPEN}


# --- runs retry-failures ----------------------------------------------------------------------------------------


def test_retry_failures_queues_a_child_run_and_names_the_organization(org, outage):
    shop_run = outage["runs"][0]

    output = command("runs", "retry-failures", str(shop_run.code))

    child = SyncRun.objects.get(parent=shop_run)
    assert (child.trigger, child.root, child.status) == (Trigger.RETRY, shop_run, RunStatus.QUEUED)
    assert str(child.code) in output
    assert "organization acme" in output
    assert set(RecordError.objects.filter(run=shop_run).values_list("status", flat=True)) == {ErrorStatus.RETRYING}


def test_retry_failures_recovers_the_run_once_the_target_is_back(org, outage, django_capture_on_commit_callbacks):
    shop_run = outage["runs"][0]
    heal(outage["crm"])

    with django_capture_on_commit_callbacks(execute=True):
        command("runs", "retry-failures", str(shop_run.code))

    shop_run.refresh_from_db()
    assert shop_run.status == RunStatus.RECOVERED
    assert SyncRun.objects.get(parent=shop_run).status == RunStatus.SUCCEEDED
    assert len(records(outage["crm"])) == 2


def test_retry_failures_with_json(org, outage):
    shop_run = outage["runs"][0]

    output = json.loads(command("runs", "retry-failures", str(shop_run.code), "--json", "--force"))

    child = SyncRun.objects.get(parent=shop_run)
    assert output["child_run"] == str(child.code)
    assert (output["run"], output["organization"], output["errors"]) == (str(shop_run.code), "acme", 2)
    assert child.options["force"] is True


def test_retry_failures_of_a_run_without_failures_is_a_clear_error(org, make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1)])
    run = run_mapping(mapping)

    with pytest.raises(CommandError, match=r"Run [0-9a-f-]+ \(acme\): Only a finished run with failures can be "):
        command("runs", "retry-failures", str(run.code))


def test_retry_failures_twice_says_nothing_is_left(org, outage):
    shop_run = outage["runs"][0]
    command("runs", "retry-failures", str(shop_run.code))

    with pytest.raises(CommandError, match="This run has no failed batch or record left to retry"):
        command("runs", "retry-failures", str(shop_run.code))

    assert SyncRun.objects.filter(parent=shop_run).count() == 1


def test_retry_failures_of_an_unknown_run(db):
    with pytest.raises(CommandError, match="No run with id 4d1f7b0e-0000-4000-8000-000000000000"):
        command("runs", "retry-failures", "4d1f7b0e-0000-4000-8000-000000000000")
    with pytest.raises(CommandError, match="'424242' is not a run id"):
        command("runs", "retry-failures", "424242")
