"""record_errors_matching: the one error filter behind the CLI, the admin and the API."""

import datetime
from types import SimpleNamespace

import pytest
import time_machine

from integrations.connectors.sandbox import seed_records
from syncs.models import ErrorLevel, ErrorStatus, RecordError
from syncs.review import error_ignore
from syncs.selectors import record_errors_matching
from tests.syncs.helpers import person, run_mapping

pytestmark = pytest.mark.django_db

MONDAY = datetime.datetime(2026, 11, 16, 9, 0, tzinfo=datetime.UTC)
TUESDAY = datetime.datetime(2026, 11, 17, 9, 0, tzinfo=datetime.UTC)
WRITE_503 = {"operations": ["write"], "failure_rate": 1.0, "failure_kind": "503"}


def ids(queryset):
    return set(queryset.values_list("pk", flat=True))


def pks(*errors):
    return {error.pk for error in errors}


@pytest.fixture
def failures(org, other_org, make_mapping, make_connection):
    """Acme: on Monday a CRM mapping fails two records on validation; on Tuesday a shop mapping fails two
    records against a target answering 503. Globex fails a record the same way as Acme's CRM."""
    with time_machine.travel(MONDAY, tick=False):
        crm = make_mapping()
        seed_records(
            crm.source_connection,
            "contacts",
            [
                person(1),
                person(2, last_name=""),
                person(3, email="not-an-email"),
            ],
            ids=["ct_1", "ct_2", "ct_3"],
        )
        crm_run = run_mapping(crm)
    with time_machine.travel(TUESDAY, tick=False):
        down = make_connection("Down CRM", faults=WRITE_503)
        shop = make_mapping(target=down, match_keys=[])
        seed_records(shop.source_connection, "contacts", [person(4), person(5)], ids=["ct_4", "ct_5"])
        shop_run = run_mapping(shop)
        foreign = make_mapping(organization=other_org)
        seed_records(foreign.source_connection, "contacts", [person(6, last_name="")], ids=["ct_6"])
        run_mapping(foreign)
    acme = RecordError.objects.filter(organization=org)
    return SimpleNamespace(
        crm=crm,
        crm_run=crm_run,
        shop=shop,
        shop_run=shop_run,
        down=down,
        foreign=foreign,
        missing_last_name=acme.get(source_record_id="ct_2"),
        invalid_email=acme.get(source_record_id="ct_3"),
        down_4=acme.get(source_record_id="ct_4"),
        down_5=acme.get(source_record_id="ct_5"),
        foreign_error=RecordError.objects.get(organization=other_org),
    )


def test_the_fixture_fails_the_records_it_says_it_does(failures):
    assert (failures.missing_last_name.category, failures.missing_last_name.error_code) == (
        "validation",
        "required_missing",
    )
    assert (failures.invalid_email.category, failures.invalid_email.error_code) == ("validation", "invalid_email")
    assert (failures.down_4.category, failures.down_4.error_code) == ("connection", "http_503")
    assert failures.foreign_error.error_code == "required_missing"


def test_without_filters_it_matches_every_error_of_the_organization_and_none_of_another(org, other_org, failures):
    assert ids(record_errors_matching(organization=org)) == pks(
        failures.missing_last_name, failures.invalid_email, failures.down_4, failures.down_5
    )
    assert ids(record_errors_matching(organization=other_org)) == pks(failures.foreign_error)


def test_it_needs_an_organization(failures):
    with pytest.raises(ValueError, match="needs an organization"):
        record_errors_matching(organization=None)


def test_it_filters_by_one_category_or_a_list_of_them(org, failures):
    assert ids(record_errors_matching(organization=org, category="connection")) == pks(failures.down_4, failures.down_5)
    assert ids(record_errors_matching(organization=org, category=["validation", "timeout"])) == pks(
        failures.missing_last_name, failures.invalid_email
    )
    assert not record_errors_matching(organization=org, category="auth").exists()


def test_an_empty_list_filters_nothing(org, failures):
    assert record_errors_matching(organization=org, category=[], status=[]).count() == 4


def test_it_filters_by_error_code(org, failures):
    assert ids(record_errors_matching(organization=org, code="invalid_email")) == pks(failures.invalid_email)
    assert ids(record_errors_matching(organization=org, code=["invalid_email", "http_503"])) == pks(
        failures.invalid_email, failures.down_4, failures.down_5
    )


