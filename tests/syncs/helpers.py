"""Small helpers the engine tests share: run a mapping in-process, look at both sandbox sides, and reach the local
PostgreSQL server where real tables stand in for a customer's systems."""

import psycopg

from integrations.models import Connection, SandboxRecord
from syncs.engine import sync_run_execute
from syncs.models import ErrorLevel, RecordError, SyncRun
from syncs.services import sync_run_queue


def run_mapping(mapping, **options):
    run = sync_run_queue(mapping=mapping, enqueue=False, **options)
    sync_run_execute(run_id=run.pk)
    run = SyncRun.objects.get(pk=run.pk)
    mapping.refresh_from_db()
    return run


def records(connection, object_name="contacts"):
    return list(SandboxRecord.objects.for_org(connection.organization).filter(
        connection=connection, object_name=object_name
    ).order_by("pk"))


def person(n, **overrides):
    row = {"email": f"person{n}@example.com", "first_name": f"First{n}", "last_name": f"Last{n}",
           "phone": "+14155550100"}
    row.update(overrides)
    return row


def set_faults(connection, **faults):
    """Give a sandbox connection these faults (none: it works again)."""
    connection.config = {"faults": faults} if faults else {}
    connection.save()


def record_errors(**filters):
    return RecordError.objects.filter(level=ErrorLevel.RECORD, **filters)


# --- real PostgreSQL tables on the local server ------------------------------------------------------------------

HOST, PORT = "127.0.0.1", 5432


def admin(dbname="postgres"):
    return psycopg.connect(host=HOST, port=PORT, user="postgres", dbname=dbname, autocommit=True, connect_timeout=3)


def table(org, database, name, **config):
    connection = Connection(organization=org, name=name, provider="postgres_table", config={
        "host": HOST, "port": PORT, "database": database, "user": "postgres", "sslmode": "disable", **config})
    connection.credentials = {"password": "not-needed-on-trust"}
    connection.save()
    return connection
