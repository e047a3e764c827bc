"""One kind of id everywhere a user sees one: every management command prints and accepts the UUIDs (`code`) the
API and the UI show, and refuses an integer primary key instead of acting on whatever row has it."""

import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.api import ApiTokenSerializer
from accounts.models import ApiToken, TokenRole
from syncs.models import ErrorLevel, RecordError, RunStatus, SyncRun, Trigger
from tests.syncs.helpers import run_mapping


def command(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def failed_run(org, make_mapping):
    mapping = make_mapping()
    run = SyncRun.objects.create(organization=org, mapping=mapping, trigger=Trigger.MANUAL,
                                 status=RunStatus.PARTIALLY_FAILED, read=2, failed=1, finished_at=timezone.now())
    error = RecordError.objects.create(organization=org, run=run, mapping=mapping, level=ErrorLevel.RECORD,
                                       category="validation", error_code="invalid_email", message="Invalid email",
                                       source_record_id="r-1", fingerprint="f")
    return run, error


def test_api_token_prints_and_accepts_the_apis_id(org):
    _out, err = command("api_token", "create", "--org", org.slug, "--name", "deploy", "--role", TokenRole.ADMIN)
    token = ApiToken.objects.get(name="deploy")
    api_id = ApiTokenSerializer(token).data["id"]
    assert f"id {api_id}" in err

    listing, _ = command("api_token", "list", "--org", org.slug)
    assert api_id in listing and f"\t{token.pk}\t" not in listing

    with pytest.raises(CommandError, match=f"No token '{token.pk}'"):
        command("api_token", "revoke", "--org", org.slug, str(token.pk))
    token.refresh_from_db()
    assert token.is_active

    out, _ = command("api_token", "revoke", "--org", org.slug, api_id)
    assert f"id {api_id}" in out
    token.refresh_from_db()
    assert not token.is_active


def test_sync_prints_run_ids_and_accepts_mapping_ids(org, make_mapping):
    mapping = make_mapping()

    with pytest.raises(CommandError, match=f"'{mapping.pk}' is not a mapping id"):
        command("sync", "--org", org.slug, "--mapping", str(mapping.pk), "--inline")

    out, _ = command("sync", "--org", org.slug, "--mapping", str(mapping.code), "--inline", "--json")
    summary = json.loads(out)
    run = SyncRun.objects.get(mapping=mapping)
    assert summary["run"] == str(run.code) and summary["mapping"]["id"] == str(mapping.code)
    out, _ = command("sync", "--org", org.slug, "--mapping", str(mapping.code), "--inline")
    assert out.startswith(f"Run {SyncRun.objects.filter(mapping=mapping).latest('pk').code} of ")


def test_a_sync_that_times_out_names_its_runs_by_id(org, make_mapping):
    mapping = make_mapping()

    # No worker runs in a test (and the task is queued on commit, which never comes): the wait times out.
    with pytest.raises(CommandError) as raised:
        command("sync", "--org", org.slug, "--mapping", str(mapping.code), "--wait", "--timeout", "0")

    run = SyncRun.objects.get(mapping=mapping)
    assert str(run.code) in str(raised.value)
    assert f"[{run.pk}]" not in str(raised.value) and f"Runs {run.pk} " not in str(raised.value)


def test_errors_prints_and_accepts_error_run_and_mapping_ids(org, failed_run):
    run, error = failed_run

    out, _ = command("errors", "list", "--org", org.slug)
    assert out.startswith(f"{error.code}\t")
    row = json.loads(command("errors", "list", "--org", org.slug, "--json")[0])
    assert (row["id"], row["run"], row["mapping"]["id"]) == (str(error.code), str(run.code), str(run.mapping.code))

    for option, pk in (("--id", error.pk), ("--run", run.pk), ("--mapping", run.mapping.pk)):
        with pytest.raises(CommandError, match=f"'{pk}' is not an? (error|run|mapping) id"):
            command("errors", "list", "--org", org.slug, option, str(pk))
    out, _ = command("errors", "list", "--org", org.slug, "--run", str(run.code), "--mapping", str(run.mapping.code),
                     "--id", str(error.code))
    assert out.startswith(f"{error.code}\t")


def test_runs_retry_failures_prints_and_accepts_run_ids(org, make_mapping):
    run = run_mapping(make_mapping())  # nothing to read, so nothing failed: refused, and said by the run's id

    with pytest.raises(CommandError, match=f"'{run.pk}' is not a run id"):
        command("runs", "retry-failures", str(run.pk))
    with pytest.raises(CommandError, match=f"^Run {run.code} \\(acme\\): "):
        command("runs", "retry-failures", str(run.code))
