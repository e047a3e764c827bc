"""Dashboards at scale: the errors list, analytics, error groups, the admin's error list and a bulk retry, timed
through the real API (and the admin) over 1,000,000 record errors of 3 organizations and 20 mappings.

    .venv/bin/python bench/dashboards.py [--errors 1000000] [--repeat 20] [--keep] [--reuse] [--only TEXT]
                                         [--json OUT]

PostgreSQL only: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/resync_bench_dashboards) is
created, migrated, filled with INSERT … SELECT generate_series (90 days of hourly runs, errors of every level,
category and status, links) and dropped at the end (--keep leaves it; --reuse measures an existing one again).
Each request is timed --repeat times after two warm-ups; the table gives p50/p95 and the ratio of p95 to the
target (≤ 1.00 holds). Requests are made as Acme, the largest organization (half of the errors). `main()` returns
the figures as a dict; `figures()` gives them to bench/run.py (`make bench`).

The bulk retry answers at once and finishes in a worker: the bench plays the worker in this process (it takes
the task the request enqueued from django-q2's ORM broker and runs it), so "done" is acknowledgement + the
broker hop + the task, without a polling worker's pickup delay (Q_CLUSTER poll, 0.5 s).
"""

import argparse
import logging
import math
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/resync_bench_dashboards"
ORGANIZATIONS = (("acme", "Acme", 0.5, 8), ("globex", "Globex", 0.3, 7), ("initech", "Initech", 0.2, 5))
DAYS = 90
RECORDS_PER_MAPPING = 15_000

TARGETS_MS = {"errors": 50, "analytics": 50, "groups": 50, "admin": 300, "ack": 300, "done": 5000, "info": None}

# category, code, field, retryable, durability, weight, message ({email}, {phone}, {record}: the record's own)
CATALOG = [
    ("validation", "invalid_email", "email", False, "durable", 18,
     'email is not a valid email address: "{email}" (The domain name is not valid.)'),
    ("validation", "required_missing", "last_name", False, "durable", 14,
     "last_name is required by Contacts but is empty"),
    ("validation", "too_long", "company", False, "durable", 5, "company is longer than 80 characters"),
    ("validation", "invalid_phone", "phone", False, "durable", 7, 'phone is not a valid phone number: "{phone}"'),
    ("duplicate", "duplicate_value", "email", False, "durable", 6, 'A contact with email "{email}" already exists'),
    ("not_found", "source_deleted", "", False, "durable", 3, "Record {record} no longer exists in contacts"),
    ("mapping", "transform_failed", "birthday", False, "durable", 3, "Transform date_format failed: not a date"),
    ("conflict", "both_changed", "", False, "durable", 2, "Both sides changed since the last sync"),
    ("connection", "http_503", "", True, "ephemeral", 14, "The target answered 503 Service Unavailable"),
    ("connection", "http_502", "", True, "ephemeral", 5, "The target answered 502 Bad Gateway"),
    ("timeout", "read_timeout", "", True, "ephemeral", 8, "The target did not answer within 15 seconds"),
    ("rate_limit", "http_429", "", True, "ephemeral", 9, "Rate limited by the target: retry after 10 seconds"),
    ("permission", "http_403", "", False, "durable", 2, "Missing scope crm.objects.contacts.write"),
    ("unknown", "http_500", "", True, "ephemeral", 3, "Unexpected answer from the target (500)"),
    ("auth", "invalid_grant", "", False, "durable", 1, "The refresh token was revoked"),
]

# (status, resolution, share) of record and batch errors; warnings resolve with a warning, ignored records are
# ignored. About a fifth of the retriable errors are open, scheduled for a retry or out of attempts.
STATUSES = [
    ("resolved", "auto_retry", 0.33), ("resolved", "superseded", 0.15), ("resolved", "replay", 0.08),
    ("resolved", "fixed", 0.07), ("resolved", "manual_retry", 0.06), ("resolved", "bulk_retry", 0.05),
    ("ignored", "ignored", 0.04), ("open", "", 0.12), ("retry_scheduled", "", 0.06), ("exhausted", "", 0.045),
    ("in_review", "", 0.03), ("retrying", "", 0.005),
]


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- the database ----------------------------------------------------------------------------------------------


