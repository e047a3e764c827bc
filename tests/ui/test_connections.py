"""The connection pages with Django's test client: the list, adding a connection with its provider's form, the
detail with test / reconnect / refresh schema, editing and deleting; tenancy, roles, form errors, secrets never
shown back, and the query counts."""

import uuid

import pytest
from django.urls import reverse

from accounts.models import Membership, Role
from integrations.models import Connection, ConnectionStatus
from mappings.models import Mapping

SECRET = "sk_live_never_show_me_7731"
WHSEC = "whsec_c2VjcmV0LW5ldmVyLXNob3duLWJhY2s="


@pytest.fixture
def viewer(org, django_user_model):
    user = django_user_model.objects.create_user("victor", "victor@example.org", "victor-password")
    Membership.objects.create(user=user, organization=org, role=Role.VIEWER)
    return user


@pytest.fixture
def crm(make_connection):
    return make_connection("Acme CRM")


@pytest.fixture
def theirs(make_connection, other_org):
    return make_connection("Globex ERP", organization=other_org)


def url(name, connection=None):
    return reverse(f"connections:{name}", kwargs={"code": connection.code} if connection else {})


def page_of(response):
    assert response.status_code == 200, response.status_code
    return response.content.decode()


DETAIL_PAGES = ["detail", "edit", "reconnect", "delete"]
ACTIONS = ["test", "refresh_schema", "edit", "reconnect", "delete"]


# --- login, tenancy, roles ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["list", "add"])
def test_the_pages_send_anonymous_visitors_to_the_login(client, db, name):
    response = client.get(url(name))

    assert response.status_code == 302 and response.url.startswith(reverse("login"))


@pytest.mark.parametrize("name", DETAIL_PAGES)
def test_a_connections_pages_send_anonymous_visitors_to_the_login(client, crm, name):
    response = client.get(url(name, crm))

    assert response.status_code == 302 and response.url == f"{reverse('login')}?next={url(name, crm)}"


@pytest.mark.parametrize("name", ACTIONS)
def test_anonymous_actions_change_nothing(client, crm, name):
    response = client.post(url(name, crm), {"name": "Hijacked"})

    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    assert Connection.objects.filter(pk=crm.pk, name="Acme CRM").exists()


@pytest.mark.parametrize("name", DETAIL_PAGES)
def test_another_organizations_connection_answers_404_on_every_page(client, alice, theirs, name):
    client.force_login(alice)

    assert client.get(url(name, theirs)).status_code == 404
    assert client.get(reverse(f"connections:{name}", kwargs={"code": uuid.uuid4()})).status_code == 404


@pytest.mark.parametrize("name", ACTIONS)
def test_another_organizations_connection_answers_404_on_every_action(client, alice, theirs, name):
    client.force_login(alice)

    response = client.post(url(name, theirs), {"name": "Mine now", "max_concurrency": 1, "credentials__api_key": "x"})

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert theirs.name == "Globex ERP" and theirs.last_checked_at is None and theirs.schema_refreshed_at is None


@pytest.mark.parametrize("name", ACTIONS)
def test_a_viewer_cannot_act(client, viewer, crm, name):
    client.force_login(viewer)

    response = client.post(url(name, crm), {"name": "Renamed", "max_concurrency": 1, "credentials__api_key": "x"})

    assert response.status_code == 403
    crm.refresh_from_db()
    assert crm.name == "Acme CRM" and crm.last_checked_at is None


@pytest.mark.parametrize("name", ["edit", "reconnect", "delete"])
def test_a_viewer_is_not_offered_the_forms(client, viewer, crm, name):
    client.force_login(viewer)

    assert client.get(url(name, crm)).status_code == 403


def test_a_viewer_cannot_add_a_connection(client, viewer):
    client.force_login(viewer)

    assert client.get(url("add")).status_code == 403
    assert client.post(url("add"), {"provider": "sandbox", "name": "X", "max_concurrency": 4,
                                    "credentials__api_key": "k"}).status_code == 403
    assert not Connection.objects.exists()