def test_it_filters_by_level(org, failures, make_mapping, make_connection):
    flaky_source = make_connection("Flaky shop", faults={"fail_pages": [1]})
    flaky = make_mapping(source=flaky_source)
    seed_records(flaky_source, "contacts", [person(7)])
    run_mapping(flaky)
    batch_error = RecordError.objects.get(mapping=flaky)

    assert ids(record_errors_matching(organization=org, level=ErrorLevel.BATCH)) == pks(batch_error)
    assert record_errors_matching(organization=org, level="record").count() == 4
    assert record_errors_matching(organization=org, level=["record", "batch"]).count() == 5


def test_it_filters_by_status(org, failures):
    error_ignore(error=failures.down_5, reason="Test record, never meant to sync")

    assert ids(record_errors_matching(organization=org, status=ErrorStatus.IGNORED)) == pks(failures.down_5)
    assert ids(record_errors_matching(organization=org, status=["open", "retry_scheduled"])) == pks(
        failures.missing_last_name, failures.invalid_email, failures.down_4
    )


def test_it_filters_by_mapping_given_as_object_or_id(org, failures):
    expected = pks(failures.down_4, failures.down_5)

    assert ids(record_errors_matching(organization=org, mapping=failures.shop)) == expected
    assert ids(record_errors_matching(organization=org, mapping=failures.shop.pk)) == expected


def test_it_filters_by_the_mappings_target_connection_given_as_object_or_id(org, failures):
    expected = pks(failures.down_4, failures.down_5)

    assert ids(record_errors_matching(organization=org, target_connection=failures.down)) == expected
    assert ids(record_errors_matching(organization=org, target_connection=failures.down.pk)) == expected
    assert not record_errors_matching(organization=org, target_connection=failures.shop.source_connection).exists()


def test_it_filters_by_run_given_as_object_or_id(org, failures):
    expected = pks(failures.missing_last_name, failures.invalid_email)

    assert ids(record_errors_matching(organization=org, run=failures.crm_run)) == expected
    assert ids(record_errors_matching(organization=org, run=failures.crm_run.pk)) == expected


def test_since_is_inclusive_and_until_exclusive(org, failures):
    tuesdays = pks(failures.down_4, failures.down_5)
    mondays = pks(failures.missing_last_name, failures.invalid_email)

    assert ids(record_errors_matching(organization=org, since=TUESDAY)) == tuesdays
    assert ids(record_errors_matching(organization=org, until=TUESDAY)) == mondays
    assert ids(record_errors_matching(organization=org, since=MONDAY, until=TUESDAY)) == mondays
    assert not record_errors_matching(organization=org, since=TUESDAY, until=TUESDAY).exists()


def test_a_date_means_its_midnight(org, failures):
    assert ids(record_errors_matching(organization=org, since=datetime.date(2026, 11, 17))) == pks(
        failures.down_4, failures.down_5
    )
    assert ids(record_errors_matching(organization=org, until=datetime.date(2026, 11, 17))) == pks(
        failures.missing_last_name, failures.invalid_email
    )


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("VALID EMAIL", {"invalid_email"}),  # the message, case-insensitively
        ("ct_2", {"missing_last_name"}),  # the source record id
        ("HTTP_503", {"down_4", "down_5"}),  # the error code
        ("  ct_4  ", {"down_4"}),  # surrounding blanks do not count
        ("nothing like this", set()),
    ],
)
def test_search_looks_in_the_message_the_record_id_and_the_error_code(org, failures, term, expected):
    assert ids(record_errors_matching(organization=org, search=term)) == {
        getattr(failures, name).pk for name in expected
    }


def test_a_blank_search_filters_nothing(org, failures):
    assert record_errors_matching(organization=org, search="   ").count() == 4


def test_filters_combine_as_and(org, failures):
    matching = record_errors_matching(
        organization=org,
        category="validation",
        mapping=failures.crm,
        run=failures.crm_run,
        target_connection=failures.crm.target_connection,
        status="open",
        level="record",
        since=MONDAY,
        until=TUESDAY,
        search="last_name",
    )

    assert ids(matching) == pks(failures.missing_last_name)
    assert not record_errors_matching(organization=org, category="validation", mapping=failures.shop).exists()
    assert not record_errors_matching(organization=org, code="http_503", since=MONDAY, until=TUESDAY).exists()


def test_another_organizations_objects_never_match(org, other_org, failures):
    foreign_run = failures.foreign_error.run

    assert not record_errors_matching(organization=org, mapping=failures.foreign).exists()
    assert not record_errors_matching(organization=org, run=foreign_run.pk).exists()
    assert not record_errors_matching(organization=org, target_connection=failures.foreign.target_connection).exists()
    assert not record_errors_matching(organization=other_org, mapping=failures.crm, code="required_missing").exists()
    assert not record_errors_matching(organization=org, search="ct_6").exists()