def admin_dsn(url):
    parts = urlparse(url)
    return parts._replace(path="/postgres").geturl(), parts.path.lstrip("/")


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


def world_build(total_errors):
    """Organizations, connections and mappings through the ORM; runs, errors and links set-based in SQL."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from accounts.models import Organization, TokenRole
    from accounts.services import api_token_create
    from integrations.models import Connection
    from mappings.models import Mapping

    get_user_model().objects.create_superuser("bench", "bench@example.org", "bench")
    cumulative, weights = 0.0, []
    for slug, name, share, mapping_count in ORGANIZATIONS:
        organization = Organization.objects.create(name=name, slug=slug)
        api_token_create(organization=organization, name="bench", role=TokenRole.ADMIN)

        def connection_of(label, organization=organization):
            made = Connection(organization=organization, name=label, provider="sandbox")
            made.credentials = {"api_key": "bench"}
            made.save()
            return made

        sources = [connection_of(f"{name} shop {n}") for n in range(2)]
        targets = [connection_of(f"{name} CRM {n}") for n in range(3)]
        # Uneven mappings: the first of an organization fails most.
        mapping_weights = [1 / (n + 1) for n in range(mapping_count)]
        for n in range(mapping_count):
            mapping = Mapping.objects.create(
                organization=organization, name=f"{name} contacts {n}", source_connection=sources[n % 2],
                source_object="contacts", target_connection=targets[n % 3], target_object="contacts",
                match_keys=[{"source": "email", "target": "email"}], error_strategy="retry",
            )
            low = cumulative
            cumulative += share * mapping_weights[n] / sum(mapping_weights)
            weights.append((mapping.pk, organization.pk, low, cumulative))

    now = datetime.now(UTC)
    start = now - timedelta(days=DAYS)
    hours = DAYS * 24
    catalog_weight = sum(row[5] for row in CATALOG)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE bench_mapping (mapping_id bigint, organization_id bigint, low float8, "
                       "high float8)")
        cursor.executemany("INSERT INTO bench_mapping VALUES (%s, %s, %s, %s)", weights)
        cursor.execute("CREATE TEMP TABLE bench_catalog (n int, category text, code text, field text, "
                       "retryable bool, durability text, low float8, high float8, message text)")
        low = 0.0
        for n, (category, code, field, retryable, durability, weight, message) in enumerate(CATALOG):
            cursor.execute("INSERT INTO bench_catalog VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                           [n, category, code, field, retryable, durability, low, low + weight / catalog_weight,
                            message])
            low += weight / catalog_weight
        cursor.execute("CREATE TEMP TABLE bench_status (status text, resolution text, low float8, high float8)")
        low = 0.0
        for status, resolution, share in STATUSES:
            cursor.execute("INSERT INTO bench_status VALUES (%s, %s, %s, %s)", [status, resolution, low,
                                                                                  low + share])
            low += share

        # One scheduled run per mapping per hour for 90 days; the last hour's run of the first mapping is running.
        cursor.execute("""
            CREATE TEMP TABLE bench_run AS
            WITH made AS (
                INSERT INTO syncs_syncrun (code, trigger, status, is_test, read, created, updated, unchanged, skipped,
                    ignored, warned, failed, system_error, options, claims, heartbeat_at, queued_at, started_at,
                    finished_at, mapping_id, organization_id, cursor_from, cursor_to, plan, reverse_cursor_from)
                SELECT gen_random_uuid(), 'schedule',
                       CASE WHEN h.hour = %(hours)s - 1 AND m.mapping_id = (SELECT min(mapping_id) FROM bench_mapping)
                            THEN 'running'
                            WHEN random() < 0.55 THEN 'partially_failed' WHEN random() < 0.05 THEN 'failed'
                            ELSE 'succeeded' END,
                       false, 300, 20, 150, 110, 5, 3, 2, 10, '', '{}'::jsonb, 1,
                       %(start)s::timestamptz + make_interval(hours => h.hour, mins => 2),
                       %(start)s::timestamptz + make_interval(hours => h.hour),
                       %(start)s::timestamptz + make_interval(hours => h.hour, secs => 5),
                       CASE WHEN h.hour = %(hours)s - 1 AND m.mapping_id = (SELECT min(mapping_id) FROM bench_mapping)
                            THEN NULL ELSE %(start)s::timestamptz + make_interval(hours => h.hour, mins => 3) END,
                       m.mapping_id, m.organization_id, '', '', '[]'::jsonb, ''
                FROM bench_mapping m CROSS JOIN generate_series(0, %(hours)s - 1) AS h(hour)
                RETURNING id, mapping_id, queued_at
            )
            SELECT id, mapping_id, floor(extract(epoch FROM queued_at - %(start)s::timestamptz) / 3600)::int AS hour
            FROM made
        """, {"start": start, "hours": hours})
        cursor.execute("CREATE INDEX ON bench_run (mapping_id, hour)")
        cursor.execute("UPDATE syncs_syncrun SET status = 'running', heartbeat_at = now() WHERE status = 'running'")

        # The errors: each picks a mapping (weighted), a time in the 90 days, a kind of error, a record and a fate.
        cursor.execute("""
            WITH draw AS (
                SELECT n, random() AS pick_mapping, random() AS pick_kind, random() AS pick_status,
                       random() AS pick_level, %(start)s::timestamptz + random() * %(days)s * interval '1 day' AS at,
                       1 + floor(random() * %(records)s)::int AS record, random() AS pace
                FROM generate_series(1, %(total)s) AS n
            ), placed AS (
                SELECT d.*, m.mapping_id, m.organization_id, c.category, c.code, c.field, c.retryable, c.durability,
                       c.message, c.n AS kind,
                       CASE WHEN c.category = 'auth' THEN 'system'
                            WHEN d.pick_level < 0.015 THEN 'batch'
                            WHEN d.pick_level < 0.065 THEN 'warning'
                            WHEN d.pick_level < 0.115 THEN 'ignored'
                            ELSE 'record' END AS level,
                       'ct_' || lpad(d.record::text, 6, '0') AS record_id
                FROM draw d
                JOIN bench_mapping m ON d.pick_mapping >= m.low AND d.pick_mapping < m.high
                JOIN bench_catalog c ON d.pick_kind >= c.low AND d.pick_kind < c.high
            ), fated AS (
                SELECT p.*,
                       CASE p.level WHEN 'warning' THEN 'resolved' WHEN 'ignored' THEN 'ignored' ELSE s.status END
                           AS status,
                       CASE p.level WHEN 'warning' THEN 'succeeded_with_warning' WHEN 'ignored' THEN 'ignored'
                           ELSE s.resolution END AS resolution,
                       -- Time to resolution: exponential, median about 40 minutes.
                       least(p.at + (-ln(1 - p.pace) * interval '1 hour'), now()) AS resolved
                FROM placed p JOIN bench_status s ON p.pick_status >= s.low AND p.pick_status < s.high
            )
            INSERT INTO syncs_recorderror (code, level, category, error_code, field, message, detail, retryable,
                durability, direction, source_record_id, target_record_id, snapshot_before, snapshot_after, status,
                attempts, retry_after_until, next_retry_at, resolved_at, resolution, resolution_note, claim_token,
                last_retried_at, edited_payload, fingerprint, first_seen_at, created_at, updated_at, mapping_id,
                organization_id, batch_id, run_id, edited_at, origin_run_id)
            SELECT gen_random_uuid(), f.level, f.category, CASE WHEN f.level = 'ignored' THEN '' ELSE f.code END,
                   f.field, replace(replace(replace(f.message, '{record}', f.record_id),
                                            '{email}', 'person' || f.record || '@exmple'),
                                    '{phone}', '+1415' || f.record),
                   'POST /crm/v3/objects/contacts/batch/upsert -> ' || f.code || ' request_id=' || md5(f.n::text),
                   f.retryable, f.durability, 'forward', f.record_id,
                   CASE WHEN f.pace < 0.5 THEN 'tg_' || f.record ELSE '' END,
                   jsonb_build_object('id', f.record_id, 'email', 'person' || f.record || '@example.com',
                                      'first_name', 'First' || f.record, 'last_name', 'Last' || f.record,
                                      'phone', '+1415555' || lpad((f.record %% 10000)::text, 4, '0')),
                   jsonb_build_object('email', 'person' || f.record || '@example.com',
                                      'firstname', 'First' || f.record, 'lastname', 'Last' || f.record),
                   f.status,
                   CASE WHEN f.status IN ('exhausted') THEN 3 WHEN f.resolution IN ('auto_retry', 'replay')
                        OR f.status = 'retry_scheduled' THEN 1 + floor(f.pace * 2)::int ELSE 0 END,
                   NULL,
                   CASE WHEN f.status = 'retry_scheduled' THEN now() + f.pace * interval '30 minutes' END,
                   CASE WHEN f.status IN ('resolved', 'ignored') THEN f.resolved END,
                   f.resolution,
                   CASE WHEN f.status = 'ignored' THEN 'Test contact' ELSE '' END,
                   NULL,
                   CASE WHEN f.resolution IN ('auto_retry', 'replay', 'manual_retry', 'bulk_retry')
                        OR f.status IN ('exhausted', 'retry_scheduled', 'retrying') THEN f.resolved END,
                   NULL,
                   substr(md5(f.mapping_id || '|' || f.category || '|' || f.code || '|' || f.field)
                          || md5(f.code), 1, 40),
                   f.at - CASE WHEN f.pace < 0.2 THEN f.pace * interval '1 day' ELSE interval '0' END,
                   f.at, f.at, f.mapping_id, f.organization_id, NULL, r.id, NULL, r.id
            FROM fated f
            JOIN bench_run r ON r.mapping_id = f.mapping_id
                             AND r.hour = least(floor(extract(epoch FROM f.at - %(start)s::timestamptz) / 3600)::int,
                                                %(hours)s - 1)
            ORDER BY f.at  -- stored as they happened, as a live table is
        """, {"start": start, "days": DAYS, "records": RECORDS_PER_MAPPING, "total": total_errors, "hours": hours})

        # One link per record of every mapping: most synced, some failed or pending.
        cursor.execute("""
            INSERT INTO syncs_recordlink (source_record_id, target_record_id, source_hash, target_hash, status,
                last_synced_at, updated_at, last_error_id, mapping_id, organization_id)
            SELECT 'ct_' || lpad(r::text, 6, '0'), 'tg_' || r, md5(r::text), md5(r::text || 't'),
                   CASE WHEN x < 0.90 THEN 'synced' WHEN x < 0.96 THEN 'failed' WHEN x < 0.98 THEN 'pending'
                        WHEN x < 0.99 THEN 'skipped' ELSE 'ignored' END,
                   %(now)s::timestamptz - x * %(days)s * interval '1 day', %(now)s::timestamptz, NULL, m.mapping_id,
                   m.organization_id
            FROM bench_mapping m CROSS JOIN generate_series(1, %(records)s) AS r
            CROSS JOIN LATERAL (SELECT random() AS x, r AS rr) AS pick
        """, {"now": now, "days": DAYS, "records": RECORDS_PER_MAPPING})
    # What autovacuum does on a live table: statistics, and the visibility map that index-only scans read.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


# --- measuring -------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, repeat, only):
        self.repeat, self.only = repeat, only
        self.figures = {}

    def wanted(self, name):
        return not self.only or any(part in name for part in self.only)

    def time(self, name, kind, call, *, check=None):
        if not self.wanted(name):
            return
        for _ in range(2):
            call()
        timings = []
        for _ in range(self.repeat):
            started = time.perf_counter()
            result = call()
            timings.append((time.perf_counter() - started) * 1000)
        if check is not None:
            check(result)
        self.record(name, kind, timings)

    def record(self, name, kind, timings):
        target = TARGETS_MS[kind]
        p50, p95 = percentile(timings, 0.5), percentile(timings, 0.95)
        ratio = None if target is None else round(p95 / target, 2)
        self.figures[name] = {"kind": kind, "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                              "target_ms": target, "ratio": ratio, "n": len(timings)}
        against = "(no target)" if target is None else f"target {target:5d} ms  {ratio:5.2f}x"
        print(f"  {name:58} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  {against}", flush=True)


def ok(expected=200):
    def check(response):
        assert response.status_code == expected, (response.status_code, response.content[:500])

    return check


def measure(bench):
    from django.contrib.auth import get_user_model
    from django.test import Client

    from accounts.models import ApiToken, Organization
    from integrations.models import Connection
    from mappings.models import Mapping
    from syncs import analytics
    from syncs.models import ErrorStatus, RecordError, RunStatus, SyncRun

    acme = Organization.objects.get(slug="acme")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {bench_token(ApiToken, acme)}")
    rollups_refresh(bench)

    def get(path, **query):
        return lambda: api.get(path + ("?" + urlencode(query, doseq=True) if query else ""))

    mappings = list(Mapping.objects.for_org(acme).order_by("pk"))
    busiest, quiet = mappings[0], mappings[-1]
    target = Connection.objects.for_org(acme).filter(name__contains="CRM").order_by("pk").first()
    failed_run = (SyncRun.objects.for_org(acme).filter(mapping=busiest, status=RunStatus.PARTIALLY_FAILED)
                  .order_by("-pk")[5])
    week_ago = (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    month_ago = datetime.now(UTC) - timedelta(days=30)
    day = {"since": month_ago.strftime("%Y-%m-%dT00:00:00Z"),
           "until": (month_ago + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")}
    some_record = RecordError.objects.for_org(acme).filter(mapping=quiet).order_by("pk").values_list(
        "source_record_id", flat=True)[100]

    print("Errors list (GET /api/v1/errors/, 50 per page)")
    scenarios = {
        "no filter": {},
        "category": {"category": "validation"},
        "status open": {"status": "open"},
        "status open+retry_scheduled+exhausted": {"status": ["open", "retry_scheduled", "exhausted"]},
        "status in_review, category validation": {"status": "in_review", "category": "validation"},
        "mapping": {"mapping": busiest.code},
        "mapping (quiet), status exhausted": {"mapping": quiet.code, "status": "exhausted"},
        "target_connection": {"target_connection": target.code},
        "target_connection, category, status": {"target_connection": target.code, "category": "connection",
                                                "status": "open"},
        "run": {"run": failed_run.code},
        "blocking run": {"blocking": failed_run.code},
        "since 7 days": {"since": week_ago},
        "since/until one day a month ago": day,
        "one day, status open, category, mapping": {**day, "status": "open", "category": "validation",
                                                    "mapping": quiet.code},
        "code": {"code": "http_429"},
        "level warning": {"level": "warning"},
        "level system": {"level": "system"},
        "search a record id": {"search": some_record},
        "search a word": {"search": "timeout"},
        "search nothing matches": {"search": "no-such-text"},
        "category auth, status in_review (none match)": {"category": "auth", "status": "in_review"},
        "code, status, mapping (quiet), since": {"code": "invalid_phone", "status": "exhausted",
                                                 "mapping": quiet.code, "since": week_ago},
    }
    for label, query in scenarios.items():
        bench.time(f"errors: {label}", "errors", get("/api/v1/errors/", **query), check=ok())
    first = api.get("/api/v1/errors/?status=open").json()
    if first.get("next"):
        bench.time("errors: status open, second page (cursor)", "errors", lambda: api.get(first["next"]),
                   check=ok())

    print("Analytics (GET /api/v1/analytics/: every figure in one answer)")
    for window in ("24h", "7d", "30d"):
        bench.time(f"analytics: window {window}", "analytics", get("/api/v1/analytics/", window=window),
                   check=ok())
    until = datetime.now(UTC)
    for days in (7, 30):
        window = {"organization": acme, "since": until - timedelta(days=days), "until": until}
        for figure in ("error_rate", "errors_by_category", "errors_by_code", "resolution_time", "retry_success"):
            bench.time(f"analytics figure {days}d: {figure}", "analytics",
                       lambda figure=figure, window=window: getattr(analytics, figure)(**window))
        bench.time(f"analytics figure {days}d: error_trend", "analytics",
                   lambda days=days: analytics.error_trend(organization=acme, until=until, days=days))
    bench.time("analytics figure: success_rate_per_target (24h)", "analytics",
               lambda: analytics.success_rate_per_target(organization=acme, now=until))
    bench.time("analytics figure: unsynced_per_target", "analytics",
               lambda: analytics.unsynced_per_target(organization=acme))

    print("Error groups (GET /api/v1/error-groups/)")
    for label, query in {"no filter": {}, "mapping": {"mapping": busiest.code},
                         "category": {"category": "validation"}, "ordering last_seen": {"ordering": "-last_seen"},
                         "status open, since 7 days": {"status": "open", "since": week_ago}}.items():
        bench.time(f"groups: {label}", "groups", get("/api/v1/error-groups/", **query), check=ok())

    print("Admin record-error list (GET /admin/syncs/recorderror/ as a superuser)")
    staff = Client()
    staff.force_login(get_user_model().objects.get(username="bench"))
    admin_url = "/admin/syncs/recorderror/"
    for label, query in {
        "no filter": {}, "page 50": {"p": 50}, "status open": {"status__exact": "open"},
        "organization": {"organization__id__exact": acme.pk},
        "category, status": {"category__exact": "auth", "status__exact": "in_review"},
        "mapping": {"mapping__id__exact": quiet.pk},
        "search a record id": {"q": some_record},
        "created in the past 7 days": {"created_at__gte": week_ago[:10] + " 00:00:00+00:00"},
    }.items():
        bench.time(f"admin: {label}", "admin",
                   lambda query=query: staff.get(admin_url + ("?" + urlencode(query) if query else "")),
                   check=ok())

    if bench.wanted("bulk"):
        bulk_retry(bench, api, acme, ErrorStatus)


def rollups_refresh(bench):
    """What the periodic task "resync: error rollups" does every five minutes; the first time, it counts every
    hour (the data migration's backfill, here for errors inserted after the migrations)."""
    from syncs.models import RollupWatermark
    from syncs.rollups import error_rollups_refresh

    first = not RollupWatermark.objects.exists()
    started = time.perf_counter()
    error_rollups_refresh()
    label = "first, every hour so far (backfill)" if first else "periodic (the last day again)"
    bench.record(f"error rollups refresh: {label}", "info", [(time.perf_counter() - started) * 1000])
    if first:
        started = time.perf_counter()
        error_rollups_refresh()
        bench.record("error rollups refresh: periodic (the last day again)", "info",
                     [(time.perf_counter() - started) * 1000])


def bench_token(ApiToken, organization):
    """A fresh token (the plain text of the built one is not kept)."""
    from accounts.models import TokenRole
    from accounts.services import api_token_create

    _token, plain = api_token_create(organization=organization, name="bench client", role=TokenRole.ADMIN)
    return plain


def bulk_retry(bench, api, organization, ErrorStatus):
    """POST a bulk retry by filter (~100,000 errors): time until its answer, and until the work is done."""
    from django.db import connection

    from syncs.models import RecordError

    selection = {"status": ["open", "retry_scheduled", "exhausted"]}
    matching = RecordError.objects.for_org(organization).filter(status__in=selection["status"]).count()
    print(f"Bulk retry by filter ({matching} errors match)")
    with connection.cursor() as cursor:  # so that --reuse can measure again
        cursor.execute("DROP TABLE IF EXISTS bench_before_retry")
        cursor.execute("CREATE TABLE bench_before_retry AS SELECT id, status, last_retried_at, next_retry_at, "
                       "updated_at FROM syncs_recorderror WHERE organization_id = %s AND status IN "
                       "('open', 'retry_scheduled', 'exhausted')", [organization.pk])
    body = {"filter": selection, "all_matching": True}
    started = time.perf_counter()
    response = api.post("/api/v1/errors/bulk-retry/", body, content_type="application/json")
    acknowledged = (time.perf_counter() - started) * 1000
    assert response.status_code == 202, response.content[:500]
    answer = response.json()
    if "url" in answer:
        run_queued_task("bulk", answer["id"])
        state = api.get(answer["url"]).json()
        assert state["status"] == "succeeded", state
        summary = state["summary"]
    else:
        summary = answer
    done = (time.perf_counter() - started) * 1000
    print(f"  summary: queued {summary['queued']}, runs {len(summary['runs'])}, skipped {summary['skipped']}")
    bench.record("bulk retry by filter: acknowledged", "ack", [acknowledged])
    bench.record("bulk retry by filter: done", "done", [done])
    replay_claim(bench)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE syncs_recorderror e SET status = b.status, last_retried_at = b.last_retried_at, "
                       "next_retry_at = b.next_retry_at, updated_at = b.updated_at, claim_token = NULL "
                       "FROM bench_before_retry b WHERE e.id = b.id")
        cursor.execute("DELETE FROM syncs_syncrun WHERE trigger = 'retry'")
        cursor.execute("DROP TABLE bench_before_retry")
        cursor.execute("VACUUM ANALYZE syncs_recorderror")  # as autovacuum would, before the next --reuse


