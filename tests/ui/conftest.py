"""The browser UI's tests: a day of sync history to look at, and real-browser fixtures.

`sync_history(org)` gives an organization what the overview shows: finished runs over the last day, open record
errors in groups, links synced and failed, a run in progress, a paused mapping and a connection that needs
reauthentication. The browser tests drive Debian's chromium through Playwright (pytest-playwright's `page`
fixture) against pytest-django's `live_server`, check each page with axe-core (vendored in vendor/) and save
screenshots to var/screenshots/.
"""

import hashlib
import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

CHROMIUM = Path("/usr/bin/chromium")
# Debian's chromium as root in a container: no sandbox, no GPU, and nothing that phones home during a test.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = settings.VAR_DIR / "screenshots"
AXE_SCRIPT = Path(__file__).parent / "vendor" / "axe.min.js"
BLOCKING_IMPACTS = ("serious", "critical")


def pytest_collection_modifyitems(config, items):
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    for item in items:
        if "page" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    # Playwright's sync API keeps an event loop in the test thread for the rest of the session, and Django
    # refuses database calls next to a running loop. The loop only drives the browser, so it is safe here.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    # `channel` cannot pick Debian's chromium: it is named by path (the wheel brings no browser of its own).
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 900}}


@pytest.fixture
def axe(page):
    """check(name): run axe-core on the page as it is now and fail on any serious or critical violation.

    The script is added as an init script (through the browser's devtools, like Playwright's own), so it needs
    no inline <script> on the page and a Content-Security-Policy does not stand in its way.
    """
    page.add_init_script(path=str(AXE_SCRIPT))

    def check(name):
        results = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
        blocking = [violation for violation in results["violations"] if violation["impact"] in BLOCKING_IMPACTS]
        assert not blocking, f"axe on {name}:\n" + "\n".join(
            f"- {v['impact']} {v['id']}: {v['help']} ({len(v['nodes'])}×, e.g. {v['nodes'][0]['target']})"
            for v in blocking)

    return check


@pytest.fixture
def screenshot(page):
    """screenshot(name): the whole page as var/screenshots/<name>.png (CI keeps them as artifacts)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name):
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def assert_no_horizontal_overflow(page):
    """The page does not scroll sideways at its current viewport (wide tables scroll inside their card)."""
    fits = "() => document.documentElement.scrollWidth <= window.innerWidth"
    try:
        # Charts resize on a ResizeObserver callback, a frame or two after the viewport changed.
        page.wait_for_function(fits, timeout=3000)
    except PlaywrightTimeoutError:
        width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        raise AssertionError(f"the page is {width[0]} px wide in a {width[1]} px viewport") from None


# --- a day of sync history -------------------------------------------------------------------------------------

# category, code, field, message: each row is one error group of a partially failed run.
ERROR_GROUPS = [
    ("validation", "invalid_email", "email", "Invalid email address: 'olivia.bennett@example'"),
    ("validation", "too_long", "company", "Value is longer than 80 characters"),
    ("rate_limit", "429", "", "The CRM answered 429 Too Many Requests (Retry-After 5 s)"),
    ("duplicate", "already_exists", "email", "A contact with this email already exists"),
]


def sync_history(org, mappings, *, failed_records=3, now=None):
    """Give `org` the overview's material for `mappings` (at least two): see the module's docstring.

    failed_records errors per group, so a test can grow the data without changing its shape.
    """
    from integrations.models import ConnectionStatus
    from syncs.models import ErrorLevel, ErrorStatus, LinkStatus, RecordError, RecordLink, RunStatus, SyncRun, Trigger
    from syncs.pause import mapping_pause

    now = now or timezone.now()
    for position, mapping in enumerate(mappings):
        finished = [(RunStatus.SUCCEEDED, 0), (RunStatus.PARTIALLY_FAILED, failed_records * len(ERROR_GROUPS)),
                    (RunStatus.FAILED, 5)]
        for hours_ago, (status, failed) in enumerate(finished, start=1):
            when = now - timedelta(hours=hours_ago * 3)
            run = SyncRun.objects.create(
                organization=org, mapping=mapping, trigger=Trigger.SCHEDULE, status=status, read=40,
                created=25, updated=10 - min(failed, 10), unchanged=5, failed=failed,
                started_at=when - timedelta(minutes=2), finished_at=when,
                system_error="The CRM did not answer" if status == RunStatus.FAILED else "",
            )
            SyncRun.objects.filter(pk=run.pk).update(queued_at=when - timedelta(minutes=3))
            if status != RunStatus.PARTIALLY_FAILED:
                continue
            for category, code, field, message in ERROR_GROUPS:
                for number in range(failed_records):
                    record_id = f"{mapping.pk}-{code}-{number}"
                    error = RecordError.objects.create(
                        organization=org, run=run, mapping=mapping, level=ErrorLevel.RECORD, category=category,
                        error_code=code, field=field, message=message, source_record_id=record_id,
                        fingerprint=hashlib.sha1(f"{mapping.pk}|{code}|{field}".encode()).hexdigest(),
                        status=ErrorStatus.RETRY_SCHEDULED if category == "rate_limit" else ErrorStatus.OPEN,
                    )
                    RecordError.objects.filter(pk=error.pk).update(created_at=when - timedelta(minutes=number))
                    RecordLink.objects.create(organization=org, mapping=mapping, source_record_id=record_id,
                                              status=LinkStatus.FAILED, last_error=error)
        for number in range(5):
            RecordLink.objects.create(organization=org, mapping=mapping, source_record_id=f"{mapping.pk}-ok-{number}",
                                      target_record_id=f"crm-{mapping.pk}-{number}", status=LinkStatus.SYNCED,
                                      last_synced_at=now)
        if position == 0:
            SyncRun.objects.create(organization=org, mapping=mapping, trigger=Trigger.MANUAL,
                                   status=RunStatus.RUNNING, read=120, created=80, updated=12, failed=2,
                                   started_at=now)
    mapping_pause(mapping=mappings[-1], reason="Paused after 3 failed runs in a row; last: The CRM did not answer")
    source = mappings[0].source_connection
    source.status, source.status_reason = ConnectionStatus.NEEDS_REAUTH, "The shop refused the API key (401)"
    source.save(update_fields=["status", "status_reason"])


@pytest.fixture
def history_of(make_mapping, make_connection):
    """history_of(org, name): two mappings of `org` from "<name> shop" to "<name> CRM", with sync_history."""

    def build(org, name, **options):
        shop = make_connection(f"{name} shop", organization=org)
        crm = make_connection(f"{name} CRM", organization=org)
        mappings = []
        for what in ("contacts", "companies"):
            mapping = make_mapping(source=shop, target=crm, organization=org)
            mapping.name = f"{name} {what}"
            mapping.save(update_fields=["name"])
            mappings.append(mapping)
        sync_history(org, mappings, **options)
        return mappings

    return build
