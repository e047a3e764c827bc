"""Every page of the browser UI renders in a number of queries that does not grow with the organization's data.

The pages are found in the URLconf (config/ui_pages.py), so a page added later is bounded without being listed
here. Each is rendered once over a day of history, then again after the organization has grown several times
over (more connections, mappings, runs, errors, batches of the same run, earlier errors of the same record, bulk
actions): the second count must equal the first (within SLACK) and stay under CEILING.
"""

from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import TokenRole
from accounts.services import api_token_create
from config.ui_pages import OrgObjects, ui_pages
from notifications.alerts import notify_run_finished
from notifications.models import Alert, AlertState, ChannelKind, Condition
from notifications.services import channel_create, channel_send_test, rule_create
from syncs.models import BulkAction, BulkActionKind, BulkActionStatus, RecordError, RunStatus, SyncBatch, SyncRun

CEILING = 40
# A page may run one or two more queries once a section it shows becomes non-empty (a second page link, a
# "more than" notice); it may not run one per row.
SLACK = 2

# The pages that must be among those found: if discovery broke, the test would otherwise pass on nothing.
MAIN_PAGES = {"home", "runs", "run_detail", "errors", "error_groups", "error_detail", "connections:list",
              "connections:detail", "mappings:list", "mappings:edit", "mappings:detail", "login",
              "notifications:channels", "notifications:channel_detail", "notifications:rules",
              "notifications:alerts", "notifications:alert_detail", "notifications:delivery_detail"}


def bulk_action(org, status=BulkActionStatus.SUCCEEDED):
    return BulkAction.objects.create(organization=org, kind=BulkActionKind.RETRY, status=status,
                                     selection={"filter": {"status": ["open"]}},
                                     summary={"retried": 3, "runs": [], "skipped": {}})


def notifications_of(org, number):
    """Settings → Notifications' material: a channel, a rule routed to it, and the alert a failed run opened with
    its delivery (pending: no worker sends it here)."""
    channel, _ = channel_create(organization=org, name=f"Ops {number}", kind=ChannelKind.EMAIL,
                                recipients=["ops@example.org"])
    rule = rule_create(organization=org, name=f"Run failed {number}", condition=Condition.RUN_FAILED,
                       channels=[channel])
    for run in SyncRun.objects.for_org(org).filter(status=RunStatus.FAILED).order_by("pk")[:1]:
        notify_run_finished(run)
    return channel, rule


def query_counts(client, pages):
    """{route name: (status, number of queries)} of a GET of each page; the first GET of each is a warm-up (caches
    of content types, the session's first write) and is not counted."""
    counts = {}
    for page in pages:
        client.get(page.url)
        with CaptureQueriesContext(connection) as captured:
            response = client.get(page.url)
        counts[page.name] = (response.status_code, len(captured.captured_queries))
    return counts


def grow(org, objects, history_of):
    """Several times the organization's data, some of it on the very objects the detail pages show."""
    for number in range(3):
        history_of(org, f"Grown {number}", failed_records=6)
    run, error = objects.get("run"), objects.get("error")
    RecordError.objects.bulk_create(
        RecordError(organization=org, run=run, mapping=run.mapping, category="validation", error_code=f"more_{n}",
                    message="Another failure", source_record_id=f"more-{n}", fingerprint=f"{n:040d}")
        for n in range(60))
    for sequence in range(100, 140):
        SyncBatch.objects.create(organization=org, run=run, sequence=sequence, status="succeeded", record_count=5)
    # The same record failing again and again: the error page lists its earlier errors.
    RecordError.objects.bulk_create(
        RecordError(organization=org, run=error.run, mapping=error.mapping, category=error.category,
                    error_code=error.error_code, message=error.message, source_record_id=error.source_record_id,
                    fingerprint=error.fingerprint)
        for _ in range(20))
    for _ in range(10):
        bulk_action(org)
        api_token_create(organization=org, name="grown", role=TokenRole.VIEWER)
    # More channels, rules and alerts, and more deliveries and alerts of the very channel and rule shown.
    for number in range(1, 4):
        notifications_of(org, number)
    channel, rule = objects.get("channel"), objects.get("rule")
    for _ in range(5):
        channel_send_test(channel=channel)
    for run in SyncRun.objects.for_org(org).filter(status=RunStatus.FAILED).order_by("pk")[:5]:
        Alert.objects.filter(rule=rule, state=AlertState.FIRING).update(state=AlertState.RESOLVED,
                                                                        resolved_at=run.finished_at)
        notify_run_finished(run)


def test_every_ui_page_renders_in_queries_that_do_not_grow_with_data(client, alice, org, history_of):
    history_of(org, "Acme")
    bulk_action(org)
    api_token_create(organization=org, name="ci", role=TokenRole.VIEWER)
    notifications_of(org, 0)
    objects = OrgObjects(org)
    found = ui_pages(org, objects)
    skipped = [f"{page.name}: {page.skipped}" for page in found if page.skipped]
    assert not skipped, "pages without a URL (extend config/ui_pages.py or this test's data):\n" + "\n".join(skipped)
    client.force_login(alice)

    before = query_counts(client, found)
    pages = [page for page in found if before[page.name][0] != 405]  # 405: an action (POST only), not a page
    assert {page.name for page in pages} >= MAIN_PAGES, MAIN_PAGES - {page.name for page in pages}
    grow(org, objects, history_of)
    after = query_counts(client, pages)

    problems = []
    for page in pages:
        (status, first), (status_after, second) = before[page.name], after[page.name]
        if status not in (200, 302) or status_after != status:
            problems.append(f"{page.name} {page.url}: answered {status}, then {status_after}")
        elif second > first + SLACK or second > CEILING:
            problems.append(f"{page.name} {page.url}: {first} queries, {second} with more data (ceiling {CEILING})")
    assert not problems, "\n".join(problems)
