"""Sync engine throughput, PostgreSQL table → PostgreSQL table, as ratios against a floor measured in the same run.

    .venv/bin/python bench/engine.py [--records 100000] [--runs 5] [--batch-size 1000] [--max-minutes 12]
                                     [--profile] [--keep] [--json OUT]

A source table of --records contacts (ten fields; about 5% bad: an invalid email, an invalid phone, a missing
required last name, a company name too long for its column) is synced by a ten-field mapping (email_normalize,
trim, lowercase, uppercase, truncate, default, value_map, phone_e164 on numbers of twelve countries) into a
target table with a unique email, through the `postgres_table` connector on both sides, as the app sets it up
(connection_create, mapping_create). Measured, medians of --runs runs, in records/s:

- floor: the same ten transforms written by hand (phonenumbers for the phone, the engine's own email helper),
  rows read with a keyset query, one `INSERT … SELECT FROM unnest(…) ON CONFLICT … DO UPDATE` per batch into a
  fresh table, bad rows skipped, nothing else written down: what moving these rows cannot cost less than;
- first sync: the engine creating every record in an empty target (links, record errors, batches, counts all
  written), run inline (sync_run_queue(enqueue=False) + sync_run_execute); target ratio to the floor ≥ 0.70;
- second sync: the same mapping again with {"full": True}: everything read, everything found unchanged; target
  ratio ≥ 1.50 (it writes nothing to the target, so it should beat a floor that does);
- both syncs at the mapping batch size --batch-size and, as extra rows, at 100 (the model's default), where the
  fixed cost per batch shows. The floor runs at --batch-size only.

After each first sync the target must hold exactly the floor's rows and created + failed must equal --records,
and the second must find every good record unchanged; the "rows and counts right" line counts the syncs where
that held (a run stopped by a system error ends the bench). Fewer runs are made (at least one, said in the table)
when another would end after --max-minutes, so that `make bench` stays short while the engine is slow. With
--profile one more first sync runs under cProfile (its time per engine stage, and its top 30 functions by
cumulative and by own time), then a second sync (its time per stage).

PostgreSQL only: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/resync_bench_engine) is created,
migrated, and dropped at the end unless --keep; a second bench on the same database waits for the first (an
advisory lock) instead of dropping it under it. The source and target tables live in schemas of that database
(bench_source, bench_target, bench_floor). Every bookkeeping table is emptied between runs, so each run starts
from the same state. Settings as in production: DEBUG off (Django's query log would cost every statement time),
logging at WARNING (one JSON line per failed record, formatted and written to /dev/null).
"""

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

from report import Figure, print_table, write_json  # noqa: E402  (bench/ is on the path only from here)

BENCH = "engine"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/resync_bench_engine"
TARGETS = {"first sync": 0.70, "second sync": 1.50}  # ratio to the floor, at least
SMALL_BATCH = 100

SOURCE_SCHEMA, TARGET_SCHEMA, FLOOR_SCHEMA = "bench_source", "bench_target", "bench_floor"
TABLE = "contacts"
FIELDS = ("email", "first_name", "last_name", "company", "title", "website", "lead_source", "gender", "phone",
          "country")
PHONE_REGIONS = ("US", "GB", "DE", "FR", "JP", "AU", "BR", "IN", "ES", "CA", "MX", "NL")
GENDERS = {"F": "Female", "M": "Male"}
TITLE_LENGTH = 30
# The target's column widths: what validation checks (and the floor checks by hand).
LENGTHS = {"email": 254, "first_name": 40, "last_name": 40, "company": 60, "title": TITLE_LENGTH, "website": 200,
           "lead_source": 40, "gender": 10, "phone": 20, "country": 2}
BAD_EVERY = 20  # one record in 20 (5%) is bad, of one of these kinds in turn
BAD_KINDS = ("email", "phone", "required", "too_long")