def test_a_viewer_sees_a_connection_without_its_buttons(client, viewer, crm):
    client.force_login(viewer)

    page = page_of(client.get(url("detail", crm)))
    listing = page_of(client.get(url("list")))

    assert "Acme CRM" in page and "Acme CRM" in listing
    for action in ACTIONS:
        assert url(action, crm) not in page
    assert url("add") not in listing


# --- the list ----------------------------------------------------------------------------------------------------


def test_the_list_shows_status_provider_checks_errors_and_the_mappings_that_use_each(client, alice, make_mapping,
                                                                                     make_connection, theirs):
    mapping = make_mapping()
    mapping.source_connection.status = ConnectionStatus.NEEDS_REAUTH
    mapping.source_connection.status_reason = "The shop refused the API key (401)"
    mapping.source_connection.last_error = "401 Unauthorized: the API key is missing or invalid"
    mapping.source_connection.save()
    make_connection("Spare")
    Connection.objects.filter(name="Spare").update(max_concurrency=7)
    client.force_login(alice)

    page = page_of(client.get(url("list")))

    assert "Needs reauthentication" in page and "The shop refused the API key (401)" in page
    assert "401 Unauthorized: the API key is missing or invalid" in page
    assert page.count(mapping.name) == 2  # under its source and its target
    assert "Sandbox" in page and "No mapping" in page and ">7<" in page and "Never" in page
    assert "Globex ERP" not in page
    assert url("add") in page


def test_a_new_organization_is_led_to_add_its_first_connection(client, alice):
    client.force_login(alice)

    page = page_of(client.get(url("list")))

    assert "Connect your first system" in page
    assert f'href="{url("add")}"' in page


def test_the_navigation_links_to_the_connections(client, alice):
    client.force_login(alice)

    page = page_of(client.get(url("list")))

    assert f'<a href="{url("list")}" aria-current="page">Connections</a>' in page


def test_the_list_queries_stay_bounded_as_connections_and_mappings_grow(client, alice, make_mapping,
                                                                         django_assert_max_num_queries):
    make_mapping()
    client.force_login(alice)
    page_of(client.get(url("list")))
    for _ in range(8):
        make_mapping()

    with django_assert_max_num_queries(9):
        page = page_of(client.get(url("list")))

    assert page.count("<tr>") == 1 + 18


# --- adding ------------------------------------------------------------------------------------------------------


def test_the_add_page_offers_every_provider_and_then_its_own_form(client, alice):
    client.force_login(alice)

    picker = page_of(client.get(url("add")))
    form = page_of(client.get(url("add") + "?provider=postgres_table"))

    for label in ("Sandbox", "HubSpot", "Salesforce", "PostgreSQL table", "Connector service"):
        assert label in picker
    assert "Choose a system above" in picker and 'name="name"' not in picker
    assert 'name="config__host"' in form and 'name="config__port"' in form and 'value="5432"' in form
    assert '<select name="config__sslmode"' in form
    assert 'type="password" name="credentials__password"' in form
    assert 'aria-current="true"' in form


def test_choosing_a_provider_with_htmx_swaps_only_the_form(client, alice):
    client.force_login(alice)

    part = page_of(client.get(url("add") + "?provider=sandbox", headers={"HX-Request": "true"}))

    assert "<html" not in part and part.lstrip().startswith(("{", "<div id=\"add-connection\">"))
    assert 'type="password" name="credentials__api_key"' in part
    assert "autofocus" in part


def test_adding_a_connection_creates_it_through_the_service(client, alice, org):
    client.force_login(alice)

    response = client.post(url("add"), {"provider": "sandbox", "name": "Sandbox CRM", "max_concurrency": 3,
                                        "config__default_phone_country": "GB", "config__timeout_seconds": "",
                                        "credentials__api_key": SECRET})

    connection = Connection.objects.get(organization=org, name="Sandbox CRM")
    assert response.status_code == 302 and response.url == url("detail", connection)
    assert connection.provider == "sandbox" and connection.max_concurrency == 3
    assert connection.config == {"default_phone_country": "GB"}
    assert connection.credentials == {"api_key": SECRET} and SECRET not in connection.credentials_ciphertext
    detail = page_of(client.get(response.url))
    assert "Sandbox CRM is added" in detail and SECRET not in detail


