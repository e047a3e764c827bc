"""The browser UI's pages with Django's test client: logging in, tenancy, roles, the overview's content and its
query count. Every page of the UI goes into UI_PAGES, so it is checked for login."""

import json
from io import StringIO

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.http import Http404
from django.urls import reverse
from django.views.generic import DetailView

from accounts.access import SESSION_ORG_KEY, OrgRequiredMixin
from accounts.models import Membership, Role
from mappings.models import Mapping
from syncs.models import RunStatus, SyncRun

# Every page of the browser UI (url name, kwargs): each must send an anonymous visitor to the login page.
UI_PAGES = [("home", {}), ("runs_in_progress", {})]


@pytest.fixture
def viewer(org, django_user_model):
    user = django_user_model.objects.create_user("victor", "victor@example.org", "victor-password")
    Membership.objects.create(user=user, organization=org, role=Role.VIEWER)
    return user


def overview(client, user):
    client.force_login(user)
    response = client.get(reverse("home"))
    assert response.status_code == 200
    return response, response.content.decode()


@pytest.mark.parametrize(("url_name", "kwargs"), UI_PAGES)
def test_every_page_sends_anonymous_visitors_to_the_login(client, db, url_name, kwargs):
    url = reverse(url_name, kwargs=kwargs)

    response = client.get(url)

    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={url}"


