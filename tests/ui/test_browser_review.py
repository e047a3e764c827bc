"""The review queue in a real browser, as an operator fixes a record: the queue, a record's form described by the
target's schema, a correction refused next to its fields with what was typed kept, then the fix saved and
retried until the record is in the target. Each page is checked with axe-core and saved as a screenshot."""

import re

import pytest
from playwright.sync_api import expect

from integrations.connectors.sandbox import seed_records
from syncs.models import ErrorStatus, RecordError
from tests.syncs.helpers import person, records, run_mapping
from tests.ui.conftest import assert_no_horizontal_overflow

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1400, "height": 900}


@pytest.fixture
def waiting(make_mapping, make_connection):
    """A manual-review mapping of the shop's contacts into the CRM: two contacts without a last name wait."""
    mapping = make_mapping(source=make_connection("Web shop"), target=make_connection("CRM"),
                           error_strategy="manual_review")
    mapping.name = "Shop contacts → CRM"
    mapping.save(update_fields=["name"])
    seed_records(mapping.source_connection, "contacts", [
        person(1, first_name="Olivia", last_name="", email="olivia@example.com"),
        person(2, first_name="Noah", last_name="", email="noah@example.com"),
    ])
    run_mapping(mapping)
    return mapping


def log_in(page, live_server):
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("alice-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def fits_a_phone(page, name, screenshot):
    page.set_viewport_size(PHONE)
    assert_no_horizontal_overflow(page)
    screenshot(f"{name}-phone")
    page.set_viewport_size(DESKTOP)


def test_an_operator_fixes_a_record_in_the_review_queue_and_retries_it(page, live_server, alice, waiting, axe,
                                                                       screenshot):
    olivia = RecordError.objects.get(mapping=waiting, snapshot_after__email="olivia@example.com")
    log_in(page, live_server)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Review queue").click()
    expect(page.get_by_role("heading", name="Review queue", level=1)).to_be_visible()
    queue = page.get_by_role("region", name="Waiting for review")
    expect(queue).to_contain_text("2 records wait")
    expect(queue).to_contain_text("last_name is required")
    assert_no_horizontal_overflow(page)
    axe("the review queue")
    screenshot("review-queue")
    fits_a_phone(page, "review-queue", screenshot)

    queue.get_by_role("link", name=f"Review record {olivia.source_record_id}").click()
    expect(page.get_by_role("heading", name=re.compile(f"Record {olivia.source_record_id}"), level=1)).to_be_visible()
    form = page.get_by_role("region", name="Correct the record")
    expect(form.get_by_label("Email")).to_have_value("olivia@example.com")
    expect(form.get_by_text("Required · Text · at most 40 characters")).to_be_visible()
    assert_no_horizontal_overflow(page)
    axe("a record in review")
    screenshot("review-record")
    fits_a_phone(page, "review-record", screenshot)

    # A correction that does not fit the CRM: refused next to each field, and nothing typed is lost.
    form.get_by_label("Email").fill("olivia at example")
    form.get_by_label("First name").fill("Olivia " + "x" * 40)
    page.get_by_role("button", name="Save and retry").click()
    form = page.get_by_role("region", name="Correct the record")
    expect(form).to_contain_text("is not a valid email address")
    expect(form).to_contain_text("the target allows 40")
    expect(form).to_contain_text("last_name is required")
    expect(form.get_by_label("Email")).to_have_value("olivia at example")
    expect(form.get_by_label("Email")).to_have_attribute("aria-invalid", "true")
    expect(form.get_by_label("First name")).to_have_value("Olivia " + "x" * 40)
    axe("a correction with field errors")
    screenshot("review-record-errors")

    # The fix: written to the CRM by the retry, and the page says so.
    form.get_by_label("Email").fill("olivia@example.com")
    form.get_by_label("First name").fill("Olivia")
    form.get_by_label("Last name").fill("Bennett")
    page.get_by_role("button", name="Save and retry").click()
    outcome = page.get_by_role("region", name="Retried: synced")
    expect(outcome).to_contain_text("The record is synced")
    expect(page.get_by_role("region", name="Correct the record")).to_have_count(0)
    axe("a record retried")
    screenshot("review-record-synced")
    olivia.refresh_from_db()
    assert olivia.status == ErrorStatus.RESOLVED
    assert [(r.data["email"], r.data["last_name"]) for r in records(waiting.target_connection)] == [
        ("olivia@example.com", "Bennett")]

    # Back in the queue, one record is left; it is ignored with a reason.
    outcome.get_by_role("link", name="Next record in the queue").click()
    queue = page.get_by_role("region", name="Waiting for review")
    expect(queue).to_contain_text("1 record waits")
    queue.get_by_role("link", name=re.compile("^Review record")).click()
    page.get_by_role("button", name="Ignore with this reason").click()
    expect(page.get_by_role("region", name="Ignore it instead")).to_contain_text("This field is required.")
    page.get_by_label("Reason").fill("A test customer of the shop")
    page.get_by_role("button", name="Ignore with this reason").click()
    expect(page.locator(".messages")).to_contain_text("Ignored record")
    expect(page.get_by_role("main")).to_contain_text("Nothing waits for review")
    axe("the empty review queue")
    screenshot("review-queue-empty")
