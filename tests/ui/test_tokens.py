"""Settings → API tokens with Django's test client: the list, creating a token whose secret is shown on that
answer only, revoking with a confirmation, the roles the API asks for (the page refuses whom the API refuses),
tenancy (another organization's token answers 404) and a query count that does not grow with the tokens."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import ApiToken, Membership, Role, TokenRole
from accounts.services import api_token_authenticate, api_token_create

URL = reverse("api_tokens")


@pytest.fixture
def member_of(org, django_user_model):
    def make(role):
        user = django_user_model.objects.create_user(f"{role}-user", f"{role}@example.org", "password-1234")
        Membership.objects.create(user=user, organization=org, role=role)
        return user

    return make


def revoke_url(token):
    return reverse("api_token_revoke", args=[token.code])


def test_anonymous_visitors_are_sent_to_the_login(client, org):
    token, _ = api_token_create(organization=org, name="ci", role=TokenRole.MEMBER)
    for url in (URL, revoke_url(token), reverse("settings")):
        response = client.get(url, follow=True)
        assert response.redirect_chain[-1][0].startswith(reverse("login")), url
    assert client.post(revoke_url(token)).status_code == 302
    token.refresh_from_db()
    assert token.is_active


def test_settings_leads_to_the_tokens_and_the_nav_marks_it(client, alice):
    client.force_login(alice)

    response = client.get(reverse("settings"))
    assert response.status_code == 302 and response.url == URL

    page = client.get(URL).content.decode()
    assert f'<a href="{reverse("settings")}" aria-current="page">Settings</a>' in page


@pytest.mark.parametrize("role", [Role.MEMBER, Role.VIEWER])
def test_settings_leads_members_and_viewers_to_the_notifications_they_may_see(client, member_of, role):
    client.force_login(member_of(role))

    response = client.get(reverse("settings"))

    assert response.status_code == 302 and response.url == reverse("notifications:index")
    assert client.get(response.url, follow=True).status_code == 200


def test_an_organization_without_tokens_is_told_what_they_are_for(client, alice):
    client.force_login(alice)

    page = client.get(URL).content.decode()

    assert "No API tokens yet" in page and "<table" not in page


def test_the_list_shows_the_organizations_tokens_only(client, alice, org, other_org):
    ours, _ = api_token_create(organization=org, name="deploy script", role=TokenRole.ADMIN, created_by=alice)
    revoked, _ = api_token_create(organization=org, name="old export", role=TokenRole.VIEWER)
    revoked.revoked_at = revoked.created_at
    revoked.save()
    theirs, _ = api_token_create(organization=other_org, name="globex secret thing", role=TokenRole.ADMIN)
    client.force_login(alice)

    response = client.get(URL)
    page = response.content.decode()

    assert [token.pk for token in response.context["tokens"]] == [revoked.pk, ours.pk]
    assert "deploy script" in page and ours.prefix in page and str(ours.code) in page and "by alice" in page
    assert "Revoked" in page and "Never" in page
    assert revoke_url(ours) in page and revoke_url(revoked) not in page
    assert "globex secret thing" not in page and theirs.prefix not in page


def test_creating_a_token_shows_its_secret_once(client, alice, org):
    client.force_login(alice)

    response = client.post(URL, {"name": "  BI export  ", "role": TokenRole.VIEWER})

    assert response.status_code == 200
    token = ApiToken.objects.for_org(org).get()
    secret = response.context["created"]["secret"]
    assert (token.name, token.role, token.created_by) == ("BI export", TokenRole.VIEWER, alice)
    assert secret.startswith(token.prefix) and secret in response.content.decode()
    assert api_token_authenticate(secret) == token  # the secret shown is the token's own
    assert "no-store" in response["Cache-Control"]
    assert secret not in token.digest and not ApiToken.objects.filter(digest__contains=secret).exists()

    # Never again: not in the list, not on the revoke page.
    for url in (URL, revoke_url(token)):
        page = client.get(url).content.decode()
        assert token.prefix in page and secret not in page and secret[len(token.prefix):] not in page


@pytest.mark.parametrize(("data", "field"), [
    ({"name": "", "role": TokenRole.MEMBER}, "name"),
    ({"name": "   ", "role": TokenRole.MEMBER}, "name"),
    ({"name": "x" * 101, "role": TokenRole.MEMBER}, "name"),
    ({"name": "ci", "role": "owner"}, "role"),  # tokens are never owners: TokenRole has no such role
    ({"name": "ci"}, "role"),
])
def test_an_invalid_token_is_a_form_error(client, alice, org, data, field):
    client.force_login(alice)

    response = client.post(URL, data)

    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert response.context["created"] is None
    assert not ApiToken.objects.exists()
    assert 'aria-invalid="true"' in response.content.decode()


def test_revoking_asks_first_then_the_token_stops_working(client, alice, org):
    token, secret = api_token_create(organization=org, name="deploy script", role=TokenRole.MEMBER)
    client.force_login(alice)

    page = client.get(revoke_url(token)).content.decode()
    assert "Revoke deploy script?" in page and 'class="danger">Revoke token' in page
    token.refresh_from_db()
    assert token.is_active  # the confirmation changes nothing

    response = client.post(revoke_url(token), follow=True)

    assert response.redirect_chain == [(URL, 302)]
    assert "Revoked deploy script" in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert api_token_authenticate(secret) is None

    # Again: nothing changes, and it says so.
    revoked_at = token.revoked_at
    response = client.post(revoke_url(token), follow=True)
    assert "was already revoked" in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at == revoked_at
    assert "Already revoked" in client.get(revoke_url(token)).content.decode()


def test_another_organizations_token_answers_404(client, alice, other_org):
    theirs, secret = api_token_create(organization=other_org, name="globex", role=TokenRole.ADMIN)
    client.force_login(alice)

    assert client.get(revoke_url(theirs)).status_code == 404
    assert client.post(revoke_url(theirs)).status_code == 404
    assert client.post(reverse("api_token_revoke", args=[uuid.UUID(int=0)])).status_code == 404
    theirs.refresh_from_db()
    assert theirs.is_active and api_token_authenticate(secret) == theirs


def test_admins_manage_tokens_like_owners(client, member_of, org):
    client.force_login(member_of(Role.ADMIN))

    assert client.post(URL, {"name": "ci", "role": TokenRole.ADMIN}).status_code == 200
    token = ApiToken.objects.for_org(org).get()
    assert client.post(revoke_url(token)).status_code == 302
    token.refresh_from_db()
    assert not token.is_active


@pytest.mark.parametrize("role", [Role.MEMBER, Role.VIEWER])
def test_members_and_viewers_are_refused_as_the_api_refuses_them(client, member_of, org, role):
    token, secret = api_token_create(organization=org, name="deploy script", role=TokenRole.ADMIN)
    client.force_login(member_of(role))

    # The API's token resource asks for the admin role to read and to write; the page asks for the same.
    assert client.get(reverse("token-list")).status_code == 403
    response = client.get(URL)
    assert response.status_code == 403
    page = response.content.decode()
    assert "managed by the owners and admins of Acme" in page and "deploy script" not in page
    assert client.post(URL, {"name": "mine", "role": TokenRole.ADMIN}).status_code == 403
    assert client.get(revoke_url(token)).status_code == 403
    assert client.post(revoke_url(token)).status_code == 403

    assert list(ApiToken.objects.for_org(org)) == [token]
    token.refresh_from_db()
    assert token.is_active and api_token_authenticate(secret) == token


def test_the_query_count_does_not_grow_with_the_tokens(client, alice, org):
    client.force_login(alice)
    api_token_create(organization=org, name="first", role=TokenRole.MEMBER, created_by=alice)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert client.get(URL).status_code == 200
        return len(captured.captured_queries)

    few = queries()
    for number in range(20):
        api_token_create(organization=org, name=f"token {number}", role=TokenRole.VIEWER, created_by=alice)
    assert queries() == few <= 6
