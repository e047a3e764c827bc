"""Record status in a real browser, as an operator finds the records a target refused and re-syncs them: the
table of records × targets, the "CRM sync failed" filter, a re-sync of one row whose run the message links, and
"Re-sync all unsynced" after a confirmation that says how many. Each page is checked with axe-core and saved as
a screenshot."""

import re

import pytest
from playwright.sync_api import expect

from integrations.connectors.sandbox import seed_records
from syncs.models import LinkStatus, RecordLink
from tests.syncs.helpers import person, run_mapping, set_faults
from tests.ui.conftest import assert_no_horizontal_overflow

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1400, "height": 900}


@pytest.fixture
def shop(make_mapping, make_connection):
    """The shop's contacts synced to a POS (all synced) and to a CRM whose writes failed (all failed); the CRM
    answers again now."""
    shop = make_connection("Web shop")
    crm = make_connection("CRM", faults={"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"})
    to_crm = make_mapping(source=shop, target=crm, match_keys=[])
    to_pos = make_mapping(source=shop, target=make_connection("POS"), match_keys=[])
    for mapping, name in ((to_crm, "Contacts → CRM"), (to_pos, "Contacts → POS")):
        mapping.name = name
        mapping.save(update_fields=["name"])
    seed_records(shop, "contacts", [person(1), person(2), person(3)])
    run_mapping(to_crm)
    run_mapping(to_pos)
    set_faults(crm)
    return {"crm": to_crm, "pos": to_pos}


def log_in(page, live_server):
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("alice-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def statuses(mapping):
    return sorted(RecordLink.objects.filter(mapping=mapping).values_list("status", flat=True))


def test_an_operator_re_syncs_records_from_the_record_status_table(page, live_server, alice, shop, axe,
                                                                  screenshot):
    assert statuses(shop["crm"]) == [LinkStatus.FAILED] * 3
    first = RecordLink.objects.filter(mapping=shop["crm"]).order_by("source_record_id").first().source_record_id
    log_in(page, live_server)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Record status").click()
    expect(page.get_by_role("heading", name="Record status", level=1)).to_be_visible()
    records = page.get_by_role("region", name="Records")
    table = records.get_by_role("table", name=re.compile("From Web shop"))
    expect(table.get_by_role("columnheader", name=re.compile("^CRM"))).to_be_visible()
    expect(table.get_by_role("columnheader", name=re.compile("^POS"))).to_be_visible()
    expect(table.get_by_role("row")).to_have_count(4)  # the header and three contacts
    expect(page.get_by_role("region", name="By target")).to_contain_text("CRM")
    assert_no_horizontal_overflow(page)
    axe("the record status")
    screenshot("record-status")
    page.set_viewport_size(PHONE)
    assert_no_horizontal_overflow(page)
    screenshot("record-status-phone")
    page.set_viewport_size(DESKTOP)

    # "CRM sync failed": the target and the status together.
    page.get_by_label("Target", exact=True).select_option(label="CRM")
    status = page.locator(".filter-field", has=page.get_by_text("Status", exact=True))
    status.locator("summary").click()
    expect(status.locator("details")).to_have_attribute("open", "")
    page.get_by_role("checkbox", name="Failed").check()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Apply filters").click()
    records = page.get_by_role("region", name="Matching records")
    expect(records.get_by_role("row")).to_have_count(4)
    expect(records).to_contain_text("Failed")
    expect(records.get_by_role("link", name=re.compile("503|unavailable|CRM", re.IGNORECASE)).first).to_be_visible()
    axe("the record status filtered")

    # Re-sync one row: its run is written at once (tasks run inline in tests), and the message links it.
    records.get_by_role("button", name=f"Re-sync record {first}").click()
    message = page.locator(".messages")
    expect(message).to_contain_text(f"Re-syncing record {first} in")
    records = page.get_by_role("region", name="Matching records")
    expect(records.get_by_role("row")).to_have_count(3)  # it is no longer failed in the CRM
    assert RecordLink.objects.get(mapping=shop["crm"], source_record_id=first).status == LinkStatus.SYNCED
    screenshot("record-status-resynced")
    message.get_by_role("link", name=re.compile("^run ")).first.click()
    expect(page.get_by_role("heading", name=re.compile("Contacts → "), level=1)).to_be_visible()
    page.go_back()

    # Re-sync everything unsynced, after a confirmation that says how many.
    page.get_by_role("button", name="Re-sync all unsynced…").click()
    expect(page.get_by_role("heading", name="2 records will be re-synced")).to_be_visible()
    axe("the re-sync confirmation")
    screenshot("record-status-confirm")
    page.get_by_role("button", name="Re-sync 2 records").click()
    expect(page.locator(".messages")).to_contain_text("Re-syncing 2 unsynced records in")
    assert statuses(shop["crm"]) == [LinkStatus.SYNCED] * 3
    expect(page.get_by_role("main")).to_contain_text("No record matches these filters")
    page.get_by_role("link", name="Clear").click()
    expect(page.get_by_role("region", name="Records").get_by_text("Failed", exact=True)).to_have_count(0)
