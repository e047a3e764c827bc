"""The Content-Security-Policy header (config/middleware.py, settings.SECURE_CSP): on every HTML page of the UI, the
admin's and the error pages, not on the API's JSON; the API docs' one inline style block allowed by its hash; a
deployment's setting is what is sent. That the pages still work under it is tests/ui/test_browser_csp.py."""

import base64
import hashlib
import re
from unittest import mock

from django.urls import reverse

from config.middleware import policy_text
from config.ui_pages import ui_pages

STRICT = {
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
    "frame-ancestors 'none'", "base-uri 'self'", "form-action 'self'", "object-src 'none'",
}


def directives(response):
    header = response.headers["Content-Security-Policy"]
    return {part.strip() for part in header.split(";")}


def test_every_ui_page_is_sent_with_the_strict_policy(client, alice, org, history_of):
    history_of(org, "Acme")
    client.force_login(alice)
    checked = []
    for page in ui_pages(org):
        if page.skipped:
            continue
        response = client.get(page.url)
        if response.status_code == 405:  # an action, not a page
            continue
        assert response.status_code in (200, 302), (page.name, response.status_code)
        if response.status_code == 200:
            assert response["Content-Type"].startswith("text/html"), page.name
            assert directives(response) == STRICT, page.name
            assert "unsafe" not in response.headers["Content-Security-Policy"], page.name
            checked.append(page.name)
    assert {"home", "runs", "errors", "connections:list", "mappings:edit", "error_detail"} <= set(checked)


def test_the_login_page_htmx_partials_and_error_pages_carry_it_too(client, alice, org, other_org, history_of):
    assert directives(client.get(reverse("login"))) == STRICT
    charlies_mapping = history_of(other_org, "Globex")[0]
    client.force_login(alice)

    partial = client.get(reverse("runs_in_progress"), headers={"HX-Request": "true"})
    not_found = client.get(reverse("mappings:detail", args=[charlies_mapping.code]))

    assert partial.status_code == 200 and directives(partial) == STRICT
    assert not_found.status_code == 404 and directives(not_found) == STRICT


def test_a_viewers_refused_action_page_carries_it(client, org, django_user_model, history_of):
    from accounts.models import Membership, Role

    mapping = history_of(org, "Acme")[0]
    viewer = django_user_model.objects.create_user("victor", "victor@example.org", "victor-password")
    Membership.objects.create(user=viewer, organization=org, role=Role.VIEWER)
    client.force_login(viewer)

    response = client.post(reverse("mappings:run", args=[mapping.code]))

    assert response.status_code == 403 and directives(response) == STRICT


def test_the_admin_keeps_the_strict_policy(admin_client):
    response = admin_client.get("/admin/syncs/recorderror/")
    assert response.status_code == 200 and directives(response) == STRICT


def test_json_api_answers_have_no_policy(client, alice):
    client.force_login(alice)
    response = client.get("/api/v1/runs/")
    missing = client.get("/api/v1/nothing-here/")

    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")
    assert "Content-Security-Policy" not in response.headers
    assert "Content-Security-Policy" not in missing.headers


def test_the_api_docs_allow_their_one_inline_style_block_and_no_inline_script(client, alice):
    client.force_login(alice)

    response = client.get("/api/v1/docs/")
    script = client.get("/api/v1/docs/?script=")

    assert response.status_code == 200
    page = response.content.decode()
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert directives(response) == STRICT - {"style-src 'self'"} | {f"style-src 'self' 'sha256-{digest}'"}, (
        f"the docs' <style> block changed: its hash is now sha256-{digest} (settings.RESYNC_CSP_PATHS)")
    # Its start-up script is a file of its own (the split view), so script-src 'self' is enough.
    assert "<script>" not in page and "?script=" in page
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


def test_the_policy_is_the_setting(client, settings):
    settings.SECURE_CSP = {**settings.SECURE_CSP, "upgrade-insecure-requests": [], "report-uri": ["/csp-report/"]}
    settings.SECURE_CSP_REPORT_ONLY = {"default-src": ["'none'"]}

    response = client.get(reverse("login"))

    assert "upgrade-insecure-requests" in directives(response)
    assert "report-uri /csp-report/" in directives(response)
    assert response.headers["Content-Security-Policy-Report-Only"] == "default-src 'none'"


def test_debug_error_pages_keep_their_inline_styles(client, settings):
    """With DEBUG, Django's technical error pages are inline-styled and scripted: they go out without a policy so a
    developer can read them; production's (DEBUG off) are covered above."""
    settings.DEBUG = True
    client.raise_request_exception = False

    not_found = client.get("/no-such-page/")
    with mock.patch("accounts.views.LoginView.get", side_effect=RuntimeError("boom")):
        crashed = client.get(reverse("login"))

    assert not_found.status_code == 404 and "Content-Security-Policy" not in not_found.headers
    assert crashed.status_code == 500 and "Content-Security-Policy" not in crashed.headers


def test_policy_text_joins_directives_and_leaves_out_none():
    assert policy_text({"default-src": ["'self'"], "upgrade-insecure-requests": [], "report-uri": None}) == (
        "default-src 'self'; upgrade-insecure-requests")
