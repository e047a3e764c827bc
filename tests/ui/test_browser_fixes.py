"""Suggested fixes in a real browser, as an operator meets them: the error groups page shows why records fail and
the fix with what it changes in the mapping; one click applies it and the group recovers, its records really
synced by the sandbox CRM (tasks run inline, tests/conftest.py). Each page is checked with axe-core and saved as a
screenshot in var/screenshots/."""

import re

import pytest
from playwright.sync_api import expect

from accounts.models import Membership, Role
from integrations.connectors.sandbox import seed_records
from mappings.models import FieldMapping
from tests.syncs.helpers import person, records, run_mapping
from tests.ui.test_browser_runs_errors import fits_a_phone

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "fixes-password"


@pytest.fixture
def operator(org, django_user_model):
    user = django_user_model.objects.create_user("olga", "olga@example.org", PASSWORD)
    Membership.objects.create(user=user, organization=org, role=Role.MEMBER)
    return user


@pytest.fixture
def failing_contacts(make_mapping):
    """A shop → CRM contacts mapping whose last sync failed two ways: punctuated phones the CRM refuses (it
    wants E.164) and empty last names it requires."""
    mapping = make_mapping()
    mapping.name = "Shop customers → CRM contacts"
    mapping.save(update_fields=["name"])
    seed_records(mapping.source_connection, "contacts", [
        *[person(n, phone=f"(415) 555-01{n:02d}") for n in range(1, 4)],
        person(4, last_name=""), person(5, last_name=""),
    ])
    run_mapping(mapping)
    return mapping


def log_in(page, live_server):
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill("olga")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def test_an_operator_applies_the_suggested_fixes_and_the_groups_recover(
    page, live_server, operator, failing_contacts, axe, screenshot
):
    mapping = failing_contacts
    log_in(page, live_server)
    page.goto(f"{live_server.url}/errors/groups/")
    groups = page.get_by_role("region", name="Error groups")
    expect(groups).to_contain_text("invalid_phone")
    expect(groups).to_contain_text("Suggested fix: Format the phone numbers as E.164")
    # What it would change: the phone field mapping's transforms, before and after.
    change = page.get_by_role("table", name=re.compile("Format the phone numbers as E.164"))
    expect(change.get_by_role("row", name=re.compile("phone → phone"))).to_contain_text("trim › phone_e164")
    expect(groups).to_contain_text("Suggested fix: Write a default when the value is empty")
    axe("the error groups with their suggested fixes")
    screenshot("error-groups-fixes")
    fits_a_phone(page, "error-groups-fixes", screenshot)

    # One click: the mapping gains phone_e164, one record is retried first, then the other two.
    page.get_by_role("button", name=re.compile("^Apply fix: Format the phone numbers as E.164")).click()

    expect(page.get_by_text("The group has recovered: every record of it synced.")).to_be_visible()
    retried = page.get_by_role("region", name="Groups retried lately")
    expect(retried).to_contain_text("Recovered")
    expect(retried).to_contain_text("invalid_phone")
    expect(page.get_by_role("region", name="Error groups")).not_to_contain_text("invalid_phone")
    assert FieldMapping.objects.get(mapping=mapping, target_field="phone").transforms[-1]["name"] == "phone_e164"
    assert sorted(r.data["phone"] for r in records(mapping.target_connection)) == [
        "+14155550101", "+14155550102", "+14155550103"]
    axe("the error groups after a fix")
    screenshot("error-groups-fix-recovered")

    # A fix that needs a value: a bad one is refused next to its field, a good one recovers the group.
    value = page.get_by_label("Default value")
    value.fill("x" * 41)
    page.get_by_role("button", name=re.compile("^Apply fix: Write a default")).click()
    expect(page.get_by_role("alert")).to_contain_text("the target allows 40")
    expect(page.get_by_label("Default value")).to_have_value("x" * 41)
    axe("a refused fix")
    page.get_by_label("Default value").fill("Unknown")
    page.get_by_role("button", name=re.compile("^Apply fix: Write a default")).click()

    expect(page.get_by_text("The group has recovered: every record of it synced.")).to_be_visible()
    expect(page.get_by_text("No open error groups")).to_be_visible()
    expect(page.get_by_role("region", name="Groups retried lately").get_by_text("Recovered")).to_have_count(2)
    assert len(records(mapping.target_connection)) == 5
    screenshot("error-groups-all-recovered")


def test_a_viewer_reads_the_suggestion_without_a_button(page, live_server, org, operator, failing_contacts, axe):
    Membership.objects.filter(user=operator).update(role=Role.VIEWER)
    log_in(page, live_server)
    page.goto(f"{live_server.url}/errors/groups/")

    expect(page.get_by_role("region", name="Error groups")).to_contain_text(
        "Suggested fix: Format the phone numbers as E.164")
    expect(page.get_by_role("button", name=re.compile("^Apply fix"))).to_have_count(0)
    axe("the error groups as a viewer")