def test_a_polled_partial_of_an_expired_session_sends_the_whole_page_to_the_login(client, db):
    response = client.get(reverse("runs_in_progress"), headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/"})

    assert response.status_code == 200
    assert response["HX-Redirect"] == f"{reverse('login')}?next=/"


def test_the_login_page_shows_the_demo_credentials_in_development(client, db, settings):
    call_command("demo", stdout=StringIO())
    settings.DEBUG = True

    page = client.get(reverse("login")).content.decode()

    assert "Demo account" in page
    assert "<kbd>demo</kbd>" in page and "<kbd>resync-demo</kbd>" in page


def test_the_login_page_keeps_them_to_itself_in_production(client, db, settings):
    call_command("demo", stdout=StringIO())
    settings.DEBUG = False

    page = client.get(reverse("login")).content.decode()

    assert "resync-demo" not in page


def test_the_overview_shows_each_target_its_failures_groups_and_what_is_paused(client, alice, org, history_of):
    history_of(org, "Acme")

    response, page = overview(client, alice)

    targets = response.context["targets"]
    assert [target["connection"].name for target in targets] == ["Acme CRM"]
    crm = targets[0]
    # Per mapping, three runs finished in the last day: succeeded, partially failed (12), failed (5).
    assert (crm["success"]["succeeded"], crm["success"]["failed"]) == (2 * (40 + 30 + 35), 2 * (12 + 5))
    assert crm["records"] == {"connection_id": crm["connection"].pk, "connection": "Acme CRM", "synced": 10,
                              "failed": 24, "unsynced": 24}
    assert "Acme CRM" in page and "Needs reauthentication" in page
    assert "The shop refused the API key (401)" in page
    assert "Paused after 3 failed runs in a row" in page
    assert "Invalid email address" in page  # an error group's message, and a latest failure
    assert response.context["error_group_count"] == 8 and response.context["open_errors"] == 24
    assert [run.status for run in response.context["runs_in_progress"]] == [RunStatus.RUNNING]
    # The unsynced figures lead to the record status table, filtered to those records.
    unsynced = f"/records/?target_connection={crm['connection'].code}&amp;status=failed&amp;status=pending"
    assert unsynced in page and "/records/?status=failed&amp;status=pending" in page


def test_the_overview_hands_the_error_trend_to_the_chart(client, alice, org, history_of):
    history_of(org, "Acme")

    _response, page = overview(client, alice)

    data = page.split('<script id="error-trend-data" type="application/json">')[1].split("</script>")[0]
    hours = json.loads(data)
    assert len(hours) == 7 * 24
    assert sum(hour["count"] for hour in hours) == 24
    assert '<canvas id="error-trend-chart"' in page
    assert "/static/vendor/chartjs/chart.umd.js" in page and "/static/js/overview.js" in page


def test_the_overview_shows_nothing_of_another_organization(client, alice, org, other_org, history_of):
    history_of(org, "Acme")
    history_of(other_org, "Globex")

    response, page = overview(client, alice)

    assert "Globex" not in page
    assert sum(hour["count"] for hour in response.context["error_trend"]) == 24  # not 48
    assert response.context["open_errors"] == 24
    assert all(run.organization_id == org.pk for run in response.context["runs_in_progress"])


def test_a_new_organization_is_told_what_to_do_first(client, alice):
    _response, page = overview(client, alice)

    assert "Connect your first system" in page
    assert "python manage.py demo" in page


def test_a_new_mapping_without_runs_gets_empty_states_that_say_what_comes_next(client, alice, make_mapping):
    make_mapping()

    _response, page = overview(client, alice)

    assert "No runs yet" in page and "manage.py sync --org acme" in page
    assert "Nothing is running right now" in page
    assert "No open error groups" in page
    assert "No record errors in the last 7 days." in page


def test_the_overview_queries_stay_bounded_as_history_grows(client, alice, org, history_of,
                                                            django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    history_of(org, "Acme", failed_records=2)
    client.force_login(alice)
    with CaptureQueriesContext(connection) as small:
        client.get(reverse("home"))
    history_of(org, "Acme bigger", failed_records=20)

    with django_assert_max_num_queries(16):
        response = client.get(reverse("home"))

    assert response.status_code == 200
    assert len(small.captured_queries) <= 16


def test_the_runs_in_progress_partial_polls_fast_only_while_something_runs(client, alice, make_mapping):
    mapping = make_mapping()
    client.force_login(alice)

    idle = client.get(reverse("runs_in_progress"), headers={"HX-Request": "true"}).content.decode()
    run = SyncRun.objects.create(organization=mapping.organization, mapping=mapping, status=RunStatus.RUNNING,
                                 read=7)
    busy = client.get(reverse("runs_in_progress"), headers={"HX-Request": "true"}).content.decode()

    assert 'hx-trigger="every 15s"' in idle and "Nothing is running right now" in idle
    assert 'hx-trigger="every 3s"' in busy and mapping.name in busy
    assert "<html" not in busy  # the section alone, swapped into the page
    run.delete()


def test_a_viewer_sees_the_overview_but_cannot_resume_a_mapping(client, viewer, org, history_of):
    paused = history_of(org, "Acme")[-1]

    _response, page = overview(client, viewer)
    response = client.post(reverse("mappings:resume", args=[paused.code]))

    assert "Paused after 3 failed runs" in page
    assert reverse("mappings:resume", args=[paused.code]) not in page  # no button a viewer could only fail with
    assert response.status_code == 403
    assert "viewer" in response.content.decode()
    paused.refresh_from_db()
    assert not paused.is_active


def test_a_member_resumes_a_paused_mapping_from_the_overview(client, bob, org, history_of):
    paused = history_of(org, "Acme")[-1]
    client.force_login(bob)

    response = client.post(reverse("mappings:resume", args=[paused.code]), follow=True)

    paused.refresh_from_db()
    assert paused.is_active and paused.paused_reason == ""
    assert f"{paused.name} is active again" in response.content.decode()


def test_another_organizations_mapping_answers_404_like_one_that_does_not_exist(client, alice, other_org,
                                                                                history_of):
    theirs = history_of(other_org, "Globex")[-1]
    client.force_login(alice)

    assert client.post(reverse("mappings:resume", args=[theirs.code])).status_code == 404
    assert client.post(reverse("mappings:resume", args=["0" * 8 + "-0000-0000-0000-" + "0" * 12])).status_code == 404
    theirs.refresh_from_db()
    assert not theirs.is_active


def test_resuming_is_a_post(client, alice, org, history_of):
    paused = history_of(org, "Acme")[-1]
    client.force_login(alice)

    assert client.get(reverse("mappings:resume", args=[paused.code])).status_code == 405


def test_the_switcher_shows_only_for_users_of_several_organizations(client, alice, other_org):
    _response, single = overview(client, alice)
    Membership.objects.create(user=alice, organization=other_org, role=Role.VIEWER)
    _response, several = overview(client, alice)

    assert reverse("organization_switch") not in single
    assert reverse("organization_switch") in several
    assert '<option value="globex">Globex</option>' in several


def test_switching_organization_changes_what_every_page_shows(client, alice, org, other_org, history_of):
    history_of(org, "Acme")
    history_of(other_org, "Globex")
    Membership.objects.create(user=alice, organization=other_org, role=Role.VIEWER)
    client.force_login(alice)

    response = client.post(reverse("organization_switch"), {"organization": "globex"}, follow=True)

    page = response.content.decode()
    assert response.redirect_chain == [(reverse("home"), 302)]
    assert client.session[SESSION_ORG_KEY] == "globex"
    assert "You are now working in Globex." in page
    assert "Globex CRM" in page
    assert "Acme CRM" not in page and "Acme contacts" not in page  # Acme stays in the switcher only


def test_nobody_switches_into_an_organization_they_do_not_belong_to(client, alice, other_org):
    client.force_login(alice)

    response = client.post(reverse("organization_switch"), {"organization": "globex"}, follow=True)

    assert SESSION_ORG_KEY not in client.session
    assert "You are not a member of that organization." in response.content.decode()
    assert response.context["request"].org.slug == "acme"


def test_switching_is_a_post_with_csrf(alice, other_org):
    from django.test import Client

    Membership.objects.create(user=alice, organization=other_org, role=Role.VIEWER)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    assert client.get(reverse("organization_switch")).status_code == 405
    assert client.post(reverse("organization_switch"), {"organization": "globex"}).status_code == 403
    assert SESSION_ORG_KEY not in client.session


def test_a_viewer_may_switch_organization(client, viewer, other_org):
    Membership.objects.create(user=viewer, organization=other_org, role=Role.VIEWER)
    client.force_login(viewer)

    response = client.post(reverse("organization_switch"), {"organization": "globex"})

    assert response.status_code == 302
    assert client.session[SESSION_ORG_KEY] == "globex"


def test_the_layout_has_landmarks_a_skip_link_and_no_inline_script(client, alice, org, history_of):
    history_of(org, "Acme")

    _response, page = overview(client, alice)

    assert '<a class="skip-link" href="#main">' in page and '<main id="main"' in page
    assert '<nav class="app-nav" aria-label="Main">' in page
    assert '<a href="/" aria-current="page">Overview</a>' in page
    # CSP-friendly: every script is a file, no event handler attributes, no style attributes.
    for tag in page.split("<script")[1:]:
        assert tag.lstrip().startswith(("src=", 'id="error-trend-data" type="application/json"')), tag[:80]
    assert " onclick=" not in page and " onchange=" not in page and " style=" not in page


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN, Role.MEMBER])
def test_roles_that_write_may_act(client, org, role, django_user_model, make_mapping):
    user = django_user_model.objects.create_user(f"user-{role}", password="x")
    Membership.objects.create(user=user, organization=org, role=role)
    mapping = make_mapping()
    Mapping.objects.filter(pk=mapping.pk).update(is_active=False, paused_reason="by hand")
    client.force_login(user)

    assert client.post(reverse("mappings:resume", args=[mapping.code])).status_code == 302



class MappingDetail(OrgRequiredMixin, DetailView):
    # The shape a later page takes: a class-based view over a tenant model, looked up by its UUID.
    model = Mapping
    slug_field = slug_url_kwarg = "code"
    template_name = "404.html"  # any template: the test looks at the answer's status only


def class_based_request(rf, user, method="get"):
    request = getattr(rf, method)("/")
    request.user, request.session = user, {}
    return request


def test_the_class_based_mixin_finds_only_the_organizations_objects(rf, alice, make_mapping, other_org):
    ours, theirs = make_mapping(), make_mapping(organization=other_org)

    found = MappingDetail.as_view()(class_based_request(rf, alice), code=ours.code)

    assert found.status_code == 200 and found.context_data["object"] == ours
    with pytest.raises(Http404):
        MappingDetail.as_view()(class_based_request(rf, alice), code=theirs.code)


def test_the_class_based_mixin_refuses_a_viewers_post(rf, viewer, make_mapping):
    mapping = make_mapping()

    with pytest.raises(PermissionDenied):
        MappingDetail.as_view()(class_based_request(rf, viewer, "post"), code=mapping.code)
