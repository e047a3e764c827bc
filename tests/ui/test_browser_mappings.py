"""The mapping pages in a real browser, as a new user builds a mapping: the list, the editor with transforms and
their live preview, saving, a test sync with its planned actions, and run now. Each page is checked with axe-core
and saved as a screenshot."""

import re
from io import StringIO

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from accounts.management.commands.demo import PASSWORD, USERNAME
from mappings.models import Mapping
from syncs.models import SyncRun
from tests.ui.conftest import assert_no_horizontal_overflow

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1400, "height": 900}


def settled(page):
    """Wait for the editor's htmx requests to be answered: a choice re-renders the editor with what was typed."""
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, .htmx-added')")


def log_in(page, live_server):
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def test_a_user_builds_a_mapping_previews_it_tests_it_and_runs_it(page, live_server, axe, screenshot):
    call_command("demo", stdout=StringIO())
    log_in(page, live_server)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Mappings").click()
    expect(page.get_by_role("heading", name="Mappings", level=1)).to_be_visible()
    expect(page.get_by_role("main")).to_contain_text("Shop customers → CRM contacts")
    assert_no_horizontal_overflow(page)
    axe("the mappings list")
    screenshot("mappings")

    page.get_by_role("button", name="New mapping").click()
    editor = page.locator("#mapping-editor")
    page.get_by_label("Name").fill("Shop contacts → CRM, cleaned")
    page.get_by_label("Source connection").select_option(label="Web shop (sandbox)")
    settled(page)
    expect(page.locator("select#id_source_object")).to_be_visible()  # the objects of the shop, from its schema
    page.locator("select#id_source_object").select_option("contacts")
    settled(page)
    expect(page.locator("select#fm-0-source_field")).to_contain_text("first_name")  # the shop's contact fields
    page.get_by_label("Target connection").select_option(label="CRM (sandbox)")
    settled(page)
    expect(page.locator("select#id_target_object")).to_be_visible()
    page.locator("select#id_target_object").select_option("contacts")
    settled(page)
    expect(page.locator("select#fm-0-target_field")).to_contain_text("first_name")  # the CRM's contact fields

    # Email: trimmed and lowercased, previewed on a sample.
    page.locator("#fm-0-source_field").select_option("email")
    settled(page)
    page.locator("#fm-0-target_field").select_option("email")
    page.get_by_role("button", name="Add a transform to field mapping 1").click()
    settled(page)
    expect(page.locator("#fm-0-t-0-name")).to_be_focused()
    page.get_by_role("button", name="Add a transform to field mapping 1").click()
    settled(page)
    page.locator("#fm-0-t-1-name").select_option("lowercase")
    settled(page)
    expect(page.locator("#fm-0-t-1-name")).to_have_value("lowercase")
    page.locator("#fm-0-sample").fill("  Ada@Example.COM ")
    expect(page.locator("#fm-0-preview")).to_contain_text("“ada@example.com”")

    # Names: first and last, the last truncated; a bad argument is explained in the preview.
    for row, name in ((1, "first_name"), (2, "last_name")):
        page.get_by_role("button", name="Add a field mapping").click()
        settled(page)
        expect(page.locator(f"#fm-{row}-source_field")).to_be_focused()
        page.locator(f"#fm-{row}-source_field").select_option(name)
        settled(page)
        page.locator(f"#fm-{row}-target_field").select_option(name)
    page.get_by_role("button", name="Add a transform to field mapping 3").click()
    settled(page)
    page.locator("#fm-2-t-0-name").select_option("truncate")
    expect(page.locator("#fm-2-t-0-length")).to_be_visible()
    page.locator("#fm-2-sample").fill("Lovelace")
    page.locator("#fm-2-t-0-length").fill("none")
    expect(page.locator("#fm-2-preview")).to_contain_text("length must be a whole number")
    page.locator("#fm-2-t-0-length").fill("3")
    expect(page.locator("#fm-2-preview")).to_contain_text("“Lov”")

    page.get_by_role("button", name="Add a match key").click()
    settled(page)
    page.locator("#mk-0-source").select_option("email")
    page.locator("#mk-0-target").select_option("email")
    settled(page)
    expect(page.locator("#mk-0-target")).to_have_value("email")
    assert_no_horizontal_overflow(page)
    axe("the mapping editor")
    screenshot("mapping-editor")
    page.set_viewport_size(PHONE)
    assert_no_horizontal_overflow(page)
    page.set_viewport_size(DESKTOP)
    expect(editor).to_be_visible()

    page.get_by_role("button", name="Create mapping").click()
    expect(page.get_by_text("Shop contacts → CRM, cleaned is created.")).to_be_visible()
    mapping = Mapping.objects.get(name="Shop contacts → CRM, cleaned")
    assert [fm.target_field for fm in mapping.field_mappings.all()] == ["email", "first_name", "last_name"]
    assert mapping.field_mappings.get(target_field="last_name").transforms == [
        {"name": "truncate", "args": {"length": 3}}]

    page.get_by_role("button", name="Test sync").click()
    result = page.locator("#test-sync-result")
    expect(result.locator("table")).to_be_visible(timeout=30_000)
    expect(result).to_contain_text(re.compile(r"Create|Update"))
    expect(result.locator("tbody tr").first).to_contain_text("Ben")  # Bennett, truncated to 3 as the row says
    expect(result.locator("tbody tr").first).not_to_contain_text("Bennett")
    assert not SyncRun.objects.filter(mapping=mapping, is_test=False).exists()
    assert_no_horizontal_overflow(page)
    axe("the mapping's test sync")
    screenshot("mapping-test-sync")

    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_text(re.compile(r"A run of Shop contacts → CRM, cleaned is queued"))).to_be_visible(
        timeout=60_000)
    expect(page.get_by_role("region", name="Recent runs").locator("tbody tr")).to_have_count(1)
    assert SyncRun.objects.filter(mapping=mapping, is_test=False, trigger="manual").count() == 1
