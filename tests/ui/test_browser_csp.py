"""The pages work under their Content-Security-Policy in a real browser: no "Refused to ..." in the console and no
securitypolicyviolation event on any UI page (found in the URLconf, so pages added later are walked too), the
admin or the API docs, while what needs JavaScript still does (the overview's chart, htmx polls and posts, the
admin's actions, Swagger UI). And the mapping editor's live preview: a late answer to an older request never
overwrites the newer preview (hx-sync)."""

import contextlib
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from accounts.management.commands.demo import PASSWORD, USERNAME
from accounts.models import Organization
from config.ui_pages import ui_pages
from mappings.models import Mapping
from notifications.alerts import notify_run_finished
from notifications.models import ChannelKind, Condition
from notifications.services import channel_create, rule_create
from syncs.models import BulkAction, BulkActionKind, BulkActionStatus, RecordError, RunStatus, SyncRun
from tests.ui.conftest import sync_history

pytestmark = pytest.mark.django_db(transaction=True)

# Added before any page script runs (through the devtools, so the policy does not apply to it).
WATCH_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`
                              + ` at ${event.sourceFile}:${event.lineNumber}`);
});
"""


@pytest.fixture
def demo():
    call_command("demo", stdout=StringIO())
    demo = Organization.objects.get(slug="demo")
    sync_history(demo, list(Mapping.objects.for_org(demo).order_by("name")))
    error = RecordError.objects.for_org(demo).filter(error_code="invalid_email").order_by("pk").first()
    error.snapshot_before = {"id": error.source_record_id, "email": "olivia.bennett@example"}
    error.snapshot_after = {"email": "olivia.bennett@example"}
    error.save()
    BulkAction.objects.create(organization=demo, kind=BulkActionKind.RETRY, status=BulkActionStatus.SUCCEEDED,
                              selection={"filter": {}}, summary={"queued": 0, "runs": [], "skipped": {}})
    # Settings → Notifications' pages: a channel, a rule routed to it, and the alert a failed run opened.
    channel, _ = channel_create(organization=demo, name="Ops", kind=ChannelKind.EMAIL, recipients=["ops@example.org"])
    rule_create(organization=demo, name="Runs failing", condition=Condition.RUN_FAILED, channels=[channel])
    notify_run_finished(SyncRun.objects.for_org(demo).filter(status=RunStatus.FAILED).order_by("pk").first())
    return demo


@pytest.fixture
def violations(page):
    """violations(): what the policy refused on the current page so far (console messages and events)."""
    page.add_init_script(WATCH_VIOLATIONS)
    console = []
    page.on("console", lambda message: console.append(message.text)
            if "Content Security Policy" in message.text or message.text.startswith("Refused to") else None)

    def found():
        events = page.evaluate("() => window.__cspViolations || []")
        return [*console, *events]

    return found


def log_in(page, live_server):
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def test_every_ui_page_works_under_the_policy(page, live_server, demo, violations, axe):
    log_in(page, live_server)
    assert violations() == [], "login"

    # The overview: the chart is drawn, and the runs in progress come back through htmx.
    page.wait_for_function("() => window.Chart && Chart.getChart(document.getElementById('error-trend-chart'))")
    with page.expect_response(lambda response: "/overview/runs-in-progress/" in response.url, timeout=15_000):
        pass
    assert violations() == [], "overview"

    # Actions (POST only) answer a GET with an empty 405, which the browser shows as its own error page.
    client = Client()
    client.force_login(demo.memberships.get().user)
    visited, checked = [], []
    for ui_page in ui_pages(demo):
        if ui_page.skipped or client.get(ui_page.url).status_code == 405:
            continue
        response = page.goto(f"{live_server.url}{ui_page.url}")
        assert response.status == 200, (ui_page.name, response.status)
        assert response.headers.get("content-security-policy"), ui_page.name
        page.wait_for_load_state("load")
        assert violations() == [], ui_page.name
        # And every page passes axe-core (no serious or critical violation); htmx's partials (a run's progress,
        # the runs in progress) are parts of pages, checked within them, not documents of their own.
        if page.evaluate("() => document.querySelector('main') !== null"):
            axe(ui_page.name)
            checked.append(ui_page.name)
        visited.append(ui_page.name)
    assert {"home", "connections:list", "mappings:list", "mappings:edit", "runs", "run_detail", "errors",
            "error_groups", "error_detail", "notifications:channel_detail", "notifications:alert_detail",
            "notifications:delivery_detail"} <= set(visited)
    assert set(visited) - set(checked) == {"run_progress", "runs_in_progress", "error_groups_progress",
                                           "review_error_outcome"}  # the partials, and nothing else

    # htmx posts (with the CSRF header) and swaps under the policy: an error's replay preview.
    error = RecordError.objects.for_org(demo).filter(snapshot_before__isnull=False).first()
    page.goto(f"{live_server.url}/errors/{error.code}/")
    page.get_by_role("button", name="Preview the retry").click()
    expect(page.locator("#replay-preview")).not_to_be_empty(timeout=15_000)
    # And the mapping editor's live preview.
    mapping = Mapping.objects.for_org(demo).order_by("name").last()
    page.goto(f"{live_server.url}/mappings/{mapping.code}/edit/")
    page.locator("#fm-0-sample").fill("  Ada@Example.com ")
    expect(page.locator("#fm-0-preview")).to_contain_text("Ada@Example.com")
    assert violations() == [], "htmx posts"

    # The watch itself sees a refusal when there is one: an inline script the policy must refuse.
    page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
                  " document.body.append(s); }")
    page.wait_for_function("() => window.__cspViolations.length > 0")
    assert any("script-src" in line for line in violations())
    assert page.evaluate("() => window.ran") is None


def test_the_admin_works_under_the_policy(page, live_server, demo, violations):
    log_in(page, live_server)
    for path in ("/admin/", "/admin/syncs/recorderror/", "/admin/integrations/connection/add/",
                 f"/admin/mappings/mapping/{Mapping.objects.for_org(demo).first().pk}/change/"):
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        assert response.headers.get("content-security-policy"), path
        assert violations() == [], path

    # The changelist's actions are scripted (admin/js/actions.js): selecting every row updates the counter.
    page.goto(f"{live_server.url}/admin/syncs/recorderror/")
    page.locator("#action-toggle").check()
    expect(page.locator(".action-counter")).to_contain_text(" of ")
    expect(page.locator(".action-counter")).not_to_contain_text("0 of")
    assert violations() == [], "admin actions"


def test_the_api_docs_work_under_their_policy(page, live_server, demo, violations):
    log_in(page, live_server)
    response = page.goto(f"{live_server.url}/api/v1/docs/")
    assert "unsafe" not in response.headers["content-security-policy"]
    expect(page.locator(".opblock").first).to_be_visible(timeout=15_000)  # Swagger UI drew the operations
    assert violations() == [], "api docs"


def test_the_editor_preview_keeps_the_newest_answer(page, live_server, demo):
    """The first preview request is held back by the test and answered after the second: without hx-sync its late
    answer would overwrite the newer preview."""
    log_in(page, live_server)
    mapping = Mapping.objects.for_org(demo).order_by("name").last()
    page.goto(f"{live_server.url}/mappings/{mapping.code}/edit/")
    held = []

    def hold_first(route):
        if not held:
            held.append(route)  # answered below, after the newer request's answer is on the page
        else:
            route.continue_()

    page.route("**/mappings/preview/", hold_first)
    sample = page.locator("#fm-0-sample")
    sample.fill("old@example.com")
    page.wait_for_function("() => document.querySelector('.htmx-request')")  # the first request is in flight
    sample.fill("new@example.com")
    preview = page.locator("#fm-0-preview")
    expect(preview).to_contain_text("new@example.com")

    # htmx has aborted it (what hx-sync is for): answering it may fail, and must change nothing if it does not.
    with contextlib.suppress(PlaywrightError):
        held[0].continue_()
    page.wait_for_timeout(1000)
    expect(preview).to_contain_text("new@example.com")
    expect(preview).not_to_contain_text("old@example.com")


def test_a_bulk_actions_page_follows_it_until_done(page, live_server, demo, violations, axe):
    action = BulkAction.objects.create(organization=demo, kind=BulkActionKind.IGNORE, selection={"filter": {}})
    log_in(page, live_server)
    page.goto(f"{live_server.url}/errors/bulk/{action.code}/")
    status = page.locator("#bulk-action-status")
    expect(status).to_contain_text("Waiting for a worker")
    axe("a bulk action's page")

    BulkAction.objects.filter(pk=action.pk).update(status=BulkActionStatus.SUCCEEDED,
                                                   summary={"closed": 7, "skipped": {"already_resolved": 2}})

    expect(status).to_contain_text("Errors ignored", timeout=10_000)
    expect(status).to_contain_text("7")
    expect(page.get_by_role("link", name="Back to the errors")).to_be_visible()
    assert violations() == []
