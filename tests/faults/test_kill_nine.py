"""Workers killed with SIGKILL at random points of 10,000-record runs, 20 times: every run finishes, no record is
lost, none is created twice, and a canary run still completes within a minute afterwards.

Real `qcluster` processes (2 workers each) on PostgreSQL move 10,000 rows of one table into another, written one
statement per batch of 100. The target table has no unique constraint on the match key (email): a create sent
twice would be a second row, so duplicates are counted as rows per email, not hidden by the target refusing them.

How the 20 kills are spread: a 10,000-record run takes well under a minute of work on this 2-CPU machine, and
each kill costs about five seconds before a worker is back at work (a new cluster boots, the dead worker's
heartbeat goes stale after RESYNC_HEARTBEAT_STALE_SECONDS=3, the reaper hands the run back). 20 runs of 10,000
records, one kill each, would take over ten minutes; one run cannot absorb 20 kills that each land after a
worker took the work up again. So the kills go to consecutive runs, each a new mapping into its own fresh table
(every one of its 10,000 records a create): a kill lands a random 0.2 to 2.5 seconds (seeded) after a worker
has taken up the work again, and when a run finishes the next one starts. That is 20 kills at random points of
three to five runs (as fast as the machine is), each killed four to seven times, in one to three minutes.
RESYNC_FAULT_SEED=<seed> replays the same delays (the machine's speed still moves where exactly they land).

The reaper runs as in production, only more often: the test calls the reaper task (syncs.tasks.reap_runs) every
second instead of its one-minute schedule, with the heartbeat threshold shortened to 3 seconds for the test and
its workers alike.
"""

import random
import time

import pytest
from django.db import connection as db_connection
from django.utils import timezone
from django_q.models import Schedule
from psycopg import sql

from mappings.models import FieldMapping, Mapping
from syncs.models import BatchStatus, LinkStatus, RecordError, RecordLink, RunStatus, SyncBatch, SyncRun
from syncs.services import sync_run_queue
from syncs.tasks import reap_runs
from tests.syncs.conftest import qcluster_kill
from tests.syncs.helpers import admin, table

pytestmark = [pytest.mark.slow, pytest.mark.worker, pytest.mark.django_db(transaction=True),
              pytest.mark.usefixtures("real_queue")]

RECORDS = 10_000
KILLS = 20
BATCH_SIZE = 100
STALE_SECONDS = 3
REAP_EVERY = 1.0  # seconds: the reaper's schedule (a minute in production), shortened like the threshold
KILL_DELAY = (0.2, 2.5)  # seconds after a worker is back at work
CANARY_TIMEOUT = 60
RUN_TIMEOUT = 180  # seconds for the last run to finish after the last kill

TARGET = """CREATE TABLE {name} (
    id serial PRIMARY KEY,
    email text NOT NULL,
    first_name text,
    last_name text,
    phone text,
    updated_at timestamptz NOT NULL DEFAULT now()
)"""


class Runs:
    """The runs of the test, each a new mapping from the source table into a fresh target table."""

    def __init__(self, org, database, source, *, source_object="shop_customers"):
        self.org, self.database, self.source, self.source_object = org, database, source, source_object
        self.runs = []  # (run, mapping, target table name)

    def start(self):
        name = f"{self.source_object}_copy_{len(self.runs) + 1}"
        with admin(self.database) as db:
            db.execute(sql.SQL(TARGET).format(name=sql.Identifier(name)))
        target = table(self.org, self.database, f"CRM {name}")
        mapping = Mapping.objects.create(
            organization=self.org, name=f"Shop → {name}", source_connection=self.source,
            source_object=self.source_object, target_connection=target, target_object=name,
            match_keys=[{"source": "email", "target": "email"}], batch_size=BATCH_SIZE,
        )
        for position, field in enumerate(("email", "first_name", "last_name", "phone")):
            FieldMapping.objects.create(organization=self.org, mapping=mapping, source_field=field,
                                        target_field=field, transforms=[], position=position)
        run = sync_run_queue(mapping=mapping)  # autocommit: enqueued at once for the workers
        self.runs.append((run, mapping, name))
        return run

    @property
    def current(self):
        return self.runs[-1][0]

    def finished(self, run):
        return SyncRun.objects.filter(pk=run.pk, finished_at__isnull=False).exists()