def test_missing_values_are_form_errors_next_to_their_fields_and_the_secret_is_not_shown_back(client, alice):
    client.force_login(alice)

    response = client.post(url("add"), {"provider": "postgres_table", "name": "", "max_concurrency": 4,
                                        "config__port": "not a port", "credentials__password": SECRET})

    page = page_of(response)
    form = response.context["form"]
    assert set(form.errors) >= {"name", "config__host", "config__database", "config__user", "config__port"}
    assert SECRET not in page
    assert 'aria-invalid="true"' in page
    assert not Connection.objects.exists()


def test_a_private_address_is_refused_next_to_its_field(client, alice):
    client.force_login(alice)

    response = client.post(url("add"), {"provider": "connector_service", "name": "Internal",
                                        "max_concurrency": 4, "config__url": "http://127.0.0.1:8765",
                                        "credentials__signing_secret": WHSEC})

    page = page_of(response)
    errors = response.context["form"].errors
    assert list(errors) == ["config__url"]
    assert "Service URL" in errors["config__url"][0]
    assert WHSEC not in page
    assert not Connection.objects.exists()


def test_a_name_taken_in_the_organization_is_a_form_error(client, alice, crm):
    client.force_login(alice)

    response = client.post(url("add"), {"provider": "sandbox", "name": "Acme CRM", "max_concurrency": 4,
                                        "credentials__api_key": SECRET})

    assert response.context["form"].errors["name"] == ["Another connection of your organization has this name."]
    assert SECRET not in page_of(response)


def test_a_name_another_organization_uses_is_free(client, alice, theirs, org):
    client.force_login(alice)

    client.post(url("add"), {"provider": "sandbox", "name": "Globex ERP", "max_concurrency": 4,
                             "credentials__api_key": "k"})

    assert Connection.objects.filter(organization=org, name="Globex ERP").exists()


def test_an_unknown_provider_is_not_a_crash(client, alice):
    client.force_login(alice)

    response = client.post(url("add"), {"provider": "nope", "name": "X"}, follow=True)

    assert "Choose the system to connect first." in page_of(response)
    assert not Connection.objects.exists()


# --- the detail and its actions ----------------------------------------------------------------------------------


def test_the_detail_shows_status_settings_and_never_the_credentials(client, alice, make_connection):
    connection = make_connection("Flaky CRM", api_key=SECRET, default_phone_country="US",
                                 faults={"failure_rate": 0.1})
    Connection.objects.filter(pk=connection.pk).update(status=ConnectionStatus.NEEDS_REAUTH,
                                                       status_reason="The CRM refused the API key (401)")
    client.force_login(alice)

    page = page_of(client.get(url("detail", connection)))

    assert "Needs reauthentication" in page and "The CRM refused the API key (401)" in page
    assert "Default phone country" in page and "<code>US</code>" in page
    assert "faults" in page and "failure_rate" in page
    assert "Stored encrypted, never shown" in page
    assert SECRET not in page
    assert "No schema yet" in page and "No mapping uses it yet" in page


def test_testing_a_connection_that_works_says_so(client, alice, crm):
    client.force_login(alice)

    response = client.post(url("test", crm), follow=True)

    assert "Acme CRM answers: the connection works." in page_of(response)
    crm.refresh_from_db()
    assert crm.last_checked_at is not None and crm.last_error == ""


