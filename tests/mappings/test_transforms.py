from datetime import date, datetime

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given
from hypothesis import strategies as st

from mappings.transforms import TRANSFORMS, TransformContext, TransformError, apply_transforms, validate_transforms


def run(value, *specs, record=None, phone_country="US"):
    context = TransformContext(record=record or {}, phone_country=phone_country)
    return apply_transforms(value, list(specs), context=context)


def t(name, **args):
    return {"name": name, "args": args}


def invalid_message(specs):
    with pytest.raises(ValidationError) as excinfo:
        validate_transforms(specs)
    return " ".join(excinfo.value.messages)


def test_every_transform_has_a_name_and_a_label():
    assert set(TRANSFORMS) == {
        "trim",
        "lowercase",
        "uppercase",
        "phone_e164",
        "email_normalize",
        "truncate",
        "default",
        "digits_only",
        "date_format",
        "value_map",
        "concat",
        "split",
    }
    for name, transform in TRANSFORMS.items():
        assert transform.name == name
        assert transform.label


# trim, lowercase, uppercase


def test_trim_removes_surrounding_whitespace():
    assert run("  Ada Lovelace \n", t("trim")) == "Ada Lovelace"


def test_lowercase_and_uppercase_change_case():
    assert run("Ada", t("lowercase")) == "ada"
    assert run("Ada", t("uppercase")) == "ADA"


def test_string_transforms_pass_none_through():
    for name in ("trim", "lowercase", "uppercase", "digits_only", "phone_e164", "email_normalize", "split"):
        args = {"separator": ",", "index": 0} if name == "split" else {}
        assert run(None, t(name, **args)) is None, name
    assert run(None, t("truncate", length=3)) is None
    assert run(None, t("value_map", map={"a": "b"})) is None
    assert run(None, t("date_format", input="iso", output="%d/%m/%Y")) is None


def test_string_transforms_turn_numbers_into_text():
    assert run(42, t("trim")) == "42"
    assert run(3.5, t("uppercase")) == "3.5"
    assert run(12345, t("truncate", length=3)) == "123"


def test_string_transforms_refuse_structures():
    with pytest.raises(TransformError, match=r"trim: .* is a dict, not text"):
        run({"first": "Ada"}, t("trim"))
    with pytest.raises(TransformError, match=r"lowercase: .* is a list, not text"):
        run(["Ada"], t("lowercase"))


# phone_e164


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("+1 415-555-2671 ext. 12", "US", "+14155552671"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("030 901820", "DE", "+4930901820"),
        ("01 23 45 67 89", "FR", "+33123456789"),
        ("03-1234-5678", "JP", "+81312345678"),
        ("(02) 9374 4000", "AU", "+61293744000"),
    ],
)
def test_phone_e164_formats_national_numbers_of_several_countries(raw, country, expected):
    assert run(raw, t("phone_e164"), phone_country=country) == expected


def test_phone_e164_formats_a_british_number_with_the_country_argument():
    assert run("020 7946 0958", t("phone_e164", country="GB"), phone_country="US") == "+442079460958"


def test_phone_e164_keeps_the_country_of_an_international_number():
    assert run("+44 20 7946 0958", t("phone_e164"), phone_country="US") == "+442079460958"
    assert run("+49 30 901820", t("phone_e164", country="FR")) == "+4930901820"


def test_phone_e164_accepts_a_number_given_as_an_integer():
    assert run(4155552671, t("phone_e164")) == "+14155552671"


@pytest.mark.parametrize("raw", ["call me maybe", "(555) ABC-1234", "123", "555-0100-99999999"])
def test_phone_e164_rejects_what_is_not_a_phone_number(raw):
    with pytest.raises(TransformError) as excinfo:
        run(raw, t("phone_e164"))
    assert "phone_e164" in str(excinfo.value)
    assert raw in str(excinfo.value)
    assert excinfo.value.transform == "phone_e164"


def test_phone_e164_rejects_a_number_that_is_valid_only_in_another_country():
    with pytest.raises(TransformError, match="default region US"):
        run("020 7946 0958", t("phone_e164"))


def test_phone_e164_leaves_an_empty_value_for_a_later_default():
    assert run("", t("phone_e164")) == ""
    assert run(" ", t("phone_e164"), t("default", value="+14155552671")) == "+14155552671"


# email_normalize


def test_email_normalize_trims_and_lowercases():
    assert run("  Alice@Example.COM ", t("email_normalize")) == "alice@example.com"


@pytest.mark.parametrize("raw", ["not an email", "alice@", "alice@example", "a@b@example.com"])
def test_email_normalize_rejects_an_invalid_address(raw):
    with pytest.raises(TransformError, match=r"email_normalize: .* is not a valid email address"):
        run(raw, t("email_normalize"))


# truncate


def test_truncate_cuts_text_to_the_length():
    assert run("Lovelace", t("truncate", length=4)) == "Love"
    assert run("Ada", t("truncate", length=10)) == "Ada"


@given(st.text(), st.integers(min_value=1, max_value=200))
def test_truncate_never_exceeds_the_length(text, length):
    result = run(text, t("truncate", length=length))
    assert len(result) <= length
    assert text.startswith(result)


