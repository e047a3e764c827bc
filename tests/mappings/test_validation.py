from datetime import date, datetime

import pytest

from integrations.connectors.base import FieldSpec, FieldType, ObjectSchema
from mappings.validation import validate_payload

CONTACT = ObjectSchema(
    name="contact",
    label="Contact",
    fields={
        "id": FieldSpec("id", read_only=True),
        "email": FieldSpec("email", FieldType.EMAIL, required=True, max_length=80),
        "first_name": FieldSpec("first_name", max_length=40),
        "last_name": FieldSpec("last_name", required=True, max_length=80),
        "address": FieldSpec("address", FieldType.TEXT, max_length=20),
        "website": FieldSpec("website", FieldType.URL, max_length=20),
        "phone": FieldSpec("phone", FieldType.PHONE),
        "mobile": FieldSpec("mobile", FieldType.PHONE, format="e164"),
        "employees": FieldSpec("employees", FieldType.INTEGER),
        "revenue": FieldSpec("revenue", FieldType.NUMBER),
        "opted_in": FieldSpec("opted_in", FieldType.BOOLEAN),
        "birthday": FieldSpec("birthday", FieldType.DATE),
        "member_since": FieldSpec("member_since", FieldType.DATE, format="%d/%m/%Y"),
        "last_seen": FieldSpec("last_seen", FieldType.DATETIME),
    },
)
VALID = {"email": "ada@example.com", "last_name": "Lovelace"}


def check(extra=None, **options):
    return validate_payload({**VALID, **(extra or {})}, CONTACT, **options)


def codes(problems):
    return [(problem.field, problem.code) for problem in problems]


def only_error(result):
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


def test_a_valid_payload_is_ok_and_unchanged():
    payload = {
        **VALID,
        "first_name": "Ada",
        "phone": "(415) 555-2671",
        "mobile": "+14155552671",
        "employees": "12",
        "revenue": "1234.50",
        "opted_in": "yes",
        "birthday": "1815-12-10",
        "member_since": "10/12/1835",
        "last_seen": "2024-03-05T14:30:00Z",
    }
    result = validate_payload(payload, CONTACT)
    assert result.ok
    assert result.errors == []
    assert result.warnings == []
    assert result.payload == payload


def test_empty_optional_fields_are_fine():
    result = check({"first_name": "", "phone": None, "employees": "  ", "birthday": None})
    assert result.ok


# mapping problems


def test_a_field_the_target_does_not_have_is_a_mapping_error():
    problem = only_error(check({"nickname": "Countess"}))
    assert (problem.field, problem.code, problem.category) == ("nickname", "field_not_found", "mapping")
    assert "nickname does not exist in Contact" in problem.message


def test_a_read_only_field_is_a_mapping_error():
    problem = only_error(check({"id": "003xx"}))
    assert (problem.field, problem.code, problem.category) == ("id", "read_only", "mapping")
    assert "id is read-only" in problem.message


def test_a_required_field_the_target_does_not_have_is_a_mapping_error():
    problem = only_error(check(required_fields=["nickname"]))
    assert (problem.code, problem.category) == ("field_not_found", "mapping")


# required fields and defaults


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_an_empty_required_field_is_required_missing(empty):
    problem = only_error(check({"last_name": empty}))
    assert (problem.field, problem.code, problem.category) == ("last_name", "required_missing", "validation")
    assert "last_name is required" in problem.message


def test_a_required_field_missing_from_the_payload_is_required_missing():
    result = validate_payload({"email": "ada@example.com"}, CONTACT)
    assert codes(result.errors) == [("last_name", "required_missing")]


def test_a_default_fills_an_empty_required_field_without_auto_fix():
    # Users expect a default to fill an empty value; auto-fix is about changing values that are present.
    for auto_fix in (False, True):
        result = check({"last_name": " "}, auto_fix=auto_fix, defaults={"last_name": "Unknown"})
        assert result.ok
        assert result.payload["last_name"] == "Unknown"
        assert result.warnings == []  # the operator's own setting, not a fix to flag


def test_a_default_adds_a_required_field_missing_from_the_payload():
    result = validate_payload({"email": "ada@example.com"}, CONTACT, defaults={"last_name": "Unknown"})
    assert result.ok
    assert result.payload == {"email": "ada@example.com", "last_name": "Unknown"}


def test_an_empty_default_does_not_fill_a_required_field():
    result = check({"last_name": ""}, auto_fix=True, defaults={"last_name": " "})
    assert codes(result.errors) == [("last_name", "required_missing")]