FIELD_MAPPINGS = [
    {"source_field": "email", "target_field": "email", "transforms": [{"name": "email_normalize"}],
     "required": True},
    {"source_field": "first_name", "target_field": "first_name", "transforms": [{"name": "trim"}]},
    {"source_field": "last_name", "target_field": "last_name", "transforms": [{"name": "trim"}], "required": True},
    {"source_field": "company", "target_field": "company", "transforms": [{"name": "trim"}]},
    {"source_field": "title", "target_field": "title",
     "transforms": [{"name": "truncate", "args": {"length": TITLE_LENGTH}}]},
    {"source_field": "website", "target_field": "website", "transforms": [{"name": "trim"}, {"name": "lowercase"}]},
    {"source_field": "lead_source", "target_field": "lead_source",
     "transforms": [{"name": "default", "args": {"value": "web"}}]},
    {"source_field": "gender", "target_field": "gender",
     "transforms": [{"name": "value_map", "args": {"map": GENDERS, "fallback": "$keep"}}]},
    {"source_field": "phone", "target_field": "phone", "transforms": [{"name": "phone_e164"}]},
    {"source_field": "country", "target_field": "country", "transforms": [{"name": "trim"}, {"name": "uppercase"}]},
]

SOURCE_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE {schema}.{table} (
    id bigserial PRIMARY KEY,
    email text, first_name text, last_name text, company text, title text, website text, lead_source text,
    gender text, phone text, country text,
    updated_at timestamptz NOT NULL
);
"""
# The connector's keyset order; any table read incrementally has this index, and the floor reads the same way.
SOURCE_INDEX = "CREATE INDEX ON {schema}.{table} (updated_at, id)"
TARGET_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE {schema}.{table} (
    id bigserial PRIMARY KEY,
    email varchar(254) NOT NULL UNIQUE,
    first_name varchar(40), last_name varchar(40) NOT NULL, company varchar(60), title varchar(30),
    website varchar(200), lead_source varchar(40), gender varchar(10), phone varchar(20), country varchar(2),
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


# --- the database -----------------------------------------------------------------------------------------------


def admin_dsn(url):
    parts = urlparse(url)
    return parts._replace(path="/postgres").geturl(), parts.path.lstrip("/")


@contextlib.contextmanager
def database_lock(url):
    """Held while a bench uses its database: a second bench on the same database (someone else's run) waits for it
    instead of dropping the database under it, and the two do not skew each other's timings."""
    import psycopg

    dsn, name = admin_dsn(url)
    with psycopg.connect(dsn, autocommit=True) as connection:
        key = f"resync bench {name}"
        if not connection.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [key]).fetchone()[0]:
            print(f"waiting for another bench that uses the database {name} to finish", flush=True)
            connection.execute("SELECT pg_advisory_lock(hashtext(%s))", [key])
        yield  # the lock ends with the session


def database_create(url):
    import psycopg

    dsn, name = admin_dsn(url)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def database_drop(url):
    import psycopg
    from django.db import connections

    connections.close_all()
    dsn, name = admin_dsn(url)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def django_setup(url):
    """Point Django at the bench database, let the connector reach 127.0.0.1, migrate."""
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["RESYNC_LOG_LEVEL"] = "WARNING"
    # As in production: with DEBUG on (the settings' default) Django keeps the text of the last 9000 statements of
    # every connection, which costs each statement time and a long run hundreds of MB.
    os.environ["DEBUG"] = "false"
    # The SSRF guard refuses loopback hosts unless told this is a development setup.
    os.environ["RESYNC_ALLOW_PRIVATE_URLS"] = "true"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    quiet_logs()


def quiet_logs():
    """Send the engine's JSON lines (one per failed record: thousands a run) to /dev/null: each is still formatted
    and written, as in production, but the bench's own output stays readable."""
    import logging

    sink = open(os.devnull, "w")  # noqa: SIM115  (open for the life of the process)
    for name in ("resync", "django_q", "django-q"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sink)


def machine():
    """The machine as a bench found it: other work on it skews every figure, floor included."""
    return f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"