# default


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_default_replaces_an_empty_value(empty):
    assert run(empty, t("default", value="unknown")) == "unknown"


def test_default_keeps_a_real_value():
    assert run("Ada", t("default", value="unknown")) == "Ada"
    assert run(0, t("default", value=5)) == 0


def test_default_may_be_any_json_value():
    assert run(None, t("default", value=0)) == 0
    assert run(None, t("default", value=None)) is None


# digits_only


def test_digits_only_drops_everything_but_digits():
    assert run("(415) 555-2671 ext. 9", t("digits_only")) == "41555526719"
    assert run("no digits", t("digits_only")) == ""


def test_digits_only_turns_fullwidth_digits_into_ascii():
    assert run("０３-１２３４", t("digits_only")) == "031234"


@given(st.text())
def test_digits_only_output_is_ascii_digits(text):
    result = run(text, t("digits_only"))
    assert all(char in "0123456789" for char in result)


# date_format


def test_date_format_reads_a_pattern_and_writes_iso():
    assert run("05/03/2024", t("date_format", input="%d/%m/%Y", output="iso")) == "2024-03-05"


def test_date_format_reads_iso_and_writes_a_pattern():
    assert run("2024-03-05", t("date_format", input="iso", output="%d.%m.%Y")) == "05.03.2024"
    assert run("2024-03-05T14:30:00Z", t("date_format", input="iso", output="%Y-%m-%d %H:%M")) == "2024-03-05 14:30"


def test_date_format_keeps_the_time_when_the_input_has_one():
    spec = t("date_format", input="%d/%m/%Y %H:%M", output="iso")
    assert run("05/03/2024 14:30", spec) == "2024-03-05T14:30:00"


def test_date_format_accepts_date_objects():
    assert run(date(2024, 3, 5), t("date_format", input="iso", output="%m/%d/%Y")) == "03/05/2024"
    assert run(datetime(2024, 3, 5, 9, 0), t("date_format", input="iso", output="iso")) == "2024-03-05T09:00:00"


@pytest.mark.parametrize(
    ("raw", "pattern"), [("next tuesday", "iso"), ("2024-13-45", "iso"), ("2024-03-05", "%d/%m/%Y")]
)
def test_date_format_rejects_an_unparseable_date(raw, pattern):
    with pytest.raises(TransformError, match=r"date_format: .* is not") as excinfo:
        run(raw, t("date_format", input=pattern, output="iso"))
    assert raw in str(excinfo.value)


# value_map


def test_value_map_maps_known_values():
    spec = t("value_map", map={"M": "Male", "F": "Female"})
    assert run("F", spec) == "Female"


def test_value_map_looks_numbers_and_booleans_up_by_their_json_spelling():
    assert run(1, t("value_map", map={"1": "active"})) == "active"
    assert run(True, t("value_map", map={"true": "Yes", "false": "No"})) == "Yes"


def test_value_map_fails_on_an_unknown_value_without_a_fallback():
    with pytest.raises(TransformError, match=r'value_map: "X" is not in the value map'):
        run("X", t("value_map", map={"M": "Male"}))


def test_value_map_uses_the_fallback_for_an_unknown_value():
    assert run("X", t("value_map", map={"M": "Male"}, fallback="Other")) == "Other"
    assert run("X", t("value_map", map={"M": "Male"}, fallback=None)) is None


def test_value_map_keeps_an_unknown_value_with_the_keep_fallback():
    assert run("X", t("value_map", map={"M": "Male"}, fallback="$keep")) == "X"


# concat


def test_concat_joins_fields_of_the_record_and_ignores_the_value():
    record = {"first_name": "Ada", "last_name": "Lovelace"}
    assert run("ignored", t("concat", fields=["first_name", "last_name"]), record=record) == "Ada Lovelace"


def test_concat_skips_empty_and_missing_parts():
    record = {"street": "12 Main St", "unit": "  ", "city": " Springfield "}
    spec = t("concat", fields=["street", "unit", "suburb", "city"], separator=", ")
    assert run(None, spec, record=record) == "12 Main St, Springfield"


def test_concat_puts_the_value_first_when_asked():
    spec = t("concat", fields=["last_name"], include_value=True)
    assert run("Ada", spec, record={"last_name": "Lovelace"}) == "Ada Lovelace"


def test_concat_of_nothing_is_none_so_a_default_can_fill_it():
    spec = t("concat", fields=["first_name", "last_name"])
    assert run(None, spec, t("default", value="Unknown"), record={"first_name": ""}) == "Unknown"


def test_concat_turns_numbers_into_text():
    assert run(None, t("concat", fields=["house", "street"]), record={"house": 12, "street": "Main St"}) == "12 Main St"


# split


def test_split_takes_one_part():
    assert run("Ada Lovelace", t("split", separator=" ", index=0)) == "Ada"
    assert run("Ada King Lovelace", t("split", separator=" ", index=-1)) == "Lovelace"


def test_split_out_of_range_gives_none_not_an_error():
    assert run("Ada", t("split", separator=" ", index=1)) is None


# chaining