def replay_claim(bench):
    """For information: what the largest replay's claim costs when it starts in a worker (rolled back)."""
    from django.db import transaction
    from django.utils import timezone

    from syncs.models import SyncRun
    from syncs.retries import sync_run_claim_errors

    replays = [run for run in SyncRun.objects.filter(trigger="retry") if run.options.get("claim_on_start")]
    if not replays:
        return
    largest = max(replays, key=lambda run: len(run.options["errors"]))
    with transaction.atomic():
        started = time.perf_counter()
        sync_run_claim_errors(largest, now=timezone.now())
        elapsed = (time.perf_counter() - started) * 1000
        transaction.set_rollback(True)
    bench.record(f"bulk retry: largest replay claims its {len(largest.options['errors'])} errors at start",
                 "info", [elapsed])


def run_queued_task(kind, action_id):
    """Play the worker: take the task the request enqueued from the ORM broker and run it here."""
    from django.utils.module_loading import import_string
    from django_q.models import OrmQ

    for queued in OrmQ.objects.order_by("id"):
        task = queued.task
        if "bulk" in task["func"]:
            queued.delete()
            import_string(task["func"])(*task["args"], **task["kwargs"])
            return
    raise AssertionError(f"No {kind} task was enqueued for {action_id}")


def print_summary(figures):
    targeted = {name: figure for name, figure in figures.items() if figure["ratio"] is not None}
    if not targeted:
        return
    worst = max(targeted.items(), key=lambda item: item[1]["ratio"])
    held = sum(1 for figure in targeted.values() if figure["ratio"] <= 1)
    print(f"\n{held} of {len(targeted)} figures within target; worst: {worst[0]} at {worst[1]['ratio']:.2f}x "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


def parser_build():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errors", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="Leave the database in place afterwards.")
    parser.add_argument("--reuse", action="store_true", help="Measure an existing bench database again.")
    parser.add_argument("--only", action="append", help="Only the figures whose name contains this text.")
    parser.add_argument("--json", metavar="OUT", help="Also write the figures to OUT as JSON (bench/report.py).")
    return parser


def main(argv=None):
    """Build, measure, print; the figures as {name: {p50_ms, p95_ms, target_ms, ratio, ...}}."""
    args = parser_build().parse_args(argv)
    url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    if not url.startswith("postgres"):
        raise SystemExit("bench/dashboards.py measures PostgreSQL: set BENCH_DATABASE_URL to a postgres:// URL")
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["RESYNC_LOG_LEVEL"] = "WARNING"
    os.environ["RESYNC_API_RATE"] = "1000000/min"  # the bench is one client making thousands of calls
    if not args.reuse:
        database_create(url)
    import django

    django.setup()
    logging.getLogger("django-q").setLevel(logging.WARNING)  # one line per enqueued task otherwise
    from django.core.management import call_command

    try:
        call_command("migrate", verbosity=0)
        if not args.reuse:
            started = time.perf_counter()
            world_build(args.errors)
            print(f"Built {args.errors} record errors in {time.perf_counter() - started:.0f} s")
        bench = Bench(args.repeat, args.only)
        print(f"p50/p95 of {args.repeat} requests each (after 2 warm-ups), as Acme; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        measure(bench)
        print_summary(bench.figures)
    finally:
        if not args.keep:
            database_drop(url)
    if args.json:
        from report import write_json  # bench/report.py: the shape bench/run.py collects

        write_json(as_report(bench.figures), args.json)
    return bench.figures


def figures(argv=None):
    """The figures in bench/report.py's shape, for bench/run.py (`make bench`)."""
    return as_report(main(argv))


def as_report(measured):
    from report import Figure

    return [Figure(bench="dashboards", measure=f"{name}: p95 (p50 {figure['p50_ms']} ms)", value=figure["p95_ms"],
                   unit="ms", target="" if figure["target_ms"] is None else f"p95 ≤ {figure['target_ms']} ms",
                   holds=None if figure["target_ms"] is None else figure["p95_ms"] <= figure["target_ms"])
            for name, figure in measured.items()]


if __name__ == "__main__":
    main()
