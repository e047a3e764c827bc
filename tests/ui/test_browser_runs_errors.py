"""Runs and errors in a real browser, as an operator meets them: the runs list, a run's detail with its live
progress, the errors dashboard with its filters, selection and bulk retries, the groups, and one error's
snapshots. Each page is checked with axe-core and saved as a screenshot in var/screenshots/."""

import re
from io import StringIO

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from accounts.management.commands.demo import PASSWORD, USERNAME
from accounts.models import Organization
from mappings.models import Mapping
from syncs.models import BulkAction, RecordError, RunStatus, SyncRun
from tests.ui.conftest import assert_no_horizontal_overflow, sync_history

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1400, "height": 900}


@pytest.fixture
def demo():
    """The demo organization with a day of sync history; one error carries its before and after snapshots."""
    call_command("demo", stdout=StringIO())
    demo = Organization.objects.get(slug="demo")
    sync_history(demo, list(Mapping.objects.for_org(demo).order_by("name")))
    error = RecordError.objects.for_org(demo).filter(
        error_code="invalid_email", mapping__name__startswith="Shop customers").order_by("-created_at").first()
    error.snapshot_before = {"id": error.source_record_id, "email": "olivia.bennett@example", "first_name": "Olivia",
                             "last_name": "Bennett", "phone": "(555) 010-2030"}
    error.snapshot_after = {"email": "olivia.bennett@example", "first_name": "Olivia", "last_name": "Bennett",
                            "phone": "+15550102030"}
    error.detail = 'HTTP 400 {"status": "error", "message": "Property values were not valid: email"}'
    error.save()
    return demo


def log_in(page, live_server):
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def fits_a_phone(page, name, screenshot=None):
    page.set_viewport_size(PHONE)
    assert_no_horizontal_overflow(page)
    if screenshot:
        screenshot(f"{name}-phone")
    page.set_viewport_size(DESKTOP)


def open_filter(page, label):
    """Open the filter dropdown named `label` as a user does, by its summary."""
    field = page.locator(".filter-field", has=page.get_by_text(label, exact=True))
    field.locator("summary").click()
    expect(field.locator("details")).to_have_attribute("open", "")


def test_an_operator_reads_runs_and_a_run_as_it_progresses(page, live_server, demo, axe, screenshot):
    log_in(page, live_server)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Runs").click()
    expect(page.get_by_role("heading", name="Runs", level=1)).to_be_visible()
    table = page.get_by_role("region", name="All runs")
    expect(table).to_contain_text("Partially failed")
    expect(table).to_contain_text("Running")
    assert_no_horizontal_overflow(page)
    axe("the runs list")
    screenshot("runs")
    fits_a_phone(page, "runs", screenshot)

    # Filter to the failed ones, then open one.
    open_filter(page, "Status")
    page.get_by_label("Partially failed").check()
    page.keyboard.press("Escape")  # closes the dropdown, as a click elsewhere would
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_role("region", name="Matching runs")).not_to_contain_text("Running")
    matching = page.get_by_role("region", name="Matching runs")
    matching.get_by_role("link", name=re.compile(r"^Run .* of Shop customers")).first.click()
    expect(page.get_by_role("heading", name=re.compile("Shop customers"), level=1)).to_be_visible()
    expect(page.get_by_role("region", name="Recovery")).to_contain_text("Not recovered yet")
    expect(page.get_by_role("button", name="Retry failures")).to_be_visible()
    assert_no_horizontal_overflow(page)
    axe("a run's detail")
    screenshot("run-detail")
    fits_a_phone(page, "run-detail")

    page.get_by_role("navigation", name="Run").get_by_role("link", name=re.compile("^Errors")).click()
    expect(page.get_by_role("region", name="Errors of this run")).to_contain_text("Invalid email address")
    axe("a run's errors tab")

    # A running run's counts move without a reload, and the polling stops when it finishes.
    running = SyncRun.objects.get(organization=demo, status=RunStatus.RUNNING)
    page.goto(f"{live_server.url}/runs/{running.code}/")
    progress = page.get_by_role("region", name="Progress")
    expect(progress).to_contain_text("120")
    page.evaluate("() => { window.notReloaded = true; }")
    SyncRun.objects.filter(pk=running.pk).update(read=4321)
    expect(progress).to_contain_text("4321", timeout=10_000)
    SyncRun.objects.filter(pk=running.pk).update(status=RunStatus.SUCCEEDED)
    expect(progress.locator(".live-indicator")).to_have_count(0, timeout=10_000)
    expect(progress).to_contain_text("Succeeded")
    assert page.evaluate("() => window.notReloaded === true")