def test_transforms_apply_in_order():
    assert run("  Alice@Example.COM ", t("trim"), t("lowercase")) == "alice@example.com"
    assert run("Ada Lovelace", t("uppercase"), t("split", separator=" ", index=1), t("truncate", length=4)) == "LOVE"


def test_default_after_a_transform_that_passed_an_empty_value_through():
    assert run("   ", t("trim"), t("default", value="n/a")) == "n/a"
    assert run(None, t("trim"), t("lowercase"), t("default", value="n/a")) == "n/a"


def test_no_transforms_returns_the_value_unchanged():
    assert run("Ada") == "Ada"


@given(st.text())
def test_trim_is_idempotent(text):
    once = run(text, t("trim"))
    assert run(once, t("trim")) == once


# apply_transforms with a bad spec


def test_applying_an_unknown_transform_is_a_transform_error():
    with pytest.raises(TransformError, match='unknown transform "titlecase"'):
        run("Ada", {"name": "titlecase"})


def test_applying_a_transform_with_bad_arguments_is_a_transform_error():
    with pytest.raises(TransformError, match="truncate: missing argument length"):
        run("Ada", {"name": "truncate"})


# validate_transforms


def test_valid_specs_pass_validation():
    validate_transforms(
        [
            {"name": "trim"},
            {"name": "lowercase", "args": {}},
            t("phone_e164", country="GB"),
            t("truncate", length=40),
            t("default", value=None),
            t("date_format", input="%d/%m/%Y", output="iso"),
            t("value_map", map={"M": "Male"}, fallback="$keep"),
            t("concat", fields=["first_name", "last_name"], separator=" ", include_value=False),
            t("split", separator=",", index=-1),
        ]
    )
    validate_transforms([])


def test_validation_names_an_unknown_transform():
    assert 'unknown transform "titlecase"' in invalid_message([{"name": "titlecase"}])


@pytest.mark.parametrize("specs", ["trim", {"name": "trim"}, None])
def test_validation_wants_a_list(specs):
    assert "must be a list" in invalid_message(specs)


@pytest.mark.parametrize("spec", ["trim", {"args": {}}, {"name": 3}])
def test_validation_wants_each_spec_to_be_a_named_object(spec):
    assert "Transform 1: must be an object" in invalid_message([spec])


def test_validation_refuses_unexpected_spec_keys():
    assert "unexpected key arg" in invalid_message([{"name": "truncate", "arg": {"length": 3}}])


def test_validation_refuses_arguments_that_are_not_an_object():
    assert "trim: arguments must be an object" in invalid_message([{"name": "trim", "args": ["x"]}])


def test_validation_refuses_unknown_arguments():
    assert "truncate: unknown argument lenght" in invalid_message([t("truncate", lenght=3)])
    assert "trim: unknown argument x" in invalid_message([t("trim", x=1)])


def test_validation_reports_every_bad_spec_with_its_position():
    with pytest.raises(ValidationError) as excinfo:
        validate_transforms([t("trim"), t("truncate", length=0), {"name": "nope"}])
    messages = excinfo.value.messages
    assert len(messages) == 2
    assert messages[0].startswith("Transform 2: truncate: length")
    assert messages[1].startswith("Transform 3: unknown transform")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (t("phone_e164", country="Britain"), "phone_e164: country must be a two-letter region code"),
        (t("phone_e164", country="XX"), "phone_e164: country must be a two-letter region code"),
        (t("truncate"), "truncate: missing argument length"),
        (t("truncate", length=0), "truncate: length must be a whole number above 0"),
        (t("truncate", length=-5), "truncate: length must be a whole number above 0"),
        (t("truncate", length="40"), "truncate: length must be a whole number above 0"),
        (t("truncate", length=True), "truncate: length must be a whole number above 0"),
        (t("default"), "default: missing argument value"),
        (t("date_format", output="iso"), "date_format: missing argument input"),
        (t("date_format", input="iso"), "date_format: missing argument output"),
        (t("date_format", input="YYYY-MM-DD", output="iso"), "date_format: input must be"),
        (t("date_format", input="iso", output=5), "date_format: output must be"),
        (t("value_map"), "value_map: missing argument map"),
        (t("value_map", map={}), "value_map: map must be a non-empty object"),
        (t("value_map", map=["M", "Male"]), "value_map: map must be a non-empty object"),
        (t("concat"), "concat: missing argument fields"),
        (t("concat", fields=[]), "concat: fields must be a non-empty list"),
        (t("concat", fields="first_name"), "concat: fields must be a non-empty list"),
        (t("concat", fields=["first_name", ""]), "concat: fields must be a non-empty list"),
        (t("concat", fields=["a"], separator=None), "concat: separator must be text"),
        (t("concat", fields=["a"], include_value="yes"), "concat: include_value must be true or false"),
        (t("split", index=0), "split: missing argument separator"),
        (t("split", separator=""), "split: missing argument index"),
        (t("split", separator="", index=0), "split: separator must be non-empty text"),
        (t("split", separator=",", index="1"), "split: index must be a whole number"),
    ],
)
def test_validation_names_the_transform_and_the_bad_argument(spec, expected):
    assert expected in invalid_message([spec])
