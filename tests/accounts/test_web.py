import pytest
from django.contrib.auth import get_user_model
from django.http import Http404
from django.urls import reverse

from accounts.access import SESSION_ORG_KEY, get_object_for_org_or_404
from accounts.models import Membership, Role
from mappings.models import Mapping
from syncs.models import ErrorLevel, ErrorStatus, RecordError, RunStatus, SyncRun


def make_run(mapping, **fields):
    return SyncRun.objects.create(organization=mapping.organization, mapping=mapping, **fields)


def make_error(run, message, **fields):
    return RecordError.objects.create(
        organization=run.organization,
        run=run,
        mapping=run.mapping,
        category="validation",
        message=message,
        source_record_id="ct_0042",
        fingerprint="f" * 40,
        **fields,
    )


def named_mapping(make_mapping, make_connection, name, organization):
    mapping = make_mapping(
        source=make_connection(f"{name} shop", organization=organization),
        target=make_connection(f"{name} CRM", organization=organization),
        organization=organization,
    )
    mapping.name = f"{name} contacts"
    mapping.save()
    return mapping


@pytest.fixture
def acme_mapping(org, make_mapping, make_connection):
    mapping = named_mapping(make_mapping, make_connection, "Acme", org)
    run = make_run(mapping, status=RunStatus.PARTIALLY_FAILED, read=12, created=9, failed=3)
    make_error(run, "Acme's invalid email")
    return mapping


@pytest.fixture
def globex_mapping(other_org, make_mapping, make_connection):
    mapping = named_mapping(make_mapping, make_connection, "Globex", other_org)
    run = make_run(mapping, status=RunStatus.FAILED)
    make_error(run, "Globex's invalid email")
    return mapping


def test_login_page_renders_with_the_vendored_stylesheet(client, db):
    response = client.get(reverse("login"))

    page = response.content.decode()
    assert response.status_code == 200
    assert 'name="username"' in page and 'name="password"' in page
    assert "/static/vendor/pico/pico.min.css" in page
    assert "://" not in page.split("<body")[0]  # no CDN: the product works offline


def test_login_shows_why_it_failed(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_login_leads_home(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-password"})

    assert response.status_code == 302
    assert response.url == reverse("home")


def test_home_sends_anonymous_users_to_login(client, db):
    response = client.get(reverse("home"))

    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next=/"


def test_home_shows_the_organizations_mappings_runs_and_errors(client, alice, acme_mapping, globex_mapping):
    client.force_login(alice)

    page = client.get(reverse("home")).content.decode()

    assert "Acme contacts" in page
    assert "Partially failed" in page
    assert "Acme&#x27;s invalid email" in page
    assert "Acme shop" in page
    assert "Globex" not in page


def test_charlie_never_sees_acmes_mappings_runs_or_errors(client, charlie, acme_mapping, globex_mapping):
    client.force_login(charlie)

    page = client.get(reverse("home")).content.decode()

    assert "Globex contacts" in page
    assert "Acme" not in page  # mapping, connections, runs and errors of acme all carry its name


def test_home_hides_resolved_errors(client, alice, acme_mapping):
    run = acme_mapping.runs.get()
    make_error(run, "Fixed long ago", status=ErrorStatus.RESOLVED)
    make_error(run, "Waiting for its retry", status=ErrorStatus.RETRY_SCHEDULED, level=ErrorLevel.RECORD)
    client.force_login(alice)

    page = client.get(reverse("home")).content.decode()

    assert "Waiting for its retry" in page
    assert "Fixed long ago" not in page


def test_home_never_shows_credentials(client, alice, acme_mapping):
    client.force_login(alice)

    page = client.get(reverse("home")).content.decode()

    assert acme_mapping.source_connection.credentials["api_key"] not in page


def test_a_user_without_membership_gets_404(client, db):
    user = get_user_model().objects.create_user("dave", "dave@example.org", "dave-password")
    client.force_login(user)

    assert client.get(reverse("home")).status_code == 404


def test_the_session_chooses_among_the_users_organizations(client, alice, other_org, acme_mapping, globex_mapping):
    Membership.objects.create(user=alice, organization=other_org, role=Role.VIEWER)
    client.force_login(alice)

    first = client.get(reverse("home")).content.decode()
    session = client.session
    session[SESSION_ORG_KEY] = other_org.slug
    session.save()
    chosen = client.get(reverse("home")).content.decode()

    assert "Acme contacts" in first and "Globex contacts" not in first
    assert "Globex contacts" in chosen and "Acme contacts" not in chosen


def test_a_session_slug_of_a_foreign_organization_is_ignored(client, charlie, org, acme_mapping, globex_mapping):
    client.force_login(charlie)
    session = client.session
    session[SESSION_ORG_KEY] = org.slug
    session.save()

    page = client.get(reverse("home")).content.decode()

    assert "Globex contacts" in page
    assert "Acme contacts" not in page


def test_home_queries_do_not_grow_with_rows(client, alice, make_mapping, django_assert_max_num_queries):
    for _ in range(4):
        mapping = make_mapping()
        for _ in range(6):
            make_error(make_run(mapping, status=RunStatus.FAILED), "Invalid email")
    client.force_login(alice)

    # The overview: session and membership (3), then one query per panel (analytics, error groups, runs in
    # progress, latest failures and runs, paused connections and mappings): a fixed number, not one per row.
    with django_assert_max_num_queries(16):
        response = client.get(reverse("home"))

    assert response.status_code == 200


def test_logout_is_a_post_button(client, alice):
    client.force_login(alice)
    page = client.get(reverse("home")).content.decode()
    assert f'<form method="post" action="{reverse("logout")}">' in page

    response = client.post(reverse("logout"))

    assert response.status_code == 302
    assert client.get(reverse("home")).status_code == 302


def test_get_object_for_org_finds_only_the_organizations_objects(org, other_org, acme_mapping, globex_mapping):
    assert get_object_for_org_or_404(Mapping, org, pk=acme_mapping.pk) == acme_mapping
    assert get_object_for_org_or_404(Mapping.objects.filter(is_active=True), org, pk=acme_mapping.pk) == acme_mapping
    with pytest.raises(Http404):
        get_object_for_org_or_404(Mapping, org, pk=globex_mapping.pk)
    with pytest.raises(Http404):
        get_object_for_org_or_404(Mapping, other_org, code=acme_mapping.code)


def test_home_leaves_test_runs_out_of_the_latest_runs(client, alice, acme_mapping):
    from syncs.previews import mapping_test_sync

    test_run = mapping_test_sync(mapping=acme_mapping, sample_size=1)
    client.force_login(alice)

    response = client.get("/")

    assert test_run not in list(response.context["runs"])