def test_a_default_fills_an_optional_empty_field_too():
    result = check({"first_name": ""}, defaults={"first_name": "Friend"})
    assert result.ok
    assert result.payload["first_name"] == "Friend"


def test_a_default_never_replaces_a_value():
    result = check({"first_name": "Ada"}, defaults={"first_name": "Friend"})
    assert result.payload["first_name"] == "Ada"


def test_a_default_is_checked_like_any_value():
    result = validate_payload({"last_name": "Lovelace"}, CONTACT, defaults={"email": "not an email"})
    assert codes(result.errors) == [("email", "invalid_email")]


def test_required_fields_makes_an_optional_target_field_required():
    result = check({"first_name": ""}, required_fields=["first_name", "phone"])
    assert codes(result.errors) == [("first_name", "required_missing"), ("phone", "required_missing")]


def test_required_fields_can_be_filled_by_defaults():
    result = check(auto_fix=True, required_fields=["first_name"], defaults={"first_name": "Friend"})
    assert result.ok
    assert result.payload["first_name"] == "Friend"


def test_a_read_only_required_field_is_not_demanded():
    schema = ObjectSchema("deal", {"id": FieldSpec("id", required=True, read_only=True), "name": FieldSpec("name")})
    assert validate_payload({"name": "Big deal"}, schema).ok


# too long


def test_a_value_over_the_limit_is_too_long():
    problem = only_error(check({"first_name": "A" * 57}))
    assert (problem.field, problem.code, problem.category) == ("first_name", "too_long", "validation")
    assert problem.message == "first_name is 57 characters long; the target allows 40"
    assert problem.original == "A" * 57


def test_a_value_at_the_limit_is_fine():
    assert check({"first_name": "A" * 40}).ok


def test_auto_fix_truncates_text_to_the_limit():
    address = "12 Long Winding Road, Springfield"
    result = check({"address": address}, auto_fix=True)
    assert result.ok
    assert result.payload["address"] == address[:20]
    [warning] = result.warnings
    assert (warning.field, warning.code, warning.original, warning.fixed) == (
        "address",
        "truncated",
        address,
        address[:20],
    )
    assert "from 33 to 20 characters" in warning.message


def test_auto_fix_does_not_truncate_what_truncation_would_break():
    long_email = "a" * 70 + "@example.com"
    result = check({"email": long_email, "website": "https://example.com/a/long/path"}, auto_fix=True)
    assert codes(result.errors) == [("email", "too_long"), ("website", "too_long")]
    assert result.warnings == []


# email


@pytest.mark.parametrize("bad", ["not an email", "ada@", "ada@example", " ada@example.com"])
def test_an_invalid_email_is_invalid_email_even_with_auto_fix(bad):
    for auto_fix in (False, True):
        problem = only_error(check({"email": bad}, auto_fix=auto_fix))
        assert (problem.field, problem.code, problem.category) == ("email", "invalid_email", "validation")
        assert bad in problem.message


# phone


@pytest.mark.parametrize(
    ("number", "country"),
    [("(415) 555-2671", "US"), ("+1 415 555 2671", "US"), ("020 7946 0958", "GB"), ("030 901820", "DE")],
)
def test_a_valid_phone_number_for_the_country_is_fine(number, country):
    assert check({"phone": number}, phone_country=country).ok


@pytest.mark.parametrize("bad", ["call me maybe", "(555) ABC-1234", "123", "415_555_2671"])
def test_an_invalid_phone_number_is_invalid_phone(bad):
    problem = only_error(check({"phone": bad}))
    assert (problem.field, problem.code, problem.category) == ("phone", "invalid_phone", "validation")
    assert bad in problem.message
    assert "for US" in problem.message


def test_a_phone_number_of_another_country_is_invalid_for_the_mapping_country():
    assert codes(check({"phone": "020 7946 0958"}).errors) == [("phone", "invalid_phone")]


def test_auto_fix_strips_punctuation_that_makes_a_phone_number_unreadable():
    result = check({"phone": "415_555_2671"}, auto_fix=True)
    assert result.ok
    assert result.payload["phone"] == "4155552671"
    [warning] = result.warnings
    assert (warning.code, warning.original, warning.fixed) == (
        "phone_punctuation_stripped",
        "415_555_2671",
        "4155552671",
    )


def test_auto_fix_strips_hyphens_for_a_target_that_wants_e164():
    result = check({"mobile": "+1-415-555-2671"}, auto_fix=True)
    assert result.ok
    assert result.payload["mobile"] == "+14155552671"
    assert codes(result.warnings) == [("mobile", "phone_punctuation_stripped")]


