"""Suggested fixes on the error groups page, with Django's test client: each group shows its fix with what it
changes in the mapping; applying it goes through the service the API calls and the group recovers; a bad value is
a form error next to its field; a viewer sees the suggestion but no button and gets 403; another organization's
group answers 404."""

import pytest
from django.urls import reverse

from accounts.models import Membership, Role
from integrations.connectors.sandbox import seed_records
from mappings.models import FieldMapping
from syncs.models import ErrorGroupRetry, RecordError
from tests.syncs.helpers import person, records, run_mapping

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(org, django_user_model):
    user = django_user_model.objects.create_user("victor", "victor@example.org", "victor-password")
    Membership.objects.create(user=user, organization=org, role=Role.VIEWER)
    return user


@pytest.fixture
def phones(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts",
                 [person(n, phone=f"(415) 555-01{n:02d}") for n in range(1, 4)])
    run_mapping(mapping)
    return mapping, RecordError.objects.order_by("-pk").first().fingerprint


@pytest.fixture
def missing(make_mapping):
    mapping = make_mapping()
    seed_records(mapping.source_connection, "contacts", [person(1, last_name=""), person(2, last_name="")])
    run_mapping(mapping)
    return mapping, RecordError.objects.order_by("-pk").first().fingerprint


def fix_url(fingerprint, kind):
    return reverse("error_group_fix", args=[fingerprint, kind])


def test_each_group_shows_its_fix_with_the_mapping_before_and_after(client, bob, phones):
    client.force_login(bob)

    response = client.get(reverse("error_groups"))

    html = response.content.decode()
    (group,) = response.context["groups"]
    (fix,) = group["fixes"]
    assert fix["suggestion"].kind == "add_phone_e164"
    assert fix["rows"] == [{"label": "phone → phone", "key": "transforms", "before": "trim",
                            "after": "trim › phone_e164"}]
    assert "Suggested fix: Format the phone numbers as E.164" in html
    assert "<code>trim › phone_e164</code>" in html
    assert 'aria-label="Apply fix: Format the phone numbers as E.164' in html
    assert f'action="{fix_url(phones[1], "add_phone_e164")}"' in html


def test_applying_a_fix_changes_the_mapping_and_the_group_recovers(client, bob, phones, execute_queued):
    mapping, fingerprint = phones
    client.force_login(bob)

    with execute_queued():
        response = client.post(fix_url(fingerprint, "add_phone_e164"), {"back": "/errors/groups/?filtered=1"})

    assert response.status_code == 302 and response.url == "/errors/groups/?filtered=1"
    assert FieldMapping.objects.get(target_field="phone").transforms[-1] == {"name": "phone_e164", "args": {}}
    assert len(records(mapping.target_connection)) == 3
    page = client.get(response.url)
    html = page.content.decode()
    # The message was written before the queued retry ran (here, when the request's transaction had ended).
    assert f"Fix applied to “{mapping.name}”. Retrying one record of the group first" in html
    assert page.context["groups"] == []
    (progress,) = page.context["progress"]
    assert progress.state == "recovered"
    assert "Groups retried lately" in html and "Recovered" in html
    assert not page.context["progress_live"]  # nothing left to poll for


def test_while_the_first_record_is_retried_the_group_says_so_and_the_page_polls(client, bob, phones):
    mapping, fingerprint = phones
    client.force_login(bob)

    # The retry waits for a worker here (its task is queued on commit, which this test does not run).
    client.post(fix_url(fingerprint, "add_phone_e164"))

    page = client.get(reverse("error_groups"))
    assert f"Fix applied to “{mapping.name}”. Retrying one record of the group first; the other 2 follow" in \
        page.content.decode()
    assert [item.state for item in page.context["progress"]] == ["probing"]
    assert page.context["progress_live"]
    partial = client.get(reverse("error_groups_progress")).content.decode()
    assert 'hx-get="/errors/groups/progress/"' in partial and "Probing" in partial
    # A second click changes nothing again and says why.
    again = client.post(fix_url(fingerprint, "add_phone_e164"), follow=True).content.decode()
    assert "The fix was already in" in again and "already waiting for its first record" in again
    assert FieldMapping.objects.get(target_field="phone").transforms == [{"name": "trim"},
                                                                        {"name": "phone_e164", "args": {}}]


def test_a_default_is_typed_in_and_a_bad_one_is_a_form_error(client, bob, missing, execute_queued):
    mapping, fingerprint = missing
    client.force_login(bob)
    html = client.get(reverse("error_groups")).content.decode()
    assert 'name="param-value"' in html and "Default value" in html
    assert "Suggested fix: Ignore the records that lack it" in html

    refused = client.post(fix_url(fingerprint, "set_default"), {"param-value": "x" * 41,
                                                               "back": "/errors/groups/?filtered=1"})

    assert refused.status_code == 400
    assert "the target allows 40" in refused.content.decode()
    assert 'aria-invalid="true"' in refused.content.decode()
    assert FieldMapping.objects.get(target_field="last_name").default_value is None

    with execute_queued():
        client.post(fix_url(fingerprint, "set_default"), {"param-value": "Unknown"})

    assert {r.data["last_name"] for r in records(mapping.target_connection)} == {"Unknown"}
    assert ErrorGroupRetry.objects.get().status == "retried"


def test_a_fix_for_another_cause_or_an_unknown_kind_is_refused_on_the_page(client, bob, phones):
    client.force_login(bob)

    for kind in ("add_truncate", "reboot"):
        response = client.post(fix_url(phones[1], kind))
        assert response.status_code == 400
    assert FieldMapping.objects.get(target_field="phone").transforms == [{"name": "trim"}]
    assert not ErrorGroupRetry.objects.exists()


def test_a_viewer_sees_the_fix_but_cannot_apply_it(client, viewer, phones):
    client.force_login(viewer)

    html = client.get(reverse("error_groups")).content.decode()

    assert "Suggested fix: Format the phone numbers as E.164" in html
    assert "Apply fix" not in html
    assert client.post(fix_url(phones[1], "add_phone_e164")).status_code == 403
    assert FieldMapping.objects.get(target_field="phone").transforms == [{"name": "trim"}]


def test_another_organizations_group_answers_404(client, charlie, phones):
    client.force_login(charlie)

    assert client.post(fix_url(phones[1], "add_phone_e164")).status_code == 404
    assert client.post(fix_url("0" * 40, "add_phone_e164")).status_code == 404
    assert FieldMapping.objects.get(target_field="phone").transforms == [{"name": "trim"}]


def test_the_groups_page_reads_a_page_of_groups_in_bounded_queries(client, bob, make_mapping,
                                                                   django_assert_max_num_queries):
    for n in range(5):
        mapping = make_mapping()
        seed_records(mapping.source_connection, "contacts", [person(n, phone="415 555 0100"),
                                                             person(n + 10, first_name="Z" * 45)])
        run_mapping(mapping)
    client.force_login(bob)

    with django_assert_max_num_queries(20):
        response = client.get(reverse("error_groups"))

    assert len(response.context["groups"]) == 10
    assert all(len(group["fixes"]) == 1 for group in response.context["groups"])