def test_testing_with_htmx_swaps_the_status_card_with_the_message_and_its_hint(client, alice, make_connection):
    connection = make_connection("Down CRM", faults={"operations": ["check"], "failure_rate": 1.0,
                                                     "failure_kind": "503"})
    client.force_login(alice)

    part = page_of(client.post(url("test", connection), headers={"HX-Request": "true"}))

    assert "<html" not in part and part.count('id="connection-status"') == 1
    assert "The test failed" in part
    assert "Resync retries on its own." in part  # connection_hint for an unreachable system
    connection.refresh_from_db()
    assert connection.last_error and connection.last_error in part


def test_a_refused_key_marks_the_connection_for_reauthentication(client, alice, make_connection):
    connection = make_connection("Expired CRM", faults={"expired_credentials": True})
    client.force_login(alice)

    page = page_of(client.post(url("test", connection), follow=True))

    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    assert "The test failed" in page and "enter a new token or key and reconnect" in page


def test_reconnecting_with_new_credentials_makes_the_connection_active_again(client, alice, crm):
    Connection.objects.filter(pk=crm.pk).update(status=ConnectionStatus.NEEDS_REAUTH, status_reason="401")
    client.force_login(alice)

    form = page_of(client.get(url("reconnect", crm)))
    response = client.post(url("reconnect", crm), {"credentials__api_key": "sk_new_key"}, follow=True)

    assert 'type="password" name="credentials__api_key"' in form and "sk_test_canary" not in form
    crm.refresh_from_db()
    assert crm.status == ConnectionStatus.ACTIVE and crm.status_reason == ""
    assert crm.credentials == {"api_key": "sk_new_key"}
    assert "Acme CRM is connected again." in page_of(response)


def test_reconnecting_resumes_the_runs_the_outage_stopped(client, alice, make_mapping, monkeypatch):
    from syncs import chains

    mapping = make_mapping()
    calls = []
    monkeypatch.setattr(chains, "sync_runs_resume", lambda *, connection: calls.append(connection) or ["a run"])
    client.force_login(alice)

    response = client.post(url("reconnect", mapping.source_connection), {}, follow=True)

    assert calls == [mapping.source_connection]
    assert "1 stopped run resumed." in page_of(response)


def test_a_reconnect_that_still_fails_says_why_and_what_to_do(client, alice, make_connection):
    connection = make_connection("Expired CRM", faults={"expired_credentials": True})
    client.force_login(alice)

    response = client.post(url("reconnect", connection), {"credentials__api_key": SECRET})

    page = page_of(response)
    assert "still refuses" in page and "enter a new token or key and reconnect" in page
    assert SECRET not in page
    connection.refresh_from_db()
    assert connection.status == ConnectionStatus.NEEDS_REAUTH
    assert connection.credentials == {"api_key": SECRET}  # kept for the next try


def test_refreshing_the_schema_lists_the_objects_and_their_fields(client, alice, crm):
    client.force_login(alice)

    response = client.post(url("refresh_schema", crm), follow=True)

    page = page_of(response)
    assert response.redirect_chain[-1][0].endswith("#schema")
    assert "Schema refreshed:" in page
    crm.refresh_from_db()
    assert crm.schema_refreshed_at is not None
    assert "<code>contacts</code>" in page and "<code>email</code>" in page and "<code>companies</code>" in page


def test_a_schema_refresh_that_fails_says_why(client, alice, make_connection, monkeypatch):
    from integrations.connectors.sandbox import SandboxConnector
    from integrations.errors import ConnectorError, ErrorCategory

    def refuse(self):
        raise ConnectorError(ErrorCategory.AUTH, "The API key is missing or invalid", code="invalid_api_key")

    monkeypatch.setattr(SandboxConnector, "list_objects", refuse)
    connection = make_connection("Down CRM")
    client.force_login(alice)

    page = page_of(client.post(url("refresh_schema", connection), follow=True))

    assert "Down CRM could not describe its objects: The API key is missing or invalid" in page
    assert "enter a new token or key and reconnect" in page


def test_the_detail_reads_the_cached_schema_in_bounded_queries(client, alice, crm, make_mapping,
                                                               django_assert_max_num_queries):
    make_mapping(source=crm)
    make_mapping(target=crm)
    client.force_login(alice)
    client.post(url("refresh_schema", crm))

    with django_assert_max_num_queries(7):
        page = page_of(client.get(url("detail", crm)))

    assert "Contacts" in page and "reads contacts" in page and "writes contacts" in page


