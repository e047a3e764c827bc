"""A real django-q2 cluster against the test database: runs are queued, picked up and finished by workers."""

import json
import subprocess
import sys

import pytest

from integrations.connectors.sandbox import seed_records
from syncs.models import RunStatus
from tests.syncs.conftest import ROOT, wait_for_finish
from tests.syncs.helpers import person, records

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("real_queue")]


def test_a_queued_run_is_executed_by_a_real_worker(qcluster, make_mapping):
    from syncs.services import sync_run_queue

    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(n) for n in range(30)])

    run = sync_run_queue(mapping=mapping)  # autocommit: enqueued at once, as on commit in a request

    (finished,) = wait_for_finish([run.pk])
    assert finished.status == RunStatus.SUCCEEDED
    assert finished.created == 30
    assert finished.claims == 1
    assert len(records(mapping.target_connection)) == 30


def test_sync_command_waits_for_the_workers_and_prints_one_json_line_per_run(qcluster, worker_env, make_mapping, org):
    first = make_mapping()
    second = make_mapping(error_strategy="retry")
    seed_records(first.source_connection, "contacts", [person(1), person(2, last_name="")])
    seed_records(second.source_connection, "contacts", [person(3)])

    result = subprocess.run(
        [sys.executable, "manage.py", "sync", "--org", org.slug, "--wait", "--json", "--timeout", "90"],
        cwd=ROOT, env=worker_env, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["mapping"]["name"] for line in lines] == [first.name, second.name]
    assert lines[0]["status"] == "partially_failed"
    assert lines[0]["counts"]["created"] == 1
    assert lines[0]["errors_by_category"] == {"validation": 1}
    assert lines[1]["status"] == "succeeded"
