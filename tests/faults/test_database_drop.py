"""The worker's database connection dropped in the middle of a batch (PostgreSQL: pg_terminate_backend, as a
failover or an administrator would): the batch is retried, nothing is lost or written twice.

The run executes in this process as a worker's task does (tests run tasks inline): its Django connection is
terminated from outside at the worst point of batch 2, after its records reached the target and before its
bookkeeping (errors, links, counts) is written down. The task dies with the connection, as a worker's would; the
worker closes the broken connection before its next task (django-q's close_old_connections), and the reaper
hands the silent run to that next task. Both tables are real PostgreSQL tables of their own database (the target
has no unique constraint on the match key: a create sent twice would be a second row). Quick: a few seconds.
"""

import time

import pytest
from django.db import close_old_connections
from django.db import connection as db_connection
from psycopg import sql

from mappings.models import FieldMapping, Mapping
from syncs.engine.bookkeeping import BatchOutcome
from syncs.models import BatchStatus, LinkStatus, RecordError, RecordLink, RunStatus, SyncBatch, SyncRun
from syncs.services import sync_run_queue
from syncs.tasks import reap_runs, run_sync
from tests.faults.test_kill_nine import TARGET
from tests.syncs.helpers import admin, table

RECORDS, BATCH_SIZE, DROPPED_AT = 300, 100, 2
STALE_SECONDS = 1


def drop_connection_before_bookkeeping(monkeypatch, sequence):
    """Terminate this process's database backend when batch `sequence` is about to be written down (once)."""
    save, dropped = BatchOutcome.save, []

    def save_after_the_drop(outcome):
        if outcome.batch.sequence == sequence and not dropped:
            pid = db_connection.connection.info.backend_pid
            with admin() as server:
                server.execute("SELECT pg_terminate_backend(%s)", (pid,))
            dropped.append(pid)
        save(outcome)

    monkeypatch.setattr(BatchOutcome, "save", save_after_the_drop)
    return dropped


@pytest.mark.django_db(transaction=True)
def test_a_database_connection_dropped_mid_batch_retries_the_batch_and_loses_or_doubles_nothing(
    org, database, settings, monkeypatch, fault_figures
):
    if db_connection.vendor != "postgresql":
        pytest.skip("the worker's backend is terminated on PostgreSQL")
    settings.RESYNC_ALLOW_PRIVATE_URLS = True
    settings.RESYNC_HEARTBEAT_STALE_SECONDS = STALE_SECONDS
    with admin(database) as db:
        db.execute(sql.SQL(TARGET).format(name=sql.Identifier("people")))
        with db.cursor() as cursor, cursor.copy(
                "COPY shop_customers (email, first_name, last_name, phone) FROM STDIN") as copy:
            for n in range(RECORDS):
                copy.write_row((f"person{n}@example.com", f"First{n}", f"Last{n}", "+14155550100"))
    mapping = Mapping.objects.create(
        organization=org, name="Shop → people", source_connection=table(org, database, "Shop"),
        source_object="shop_customers", target_connection=table(org, database, "CRM"), target_object="people",
        match_keys=[{"source": "email", "target": "email"}], batch_size=BATCH_SIZE,
    )
    for position, field in enumerate(("email", "first_name", "last_name", "phone")):
        FieldMapping.objects.create(organization=org, mapping=mapping, source_field=field, target_field=field,
                                    transforms=[], position=position)
    run = sync_run_queue(mapping=mapping, enqueue=False)
    dropped = drop_connection_before_bookkeeping(monkeypatch, DROPPED_AT)

    # The worker's task: it dies with its connection, nothing in it can write the failure down.
    with pytest.raises(Exception) as died:
        run_sync(run.pk)
    assert dropped, "the connection was never dropped"
    close_old_connections()  # what django-q does before the worker's next task
    assert type(died.value).__module__.startswith(("django.db", "psycopg")), repr(died.value)

    run.refresh_from_db()
    with admin(database) as db:
        written_at_drop = db.execute("SELECT count(*) FROM people").fetchone()[0]
    linked_at_drop = RecordLink.objects.filter(mapping=mapping).count()
    at_drop = {"status": run.status, "written": written_at_drop, "linked": linked_at_drop,
               "batches": list(SyncBatch.objects.filter(run=run).values_list("sequence", "status"))}
    assert run.status == RunStatus.RUNNING, at_drop
    assert written_at_drop == DROPPED_AT * BATCH_SIZE and linked_at_drop == (DROPPED_AT - 1) * BATCH_SIZE, at_drop

    # The reaper, once the run's heartbeat is stale, hands it to the next task (run here, inline).
    time.sleep(STALE_SECONDS + 0.2)
    assert reap_runs() == [run.pk]

    run = SyncRun.objects.get(pk=run.pk)
    with admin(database) as db:
        rows = dict(db.execute("SELECT email, count(*) FROM people GROUP BY email").fetchall())
    emails = {f"person{n}@example.com" for n in range(RECORDS)}
    state = {"at the drop": at_drop, "status": run.status, "claims": run.claims, "read": run.read,
             "created": run.created, "updated": run.updated, "failed": run.failed}
    assert run.status == RunStatus.SUCCEEDED and run.claims == 2, state
    assert set(rows) == emails and set(rows.values()) == {1}, state  # nothing lost, nothing doubled
    assert RecordLink.objects.filter(mapping=mapping, status=LinkStatus.SYNCED).count() == RECORDS, state
    assert not RecordError.objects.filter(mapping=mapping).exists(), state
    # Batch 2 was done again from scratch: its records, already in the target, found by email and updated.
    assert SyncBatch.objects.get(run=run, sequence=DROPPED_AT).attempts == 2, state
    assert set(SyncBatch.objects.filter(run=run).values_list("status", flat=True)) == {BatchStatus.SUCCEEDED}
    assert (run.read, run.created, run.updated) == (RECORDS, RECORDS - BATCH_SIZE, BATCH_SIZE), state
    fault_figures(runs=1, records=RECORDS, lost=len(emails - set(rows)), duplicates=sum(rows.values()) - len(rows),
                  retries=1, connections_dropped=len(dropped))
