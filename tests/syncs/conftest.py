"""Real-worker fixtures: django-q2 clusters (`manage.py qcluster`) started against the test database.

Tests that use them need `django_db(transaction=True)` (the workers must see committed rows) and the
`real_queue` fixture (async_task goes to the ORM broker instead of running inline).
"""

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from psycopg import sql

from syncs.models import SyncRun
from tests.syncs.helpers import HOST, PORT, admin

ROOT = Path(__file__).resolve().parents[2]


def database_url():
    """The URL of the database this test runs on, for processes started by the test."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    auth = params["USER"] + (f":{params['PASSWORD']}" if params.get("PASSWORD") else "")
    return f"postgres://{auth}@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}/{params['NAME']}"


@pytest.fixture
def worker_env():
    return {**os.environ, "DATABASE_URL": database_url(), "RESYNC_WORKERS": "1", "PYTHONUNBUFFERED": "1",
            "RESYNC_SANDBOX_IN_PROCESS": "true", "RESYNC_SANDBOX_URL": "http://sandbox.resync.test",
            # A sandbox "timeout" is raised at once in-process; in-request retries wait this little.
            "RESYNC_HTTP_RETRY_DELAYS": "0.01,0.02,0.04"}


@pytest.fixture
def real_queue(monkeypatch):
    """async_task enqueues to the broker (tests/conftest.py makes it run inline everywhere else)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)


def qcluster_stop(process, timeout=20):
    """Stop a cluster the way an operator would, then make sure nothing of its process group is left."""
    if process.poll() is None:
        # SIGTERM to the main process only: it stops its sentinel, which drains the workers. Signalling the whole
        # group kills the sentinel at once (it keeps SIGTERM's default action) and leaves the main process
        # waiting for it until the timeout.
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    qcluster_kill(process)


def qcluster_kill(process):
    """SIGKILL the cluster's whole process group (main process, sentinel, pusher, monitor, workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture
def start_qcluster(worker_env, tmp_path):
    """start(**env) starts one more `qcluster` in its own process group; all are stopped at teardown."""
    processes = []

    def start(**env):
        log = (tmp_path / f"qcluster-{len(processes) + 1}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env={**worker_env, **env}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()  # the child holds its own copy
        process.log_path = log.name
        processes.append(process)
        return process

    yield start
    for process in processes:
        qcluster_stop(process)


@pytest.fixture
def qcluster(start_qcluster):
    return start_qcluster()


def wait_for_finish(run_ids, timeout=90):
    deadline = time.monotonic() + timeout
    runs = []
    while time.monotonic() < deadline:
        runs = list(SyncRun.objects.filter(pk__in=run_ids))
        if runs and all(run.is_finished for run in runs):
            return runs
        time.sleep(0.3)
    raise AssertionError(f"runs {run_ids} did not finish: {[(r.pk, r.status) for r in runs]}")


# A shop's customers and a CRM's contacts as real tables, in a fresh database per test (the `database` fixture).
PG_TABLES = """
CREATE TABLE shop_customers (
    id serial PRIMARY KEY,
    email text NOT NULL,
    first_name text,
    last_name text,
    phone text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE crm_contacts (
    id serial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    first_name varchar(40),
    last_name varchar(20) NOT NULL,
    phone text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


@pytest.fixture
def database():
    try:
        server = admin()
    except psycopg.OperationalError as exc:
        pytest.skip(f"No PostgreSQL server at {HOST}:{PORT}: {exc}")
    name = f"resync_e2e_{secrets.token_hex(4)}"
    with server:
        server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with admin(name) as db:
        db.execute(PG_TABLES)
    yield name
    with admin() as server:
        server.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