def reap_for(seconds, until=None):
    """Call the reaper every REAP_EVERY seconds for `seconds` (or until `until()` is true)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reap_runs()
        if until is not None and until():
            return True
        time.sleep(min(REAP_EVERY, max(0.0, deadline - time.monotonic())))
    return until() if until is not None else False


def working_since(run, moment):
    """Whether a worker has beaten the run's or one of its batches' heartbeat since `moment`."""
    return (SyncRun.objects.filter(pk=run.pk, heartbeat_at__gt=moment).exists()
            or SyncBatch.objects.filter(run=run, heartbeat_at__gt=moment).exists())


def kill_point(run, database, name):
    """Where a kill landed: batches done and running, rows in the target, links."""
    batches = SyncBatch.objects.filter(run=run)
    with admin(database) as db:
        written = db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()[0]
    return {"run": run.pk, "batches done": batches.filter(status=BatchStatus.SUCCEEDED).count(),
            "batches running": batches.filter(status=BatchStatus.RUNNING).count(),
            "written": written, "linked": RecordLink.objects.filter(mapping=run.mapping_id).count()}


def test_workers_killed_at_random_points_lose_and_double_nothing(
    org, database, start_qcluster, settings, fault_seed, fault_figures
):
    if db_connection.vendor != "postgresql":
        pytest.skip("real workers are killed on PostgreSQL, as production runs them")
    rng = random.Random(fault_seed)
    replay = f"(RESYNC_FAULT_SEED={fault_seed} replays this)"
    # The test is the reaper's schedule; the sweeper has nothing to do (the target never fails).
    Schedule.objects.filter(name__in=["resync: reaper", "resync: retry sweeper"]).delete()
    settings.RESYNC_HEARTBEAT_STALE_SECONDS = STALE_SECONDS
    settings.RESYNC_ALLOW_PRIVATE_URLS = True
    worker = {"RESYNC_HEARTBEAT_STALE_SECONDS": str(STALE_SECONDS), "RESYNC_ALLOW_PRIVATE_URLS": "true",
              "RESYNC_WORKERS": "2"}

    with admin(database) as db, db.cursor() as cursor, cursor.copy(
            "COPY shop_customers (email, first_name, last_name, phone) FROM STDIN") as copy:
        for n in range(RECORDS):
            copy.write_row((f"person{n}@example.com", f"First{n}", f"Last{n}", "+14155550100"))
    source = table(org, database, "Shop", id_column="id", updated_at_column="updated_at")
    runs = Runs(org, database, source)
    cluster = start_qcluster(**worker)
    runs.start()

    points, delays = [], []
    since = timezone.now()
    while len(points) < KILLS:
        run, _mapping, name = runs.runs[-1]
        taken_up = reap_for(RUN_TIMEOUT, until=lambda r=run, t=since: runs.finished(r) or working_since(r, t))
        assert taken_up, f"no worker took run {run.pk} up again after kill {len(points)} {replay}: {points[-1:]}"
        if runs.finished(run):
            runs.start()
            continue
        delay = rng.uniform(*KILL_DELAY)
        reap_for(delay)
        if runs.finished(run):  # it finished before the kill: the kill goes to the next run
            runs.start()
            continue
        qcluster_kill(cluster)
        delays.append(round(delay, 2))
        points.append(kill_point(run, database, name))
        since = timezone.now()
        cluster = start_qcluster(**worker)

    last = runs.current
    assert reap_for(RUN_TIMEOUT, until=lambda: runs.finished(last)), (
        f"run {last.pk} did not finish after the last kill {replay}: {kill_point(last, database, runs.runs[-1][2])}")

    # A canary: a tiny run of a new mapping goes through the last cluster within a minute.
    with admin(database) as db:
        db.execute("CREATE TABLE canary_customers (LIKE shop_customers INCLUDING ALL)")
        db.execute("INSERT INTO canary_customers (email, first_name, last_name) VALUES "
                   "('canary1@example.com', 'Can', 'Ary'), ('canary2@example.com', 'Can', 'Ary')")
    canary_source = table(org, database, "Canary shop", id_column="id", updated_at_column="updated_at")
    canaries = Runs(org, database, canary_source, source_object="canary_customers")
    canary_started = time.monotonic()
    canary = canaries.start()
    assert reap_for(CANARY_TIMEOUT, until=lambda: canaries.finished(canary)), (
        f"the canary run did not finish within {CANARY_TIMEOUT} s {replay}")
    canary_seconds = time.monotonic() - canary_started
    canary.refresh_from_db()
    assert canary.status == RunStatus.SUCCEEDED and canary.created == 2, (canary.status, canary.system_error)

    lost = duplicates = 0
    report = []
    emails = {f"person{n}@example.com" for n in range(RECORDS)}
    for run, mapping, name in runs.runs:
        run.refresh_from_db()
        with admin(database) as db:
            rows = dict(db.execute(sql.SQL("SELECT email, count(*) FROM {} GROUP BY email").format(
                sql.Identifier(name))).fetchall())
        run_lost = len(emails - set(rows))
        run_doubled = sum(count - 1 for count in rows.values())
        lost += run_lost
        duplicates += run_doubled
        state = {"run": run.pk, "status": run.status, "claims": run.claims, "read": run.read,
                 "created": run.created, "updated": run.updated, "failed": run.failed, "lost": run_lost,
                 "doubled": run_doubled, "system error": run.system_error,
                 "kills": [point for point in points if point["run"] == run.pk]}
        report.append(state)
        message = f"{state} {replay}"
        assert run.status == RunStatus.SUCCEEDED, message
        assert run_lost == 0 and run_doubled == 0, message
        assert set(rows) == emails, message
        assert RecordLink.objects.filter(mapping=mapping, status=LinkStatus.SYNCED).count() == RECORDS, message
        assert not RecordError.objects.filter(mapping=mapping).exists(), message
        assert run.read == RECORDS and run.created + run.updated == RECORDS, message

    taken_over = SyncBatch.objects.filter(run__in=[run for run, _m, _n in runs.runs], attempts__gt=1).count()
    takeovers = sum(run.claims - 1 for run, _m, _n in runs.runs)
    fault_figures(
        runs=len(runs.runs), kills=len(points), records=RECORDS * len(runs.runs), lost=lost, duplicates=duplicates,
        retries=taken_over, takeovers=takeovers, adopted=sum(state["updated"] for state in report),
        mid_batch_kills=sum(point["written"] > point["linked"] for point in points),
        kill_delays=delays, canary_seconds=round(canary_seconds, 1),
    )
