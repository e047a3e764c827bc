"""The API's conventions: token authentication, problem JSON, unknown URLs, idempotency keys, throttling, docs."""

import pytest
from django.core.cache import cache
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.models import ApiToken, TokenRole

pytestmark = pytest.mark.django_db

PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "uuid"}


def assert_problem(response, status, code=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) >= PROBLEM_KEYS
    assert body["status"] == status
    if code:
        assert body["code"] == code
    return body


def test_a_created_token_is_shown_once_then_only_its_prefix(api):
    response = api.post("/api/v1/tokens/", {"name": "ci", "role": "member"}, format="json")

    assert response.status_code == 201
    created = response.json()
    assert created["token"].startswith(created["prefix"])
    listed = api.get("/api/v1/tokens/").json()["results"]
    assert all("token" not in row for row in listed)
    assert created["token"] not in str(ApiToken.objects.values_list())  # only a digest is stored


def test_a_new_token_works_and_a_revoked_one_answers_401(api):
    created = api.post("/api/v1/tokens/", {"name": "ci"}, format="json").json()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {created['token']}")
    assert client.get("/api/v1/tokens/").status_code == 403  # a member may not manage tokens

    assert api.post(f"/api/v1/tokens/{created['id']}/revoke/").status_code == 200

    assert_problem(client.get("/api/v1/tokens/"), 401, "invalid_token")


def test_no_token_or_an_unknown_token_answers_401_problem_json(db):
    assert_problem(APIClient().get("/api/v1/tokens/"), 401)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer rsk_nope")
    assert_problem(client.get("/api/v1/tokens/"), 401)


def test_last_use_is_recorded(api):
    assert api.get("/api/v1/tokens/").status_code == 200
    assert ApiToken.objects.get().last_used_at is not None


def test_an_unknown_api_url_answers_problem_json_not_html(api):
    assert_problem(api.get("/api/v1/nothing-here/"), 404, "not_found")
    assert_problem(APIClient().get("/api/v2/"), 404, "not_found")


def test_another_organizations_token_answers_404_like_a_missing_one(api, other_api):
    created = api.post("/api/v1/tokens/", {"name": "mine"}, format="json").json()

    foreign = other_api.get(f"/api/v1/tokens/{created['id']}/")
    missing = other_api.get("/api/v1/tokens/00000000-0000-0000-0000-000000000000/")

    assert_problem(foreign, 404)
    assert {k: v for k, v in foreign.json().items() if k != "uuid"} == {
        k: v for k, v in missing.json().items() if k != "uuid"}


def test_validation_errors_name_their_fields(api):
    body = assert_problem(api.post("/api/v1/tokens/", {"role": "emperor"}, format="json"), 400, "validation_error")
    assert set(body["errors"]) == {"name", "role"}


# Every date-time filter of every list: year 1 at +14:00 is before year 1 in UTC, which no database stores.
@pytest.mark.parametrize("url, name", [
    ("/api/v1/runs/", "queued_after"),
    ("/api/v1/runs/", "queued_before"),
    ("/api/v1/errors/", "since"),
    ("/api/v1/errors/", "until"),
    ("/api/v1/error-groups/", "since"),
    ("/api/v1/webhook-events/", "received_after"),
    ("/api/v1/webhook-events/", "received_before"),
])
def test_a_date_filter_out_of_range_answers_400_not_500(api, url, name):
    body = assert_problem(api.get(url, {name: "0001-01-01T00:00:00+14:00"}), 400, "validation_error")
    assert name in body["errors"]


def test_too_many_requests_answer_429_with_retry_after(api, settings):
    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": "3/min"}}
    from rest_framework.settings import api_settings

    api_settings.reload()
    from accounts.authentication import TokenRateThrottle

    TokenRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    try:
        statuses = [api.get("/api/v1/tokens/").status_code for _ in range(4)]
        limited = api.get("/api/v1/tokens/")
    finally:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": "600/min"}}
        api_settings.reload()
        TokenRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
        cache.clear()

    assert statuses == [200, 200, 200, 429]
    body = assert_problem(limited, 429)
    assert int(limited["Retry-After"]) > 0 and body["retry_after"] > 0


def test_the_schema_and_its_docs_are_served_without_a_cdn(client, db):
    schema = client.get("/api/v1/schema/?format=json")
    docs = client.get("/api/v1/docs/")

    assert schema.status_code == 200
    assert "/api/v1/tokens/" in schema.json()["paths"]
    html = docs.content.decode()
    assert docs.status_code == 200
    assert "drf_spectacular_sidecar" in html
    assert "cdn" not in html.lower() and "https://" not in html


def test_tokens_can_be_managed_from_the_command_line(org, capsys):
    call_command("api_token", "create", "--org", org.slug, "--name", "deploy", "--role", TokenRole.ADMIN)
    plain = capsys.readouterr().out.strip()
    token = ApiToken.objects.get(name="deploy")
    assert plain.startswith(token.prefix)

    call_command("api_token", "revoke", "--org", org.slug, token.prefix)

    token.refresh_from_db()
    assert token.revoked_at is not None


def test_the_browser_session_works_for_the_uis_own_calls_with_csrf(alice):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)

    assert client.get("/api/v1/tokens/").status_code == 200  # alice is the organization's owner
    refused = client.post("/api/v1/tokens/", {"name": "no csrf"}, format="json")
    assert_problem(refused, 403)

    client.get("/login/")  # sets the CSRF cookie, as the UI's page load does
    accepted = client.post("/api/v1/tokens/", {"name": "with csrf"}, format="json",
                           HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    assert accepted.status_code == 201


def test_a_session_user_of_no_organization_finds_nothing(db, django_user_model):
    client = APIClient()
    client.force_login(django_user_model.objects.create_user("drifter", password="x"))

    assert_problem(client.get("/api/v1/tokens/"), 404)


def test_the_uis_api_calls_act_for_the_organization_the_session_chose(alice, other_org, make_mapping):
    from accounts.models import Membership, Role

    Membership.objects.create(user=alice, organization=other_org, role=Role.VIEWER)
    theirs = make_mapping(organization=other_org)
    client = APIClient()
    client.force_login(alice)
    session = client.session
    session["org_slug"] = other_org.slug
    session.save()

    names = [row["name"] for row in client.get("/api/v1/mappings/").json()["results"]]

    assert names == [theirs.name]
    assert_problem(client.post("/api/v1/tokens/", {"name": "x"}, format="json"), 403)  # a viewer there
