"""The production layout of docs/production.md on one machine, and a worker machine that dies mid-run.

Started as an operator starts it, each in its own process group: `manage.py migrate` on a database of its own,
gunicorn (two web workers) and two `manage.py qcluster` processes (two workers each), all with the production
environment where it applies on loopback. The test then acts only from outside: it creates the connections and
the mapping through the REST API, starts a sync of a few thousand rows from one PostgreSQL table into another
through the API, kills the cluster that holds the run with SIGKILL (the whole process group: sentinel, pusher,
monitor, workers) while the rows are being written, and waits over HTTP for the run to finish. Nothing is
called in-process: recovery is the periodic reaper of the migrations (every minute), run by the surviving
cluster, with RESYNC_HEARTBEAT_STALE_SECONDS at 10 so the takeover comes in about a minute instead of three.

Asserted: the run succeeded, every source row is in the target table exactly once (the table has no unique
constraint on the email, so a record created twice would be a second row rather than an error the engine
heals), the run's counts add up, the reaper took the run over, and a sync of new rows afterwards completes on
the cluster that is left. The figures are printed.

Slow (one to one and a half minutes), PostgreSQL only: behind the `slow` marker, which .ci/run enables with
`make test-faults`.
"""

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
import requests
from cryptography.fernet import Fernet
from django.db import connection as django_connection
from psycopg import sql

from tests.syncs.conftest import qcluster_kill, qcluster_stop

pytestmark = [pytest.mark.slow, pytest.mark.worker]

ROOT = Path(__file__).resolve().parents[1]
RECORDS = 3000
BATCH_SIZE = 50
# Each write statement into the target takes this long (a trigger sleeps): the run lasts long enough for the kill
# to land while rows are being written, as it would against a real system.
WRITE_SECONDS = 0.25
KILL_AFTER = RECORDS // 5  # rows in the target when the cluster holding the run is killed
STALE_SECONDS = 10
RECOVERY_TIMEOUT = 300  # seconds for the run to finish after the kill: the reaper runs once a minute
CANARY_RECORDS = 20

SYSTEMS_SCHEMA = """
CREATE TABLE shop_customers (
    id serial PRIMARY KEY,
    email text NOT NULL,
    first_name text,
    last_name text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- No unique constraint on email: a record written twice must show as two rows, not be healed by the engine's
-- lookup after a unique violation.
CREATE TABLE crm_contacts (
    id serial PRIMARY KEY,
    email text NOT NULL,
    first_name text,
    last_name text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crm_contacts_email ON crm_contacts (email);
CREATE FUNCTION crm_slow_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(%(write_seconds)s);
    RETURN NULL;
END $$;
CREATE TRIGGER crm_slow_write AFTER INSERT OR UPDATE ON crm_contacts
    FOR EACH STATEMENT EXECUTE FUNCTION crm_slow_write();
"""


# --- the server, the databases, the processes -------------------------------------------------------------------


@pytest.fixture
def server():
    """Where the PostgreSQL server the suite runs on is: the layout's databases are created next to the suite's."""
    if django_connection.vendor != "postgresql":
        pytest.skip("the production layout runs on PostgreSQL: set DATABASE_URL=postgres://... (make test-faults)")
    params = django_connection.settings_dict
    found = {"host": params["HOST"] or "127.0.0.1", "port": int(params["PORT"] or 5432),
             "user": params["USER"] or "postgres", "password": params.get("PASSWORD") or ""}
    try:
        psycopg.connect(dbname="postgres", connect_timeout=3, **found).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"No PostgreSQL server at {found['host']}:{found['port']}: {exc}")
    return found


def admin(server, dbname="postgres"):
    return psycopg.connect(dbname=dbname, autocommit=True, connect_timeout=3, **server)


@pytest.fixture
def databases(server):
    """Two databases of this test's own, dropped at the end: Resync's (not the suite's test database: the layout's
    processes migrate and own it) and the customer's, with the shop's and the CRM's tables."""
    names = {"resync": f"resync_layout_{os.getpid()}", "systems": f"resync_layout_{os.getpid()}_systems"}
    with admin(server) as db:
        for name in names.values():
            db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with admin(server, names["systems"]) as db:
            db.execute(SYSTEMS_SCHEMA % {"write_seconds": WRITE_SECONDS})
        yield names
    finally:
        with admin(server) as db:
            for name in names.values():
                db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url(server, name):
    auth = server["user"] + (f":{server['password']}" if server["password"] else "")
    return f"postgres://{auth}@{server['host']}:{server['port']}/{name}"


