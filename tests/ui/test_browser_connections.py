"""The connection pages in a real browser, as a new user meets them: Debian's chromium through Playwright against a
live server. The demo user adds a sandbox CRM and a PostgreSQL table, tests one, refreshes its schema and finds
both in the list; each page is checked with axe-core and saved as a screenshot in var/screenshots/."""

import re
from io import StringIO

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from accounts.management.commands.demo import PASSWORD, USERNAME
from integrations.models import Connection
from tests.ui.conftest import assert_no_horizontal_overflow

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1400, "height": 900}
API_KEY = "sk_test_browser_5521"


@pytest.fixture
def demo(db):
    call_command("demo", stdout=StringIO())


def log_in(page, live_server):
    page.goto(f"{live_server.url}/connections/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/connections/$"))
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Connections", level=1)).to_be_visible()


def test_a_user_adds_two_connections_tests_one_refreshes_its_schema_and_finds_them_listed(page, live_server, demo,
                                                                                          axe, screenshot):
    log_in(page, live_server)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Connections")).to_have_attribute("aria-current", "page")

    # A sandbox CRM: the provider's form is swapped in without leaving the page.
    page.get_by_role("button", name="Add a connection").click()
    expect(page.get_by_role("heading", name="Add a connection", level=1)).to_be_visible()
    page.evaluate("() => { window.notReloaded = true; }")
    page.get_by_role("link", name=re.compile(r"^Sandbox")).click()
    expect(page.get_by_role("heading", name="2. Connect Sandbox")).to_be_visible()
    assert page.evaluate("() => window.notReloaded === true")
    expect(page).to_have_url(re.compile(r"/connections/add/\?provider=sandbox$"))
    expect(page.get_by_label("Name")).to_be_focused()
    page.get_by_label("Name").fill("Sales CRM")
    page.get_by_label("Default phone country").fill("GB")
    page.get_by_label("API key").fill(API_KEY)
    expect(page.get_by_label("API key")).to_have_attribute("type", "password")
    axe("the add-a-connection page")
    screenshot("connection-add")
    page.get_by_role("button", name="Add connection").click()

    expect(page.get_by_role("heading", name="Sales CRM", level=1)).to_be_visible()
    expect(page.get_by_text("Sales CRM is added.")).to_be_visible()
    assert API_KEY not in page.content()

    # Test it: the status card is swapped with the check's result.
    status = page.get_by_role("region", name="Status")
    status.get_by_role("button", name="Test connection").click()
    expect(status.get_by_role("status")).to_contain_text("The connection works.")
    expect(status).not_to_contain_text("Never")

    # Refresh its schema: its objects, and each object's fields.
    page.get_by_role("button", name="Refresh schema").click()
    expect(page.get_by_text(re.compile(r"Schema refreshed: \d+ objects"))).to_be_visible()
    schema = page.get_by_role("region", name="Schema")
    schema.locator("summary", has_text="contacts").click()
    expect(schema.get_by_role("cell", name="email", exact=True).first).to_be_visible()
    assert_no_horizontal_overflow(page)
    axe("the connection's detail")
    screenshot("connection-detail")
    page.set_viewport_size(PHONE)
    assert_no_horizontal_overflow(page)
    page.set_viewport_size(DESKTOP)

    # A PostgreSQL table: a private address is refused next to its field, and the password is not shown back.
    nav.get_by_role("link", name="Connections").click()
    page.get_by_role("button", name="Add a connection").click()
    page.get_by_role("link", name=re.compile(r"^PostgreSQL table")).click()
    page.get_by_label("Name").fill("Warehouse customers")
    page.get_by_label("Host").fill("127.0.0.1")
    page.get_by_label("Database").fill("warehouse")
    page.get_by_label("User:", exact=True).fill("resync")
    page.get_by_label("Password").fill("pg-secret-8812")
    page.get_by_role("button", name="Add connection").click()
    expect(page.get_by_label("Host")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_text("private or reserved address")).to_be_visible()
    expect(page.get_by_label("Password")).to_have_value("")
    assert "pg-secret-8812" not in page.content()
    axe("the add form with errors")
    page.get_by_label("Host").fill("93.184.215.14")
    page.get_by_label("Password").fill("pg-secret-8812")
    page.get_by_role("button", name="Add connection").click()
    expect(page.get_by_role("heading", name="Warehouse customers", level=1)).to_be_visible()

    # The list: the demo's connections and the two new ones.
    nav.get_by_role("link", name="Connections").click()
    table = page.get_by_role("table")
    for name in ("Sales CRM", "Warehouse customers", "CRM (sandbox)", "Web shop (sandbox)"):
        expect(table).to_contain_text(name)
    expect(table.get_by_role("row", name=re.compile("Sales CRM"))).to_contain_text("Active")
    expect(table.get_by_role("row", name=re.compile("Warehouse customers"))).to_contain_text("PostgreSQL table")
    expect(table.get_by_role("row", name=re.compile(r"^CRM \(sandbox\)"))).to_contain_text("contacts")
    assert_no_horizontal_overflow(page)
    axe("the connections list")
    screenshot("connections")
    page.set_viewport_size(PHONE)
    assert_no_horizontal_overflow(page)
    screenshot("connections-phone")

    assert Connection.objects.get(name="Warehouse customers").credentials == {"password": "pg-secret-8812"}
