"""The browser UI in a real browser, as a new user meets it: Debian's chromium through Playwright against a live
server. Each page is checked with axe-core and saved as a screenshot in var/screenshots/."""

import re
from io import StringIO

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from accounts.management.commands.demo import PASSWORD, USERNAME
from accounts.models import Membership, Organization, Role
from mappings.models import Mapping
from syncs.models import RunStatus, SyncRun
from tests.ui.conftest import assert_no_horizontal_overflow, sync_history

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1400, "height": 900}


@pytest.fixture
def demo_world(make_mapping, make_connection):
    """The demo organization with a day of sync history, and a second organization its user may look at."""
    call_command("demo", stdout=StringIO())
    demo = Organization.objects.get(slug="demo")
    sync_history(demo, list(Mapping.objects.for_org(demo).order_by("name")))
    globex = Organization.objects.create(name="Globex", slug="globex")
    make_connection("Globex ERP", organization=globex)
    Membership.objects.create(user=demo.memberships.get().user, organization=globex, role=Role.VIEWER)
    return demo


def log_in(page, live_server):
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def test_a_user_logs_in_reads_the_overview_switches_organization_and_logs_out(page, live_server, demo_world, axe,
                                                                              screenshot, settings):
    settings.DEBUG = True  # as under `make run`: the login page tells a newcomer the demo's credentials
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    demo_account = page.get_by_role("complementary", name="Demo account")
    expect(demo_account).to_contain_text(f"Log in as {USERNAME} with the password {PASSWORD}")
    axe("the login page")
    screenshot("login")

    page.get_by_label("Username").fill(demo_account.locator("kbd").first.inner_text())
    page.get_by_label("Password").fill(demo_account.locator("kbd").last.inner_text())
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()

    # The error trend is drawn by Chart.js from the data the page handed over.
    page.wait_for_function("() => window.Chart && Chart.getChart(document.getElementById('error-trend-chart'))")
    bars = page.evaluate("() => Chart.getChart('error-trend-chart').data.datasets[0].data.reduce((a, b) => a + b)")
    assert bars == 2 * 12
    target = page.locator(".target-card", has_text="CRM (sandbox)")
    expect(target).to_contain_text("Unsynced")
    expect(page.get_by_role("region", name="Needs attention")).to_contain_text("Needs reauthentication")
    expect(page.get_by_role("region", name="Runs in progress")).to_contain_text("Running")
    assert_no_horizontal_overflow(page)
    axe("the overview")
    screenshot("overview")

    page.set_viewport_size(PHONE)
    assert_no_horizontal_overflow(page)
    screenshot("overview-phone")
    page.set_viewport_size(DESKTOP)

    page.get_by_label("Organization").select_option("globex")
    page.get_by_role("button", name="Switch").click()
    expect(page.get_by_text("You are now working in Globex.")).to_be_visible()
    expect(page.get_by_role("main")).to_contain_text("No mapping writes to a system yet")
    expect(page.get_by_role("main")).not_to_contain_text("CRM (sandbox)")
    axe("the overview of an organization without mappings")
    screenshot("overview-new-organization")

    page.locator("summary", has_text="account menu").click()
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))


def test_runs_in_progress_update_without_a_reload(page, live_server, demo_world):
    log_in(page, live_server)
    running = SyncRun.objects.get(organization=demo_world, status=RunStatus.RUNNING)
    section = page.get_by_role("region", name="Runs in progress")
    expect(section).to_contain_text("120")
    page.evaluate("() => { window.notReloaded = true; }")

    SyncRun.objects.filter(pk=running.pk).update(read=4321)

    expect(section).to_contain_text("4321", timeout=10_000)
    assert page.evaluate("() => window.notReloaded === true")
    SyncRun.objects.filter(pk=running.pk).update(status=RunStatus.SUCCEEDED)
    expect(section).to_contain_text("Nothing is running right now", timeout=10_000)