def connect(url):
    import psycopg

    return psycopg.connect(url, autocommit=True)


# --- the data ---------------------------------------------------------------------------------------------------


def phone_numbers():
    """Valid numbers of twelve countries as people type them: national for the mapping's US, international with
    spaces, dashes or none for the others."""
    import phonenumbers
    from phonenumbers import PhoneNumberFormat, PhoneNumberType

    numbers = []
    for region in PHONE_REGIONS:
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE):
            number = phonenumbers.example_number_for_type(region, kind)
            if region == "US":
                numbers.append(phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL))
                continue
            international = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
            numbers += [international, international.replace(" ", "-"),
                        phonenumbers.format_number(number, PhoneNumberFormat.E164)]
    return numbers


def bad_kind(n):
    """The kind of problem record n has, or None for a good record."""
    return BAD_KINDS[(n // BAD_EVERY) % len(BAD_KINDS)] if n % BAD_EVERY == BAD_EVERY - 1 else None


def source_rows(count):
    """Rows of the source table (without id), messy the way real input is: stray spaces, mixed case, blanks."""
    phones = phone_numbers()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for n in range(count):
        row = {
            "email": f"  Ada.Lovelace{n}@Example{n % 7}.COM ",
            "first_name": f" Ada{n % 50} ",
            "last_name": "Lovelace" if n % 2 else " Byron ",
            "company": f"Analytical Engines {n % 100} Ltd ",
            "title": "Countess of Lovelace and Analyst of Engines" if n % 2 else "Analyst",
            "website": f" HTTPS://Example.com/Ada{n} ",
            "lead_source": (None, "", "referral")[n % 3],
            "gender": "FMX"[n % 3],
            "phone": phones[n % len(phones)],
            "country": f" {PHONE_REGIONS[n % len(PHONE_REGIONS)].lower()} ",
        }
        kind = bad_kind(n)
        if kind == "email":
            row["email"] = f"ada.lovelace{n}.example.com"
        elif kind == "phone":
            row["phone"] = "+49 123"  # parses, but no German number is this short
        elif kind == "required":
            row["last_name"] = "   "
        elif kind == "too_long":
            row["company"] = "The Analytical Engine Company of Great Britain and Ireland, Limited"  # > 60
        # Distinct, increasing timestamps: the keyset pages in a stable order.
        yield (*(row[name] for name in FIELDS), start + timedelta(milliseconds=n))


def good_count(count):
    return sum(1 for n in range(count) if bad_kind(n) is None)


def source_create(url, count, *, table=TABLE):
    """The source table, filled with COPY (not measured)."""
    with connect(url) as db:
        db.execute(SOURCE_DDL.format(schema=SOURCE_SCHEMA, table=table))
        with db.cursor() as cursor, cursor.copy(
                f"COPY {SOURCE_SCHEMA}.{table} ({', '.join(FIELDS)}, updated_at) FROM STDIN") as copy:
            for row in source_rows(count):
                copy.write_row(row)
        db.execute(SOURCE_INDEX.format(schema=SOURCE_SCHEMA, table=table))
        db.execute(f"ANALYZE {SOURCE_SCHEMA}.{table}")


def target_create(url):
    with connect(url) as db:
        db.execute(TARGET_DDL.format(schema=TARGET_SCHEMA, table=TABLE))
        db.execute(TARGET_DDL.format(schema=FLOOR_SCHEMA, table=TABLE))


def table_empty(url, schema):
    with connect(url) as db:
        db.execute(f"TRUNCATE {schema}.{TABLE} RESTART IDENTITY")


# --- the app's objects -------------------------------------------------------------------------------------------


def connections_create(url, organization):
    """The two postgres_table connections, through the service the API uses (config checked, SSRF guard run)."""
    from integrations.services import connection_create

    parts = urlparse(url)
    base = {"host": parts.hostname, "port": parts.port or 5432, "database": parts.path.lstrip("/"),
            "user": parts.username or "postgres", "sslmode": "disable"}
    credentials = {"password": parts.password} if parts.password else None
    source = connection_create(
        organization=organization, name="Shop database", provider="postgres_table",
        config={**base, "schema": SOURCE_SCHEMA, "id_column": "id", "updated_at_column": "updated_at"},
        credentials=credentials)
    target = connection_create(
        organization=organization, name="CRM database", provider="postgres_table",
        config={**base, "schema": TARGET_SCHEMA, "key_column": "email"}, credentials=credentials)
    return source, target


def organization_create(slug="bench"):
    from accounts.models import Organization

    return Organization.objects.create(name=f"Bench {slug}", slug=slug)


def mapping_create(organization, source, target, *, name, batch_size, source_object=TABLE):
    from mappings.services import mapping_create as create

    return create(
        organization=organization, name=name, source_connection=source, source_object=source_object,
        target_connection=target, target_object=TABLE, match_keys=[{"source": "email", "target": "email"}],
        batch_size=batch_size, default_phone_country="US", field_mappings=FIELD_MAPPINGS,
    )


def bookkeeping_empty():
    """Every run, batch, error and link gone, and the mappings with them, and tasks queued for workers that no one
    ran: the next run starts as the first did."""
    from django.db import connection
    from django_q.models import OrmQ

    from mappings.models import FieldMapping, Mapping
    from syncs.models import RecordError, RecordLink, SyncBatch, SyncRun

    models = (RecordError, RecordLink, SyncBatch, SyncRun, FieldMapping, Mapping, OrmQ)
    tables = [model._meta.db_table for model in models]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")


# --- the floor ----------------------------------------------------------------------------------------------------


def floor_prepare_function():
    """The mapping written by hand: the row's ten values for the target, or None when the target would refuse it."""
    import phonenumbers
    from email_validator import EmailNotValidError

    from mappings.transforms import normalize_email

    parse, is_valid, format_number = phonenumbers.parse, phonenumbers.is_valid_number, phonenumbers.format_number
    e164, parse_error = phonenumbers.PhoneNumberFormat.E164, phonenumbers.NumberParseException
    limits = [LENGTHS[name] for name in FIELDS]

    def prepare(row):
        email, first_name, last_name, company, title, website, lead_source, gender, phone, country = row
        try:
            email = normalize_email(email.strip().lower())
            number = parse(phone, "US")
        except (EmailNotValidError, parse_error):
            return None
        if not is_valid(number):
            return None
        last_name = last_name.strip() if last_name else last_name
        if not last_name:
            return None
        values = (
            email, first_name.strip(), last_name, company.strip(), title[:TITLE_LENGTH], website.strip().lower(),
            lead_source if lead_source and lead_source.strip() else "web", GENDERS.get(gender, gender),
            format_number(number, e164), country.strip().upper(),
        )
        for value, limit in zip(values, limits, strict=True):
            if len(value) > limit:
                return None
        return values

    return prepare


def floor_run(url, batch_size):
    """Seconds to move every good row into the floor's table: keyset read, transform, one upsert per batch."""
    prepare = floor_prepare_function()
    table_empty(url, FLOOR_SCHEMA)
    columns = ", ".join(FIELDS)
    read_first = (f"SELECT {columns}, updated_at, id FROM {SOURCE_SCHEMA}.{TABLE} "
                  f"ORDER BY updated_at, id LIMIT %s")
    read_next = (f"SELECT {columns}, updated_at, id FROM {SOURCE_SCHEMA}.{TABLE} WHERE (updated_at, id) > (%s, %s) "
                 f"ORDER BY updated_at, id LIMIT %s")
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in FIELDS if name != "email")
    write = (f"INSERT INTO {FLOOR_SCHEMA}.{TABLE} ({columns}) SELECT * FROM unnest("
             + ", ".join(["%s::text[]"] * len(FIELDS)) + f") ON CONFLICT (email) DO UPDATE SET {updates}")
    with connect(url) as db:
        started = time.perf_counter()
        rows = db.execute(read_first, [batch_size]).fetchall()
        while rows:
            prepared = [values for row in rows if (values := prepare(row[:-2])) is not None]
            if prepared:
                db.execute(write, [list(column) for column in zip(*prepared, strict=True)])
            last = rows[-1]
            rows = db.execute(read_next, [last[-2], last[-1], batch_size]).fetchall() if len(rows) == batch_size \
                else []
        return time.perf_counter() - started


def rows_right(url, records, run):
    """Problems of a first sync ([] when none): its counts, and the target against the floor, row for row."""
    problems = []
    if run.created + run.failed != records:
        problems.append(f"created {run.created} + failed {run.failed} != {records} records")
    if run.created != good_count(records):
        problems.append(f"created {run.created}, expected {good_count(records)} good records")
    columns = ", ".join(FIELDS)
    with connect(url) as db:
        held = db.execute(f"SELECT count(*) FROM {TARGET_SCHEMA}.{TABLE}").fetchone()[0]
        missing = db.execute(f"SELECT count(*) FROM (SELECT {columns} FROM {FLOOR_SCHEMA}.{TABLE} EXCEPT "
                             f"SELECT {columns} FROM {TARGET_SCHEMA}.{TABLE}) AS rows").fetchone()[0]
        extra = db.execute(f"SELECT count(*) FROM (SELECT {columns} FROM {TARGET_SCHEMA}.{TABLE} EXCEPT "
                           f"SELECT {columns} FROM {FLOOR_SCHEMA}.{TABLE}) AS rows").fetchone()[0]
    if held != good_count(records):
        problems.append(f"the target holds {held} rows, expected {good_count(records)}")
    if missing or extra:
        problems.append(f"{missing} rows of the floor missing from the target, {extra} rows differ or are extra")
    return problems


# --- the engine -------------------------------------------------------------------------------------------------


def sync(mapping, *, full=False, profile=None):
    """(seconds, run): one run of the mapping, queued and executed in this process."""
    from syncs.engine import sync_run_execute
    from syncs.models import SyncRun
    from syncs.services import sync_run_queue

    run = sync_run_queue(mapping=mapping, enqueue=False, options={"full": True} if full else None)
    started = time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        sync_run_execute(run_id=run.pk)
    finally:
        if profile is not None:
            profile.disable()
    elapsed = time.perf_counter() - started
    run = SyncRun.objects.get(pk=run.pk)
    if run.system_error:
        # A run that stopped (a crash, a refused connection) moved nothing: its speed means nothing either.
        raise RuntimeError(f"run {run.pk} of {mapping.name} stopped with a system error: {run.system_error}")
    return elapsed, run


def unchanged_problems(records, run):
    good = good_count(records)
    if (run.read, run.unchanged, run.failed, run.created, run.updated) != (records, good, records - good, 0, 0):
        return [f"second sync counts {run.counts()}, expected {good} unchanged and {records - good} failed"]
    return []


# --- the profile ----------------------------------------------------------------------------------------------------

# (stage, file of the function, function): the engine's stages as cProfile sees them. Cumulative times nest (the
# write includes the connector's statements), so the shares do not add up to 100%.
STAGES = [
    ("the whole run (RunExecutor.execute)", "syncs/engine/executor.py", "execute"),
    ("claim", "syncs/engine/claims.py", "sync_run_claim"),
    ("checks, schemas (build_passes)", "syncs/engine/passes.py", "build_passes"),
    ("batch rows (Reader.start_batch)", "syncs/engine/reading.py", "start_batch"),
    ("read a page (connector.read_page)", "integrations/connectors/postgres_table.py", "read_page"),
    ("fan-out: ask the workers (announce)", "syncs/engine/batches.py", "announce"),
    ("fan-out: claim a staged batch", "syncs/engine/batches.py", "batch_claim"),
    ("skip unchanged records (Planner.skim)", "syncs/engine/planning.py", "skim"),
    ("links of the page (SyncPass.links)", "syncs/engine/passes.py", "links"),
    ("operator edits (operator_edits)", "syncs/engine/planning.py", "operator_edits"),
    ("plan per record (Planner.prepare)", "syncs/engine/planning.py", "prepare"),
    ("  record_hash", "syncs/engine/passes.py", "record_hash"),
    ("  transforms (Planner.transform)", "syncs/engine/planning.py", "transform"),
    ("    compiled plan (RecordPlan.apply)", "mappings/plan.py", "apply"),
    ("  validation (Planner.validate)", "syncs/engine/planning.py", "validate"),
    ("match keys (Planner.match)", "syncs/engine/planning.py", "match"),
    ("  find on the target (connector.find)", "integrations/connectors/postgres_table.py", "find"),
    ("write (Writer.write)", "syncs/engine/writing.py", "write"),
    ("  connector.write", "integrations/connectors/postgres_table.py", "write"),
    ("bookkeeping (BatchOutcome.save)", "syncs/engine/bookkeeping.py", "save"),
    ("  links saved (_save_links)", "syncs/engine/bookkeeping.py", "_save_links"),
    ("  earlier errors closed (_supersede_and_resolve)", "syncs/engine/bookkeeping.py", "_supersede_and_resolve"),
    ("heartbeats (Heartbeat.beat)", "syncs/engine/claims.py", "beat"),
    ("cancel checks (cancel_requested)", "syncs/engine/claims.py", "cancel_requested"),
    ("finish (sync_run_finish)", "syncs/engine/finishing.py", "sync_run_finish"),
    ("PostgreSQL connects (psycopg.connect)", "psycopg/connection.py", "connect"),
    ("Django ORM SQL (CursorWrapper.execute*)", "django/db/backends/utils.py", "_execute"),
]


def stage_table(stats, total):
    """Rows (stage, calls, seconds, share of the run) from a pstats.Stats; a stage the engine no longer has (it
    is being reworked) is left out."""
    rows = []
    for label, path, function in STAGES:
        matches = [(calls, cumulative) for (filename, _line, name), (_cc, calls, _tt, cumulative, _callers)
                   in stats.stats.items() if name == function and filename.endswith(path)]
        if not matches:
            continue
        # Several functions of one name in a file (BatchOutcome.save, RunBook's): the one that holds the most.
        calls, cumulative = max(matches, key=lambda match: match[1])
        rows.append((label, calls, cumulative, cumulative / total if total else 0.0))
    return rows


def profile_print(profile, elapsed, what, *, top):
    stats = pstats.Stats(profile)
    print(f"\nProfile of one {what} ({elapsed:.1f} s under cProfile, which slows Python code more than SQL)")
    print("Time per stage (cumulative; an indented stage is part of the one above it):")
    for label, calls, cumulative, share in stage_table(stats, elapsed):
        print(f"  {label:50} {calls:>8} calls  {cumulative:8.2f} s  {share:6.1%}")
    for order in ("cumulative", "tottime") if top else ():
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(order).print_stats(top)
        text = out.getvalue()
        # pstats opens with a header of its own; keep from the column titles on.
        print(f"\nTop {top} by {order}:")
        print(text[text.find("   ncalls"):].rstrip())
    print(flush=True)


# --- the bench --------------------------------------------------------------------------------------------------


def parser_build():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000, help="the mapping's batch size (1 to 1000)")
    parser.add_argument("--max-minutes", type=float, default=12,
                        help="make fewer runs (at least one) when another would end after this many minutes")
    parser.add_argument("--profile", action="store_true",
                        help="then profile one more first and second sync and print where time goes")
    parser.add_argument("--keep", action="store_true", help="leave the bench database in place")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to OUT as JSON")
    return parser