def test_an_operator_filters_selects_retries_and_reads_an_error(page, live_server, demo, axe, screenshot):
    log_in(page, live_server)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Errors").click()
    expect(page.get_by_role("heading", name="Errors", level=1)).to_be_visible()
    expect(page.get_by_role("region", name="Errors")).to_contain_text("24 errors match")
    assert_no_horizontal_overflow(page)
    axe("the errors dashboard")
    screenshot("errors")
    fits_a_phone(page, "errors", screenshot)

    # Filter: validation errors only.
    open_filter(page, "Category")
    page.get_by_label("Validation").check()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Apply filters").click()
    errors = page.get_by_role("region", name="Errors")
    expect(errors).to_contain_text("12 errors match")
    expect(errors).not_to_contain_text("Too Many Requests")

    # Select two and retry them.
    expect(page.get_by_role("button", name="Retry selected")).to_be_disabled()
    boxes = page.get_by_role("checkbox", name=re.compile("^Select the error of record"))
    boxes.nth(0).check()
    boxes.nth(1).check()
    expect(page.locator("#bulk-count")).to_have_text("2 selected")
    page.get_by_role("button", name="Retry selected").click()
    expect(page.locator(".messages")).to_contain_text(re.compile(r"Retrying 2 errors|Nothing was retried"))
    expect(page.get_by_label("Validation")).to_be_checked()  # back on the filtered list

    # Select all on the page, then clear.
    page.get_by_role("checkbox", name="Select every error on this page").check()
    expect(page.locator("#bulk-count")).to_have_text(re.compile(r"^\d+ selected$"))
    page.get_by_role("checkbox", name="Select every error on this page").uncheck()
    expect(page.locator("#bulk-count")).to_have_text("None selected")

    # Retry everything matching, after a confirmation that says how many.
    page.get_by_role("button", name="Retry all matching…").click()
    expect(page.get_by_role("heading", name=re.compile(r"^\d+ errors? will be retried$"))).to_be_visible()
    expect(page.get_by_role("main")).to_contain_text("Validation")
    axe("the retry confirmation")
    page.get_by_role("button", name=re.compile(r"^Retry \d+ errors?$")).click()
    # The action's own page follows it (the worker runs inline here, so it is done at once), and leads back.
    expect(page.get_by_role("heading", name="Retry every matching error", level=1)).to_be_visible()
    expect(page.locator("#bulk-action-status")).to_contain_text("Errors queued for a retry")
    assert BulkAction.objects.filter(organization=demo, kind="retry").exists()
    axe("a bulk action's page")
    page.locator(".breadcrumb").get_by_role("link", name="Errors").click()
    expect(page.get_by_role("heading", name="Errors", level=1)).to_be_visible()

    # The groups.
    page.get_by_role("link", name="Grouped by cause").click()
    expect(page.get_by_role("region", name="Error groups")).to_contain_text("Validation")
    page.get_by_role("link", name="Reset").click()
    expect(page.get_by_role("button", name=re.compile("^Retry group")).first).to_be_visible()
    assert_no_horizontal_overflow(page)
    axe("the error groups")
    screenshot("error-groups")
    fits_a_phone(page, "error-groups")

    # One error: its message, its snapshots side by side with the differences marked.
    demo_error = RecordError.objects.get(organization=demo, snapshot_before__email="olivia.bennett@example")
    page.goto(f"{live_server.url}/errors/?filtered=1&search=olivia")
    errors = page.get_by_role("region", name="Errors")
    errors.locator(f'a.message-link[href="/errors/{demo_error.code}/"]').click()
    expect(page.get_by_role("heading", name=re.compile("Validation error on record"), level=1)).to_be_visible()
    snapshots = page.get_by_role("region", name="Before and after")
    expect(snapshots).to_contain_text("olivia.bennett@example")
    expect(snapshots.locator("tr.differs")).to_have_count(1)  # the phone, which phone_e164 rewrote
    expect(snapshots.locator("tr.differs")).to_contain_text("+15550102030")
    expect(snapshots).to_contain_text("not mapped")  # the source's id, which no field mapping writes
    page.get_by_text("Technical detail").click()
    expect(page.get_by_text("Property values were not valid")).to_be_visible()
    assert_no_horizontal_overflow(page)
    axe("an error's detail")
    screenshot("error-detail")
    fits_a_phone(page, "error-detail")

    # Ignoring needs a reason.
    page.get_by_role("button", name="Ignore with this reason").click()
    expect(page.get_by_text("This field is required.")).to_be_visible()
    page.get_by_label("Reason").fill("A test customer")
    page.get_by_role("button", name="Ignore with this reason").click()
    expect(page.locator(".messages")).to_contain_text("Ignored")
    expect(page.get_by_role("main")).to_contain_text("A test customer")