@pytest.fixture
def layout(server, databases, tmp_path):
    """The production environment of docs/production.md for every process of the layout, and a way to start them.

    Not set, because this is plain HTTP on loopback with no TLS proxy in front: SECURE_SSL_REDIRECT, HSTS,
    SECURE_PROXY_SSL_HEADER, the secure cookie flags and CSRF_TRUSTED_ORIGINS (the API's token requests need
    neither cookies nor CSRF). CACHE_URL and EMAIL_URL are left out too: no Redis or mail server takes part.
    RESYNC_ALLOW_PRIVATE_URLS is on because the customer's database is on this machine's loopback address, which
    the SSRF guard refuses otherwise.
    """
    port = free_port()
    env = {
        # Only what a process needs from the machine, none of the test run's own settings (DATABASE_URL, ...).
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", str(tmp_path)),
        "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url(server, databases["resync"]),
        "RESYNC_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "RESYNC_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "RESYNC_WORKERS": "2",
        "RESYNC_HEARTBEAT_STALE_SECONDS": str(STALE_SECONDS),
        "RESYNC_ALLOW_PRIVATE_URLS": "true",
    }
    started = []

    def manage(*args, timeout=300):
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
        assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start(name, command):
        log_path = tmp_path / f"{name}.log"
        with log_path.open("w") as log:
            # A session of its own: the whole process tree (gunicorn's workers, the cluster's sentinel, pusher,
            # monitor and workers) is one process group, signalled and killed as one.
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        process.name, process.log_path = name, log_path
        started.append(process)
        return process

    def web():
        gunicorn = Path(sys.executable).parent / "gunicorn"
        process = start("gunicorn", [str(gunicorn), "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                                     "--timeout", "60"])
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{env['RESYNC_PUBLIC_URL']}/login/", timeout=5).status_code == 200:
                    return process
            assert process.poll() is None, f"gunicorn exited:\n{process.log_path.read_text()}"
            assert time.monotonic() < deadline, f"gunicorn never answered:\n{process.log_path.read_text()}"
            time.sleep(0.2)

    def cluster():
        return start(f"qcluster-{sum(p.name.startswith('qcluster') for p in started) + 1}",
                     [sys.executable, "manage.py", "qcluster"])

    try:
        yield SimpleNamespace(env=env, url=env["RESYNC_PUBLIC_URL"], manage=manage, web=web, cluster=cluster,
                              started=started)
    finally:
        for process in reversed(started):
            if process.name.startswith("qcluster"):
                qcluster_stop(process)
            else:
                stop_gunicorn(process)


def stop_gunicorn(process):
    # SIGTERM to the arbiter: it stops its workers gracefully; then nothing of the group may be left.
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
    qcluster_kill(process)  # SIGKILL to whatever is left of the process group


def log_events(process, event):
    """The `resync` JSON log lines of one process tree with this event."""
    found = []
    for line in process.log_path.read_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if row.get("event") == event:
                    found.append(row)
    return found


def in_group(worker, process):
    """Whether a batch's worker ("host:pid") is a process of this process tree."""
    try:
        return os.getpgid(int(worker.rpartition(":")[2])) == process.pid
    except (ValueError, ProcessLookupError):
        return False


def tail(process, lines=40):
    return f"--- {process.name} ({process.log_path}):\n" + "\n".join(
        process.log_path.read_text().splitlines()[-lines:])


# --- the API --------------------------------------------------------------------------------------------------


class Api:
    def __init__(self, url, token):
        self.url = url.rstrip("/") + "/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method, path, expect, **kwargs):
        answer = self.session.request(method, self.url + path, timeout=30, **kwargs)
        assert answer.status_code == expect, f"{method} {path}: {answer.status_code} {answer.text[:2000]}"
        return answer.json() if answer.content else None

    def wait_for_run(self, run_id, condition, *, timeout, message):
        deadline = time.monotonic() + timeout
        while True:
            run = self.call("GET", f"/runs/{run_id}/", 200)
            if condition(run):
                return run
            assert time.monotonic() < deadline, message(run)
            time.sleep(0.5)


def finished(run):
    return run["finished_at"] is not None


# --- the test --------------------------------------------------------------------------------------------------


def test_a_run_whose_cluster_is_killed_finishes_on_the_other_with_every_row_synced_once(
    server, databases, layout, capsys
):
    started = time.monotonic()
    layout.manage("migrate", "--noinput")
    # An organization is made once by the operator (the admin or the shell); everything after goes through the API.
    layout.manage("shell", "-c", "from accounts.models import Organization; "
                                 "Organization.objects.create(name='Layout', slug='layout')")
    token = layout.manage("api_token", "create", "--org", "layout", "--name", "layout test", "--role", "admin").strip()
    with admin(server, databases["systems"]) as db, db.cursor() as cursor:
        # Changed over the last hours, one row a second, as a shop's customers are (not all in one instant).
        cursor.executemany(
            "INSERT INTO shop_customers (email, first_name, last_name, updated_at) "
            "VALUES (%s, %s, %s, now() - %s * interval '1 second')",
            [(f"customer{n}@example.com", f"First{n}", f"Last{n}", RECORDS - n) for n in range(RECORDS)])

    layout.web()
    clusters = [layout.cluster(), layout.cluster()]
    api = Api(layout.url, token)

    def table(name, **config):
        return api.call("POST", "/connections/", 201, json={
            "name": name, "provider": "postgres_table",
            "config": {"host": server["host"], "port": server["port"], "database": databases["systems"],
                       "user": server["user"], "sslmode": "disable", **config},
            "credentials": {"password": server["password"] or "unused-with-trust-authentication"},
        })["id"]

    shop, crm = table("Shop database"), table("CRM database")
    mapping = api.call("POST", "/mappings/", 201, json={
        "name": "Shop customers → CRM contacts", "source_connection": shop, "source_object": "shop_customers",
        "target_connection": crm, "target_object": "crm_contacts", "batch_size": BATCH_SIZE,
        "match_keys": [{"source": "email", "target": "email"}],
        "field_mappings": [{"source_field": name, "target_field": name}
                           for name in ("email", "first_name", "last_name")],
    })["id"]
    validation = api.call("POST", f"/mappings/{mapping}/validate/", 200)
    assert validation["valid"], validation

    def target_rows():
        with admin(server, databases["systems"]) as db:
            return db.execute("SELECT count(*), count(DISTINCT email) FROM crm_contacts").fetchone()

    queued = api.call("POST", f"/mappings/{mapping}/run/", 202, headers={"Idempotency-Key": "layout-first-run"})
    run_id = queued["id"]
    with admin(server, databases["resync"]) as db:
        run_pk = db.execute("SELECT id FROM syncs_syncrun WHERE code = %s", [run_id]).fetchone()[0]

    # The cluster that holds the run is the one whose log says it started it: its death leaves the run's reader
    # dead, which only the reaper can hand to the other cluster.
    deadline = time.monotonic() + 120
    while not (holders := [c for c in clusters
                           if any(e.get("run") == run_id for e in log_events(c, "run_started"))]):
        assert time.monotonic() < deadline, "the run never started:\n" + "\n".join(tail(p) for p in layout.started)
        time.sleep(0.2)
    assert len(holders) == 1, f"run {run_pk} started twice:\n" + "\n".join(tail(c) for c in clusters)
    (victim,) = holders
    (survivor,) = [c for c in clusters if c is not victim]

    # The kill lands once a fifth of the rows are written, and, if it can be caught within the next fifth, where
    # it hurts most: a batch of the victim's has committed its rows to the target and not yet linked them, so
    # its answer is lost with the worker.
    with admin(server, databases["resync"]) as resync_db, admin(server, databases["systems"]) as systems_db:
        def written_not_linked():
            running = resync_db.execute(
                "SELECT worker, records -> 0 -> 'data' ->> 'email' FROM syncs_syncbatch "
                "WHERE run_id = %s AND status = 'running' AND records IS NOT NULL", [run_pk]).fetchall()
            emails = [email for worker, email in running if in_group(worker, victim)]
            return bool(emails) and systems_db.execute(
                "SELECT EXISTS (SELECT 1 FROM crm_contacts WHERE email = ANY(%s))", [emails]).fetchone()[0]

        while True:
            written = systems_db.execute("SELECT count(*) FROM crm_contacts").fetchone()[0]
            in_the_window = written >= KILL_AFTER and written_not_linked()
            if in_the_window or written >= 2 * KILL_AFTER:
                break
            assert time.monotonic() < deadline, "the run never got going:\n" + "\n".join(
                tail(p) for p in layout.started)
            time.sleep(0.01)
        qcluster_kill(victim)
        killed_at = time.monotonic()
    written_at_kill = target_rows()[0]
    at_kill = api.call("GET", f"/runs/{run_id}/", 200)
    assert at_kill["status"] == "running", f"the kill must land mid-run: {at_kill['status']}"
    assert written_at_kill < RECORDS

    run = api.wait_for_run(run_id, finished, timeout=RECOVERY_TIMEOUT, message=lambda run: (
        f"run {run_id} did not finish {RECOVERY_TIMEOUT}s after the kill: {run['status']}, {run['counts']}, "
        f"rows in the target {target_rows()}\n" + tail(survivor, 80)))
    recovered_after = time.monotonic() - killed_at

    rows, distinct = target_rows()
    with admin(server, databases["systems"]) as db:
        emails = {email for (email,) in db.execute("SELECT email FROM crm_contacts")}
    with admin(server, databases["resync"]) as db:
        claims, links = db.execute(
            "SELECT claims, (SELECT count(*) FROM syncs_recordlink WHERE mapping_id = r.mapping_id "
            "AND status = 'synced') FROM syncs_syncrun r WHERE id = %s", [run_pk]).fetchone()
    state = (f"run {run['status']} {run['counts']} errors {run['errors_by_category']}; claims {claims}; "
             f"{rows} rows ({distinct} distinct) in the target, {written_at_kill} at the kill; {links} links")
    assert run["status"] == "succeeded", state + "\n" + tail(survivor, 80)
    assert run["errors_by_category"] == {} and run["counts"]["failed"] == 0, state
    # Nothing lost, nothing twice.
    assert rows == distinct == RECORDS, state
    assert emails == {f"customer{n}@example.com" for n in range(RECORDS)}, state
    assert links == RECORDS, state
    # Each source row counted once although part of the run was read by the dead worker and part by its heir;
    # rows the dead worker wrote but had not linked yet are found by their email and updated, not created.
    counts = run["counts"]
    assert counts["read"] == RECORDS and counts["created"] + counts["updated"] == RECORDS, state
    assert {batch["status"] for batch in run["batches"]} == {"succeeded"}, state
    # Taken over by the surviving cluster, through the reaper its schedule ran.
    assert claims == 2, state
    # The log names the run by the id the API answered: an operator greps for what the UI shows.
    assert any(run_id in event.get("runs", ()) for event in log_events(survivor, "runs_reaped")), tail(survivor, 80)
    assert any(e.get("run") == run_id for e in log_events(survivor, "run_started")), tail(survivor, 80)

    # The cluster that is left goes on working: new rows of the shop, synced by the next run (its cursor is where
    # the recovered run left it).
    with admin(server, databases["systems"]) as db, db.cursor() as cursor:
        cursor.executemany("INSERT INTO shop_customers (email, first_name, last_name) VALUES (%s, %s, %s)",
                           [(f"new{n}@example.com", f"New{n}", f"Customer{n}") for n in range(CANARY_RECORDS)])
    canary = api.call("POST", f"/mappings/{mapping}/run/", 202, headers={"Idempotency-Key": "layout-canary"})
    assert not canary["already_active"]
    canary = api.wait_for_run(canary["id"], finished, timeout=120,
                              message=lambda run: f"the canary run did not finish: {run}\n" + tail(survivor, 80))
    # The cursor's timestamp is read again inclusively: the recovered run's last row comes back, unchanged.
    assert canary["status"] == "succeeded", canary
    assert (canary["counts"]["read"], canary["counts"]["created"], canary["counts"]["unchanged"]) == (
        CANARY_RECORDS + 1, CANARY_RECORDS, 1), canary
    assert target_rows() == (RECORDS + CANARY_RECORDS, RECORDS + CANARY_RECORDS)

    figures = {
        "records": RECORDS,
        "batch size": BATCH_SIZE,
        "clusters": f"{len(clusters)} x {layout.env['RESYNC_WORKERS']} workers, gunicorn x 2",
        "kills": 1,
        "rows in the target at the kill": written_at_kill,
        "killed between a batch's writes and its links": in_the_window,
        "batches taken over": sum(batch["attempts"] > 1 for batch in run["batches"]),
        "run claims": claims,
        "created": counts["created"],
        "updated (written before the kill, linked after)": counts["updated"],
        "lost": RECORDS - len(emails),
        "created twice": rows - distinct,
        "seconds from the kill to the run finished": round(recovered_after, 1),
        "seconds in all (migrate included)": round(time.monotonic() - started, 1),
    }
    with capsys.disabled():
        print("\nProduction layout:", json.dumps(figures, indent=2))