def figures(argv=None):
    args = parser_build().parse_args(argv)
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    batch_sizes = [args.batch_size] + ([SMALL_BATCH] if args.batch_size != SMALL_BATCH else [])
    with database_lock(url):
        database_create(url)
        django_setup(url)
        try:
            return measure(url, args, batch_sizes)
        finally:
            if not args.keep:
                database_drop(url)


def measure(url, args, batch_sizes):
    records = args.records
    print(f"engine: {records} records ({records - good_count(records)} bad), {args.runs} runs, batch sizes "
          f"{', '.join(map(str, batch_sizes))}; database {urlparse(url).path.lstrip('/')}; {machine()}", flush=True)
    source_create(url, records)
    target_create(url)
    organization = organization_create()
    source, target = connections_create(url, organization)

    timings = {"floor": []}
    for size in batch_sizes:
        timings[("first sync", size)] = []
        timings[("second sync", size)] = []
    problems, checked = [], 0
    started = time.monotonic()
    for number in range(1, args.runs + 1):
        line = [f"  run {number}/{args.runs}:"]
        timings["floor"].append(floor_run(url, args.batch_size))
        line.append(f"floor {timings['floor'][-1]:.1f} s")
        for size in batch_sizes:
            table_empty(url, TARGET_SCHEMA)
            mapping = mapping_create(organization, source, target, name=f"bench {number} {size}", batch_size=size)
            elapsed, run = sync(mapping)
            timings[("first sync", size)].append(elapsed)
            found = rows_right(url, records, run)
            elapsed_again, again = sync(mapping, full=True)
            timings[("second sync", size)].append(elapsed_again)
            found += unchanged_problems(records, again)
            checked += 1
            problems += [f"run {number}, batch {size}: {problem}" for problem in found]
            line.append(f"@{size}: first {elapsed:.1f} s ({run.status}), second {elapsed_again:.1f} s")
            bookkeeping_empty()
        print("  ".join(line), flush=True)
        spent = time.monotonic() - started
        if number < args.runs and spent * (number + 1) / number > args.max_minutes * 60:
            print(f"  stopping after {number} of {args.runs} runs: another would pass --max-minutes "
                  f"{args.max_minutes:g}", flush=True)
            break
    print(f"  done: {machine()}", flush=True)
    for problem in problems:
        print(f"  CHECK FAILED: {problem}", flush=True)

    runs = len(timings["floor"])
    of = "" if runs == args.runs else f" (median of {runs} runs)"
    floor_rate = records / statistics.median(timings["floor"])
    result = [Figure(BENCH, f"floor: hand-written transforms + unnest upsert @{args.batch_size}{of}", floor_rate,
                     "records/s")]
    for size in batch_sizes:
        for kind in ("first sync", "second sync"):
            rate = records / statistics.median(timings[(kind, size)])
            ratio = rate / floor_rate
            result.append(Figure(BENCH, f"{kind} @{size}{of}", rate, "records/s", baseline="floor", ratio=ratio,
                                 target=f"ratio ≥ {TARGETS[kind]:.2f}", holds=ratio >= TARGETS[kind]))
    right = checked - len({problem.split(":")[0] for problem in problems})
    result.append(Figure(BENCH, "first/second sync rows and counts right", right, f"of {checked} syncs",
                         target="all", holds=right == checked))

    if args.profile:
        table_empty(url, TARGET_SCHEMA)
        mapping = mapping_create(organization, source, target, name="bench profile", batch_size=args.batch_size)
        profile = cProfile.Profile()
        elapsed, _run = sync(mapping, profile=profile)
        profile_print(profile, elapsed, f"first sync of {records} records @{args.batch_size}", top=30)
        profile = cProfile.Profile()
        elapsed, _run = sync(mapping, full=True, profile=profile)
        profile_print(profile, elapsed, f"second sync (unchanged) of {records} records @{args.batch_size}", top=0)
        bookkeeping_empty()
    return result


def main(argv=None):
    args = parser_build().parse_args(argv)
    result = figures(argv)
    print()
    print_table(result)
    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
