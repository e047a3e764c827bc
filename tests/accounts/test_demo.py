from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

from accounts.models import Membership, Organization, Role
from integrations.models import Connection, SandboxRecord
from mappings.models import ErrorStrategy, FieldMapping, Mapping
from notifications.models import Channel, Rule

pytestmark = pytest.mark.django_db

CONTACTS_MAPPING = "Shop customers → CRM contacts"
COMPANIES_MAPPING = "Shop companies → CRM companies"


def demo():
    out = StringIO()
    call_command("demo", stdout=out)
    return out.getvalue()


def row_counts():
    return {
        model.__name__: model.objects.count()
        for model in (
            Organization,
            get_user_model(),
            Membership,
            Connection,
            Mapping,
            FieldMapping,
            SandboxRecord,
            Channel,
            Rule,
        )
    }


def sandbox_data(connection_name, object_name):
    return [
        record.data
        for record in SandboxRecord.objects.filter(connection__name=connection_name, object_name=object_name)
    ]


def test_running_it_twice_creates_nothing_new():
    demo()
    first = row_counts()

    output = demo()

    assert row_counts() == first
    assert first["SandboxRecord"] > 80
    assert "Created" not in output


def test_it_creates_a_demo_owner_who_can_log_in_and_open_the_admin():
    output = demo()

    user = authenticate(username="demo", password="resync-demo")
    assert user is not None
    assert user.is_staff and user.is_superuser
    organization = Organization.objects.get(slug="demo")
    assert organization.name == "Demo Company"
    assert Membership.objects.get(user=user, organization=organization).role == Role.OWNER
    assert "Log in at http://127.0.0.1:8000/ as demo / resync-demo" in output


def test_a_rerun_resets_the_password_so_the_printed_login_works():
    demo()
    user = get_user_model().objects.get(username="demo")
    user.set_password("forgotten")
    user.save()

    demo()

    assert authenticate(username="demo", password="resync-demo") is not None


def test_it_creates_a_clean_shop_and_a_flaky_crm_without_printing_their_keys():
    output = demo()

    shop = Connection.objects.get(organization__slug="demo", name="Web shop (sandbox)")
    crm = Connection.objects.get(organization__slug="demo", name="CRM (sandbox)")
    assert (shop.provider, shop.config, shop.credentials) == ("sandbox", {}, {"api_key": "demo-shop-key"})
    assert crm.provider == "sandbox"
    assert crm.credentials == {"api_key": "demo-crm-key"}
    assert crm.config["faults"]["rate_limit_every"] == 7
    assert crm.config["faults"]["failure_kind"] == ["503", "timeout"]
    assert "demo-shop-key" not in output
    assert "demo-crm-key" not in output


def test_the_shop_holds_the_messy_records_the_demo_is_about():
    demo()

    contacts = sandbox_data("Web shop (sandbox)", "contacts")
    emails = [contact.get("email") for contact in contacts]
    assert 55 <= len(contacts) <= 65
    assert {"jane@", "bob at example.com", "Maria.Garcia@Example.com ", ""} <= set(emails)
    assert len(emails) - len(set(emails)) == 1  # one duplicate pair
    phones = {contact.get("phone") for contact in contacts}
    assert {"(415) 555-0132", "+44 20 7946 0958", "call me maybe"} <= phones
    assert any("last_name" not in contact for contact in contacts)
    assert any(len(contact["first_name"]) == 60 for contact in contacts)

    companies = sandbox_data("Web shop (sandbox)", "companies")
    assert 15 <= len(companies) <= 25
    assert sum(len(company["name"]) > 80 for company in companies) >= 2
    assert any(company["employee_count"] == "lots" for company in companies)


def test_the_crm_already_holds_the_lowercase_twin():
    demo()

    crm_emails = {contact["email"] for contact in sandbox_data("CRM (sandbox)", "contacts")}
    assert "maria.garcia@example.com" in crm_emails
    assert sandbox_data("CRM (sandbox)", "companies")


def test_it_does_not_reseed_an_object_that_already_has_records():
    demo()
    record = SandboxRecord.objects.filter(connection__name="CRM (sandbox)", object_name="contacts").first()
    record.data = {**record.data, "city": "Changed by a sync"}
    record.save()

    demo()

    record.refresh_from_db()
    assert record.data["city"] == "Changed by a sync"


def test_it_creates_the_two_mappings():
    demo()

    contacts = Mapping.objects.get(name=CONTACTS_MAPPING)
    assert (contacts.source_connection.name, contacts.source_object) == ("Web shop (sandbox)", "contacts")
    assert (contacts.target_connection.name, contacts.target_object) == ("CRM (sandbox)", "contacts")
    assert contacts.match_keys == [{"source": "email", "target": "email"}]
    assert contacts.error_strategy == ErrorStrategy.RETRY
    assert (contacts.schedule_type, contacts.schedule_interval_minutes) == ("interval", 15)
    assert contacts.filters[0]["op"] == "empty"
    email = contacts.field_mappings.get(target_field="email")
    assert email.transforms == [{"name": "trim", "args": {}}]  # no lowercase: on purpose
    assert contacts.field_mappings.get(target_field="phone").transforms == [{"name": "phone_e164", "args": {}}]
    assert contacts.field_mappings.count() == 7

    companies = Mapping.objects.get(name=COMPANIES_MAPPING)
    assert (companies.error_strategy, companies.auto_fix, companies.logging_level) == ("skip", True, "all")
    assert [field.target_field for field in companies.field_mappings.order_by("position")] == [
        "name",
        "domain",
        "phone",
        "industry",
        "employee_count",
    ]
    for field_mapping in FieldMapping.objects.all():
        assert field_mapping.organization == field_mapping.mapping.organization


def test_a_rerun_brings_edited_mappings_back():
    demo()
    mapping = Mapping.objects.get(name=CONTACTS_MAPPING)
    mapping.error_strategy = ErrorStrategy.FAIL_FAST
    mapping.save()
    mapping.field_mappings.filter(target_field="city").delete()
    mapping.field_mappings.create(organization=mapping.organization, source_field="city", target_field="notes")

    demo()

    mapping.refresh_from_db()
    assert mapping.error_strategy == ErrorStrategy.RETRY
    assert sorted(mapping.field_mappings.values_list("target_field", flat=True)) == [
        "city",
        "company",
        "customer_number",
        "email",
        "first_name",
        "last_name",
        "phone",
    ]


def test_it_sets_up_an_email_channel_and_the_rules_a_team_starts_with():
    demo()

    channel = Channel.objects.get(organization__slug="demo")
    assert (channel.kind, channel.recipients, channel.is_enabled) == ("email", ["demo@example.com"], True)
    rules = {rule.condition: rule for rule in Rule.objects.filter(organization__slug="demo")}
    assert set(rules) == {"every_error", "auth_error"}
    assert all(list(rule.channels.all()) == [channel] for rule in rules.values())