# --- editing and deleting ----------------------------------------------------------------------------------------


def test_editing_shows_the_settings_but_never_the_credentials(client, alice, make_connection):
    connection = make_connection("Shop", api_key=SECRET, default_phone_country="US")
    client.force_login(alice)

    page = page_of(client.get(url("edit", connection)))

    assert 'value="Shop"' in page and 'value="US"' in page
    assert 'type="password" name="credentials__api_key"' in page and SECRET not in page
    assert "Leave empty to keep the current one." in page


def test_editing_keeps_the_credentials_and_the_settings_the_form_does_not_show(client, alice, make_connection):
    connection = make_connection("Shop", api_key=SECRET, faults={"failure_rate": 0.2})
    client.force_login(alice)

    response = client.post(url("edit", connection), {"name": "Web shop", "max_concurrency": 2,
                                                     "config__default_phone_country": "GB"})

    assert response.status_code == 302
    connection.refresh_from_db()
    assert connection.name == "Web shop" and connection.max_concurrency == 2
    assert connection.config == {"faults": {"failure_rate": 0.2}, "default_phone_country": "GB"}
    assert connection.credentials == {"api_key": SECRET}


def test_editing_replaces_the_credentials_when_new_ones_are_given(client, alice, crm):
    client.force_login(alice)

    response = client.post(url("edit", crm), {"name": "Acme CRM", "max_concurrency": 4,
                                              "credentials__api_key": "sk_rotated"}, follow=True)

    crm.refresh_from_db()
    assert crm.credentials == {"api_key": "sk_rotated"}
    assert "Reconnect it to check the new credentials" in page_of(response)


def test_edit_errors_stay_on_the_form(client, alice, crm, make_connection):
    make_connection("Taken")
    client.force_login(alice)

    response = client.post(url("edit", crm), {"name": "Taken", "max_concurrency": 99,
                                              "config__timeout_seconds": "soon", "credentials__api_key": SECRET})

    page = page_of(response)
    assert set(response.context["form"].errors) == {"max_concurrency", "config__timeout_seconds"}
    assert SECRET not in page
    response = client.post(url("edit", crm), {"name": "Taken", "max_concurrency": 4})
    assert response.context["form"].errors == {"name": ["Another connection of your organization has this name."]}
    assert "<h1>Edit Acme CRM</h1>" in page_of(response)
    crm.refresh_from_db()
    assert crm.name == "Acme CRM"


def test_deleting_asks_first_then_deletes(client, alice, crm):
    client.force_login(alice)

    confirm = page_of(client.get(url("delete", crm)))
    response = client.post(url("delete", crm), follow=True)

    assert "Delete Acme CRM?" in confirm
    assert not Connection.objects.filter(pk=crm.pk).exists()
    assert "Acme CRM is deleted." in page_of(response)


def test_a_connection_mappings_use_is_not_deleted_and_the_refusal_says_which(client, alice, make_mapping):
    mapping = make_mapping()
    client.force_login(alice)

    confirm = page_of(client.get(url("delete", mapping.source_connection)))
    response = client.post(url("delete", mapping.source_connection), follow=True)

    assert "Mappings use this connection" in confirm and mapping.name in confirm
    page = page_of(response)
    assert "is used by the mapping(s)" in page and mapping.name in page
    assert Connection.objects.filter(pk=mapping.source_connection_id).exists()
    assert Mapping.objects.filter(pk=mapping.pk).exists()


def test_the_pages_have_no_inline_script_or_style(client, alice, crm):
    client.force_login(alice)

    for name in DETAIL_PAGES:
        page = page_of(client.get(url(name, crm)))
        for tag in page.split("<script")[1:]:
            assert tag.lstrip().startswith("src="), tag[:80]
        assert " style=" not in page and " onclick=" not in page
