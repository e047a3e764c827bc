"""Analytics and API tokens in a real browser: the charts drawn by Chart.js for each window, and a token created
(its secret shown once, copied) and revoked. Each page is checked with axe-core and saved as a screenshot in
var/screenshots/."""

import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import expect

from accounts.management.commands.demo import PASSWORD, USERNAME
from accounts.models import ApiToken, Organization
from accounts.services import api_token_authenticate
from mappings.models import Mapping
from syncs.models import ErrorStatus, RecordError, Resolution
from tests.ui.conftest import assert_no_horizontal_overflow, sync_history

pytestmark = pytest.mark.django_db(transaction=True)

PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1400, "height": 900}
CHARTS = ("analytics-trend-chart", "analytics-categories-chart", "analytics-targets-chart")

# How many of a canvas's pixels Chart.js painted (not transparent): a chart that failed to draw has none.
PAINTED = """id => {
  const canvas = document.getElementById(id);
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted++;
  return painted;
}"""


@pytest.fixture
def demo():
    """The demo organization with a day of sync history; a few errors resolved by retries."""
    call_command("demo", stdout=StringIO())
    demo = Organization.objects.get(slug="demo")
    sync_history(demo, list(Mapping.objects.for_org(demo).order_by("name")))
    now = timezone.now()
    for minutes, error in zip((5, 20, 90), RecordError.objects.for_org(demo).order_by("pk"), strict=False):
        RecordError.objects.filter(pk=error.pk).update(
            status=ErrorStatus.RESOLVED, resolution=Resolution.AUTO_RETRY, resolved_at=now - timedelta(hours=1),
            first_seen_at=now - timedelta(hours=1, minutes=minutes), last_retried_at=now - timedelta(hours=1))
    return demo


def log_in(page, live_server):
    page.goto(f"{live_server.url}/")
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()


def assert_charts_drawn(page):
    for chart in CHARTS:
        page.wait_for_function(f"() => window.Chart && Chart.getChart('{chart}')")
        assert page.evaluate(PAINTED, chart) > 500, f"{chart} is blank"


def test_an_operator_reads_analytics_over_each_window(page, live_server, demo, axe, screenshot):
    log_in(page, live_server)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Analytics").click()
    expect(page.get_by_role("heading", name="Analytics", level=1)).to_be_visible()
    window = page.get_by_role("navigation", name="Window")
    expect(window.get_by_role("link", name="7 days")).to_have_attribute("aria-current", "page")
    figures = page.get_by_role("region", name="Key figures")
    expect(figures).to_contain_text("Error rate")
    expect(figures).to_contain_text("3 errors resolved")

    assert_charts_drawn(page)
    trend = page.evaluate("() => Chart.getChart('analytics-trend-chart').data.datasets[0].data")
    assert len(trend) == 7 * 24 and sum(trend) == 24
    assert page.evaluate("() => Chart.getChart('analytics-categories-chart').config.type") == "bar"
    assert page.evaluate("() => Chart.getChart('analytics-categories-chart').data.datasets[0].data") == [12, 6, 6]
    # The figures without the canvas: its label and the table next to it.
    categories = page.get_by_role("region", name="Errors by category")
    expect(categories.get_by_role("img")).to_have_attribute("aria-label", re.compile("Validation 12"))
    expect(categories.get_by_role("table").first).to_contain_text("Rate limit")
    assert_no_horizontal_overflow(page)
    axe("analytics, 7 days")
    screenshot("analytics")

    window.get_by_role("link", name="30 days").click()
    expect(page).to_have_url(re.compile(r"/analytics/\?window=30d$"))
    expect(window.get_by_role("link", name="30 days")).to_have_attribute("aria-current", "page")
    assert_charts_drawn(page)
    assert len(page.evaluate("() => Chart.getChart('analytics-trend-chart').data.datasets[0].data")) == 30 * 24
    axe("analytics, 30 days")
    screenshot("analytics-30d")

    page.set_viewport_size(PHONE)
    assert_no_horizontal_overflow(page)
    screenshot("analytics-phone")
    page.set_viewport_size(DESKTOP)

    # The trend's figures as a table, per day, behind a disclosure a keyboard opens.
    page.get_by_text("The figures, per day").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("region", name=re.compile("Record errors per hour")).get_by_role("table")).to_contain_text(
        "24")


def test_before_the_first_sync_the_page_says_what_to_do(page, live_server, axe, screenshot):
    call_command("demo", stdout=StringIO())  # the organization, its connections and mappings; no run yet
    log_in(page, live_server)
    page.goto(f"{live_server.url}/analytics/?window=nonsense")  # an unknown window is the default one

    expect(page.get_by_role("navigation", name="Window").get_by_role("link", name="7 days")).to_have_attribute(
        "aria-current", "page")
    expect(page.get_by_text("No sync has run yet")).to_be_visible()
    expect(page.get_by_role("link", name="Go to mappings")).to_be_visible()
    assert page.locator("canvas").count() == 0
    axe("analytics, before the first sync")
    screenshot("analytics-empty")


def test_an_owner_creates_copies_and_revokes_an_api_token(page, live_server, demo, axe, screenshot):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    log_in(page, live_server)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="API tokens", level=1)).to_be_visible()
    expect(page.get_by_text("No API tokens yet")).to_be_visible()
    axe("API tokens, none yet")

    page.get_by_label("Name").fill("Nightly export")
    page.get_by_label("Role").select_option("viewer")
    page.get_by_role("button", name="Create token").click()

    secret_field = page.get_by_label(re.compile("^Token Nightly export"))
    expect(secret_field).to_be_visible()
    secret = secret_field.input_value()
    token = ApiToken.objects.for_org(demo).get(name="Nightly export")
    assert secret.startswith(token.prefix) and api_token_authenticate(secret) == token
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("() => navigator.clipboard.readText()") == secret
    expect(page.get_by_role("region", name=re.compile("^Tokens of"))).to_contain_text("Nightly export")
    axe("API tokens, a new token's secret")
    screenshot("api-tokens-created")

    # Shown once: the page as it is opened again has only the prefix.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    expect(page.get_by_role("region", name=re.compile("^Tokens of"))).to_contain_text(token.prefix)
    assert secret not in page.content()

    page.get_by_role("button", name=f"Revoke Nightly export ({token.prefix})").click()
    expect(page.get_by_role("heading", name="Revoke Nightly export?", level=1)).to_be_visible()
    axe("revoking an API token")
    screenshot("api-token-revoke")
    page.get_by_role("button", name="Revoke token").click()

    expect(page.get_by_text(re.compile("^Revoked Nightly export"))).to_be_visible()
    tokens = page.get_by_role("region", name=re.compile("^Tokens of"))
    expect(tokens).to_contain_text("Revoked")
    expect(tokens.get_by_role("button", name=re.compile("^Revoke"))).to_have_count(0)
    token.refresh_from_db()
    assert not token.is_active and api_token_authenticate(secret) is None
    axe("API tokens, one revoked")
    screenshot("api-tokens")