def test_a_national_number_for_an_e164_target_needs_the_phone_e164_transform():
    problem = only_error(check({"mobile": "(415) 555-2671"}, auto_fix=True))
    assert problem.code == "invalid_phone"
    assert "phone_e164" in problem.message


def test_auto_fix_cannot_save_a_phone_number_that_is_not_one():
    result = check({"phone": "(555) ABC-1234"}, auto_fix=True)
    assert codes(result.errors) == [("phone", "invalid_phone")]
    assert result.warnings == []
    assert result.payload["phone"] == "(555) ABC-1234"


# types


@pytest.mark.parametrize(
    ("field", "good"),
    [
        ("employees", 12),
        ("employees", "12"),
        ("employees", " 12 "),
        ("employees", 12.0),
        ("revenue", 1234.5),
        ("revenue", "-1234.50"),
        ("revenue", "1e3"),
        ("opted_in", True),
        ("opted_in", "false"),
        ("opted_in", "Yes"),
        ("opted_in", 0),
    ],
)
def test_values_that_coerce_to_the_field_type_are_fine(field, good):
    assert check({field: good}).ok


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("employees", "abc"),
        ("employees", "12.5"),
        ("employees", True),
        ("revenue", "abc"),
        ("revenue", "NaN"),
        ("revenue", float("inf")),
        ("opted_in", "maybe"),
        ("opted_in", 2),
        ("first_name", {"given": "Ada"}),
        ("first_name", ["Ada"]),
    ],
)
def test_values_that_do_not_coerce_are_invalid_type(field, bad):
    problem = only_error(check({field: bad}))
    assert (problem.field, problem.code, problem.category) == (field, "invalid_type", "validation")
    assert field in problem.message


@pytest.mark.parametrize(
    ("field", "good"),
    [
        ("birthday", "1815-12-10"),
        ("birthday", date(1815, 12, 10)),
        ("member_since", "10/12/1835"),
        ("last_seen", "2024-03-05T14:30:00+00:00"),
        ("last_seen", "2024-03-05"),
        ("last_seen", datetime(2024, 3, 5, 14, 30)),
    ],
)
def test_dates_in_the_expected_format_are_fine(field, good):
    assert check({field: good}).ok


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("birthday", "10/12/1815"),
        ("birthday", "1815-13-40"),
        ("birthday", "2024-03-05T14:30:00"),
        ("birthday", datetime(2024, 3, 5, 14, 30)),
        ("member_since", "1835-12-10"),
        ("last_seen", "yesterday"),
        ("last_seen", 1709649000),
    ],
)
def test_dates_in_another_format_are_invalid_date(field, bad):
    problem = only_error(check({field: bad}))
    assert (problem.field, problem.code) == (field, "invalid_date")


def test_an_invalid_date_message_names_the_expected_format():
    assert "%d/%m/%Y" in only_error(check({"member_since": "1835-12-10"})).message
    assert "ISO 8601" in only_error(check({"birthday": "10/12/1815"})).message


# the whole payload


def test_every_problem_is_reported_not_only_the_first():
    payload = {
        "id": "003xx",
        "email": "not an email",
        "first_name": "A" * 57,
        "phone": "call me maybe",
        "employees": "many",
        "birthday": "someday",
        "nickname": "Countess",
    }
    result = validate_payload(payload, CONTACT)
    assert not result.ok
    assert codes(result.errors) == [
        ("id", "read_only"),
        ("email", "invalid_email"),
        ("first_name", "too_long"),
        ("phone", "invalid_phone"),
        ("employees", "invalid_type"),
        ("birthday", "invalid_date"),
        ("nickname", "field_not_found"),
        ("last_name", "required_missing"),
    ]


def test_auto_fix_records_one_warning_per_fix_and_leaves_the_rest_as_errors():
    payload = {"email": "ada@example.com", "address": "x" * 30, "phone": "415|555|2671", "employees": "many"}
    result = validate_payload(payload, CONTACT, auto_fix=True, defaults={"last_name": "Unknown"})
    assert codes(result.warnings) == [
        ("address", "truncated"),
        ("phone", "phone_punctuation_stripped"),
    ]
    assert codes(result.errors) == [("employees", "invalid_type")]
    assert result.payload == {
        "email": "ada@example.com",
        "address": "x" * 20,
        "phone": "4155552671",
        "employees": "many",
        "last_name": "Unknown",
    }


def test_the_input_payload_is_not_mutated():
    payload = {"email": "ada@example.com", "address": "x" * 30, "phone": "415_555_2671"}
    before = dict(payload)
    result = validate_payload(payload, CONTACT, auto_fix=True, defaults={"last_name": "Unknown"})
    assert payload == before
    assert result.payload is not payload
    assert result.payload != payload
