"""A real django-q2 cluster against the test database: runs are queued, picked up and finished by workers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from integrations.connectors.sandbox import seed_records
from syncs.models import RunStatus, SyncRun
from tests.syncs.helpers import person, records

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def database_url():
    """The URL of the database this test runs on, for processes started by the test."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    auth = params["USER"] + (f":{params['PASSWORD']}" if params.get("PASSWORD") else "")
    return f"postgres://{auth}@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}/{params['NAME']}"


@pytest.fixture
def worker_env():
    return {**os.environ, "DATABASE_URL": database_url(), "RESYNC_WORKERS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def qcluster(worker_env, tmp_path):
    log = (tmp_path / "qcluster.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=worker_env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(autouse=True)
def _real_queue(monkeypatch):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)


def wait_for_finish(run_ids, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = list(SyncRun.objects.filter(pk__in=run_ids))
        if runs and all(run.is_finished for run in runs):
            return runs
        time.sleep(0.3)
    raise AssertionError(f"runs {run_ids} did not finish: {[(r.pk, r.status) for r in runs]}")


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
    assert [line["mapping"] for line in lines] == [first.name, second.name]
    assert lines[0]["status"] == "partially_failed"
    assert lines[0]["counts"]["created"] == 1
    assert lines[0]["errors_by_category"] == {"validation": 1}
    assert lines[1]["status"] == "succeeded"
