"""The compiled record plan does per record exactly what the engine's preparation did before it.

The reference below is that preparation, frozen as it was: each transform's old apply, validate_payload as it read,
and RunExecutor.prepare / RunExecutor.validate's handling of transform errors, skip_invalid and problems. Every
case, in the table and from Hypothesis, compares the plan's payload, errors and warnings with it.
"""

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

import email_validator
import phonenumbers
import pytest
from django.core.exceptions import ValidationError
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from integrations.connectors.base import FieldSpec, FieldType, ObjectSchema
from integrations.errors import ConnectorError, ErrorCategory
from mappings.plan import FieldRule, compile_record_plan
from mappings.transforms import (
    KEEP,
    TIME_DIRECTIVE,
    TRANSFORMS,
    TransformError,
    compile_strptime,
    is_blank,
    normalize_email,
    show_value,
    spec_problem,
)
from mappings.validation import ValidationResult

# --- the reference: the per-record preparation before the plan ------------------------------------------------------


def ref_text(name, value):
    return TRANSFORMS[name].text(value)


def ref_fail(name, value, problem):
    return TRANSFORMS[name].fail(value, problem)


def ref_phone_e164(value, args, context):
    if is_blank(value):
        return value
    text = ref_text("phone_e164", value)
    country = (args.get("country") or context["phone_country"] or "").upper()
    try:
        number = phonenumbers.parse(text, country or None)
    except phonenumbers.NumberParseException:
        raise ref_fail("phone_e164", value, f"is not a phone number (default region {country or 'none'})") from None
    if not phonenumbers.is_valid_number(number):
        raise ref_fail("phone_e164", value, f"is not a valid phone number (default region {country or 'none'})")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def ref_email_normalize(value, args, context):
    if is_blank(value):
        return value
    text = ref_text("email_normalize", value).strip().lower()
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ref_fail("email_normalize", value, f"is not a valid email address: {exc}") from None


def ref_date_parse(text, pattern, value):
    try:
        if pattern == "iso":
            try:
                return date.fromisoformat(text)
            except ValueError:
                return datetime.fromisoformat(text)
        parsed = datetime.strptime(text, pattern)
        return parsed if TIME_DIRECTIVE.search(pattern) else parsed.date()
    except ValueError:
        expected = "an ISO 8601 date" if pattern == "iso" else f"a date in the format {pattern}"
        raise ref_fail("date_format", value, f"is not {expected}") from None


def ref_date_format(value, args, context):
    if is_blank(value):
        return value
    text = ref_text("date_format", value).strip() if not isinstance(value, date) else None
    parsed = value if isinstance(value, date) else ref_date_parse(text, args["input"], value)
    if args["output"] == "iso":
        return parsed.isoformat()
    return parsed.strftime(args["output"])


def ref_value_map(value, args, context):
    if value is None:
        return None
    mapping = args["map"]
    key = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if key in mapping:
        return mapping[key]
    if "fallback" not in args:
        known = ", ".join(map(str, list(mapping)[:10]))
        raise ref_fail("value_map", value, f"is not in the value map (known values: {known})")
    return value if args["fallback"] == KEEP else args["fallback"]


def ref_concat(value, args, context):
    parts = [context["record"].get(field) for field in args["fields"]]
    if args.get("include_value"):
        parts.insert(0, value)
    texts = [ref_text("concat", part).strip() for part in parts if not is_blank(part)]
    return args.get("separator", " ").join(texts) or None


def ref_split(value, args, context):
    if value is None:
        return None
    parts = ref_text("split", value).split(args["separator"])
    try:
        return parts[args["index"]]
    except IndexError:
        return None


def ref_text_transform(name, convert):
    return lambda value, args, context: None if value is None else convert(ref_text(name, value))


REF_APPLY = {
    "trim": ref_text_transform("trim", str.strip),
    "lowercase": ref_text_transform("lowercase", str.lower),
    "uppercase": ref_text_transform("uppercase", str.upper),
    "digits_only": ref_text_transform(
        "digits_only", lambda text: "".join(str(int(char)) for char in text if char.isdecimal())
    ),
    "phone_e164": ref_phone_e164,
    "email_normalize": ref_email_normalize,
    "truncate": lambda value, args, context: None if value is None else ref_text("truncate", value)[: args["length"]],
    "default": lambda value, args, context: args["value"] if is_blank(value) else value,
    "date_format": ref_date_format,
    "value_map": ref_value_map,
    "concat": ref_concat,
    "split": ref_split,
}


def ref_apply_transforms(value, specs, context):
    for spec in specs or ():
        problem = spec_problem(spec)
        if problem:
            name = spec.get("name", "") if isinstance(spec, dict) else ""
            raise TransformError(f"Invalid transform: {problem}", transform=name, value=value)
        value = REF_APPLY[spec["name"]](value, spec.get("args") or {}, context)
    return value


REF_TRUNCATABLE = {FieldType.STRING, FieldType.TEXT}
REF_BOOLEAN_TEXT = {"true", "false", "1", "0", "yes", "no"}


def ref_validate_payload(payload, schema, *, auto_fix=False, phone_country="US", defaults=None, required_fields=()):
    defaults = defaults or {}
    result = ValidationResult(payload=dict(payload))
    target = schema.label or schema.name
    required = {name for name, spec in schema.fields.items() if spec.required and not spec.read_only}
    required.update(required_fields)
    for name in [*payload, *sorted(required - payload.keys())]:
        spec = schema.fields.get(name)
        if spec is None:
            result.error(name, "field_not_found", f"{name} does not exist in {target}", ErrorCategory.MAPPING)
            continue
        if spec.read_only:
            result.error(name, "read_only", f"{name} is read-only in {target}", ErrorCategory.MAPPING)
            continue
        value = result.payload.get(name)
        if is_blank(value) and not is_blank(defaults.get(name)):
            value = result.payload[name] = defaults[name]
        if is_blank(value):
            if name in required:
                result.error(name, "required_missing", f"{name} is required by {target} but is empty", original=value)
            continue
        if spec.type == FieldType.PHONE:
            value = ref_check_phone(result, name, value, spec, auto_fix=auto_fix, country=phone_country)
        else:
            problem = ref_type_problem(value, spec)
            if problem:
                code, message = problem
                result.error(name, code, f"{name} {message}", original=value)
        if spec.max_length and isinstance(value, str) and len(value) > spec.max_length:
            if auto_fix and spec.type in REF_TRUNCATABLE:
                message = f"{name} was truncated from {len(value)} to {spec.max_length} characters"
                result.fix(name, "truncated", message, value, value[: spec.max_length])
            else:
                message = f"{name} is {len(value)} characters long; the target allows {spec.max_length}"
                result.error(name, "too_long", message, original=value)
    return result


def ref_type_problem(value, spec):
    if isinstance(value, dict | list):
        return "invalid_type", f"must be a single value, got a {type(value).__name__}"
    if spec.type == FieldType.EMAIL:
        try:
            validate_email(str(value), check_deliverability=False)
        except EmailNotValidError as exc:
            return "invalid_email", f"is not a valid email address: {show_value(value)} ({exc})"
    elif spec.type == FieldType.INTEGER:
        number = ref_decimal(value)
        if number is None or number != number.to_integral_value():
            return "invalid_type", f"must be a whole number, got {show_value(value)}"
    elif spec.type == FieldType.NUMBER:
        if ref_decimal(value) is None:
            return "invalid_type", f"must be a number, got {show_value(value)}"
    elif spec.type == FieldType.BOOLEAN:
        if not (isinstance(value, bool) or value in (0, 1) or str(value).strip().lower() in REF_BOOLEAN_TEXT):
            return "invalid_type", f"must be true or false, got {show_value(value)}"
    elif spec.type in (FieldType.DATE, FieldType.DATETIME) and not ref_is_date(value, spec):
        expected = f"in the format {spec.format}" if "%" in spec.format else "in ISO 8601 format like 2024-03-05"
        kind = "date and time" if spec.type == FieldType.DATETIME else "date"
        return "invalid_date", f"must be a {kind} {expected}, got {show_value(value)}"
    return None


def ref_decimal(value):
    if isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def ref_is_date(value, spec):
    if isinstance(value, date):
        return spec.type == FieldType.DATETIME or not isinstance(value, datetime)
    if not isinstance(value, str):
        return False
    text = value.strip()
    try:
        if "%" in spec.format:
            datetime.strptime(text, spec.format)
        elif spec.type == FieldType.DATE:
            date.fromisoformat(text)
        else:
            datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def ref_check_phone(result, name, value, spec, *, auto_fix, country):
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    e164 = spec.format == "e164"
    if ref_is_valid_phone(text, country, e164=e164):
        return value
    if auto_fix:
        stripped = ("+" if text.strip().startswith("+") else "") + re.sub(r"[^0-9]", "", text)
        if stripped != text and ref_is_valid_phone(stripped, country, e164=e164):
            message = f"{name}: removed punctuation from {show_value(value)}, giving {show_value(stripped)}"
            result.fix(name, "phone_punctuation_stripped", message, value, stripped)
            return stripped
    hint = "; the target expects E.164 like +14155552671 (add the phone_e164 transform)" if e164 else ""
    message = f"{name} is not a valid phone number for {country}: {show_value(value)}{hint}"
    result.error(name, "invalid_phone", message, original=value)
    return value


def ref_is_valid_phone(text, country, *, e164):
    try:
        number = phonenumbers.parse(text, country or None)
    except phonenumbers.NumberParseException:
        return False
    if not phonenumbers.is_valid_number(number):
        return False
    return not e164 or text == phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass
class RefItem:
    payload: dict
    errors: list
    warnings: list


def ref_validate(rules, schema, item, *, phone_country, auto_fix):
    """RunExecutor.validate as it was."""
    result = ref_validate_payload(
        item.payload, schema, auto_fix=auto_fix, phone_country=phone_country,
        defaults={r.far_field: r.default for r in rules if r.default is not None},
        required_fields=[r.far_field for r in rules if r.required],
    )
    item.payload = result.payload
    for warning in result.warnings:
        item.warnings.append(ConnectorError(
            ErrorCategory.VALIDATION, warning.message, code=warning.code, field=warning.field, retryable=False
        ))
    for problem in result.errors:
        rule = next((r for r in rules if r.far_field == problem.field), None)
        error = ConnectorError(problem.category, problem.message, code=problem.code, field=problem.field)
        if rule is not None and rule.skip_invalid and problem.category == ErrorCategory.VALIDATION:
            item.payload.pop(problem.field, None)
            item.warnings.append(error)
        else:
            item.errors.append(error)
    return item


def ref_prepare(rules, schema, data, *, phone_country, auto_fix):
    """RunExecutor.prepare's transform and validation steps as they were."""
    item = RefItem({}, [], [])
    context = {"record": data, "phone_country": phone_country}
    for rule in rules:
        value = data.get(rule.near_field) if rule.near_field else None
        try:
            item.payload[rule.far_field] = ref_apply_transforms(value, rule.transforms, context)
        except TransformError as exc:
            problem = ConnectorError(
                ErrorCategory.MAPPING, f"{rule.far_field}: {exc}", code="transform_failed", field=rule.far_field,
                detail=f"value {value!r} of {rule.near_field or '(none)'}",
            )
            (item.warnings if rule.skip_invalid else item.errors).append(problem)
    if item.errors:
        return item
    return ref_validate(rules, schema, item, phone_country=phone_country, auto_fix=auto_fix)


# --- comparing ------------------------------------------------------------------------------------------------------


def described(problems):
    return [
        (str(p.category), p.code, p.field, p.message, p.detail, p.retryable, p.durability) for p in problems
    ]


def outcome(prepared):
    return prepared.payload, described(prepared.errors), described(prepared.warnings)


def assert_same_as_before(rules, data, *, schema=None, phone_country="US", auto_fix=False):
    schema = schema or CONTACT
    plan = compile_record_plan(rules=rules, schema=schema, phone_country=phone_country, auto_fix=auto_fix)
    expected = ref_prepare(rules, schema, data, phone_country=phone_country, auto_fix=auto_fix)
    prepared = plan.apply(data)
    assert outcome(prepared) == outcome(expected)
    return prepared


def t(name, **args):
    return {"name": name, "args": args}


def rule(near, far=None, *transforms, required=False, default=None, skip_invalid=False):
    return FieldRule(near, far or near, list(transforms), required=required, default=default, skip_invalid=skip_invalid)


CONTACT = ObjectSchema(
    name="contact",
    label="Contact",
    fields={
        "id": FieldSpec("id", read_only=True),
        "email": FieldSpec("email", FieldType.EMAIL, required=True, max_length=40),
        "first_name": FieldSpec("first_name", max_length=10),
        "last_name": FieldSpec("last_name", max_length=20),
        "full_name": FieldSpec("full_name", max_length=20),
        "address": FieldSpec("address", FieldType.TEXT, max_length=12),
        "website": FieldSpec("website", FieldType.URL, max_length=20),
        "phone": FieldSpec("phone", FieldType.PHONE),
        "mobile": FieldSpec("mobile", FieldType.PHONE, format="e164", max_length=13),
        "employees": FieldSpec("employees", FieldType.INTEGER),
        "revenue": FieldSpec("revenue", FieldType.NUMBER),
        "opted_in": FieldSpec("opted_in", FieldType.BOOLEAN),
        "birthday": FieldSpec("birthday", FieldType.DATE),
        "member_since": FieldSpec("member_since", FieldType.DATE, format="%d/%m/%Y"),
        "last_seen": FieldSpec("last_seen", FieldType.DATETIME),
        "gender": FieldSpec("gender", max_length=6),
    },
)
EMAIL = rule("email", "email", t("email_normalize"))
ADA = {"email": " Ada@Example.COM ", "first_name": "  Ada ", "last_name": "Lovelace"}


# --- the table: every transform, every field type, defaults, required, skip_invalid, auto-fix, e164 -----------------

CASES = {
    # transforms
    "trim and lowercase": ([EMAIL, rule("first_name", None, t("trim"), t("lowercase"))], ADA, {}),
    "uppercase": ([EMAIL, rule("last_name", None, t("uppercase"))], ADA, {}),
    "digits only": ([EMAIL, rule("employees", None, t("digits_only"))], {**ADA, "employees": "1,2０0"}, {}),
    "truncate": ([EMAIL, rule("last_name", None, t("truncate", length=4))], ADA, {}),
    "truncate a number": ([EMAIL, rule("employees", None, t("truncate", length=2))], {**ADA, "employees": 1234}, {}),
    "default transform": ([EMAIL, rule("nickname", "first_name", t("default", value="Friend"))], ADA, {}),
    "value map": ([EMAIL, rule("g", "gender", t("value_map", map={"F": "Female"}))], {**ADA, "g": "F"}, {}),
    "value map unknown": ([EMAIL, rule("g", "gender", t("value_map", map={"F": "Female"}))], {**ADA, "g": "X"}, {}),
    "value map fallback": (
        [EMAIL, rule("g", "gender", t("value_map", map={"F": "Female"}, fallback="Other"))], {**ADA, "g": "X"}, {}
    ),
    "value map keep": (
        [EMAIL, rule("g", "gender", t("value_map", map={"F": "Female"}, fallback=KEEP))], {**ADA, "g": "X"}, {}
    ),
    "value map of a boolean": (
        [EMAIL, rule("o", "opted_in", t("value_map", map={"true": "yes", "false": "no"}))], {**ADA, "o": False}, {}
    ),
    "concat": ([EMAIL, rule("", "full_name", t("concat", fields=["first_name", "last_name"]))], ADA, {}),
    "concat with the value": (
        [EMAIL, rule("first_name", "full_name", t("concat", fields=["last_name"], separator=", ", include_value=True))],
        ADA, {},
    ),
    "concat of a structure": (
        [EMAIL, rule("", "full_name", t("concat", fields=["first_name", "x"]))], {**ADA, "x": {"a": 1}}, {}
    ),
    "split": ([EMAIL, rule("n", "first_name", t("split", separator=" ", index=-1))], {**ADA, "n": "Ada King"}, {}),
    "split out of range": ([EMAIL, rule("n", "first_name", t("split", separator=",", index=3))], {**ADA, "n": "A"}, {}),
    "date format to iso": (
        [EMAIL, rule("b", "birthday", t("date_format", input="%d/%m/%Y", output="iso"))], {**ADA, "b": "10/12/1815"},
        {},
    ),
    "date format from iso": (
        [EMAIL, rule("b", "member_since", t("date_format", input="iso", output="%d/%m/%Y"))],
        {**ADA, "b": "1815-12-10"}, {},
    ),
    "date format with a time": (
        [EMAIL, rule("b", "last_seen", t("date_format", input="%d/%m/%Y %H:%M", output="iso"))],
        {**ADA, "b": "10/12/1815  14:30"}, {},
    ),
    "date format of a date object": (
        [EMAIL, rule("b", "birthday", t("date_format", input="iso", output="iso"))], {**ADA, "b": date(1815, 12, 10)},
        {},
    ),
    "date format that does not parse": (
        [EMAIL, rule("b", "birthday", t("date_format", input="%d/%m/%Y", output="iso"))], {**ADA, "b": "31/02/1815"},
        {},
    ),
    "email normalize": ([EMAIL], {"email": "  Info@Example.COM"}, {}),
    "email normalize of an invalid address": ([EMAIL], {"email": "ada@example"}, {}),
    "email normalize of an internationalized address": ([EMAIL], {"email": "Ädä@Exämple.com"}, {}),
    "email normalize of a special-use domain": ([EMAIL], {"email": "ada@mail.localhost"}, {}),
    "a text transform refusing a structure": (
        [EMAIL, rule("first_name", None, t("trim"))], {**ADA, "first_name": [1]}, {}
    ),
    # phones and e164
    "phone e164 into an e164 target": (
        [EMAIL, rule("p", "mobile", t("phone_e164"))], {**ADA, "p": "(415) 555-2671"}, {}
    ),
    "phone e164 with a country argument": (
        [EMAIL, rule("p", "mobile", t("phone_e164", country="GB"))], {**ADA, "p": "020 7946 0958"}, {}
    ),
    "phone e164 of another country's number": (
        [EMAIL, rule("p", "phone", t("phone_e164"))], {**ADA, "p": "+49 30 901820"}, {"phone_country": "GB"}
    ),
    "phone e164 longer than the target allows": (
        [EMAIL, rule("p", "mobile", t("phone_e164"))], {**ADA, "p": "+49 1512 3456789"}, {"auto_fix": True}
    ),
    "phone e164 of an invalid number": ([EMAIL, rule("p", "mobile", t("phone_e164"))], {**ADA, "p": "123"}, {}),
    "phone e164 of an empty value, then a default": (
        [EMAIL, rule("p", "mobile", t("phone_e164"), default="(415) 555-2671")], {**ADA, "p": " "}, {}
    ),
    "phone e164 into a text field": ([EMAIL, rule("p", "last_name", t("phone_e164"))], {**ADA, "p": "4155552671"}, {}),
    "phone e164 then truncated": (
        [EMAIL, rule("p", "mobile", t("phone_e164"), t("truncate", length=6))], {**ADA, "p": "(415) 555-2671"}, {}
    ),
    "phone without a transform": ([EMAIL, rule("phone")], {**ADA, "phone": "(415) 555-2671"}, {}),
    "phone without a default region": (
        [EMAIL, rule("phone", None, t("phone_e164"))], {**ADA, "phone": "+44 20 7946 0958"}, {"phone_country": ""}
    ),
    "phone punctuation fixed": ([EMAIL, rule("phone")], {**ADA, "phone": "415_555_2671"}, {"auto_fix": True}),
    "phone punctuation not fixed without auto-fix": ([EMAIL, rule("phone")], {**ADA, "phone": "415_555_2671"}, {}),
    "national number for an e164 target": (
        [EMAIL, rule("mobile")], {**ADA, "mobile": "(415) 555-2671"}, {"auto_fix": True}
    ),
    # field types
    "integers": ([EMAIL, rule("employees")], {**ADA, "employees": "12.0"}, {}),
    "not an integer": ([EMAIL, rule("employees")], {**ADA, "employees": "12.5"}, {}),
    "a boolean is not an integer": ([EMAIL, rule("employees")], {**ADA, "employees": True}, {}),
    "numbers": ([EMAIL, rule("revenue")], {**ADA, "revenue": "1e3"}, {}),
    "not a number": ([EMAIL, rule("revenue")], {**ADA, "revenue": "NaN"}, {}),
    "booleans": ([EMAIL, rule("opted_in")], {**ADA, "opted_in": " Yes "}, {}),
    "not a boolean": ([EMAIL, rule("opted_in")], {**ADA, "opted_in": 2}, {}),
    "iso dates": ([EMAIL, rule("birthday")], {**ADA, "birthday": " 1815-12-10 "}, {}),
    "a datetime is not a date": ([EMAIL, rule("birthday")], {**ADA, "birthday": datetime(1815, 12, 10, 9)}, {}),
    "a date in the target's format": ([EMAIL, rule("member_since")], {**ADA, "member_since": "1/2/1835"}, {}),
    "a date not in the target's format": ([EMAIL, rule("member_since")], {**ADA, "member_since": "1835-12-10"}, {}),
    "datetimes": ([EMAIL, rule("last_seen")], {**ADA, "last_seen": "2024-03-05T14:30:00Z"}, {}),
    "not a datetime": ([EMAIL, rule("last_seen")], {**ADA, "last_seen": 1709649000}, {}),
    "an invalid email without a transform": ([rule("email")], {"email": "not an email"}, {}),
    "a valid email without a transform": ([rule("email")], {"email": "Ada.King@Example.org"}, {}),
    "a structure in a text field": ([EMAIL, rule("first_name")], {**ADA, "first_name": {"given": "Ada"}}, {}),
    "a url": ([EMAIL, rule("website")], {**ADA, "website": "https://example.com/a/long/path"}, {"auto_fix": True}),
    # required and defaults
    "a required field the target lacks": ([EMAIL, rule("x", "nickname", required=True)], ADA, {}),
    "a read-only field": ([EMAIL, rule("x", "id")], {**ADA, "x": "003"}, {}),
    "the target's required field missing": ([rule("first_name")], ADA, {}),
    "a rule's required field empty": ([EMAIL, rule("x", "first_name", required=True)], {**ADA, "x": "  "}, {}),
    "a default fills an empty field": ([EMAIL, rule("x", "first_name", default="Friend")], ADA, {}),
    "a default never replaces a value": ([EMAIL, rule("first_name", default="Friend")], ADA, {}),
    "a blank default fills nothing": ([EMAIL, rule("x", "first_name", required=True, default=" ")], ADA, {}),
    "a default is checked like a value": ([EMAIL, rule("x", "employees", default="many")], ADA, {}),
    "a default too long is truncated with auto-fix": (
        [EMAIL, rule("x", "address", default="12 Long Winding Road")], ADA, {"auto_fix": True}
    ),
    "a required field with no near field": ([EMAIL, rule("", "last_name", required=True, default="Unknown")], ADA, {}),
    # too long and auto-fix
    "too long": ([EMAIL, rule("last_name", "first_name")], {**ADA, "last_name": "Lovelace-Byron"}, {}),
    "too long text truncated": (
        [EMAIL, rule("a", "address")], {**ADA, "a": "12 Long Winding Road"}, {"auto_fix": True}
    ),
    "too long email not truncated": ([rule("email")], {"email": "a" * 40 + "@example.com"}, {"auto_fix": True}),
    # skip_invalid
    "skip_invalid drops a field whose transform failed": (
        [EMAIL, rule("p", "mobile", t("phone_e164"), skip_invalid=True)], {**ADA, "p": "call me"}, {}
    ),
    "skip_invalid keeps an earlier rule's value": (
        [EMAIL, rule("p", "mobile"), rule("q", "mobile", t("phone_e164"), skip_invalid=True)],
        {**ADA, "p": "+14155552671", "q": "call me"}, {},
    ),
    "skip_invalid drops a field that fails validation": (
        [EMAIL, rule("employees", skip_invalid=True)], {**ADA, "employees": "many"}, {}
    ),
    "skip_invalid drops a field that is too long": (
        [EMAIL, rule("last_name", "first_name", skip_invalid=True)], {**ADA, "last_name": "Lovelace-Byron"}, {}
    ),
    "skip_invalid does not hide a mapping error": ([EMAIL, rule("x", "nickname", skip_invalid=True)], ADA, {}),
    "skip_invalid with a required field dropped": (
        [rule("email", None, t("email_normalize"), skip_invalid=True)], {"email": "not an email"}, {}
    ),
    "skip_invalid with a default after a failed transform": (
        [EMAIL, rule("p", "mobile", t("phone_e164"), default="+14155552671", skip_invalid=True)], {**ADA, "p": "x"},
        {},
    ),
    "a field written again after its first rule failed": (
        [rule("x", "first_name", t("phone_e164"), skip_invalid=True), rule("email", skip_invalid=True),
         rule("last_name", "first_name")],
        {"x": "call me", "email": "nope", "last_name": "Lovelace-Byron"}, {},
    ),
    "skip_invalid read from the first rule of a field": (
        [EMAIL, rule("employees"), rule("employees", skip_invalid=True)], {**ADA, "employees": "many"}, {}
    ),
    "a transform error stops validation": (
        [rule("p", "mobile", t("phone_e164")), rule("x", "id")], {"p": "call me", "x": "003"}, {}
    ),
    "every problem at once": (
        [rule("email"), rule("x", "id"), rule("first_name"), rule("phone"), rule("employees"), rule("x", "nickname")],
        {"email": "nope", "x": "003", "first_name": "A" * 12, "phone": "call me", "employees": "many"}, {},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_plan_gives_what_the_engine_gave_before(case):
    rules, data, options = CASES[case]
    assert_same_as_before(rules, data, **options)


@pytest.mark.parametrize("case", list(CASES))
def test_a_corrected_payload_is_validated_as_the_engine_validated_it(case):
    # An operator's corrected record skips the transforms, not the checks, and is never auto-fixed.
    rules, data, options = CASES[case]
    phone_country = options.get("phone_country", "US")
    plan = compile_record_plan(rules=rules, schema=CONTACT, phone_country=phone_country, auto_fix=True)
    payload = {rule.far_field: data.get(rule.near_field) for rule in rules}
    expected = ref_validate(rules, CONTACT, RefItem(dict(payload), [], []), phone_country=phone_country, auto_fix=False)
    before = dict(payload)
    assert outcome(plan.validate_corrected(payload)) == outcome(expected)
    assert payload == before


def test_a_plan_prepares_a_whole_contact():
    rules = [
        EMAIL,
        rule("first_name", None, t("trim")),
        rule("", "full_name", t("concat", fields=["first_name", "last_name"])),
        rule("phone", "mobile", t("phone_e164")),
        rule("birthday", None, t("date_format", input="%d/%m/%Y", output="iso")),
        rule("title", "address", t("truncate", length=30)),
    ]
    data = {**ADA, "phone": "020 7946 0958", "birthday": "10/12/1815", "title": "Countess of Lovelace"}
    prepared = assert_same_as_before(rules, data, phone_country="GB", auto_fix=True)
    assert prepared.ok
    assert prepared.payload == {
        "email": "ada@example.com",
        "first_name": "Ada",
        "full_name": "Ada Lovelace",
        "mobile": "+442079460958",
        "birthday": "1815-12-10",
        "address": "Countess of ",
    }
    assert [(w.field, w.code) for w in prepared.warnings] == [("address", "truncated")]


def test_a_failed_transform_is_a_mapping_error_with_its_value():
    prepared = assert_same_as_before([EMAIL, rule("p", "mobile", t("phone_e164"))], {**ADA, "p": "call me"})
    [error] = prepared.errors
    assert (error.category, error.code, error.field) == ("mapping", "transform_failed", "mobile")
    assert error.message.startswith("mobile: phone_e164: ")
    assert error.detail == "value 'call me' of p"


def test_the_plan_does_not_change_the_record():
    data = {**ADA, "phone": "415_555_2671"}
    before = dict(data)
    compile_record_plan(rules=[EMAIL, rule("phone")], schema=CONTACT, phone_country="US", auto_fix=True).apply(data)
    assert data == before


# --- a phone is parsed once, an email checked once ------------------------------------------------------------------


@pytest.fixture
def phone_parses(monkeypatch):
    calls = []
    parse = phonenumbers.parse

    def counting_parse(number, region=None, *args, **kwargs):
        calls.append(number)
        return parse(number, region, *args, **kwargs)

    monkeypatch.setattr(phonenumbers, "parse", counting_parse)
    return calls


@pytest.mark.parametrize(
    ("target", "phone_country", "args", "raw"),
    [
        ("mobile", "US", {}, "(415) 555-2671"),
        ("phone", "US", {}, "(415) 555-2671"),
        ("mobile", "US", {"country": "GB"}, "020 7946 0958"),
        ("phone", "DE", {"country": "fr"}, "01 23 45 67 89"),
        ("mobile", "", {}, "+81 3-1234-5678"),
    ],
)
def test_a_phone_e164_value_is_parsed_once(phone_parses, target, phone_country, args, raw):
    rules = [EMAIL, rule("p", target, t("phone_e164", **args))]
    plan = compile_record_plan(rules=rules, schema=CONTACT, phone_country=phone_country, auto_fix=True)
    prepared = plan.apply({**ADA, "p": raw})
    assert prepared.ok
    assert phone_parses == [raw]


def test_a_phone_without_the_transform_is_still_checked(phone_parses):
    plan = compile_record_plan(rules=[EMAIL, rule("mobile")], schema=CONTACT, phone_country="US", auto_fix=False)
    prepared = plan.apply({**ADA, "mobile": "415-555-2671"})
    assert [(e.field, e.code) for e in prepared.errors] == [("mobile", "invalid_phone")]
    assert phone_parses == ["415-555-2671"]


def test_a_default_that_fills_a_phone_e164_field_is_checked(phone_parses):
    rules = [EMAIL, rule("p", "mobile", t("phone_e164"), default="415-555-2671")]
    prepared = compile_record_plan(rules=rules, schema=CONTACT, phone_country="US", auto_fix=False).apply({**ADA})
    assert [(e.field, e.code) for e in prepared.errors] == [("mobile", "invalid_phone")]
    assert phone_parses == ["415-555-2671"]


def test_a_normalized_email_is_not_validated_again(monkeypatch):
    calls = []
    monkeypatch.setattr("mappings.validation.normalize_email", lambda text: calls.append(text))
    plan = compile_record_plan(rules=[EMAIL], schema=CONTACT, phone_country="US", auto_fix=False)
    assert plan.apply({"email": "Ada@Example.com"}).ok
    assert calls == []


# --- invalid specs are refused when the plan is compiled ------------------------------------------------------------


def test_invalid_specs_are_refused_at_compile_time_naming_each():
    rules = [
        rule("email", None, t("trim"), t("truncate", length=0)),
        rule("first_name", None, {"name": "titlecase"}),
        rule("last_name", None, t("trim")),
    ]
    with pytest.raises(ValidationError) as excinfo:
        compile_record_plan(rules=rules, schema=CONTACT, phone_country="US", auto_fix=False)
    messages = excinfo.value.messages
    assert len(messages) == 2
    assert messages[0].startswith("email: Transform 2: truncate: length must be a whole number above 0")
    assert messages[1].startswith('first_name: Transform 1: unknown transform "titlecase"')
    assert {error.code for error in excinfo.value.error_list} == {"invalid_transform"}


@pytest.mark.parametrize(
    ("transforms", "expected"),
    [
        ("trim", "Transforms must be a list"),
        ([t("phone_e164", country="Britain")], "phone_e164: country must be a two-letter region code"),
        ([{"name": "trim", "arg": {}}], "unexpected key arg"),
        ([t("concat", fields=[])], "concat: fields must be a non-empty list"),
        ([t("date_format", input="YYYY", output="iso")], "date_format: input must be"),
    ],
)
def test_an_invalid_spec_refuses_the_plan(transforms, expected):
    rules = [FieldRule("email", "email", transforms, skip_invalid=True)]
    with pytest.raises(ValidationError, match=expected):
        compile_record_plan(rules=rules, schema=CONTACT, phone_country="US", auto_fix=False)


def test_rules_without_transforms_compile():
    rules = [FieldRule("email", "email", None), FieldRule("first_name", "first_name", []), FieldRule("x", "last_name")]
    plan = compile_record_plan(rules=rules, schema=CONTACT, phone_country="US", auto_fix=False)
    assert plan.apply({"email": "ada@example.com", "first_name": "Ada"}).payload == {
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": None,
    }


# --- Hypothesis: random mappings and records against the reference ------------------------------------------------

NEAR_FIELDS = ["a", "b", "phone", "email", "date"]
PHONES = [
    "(415) 555-2671", "415.555.2671", "+1 415-555-2671 ext. 12", "415_555_2671", "+14155552671", "020 7946 0958",
    "+44 20 7946 0958", "+442079460958", "030 901820", "+49 30 901820", "01 23 45 67 89", "+33 6 12 34 56 78",
    "03-1234-5678", "+81 90-1234-5678", "123", "555-0100-99999999", "call me", "+1-415-555-2671", 4155552671,
    "+39 06 1234 5678", "+39 06 12345678", "0039 06 1234 5678",
]
EMAILS = [
    "ada@example.com", " Ada@Example.COM ", "info@example.org", "INFO@Example.org", "ada@example", "ada@",
    "a@b@example.com", "ada@mail.localhost", "ada@example.test", "Ädä@exämple.com", "ada@xn--exmple-cua.com",
    "ada@ab--cd.com", "ada..king@example.com", '"ada king"@example.com', "ada@[127.0.0.1]", "ada@1.2.3.4",
    "a" * 65 + "@example.com", "ada@" + "a" * 64 + ".com", "ada@example.c0m",
]
DATES = ["10/12/1815", "1/2/1835", "31/02/2024", "1815-12-10", "2024-03-05T14:30:00Z", "yesterday", "2024-13-45",
         " 5/3/2024", "10/12/1815 14:30", date(1815, 12, 10), datetime(2024, 3, 5, 9, 0)]
scalars = st.one_of(
    st.none(), st.sampled_from(["", "  ", "Ada", " Lovelace ", "F", "M", "X", "1,200", "12", "12.5", "yes", "maybe",
                                "０３-１２３４", "A" * 30]),
    st.sampled_from(PHONES), st.sampled_from(EMAILS), st.sampled_from(DATES), st.text(max_size=12),
    st.integers(-5, 3000), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
    st.just({"given": "Ada"}), st.just(["Ada"]), st.just(Decimal("1.0")),
)
specs = st.one_of(
    st.sampled_from([t("trim"), t("lowercase"), t("uppercase"), t("digits_only"), t("phone_e164"),
                     t("email_normalize"), {"name": "trim"}]),
    st.builds(lambda c: t("phone_e164", country=c), st.sampled_from(["GB", "us", "DE", "FR", "JP"])),
    st.builds(lambda n: t("truncate", length=n), st.integers(1, 20)),
    st.builds(lambda v: t("default", value=v), st.one_of(st.none(), st.sampled_from(["n/a", "+14155552671", 0, ""]))),
    st.builds(lambda i, o: t("date_format", input=i, output=o), st.sampled_from(["iso", "%d/%m/%Y", "%d/%m/%Y %H:%M"]),
              st.sampled_from(["iso", "%d/%m/%Y", "%Y"])),
    st.builds(lambda fallback: t("value_map", map={"F": "Female", "1": "one", "true": "yes"}, **fallback),
              st.sampled_from([{}, {"fallback": KEEP}, {"fallback": None}, {"fallback": "Other"}])),
    st.builds(lambda fields, sep, inc: t("concat", fields=fields, separator=sep, include_value=inc),
              st.lists(st.sampled_from(NEAR_FIELDS), min_size=1, max_size=3), st.sampled_from([" ", ", ", ""]),
              st.booleans()),
    st.builds(lambda sep, i: t("split", separator=sep, index=i), st.sampled_from([" ", ",", "@"]), st.integers(-2, 2)),
)
FAR_FIELDS = [*CONTACT.fields, "nickname"]
defaults = st.one_of(
    st.none(), st.sampled_from(["", " ", "Friend", "+14155552671", "415-555-2671", "12", "ada@example.com",
                                "1815-12-10", "A" * 25]),
)
any_rule = st.builds(
    FieldRule,
    near_field=st.sampled_from(["", *NEAR_FIELDS]),
    far_field=st.sampled_from(FAR_FIELDS),
    transforms=st.lists(specs, max_size=3),
    required=st.booleans(),
    default=defaults,
    skip_invalid=st.booleans(),
)
# The rules a real mapping has: a field's usual transforms, so that most records get through to its checks.
TYPICAL = [
    ("phone", "mobile", [t("phone_e164")]), ("phone", "phone", [t("phone_e164")]),
    ("phone", "mobile", [t("trim"), t("phone_e164")]), ("phone", "phone", [t("phone_e164", country="GB")]),
    ("phone", "mobile", [t("phone_e164", country="JP")]), ("phone", "phone", []), ("phone", "mobile", []),
    ("email", "email", [t("email_normalize")]), ("email", "email", [t("trim"), t("email_normalize")]),
    ("email", "email", []), ("date", "birthday", [t("date_format", input="%d/%m/%Y", output="iso")]),
    ("date", "member_since", []), ("date", "last_seen", []), ("a", "employees", [t("digits_only")]),
    ("a", "first_name", [t("trim"), t("truncate", length=10)]), ("b", "address", []),
    ("b", "gender", [t("value_map", map={"F": "Female", "M": "Male"}, fallback=KEEP)]),
]
typical_rule = st.builds(
    lambda typical, required, default, skip_invalid: FieldRule(
        typical[0], typical[1], typical[2], required=required, default=default, skip_invalid=skip_invalid
    ),
    st.sampled_from(TYPICAL), st.sampled_from([False, False, False, True]), defaults, st.booleans(),
)
rules_strategy = st.lists(st.one_of(typical_rule, typical_rule, any_rule), min_size=1, max_size=6)
near_values = st.one_of(scalars, st.sampled_from(PHONES), st.sampled_from(EMAILS), st.sampled_from(DATES))
records = st.one_of(
    st.fixed_dictionaries({
        "a": scalars, "b": scalars, "phone": st.one_of(st.sampled_from(PHONES), scalars),
        "email": st.one_of(st.sampled_from(EMAILS), scalars), "date": st.one_of(st.sampled_from(DATES), scalars),
    }),
    st.dictionaries(st.sampled_from(NEAR_FIELDS), near_values, max_size=5),
)
# The contact schema, with email optional: a required email would fail most random records before their checks.
LOOSE_CONTACT = ObjectSchema("contact", {**CONTACT.fields, "email": FieldSpec("email", FieldType.EMAIL, max_length=40)})


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules=rules_strategy,
    data=records,
    phone_country=st.sampled_from(["US", "GB", "DE", "", "fr"]),
    auto_fix=st.booleans(),
    schema=st.sampled_from([CONTACT, LOOSE_CONTACT]),
)
def test_a_compiled_plan_behaves_as_the_per_record_path(rules, data, phone_country, auto_fix, schema):
    assert_same_as_before(rules, data, schema=schema, phone_country=phone_country, auto_fix=auto_fix)


@settings(max_examples=300, deadline=None)
@given(
    phone=st.one_of(st.sampled_from(PHONES), st.from_regex(r"\A\+?[0-9][0-9 ().-]{5,16}\Z")),
    target=st.sampled_from(["phone", "mobile", "last_name"]),
    args=st.sampled_from([{}, {"country": "GB"}, {"country": "jp"}, {"country": "IT"}]),
    phone_country=st.sampled_from(["US", "GB", "DE", "IT", "", "fr"]),
    auto_fix=st.booleans(),
)
def test_what_phone_e164_produces_passes_the_checks_it_skips(phone, target, args, phone_country, auto_fix):
    rules = [FieldRule("phone", target, [t("phone_e164", **args)])]
    assert_same_as_before(rules, {"phone": phone}, schema=LOOSE_CONTACT, phone_country=phone_country, auto_fix=auto_fix)


@settings(max_examples=300, deadline=None)
@given(email=st.one_of(st.sampled_from(EMAILS), st.from_regex(r"\A[ a-zA-Z0-9.+äÖ_-]{1,10}@[a-zA-Zä0-9.-]{1,12}\Z")))
def test_what_email_normalize_produces_passes_the_checks_it_skips(email):
    assert_same_as_before([EMAIL], {"email": email}, schema=LOOSE_CONTACT)


@settings(max_examples=200, deadline=None)
@given(
    rules=rules_strategy,
    payload=st.dictionaries(st.sampled_from(FAR_FIELDS), near_values, max_size=6),
    phone_country=st.sampled_from(["US", "GB", ""]),
    auto_fix=st.booleans(),
)
def test_a_compiled_plan_validates_a_corrected_payload_as_the_engine_did(rules, payload, phone_country, auto_fix):
    schema = LOOSE_CONTACT
    plan = compile_record_plan(rules=rules, schema=schema, phone_country=phone_country, auto_fix=auto_fix)
    expected = ref_validate(rules, schema, RefItem(dict(payload), [], []), phone_country=phone_country, auto_fix=False)
    assert outcome(plan.validate_corrected(payload)) == outcome(expected)


# --- the fast paths the plan relies on give the library's answers ---------------------------------------------------


def library_email(text):
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        return type(exc), str(exc)


def fast_email(text):
    try:
        return normalize_email(text)
    except EmailNotValidError as exc:
        return type(exc), str(exc)


LABEL = r"[a-zA-Z0-9-]{1,5}"
email_like = st.one_of(
    st.from_regex(rf"\A[a-zA-Z0-9._%+'`{{|}}~!#$&*/=?^-]{{1,8}}@({LABEL}\.){{1,3}}[a-zA-Z0-9]{{1,4}}\Z"),
    st.builds(lambda local, domain: f"{local}@{domain}", st.sampled_from(["ada", "Info", "a.b", "ada+x", "a" * 64,
                                                                          "a" * 65, "ä", "x" * 200]),
              st.sampled_from(["example.com", "EXAMPLE.COM", "mail.localhost", "example.test", "ex--ample.com",
                               "xn--exmple-cua.com", "a.b.c.d.local", "example.invalid", "example.arpa",
                               "a" * 63 + ".com", "a" * 64 + ".com", "exämple.com", "example.c0m", "example.c",
                               "-example.com", "example-.com", "example..com", "example.com."])),
    st.text(max_size=30),
)


@settings(max_examples=500, deadline=None)
@given(email_like)
@example("ada@example.com")
@example("ada@" + ("a" * 60 + ".") * 4 + "com")
def test_normalize_email_answers_as_validate_email(text):
    assert fast_email(text) == library_email(text)


def test_normalize_email_follows_the_special_use_names_of_the_library():
    assert "localhost" in email_validator.SPECIAL_USE_DOMAIN_NAMES
    assert fast_email("ada@mail.localhost") == library_email("ada@mail.localhost")
    assert isinstance(fast_email("ada@mail.localhost"), tuple)


def strptime_answer(parse, text):
    try:
        return parse(text)
    except ValueError:
        return ValueError
    except re.error:
        return re.error


date_patterns = st.lists(
    st.sampled_from(["%d", "%m", "%Y", "%H", "%M", "%S", "/", "-", ".", " ", "  ", "T", ":", "x", "(", "%%", "%b",
                     "%y"]),
    min_size=1, max_size=7,
).map("".join)
date_texts = st.text(alphabet="0123456789 /-.:Tt(x\t٣５", max_size=20)


@settings(max_examples=1000, deadline=None)
@given(date_patterns, date_texts)
@example("%d/%m/%Y", "29/02/2023")
@example("%d/%m", "29/02")
@example("%Y-%m-%dT%H:%M:%S", "2024-03-05t14:30:61")
def test_compiled_strptime_answers_as_strptime(pattern, text):
    assert strptime_answer(compile_strptime(pattern), text) == strptime_answer(
        lambda value: datetime.strptime(value, pattern), text
    )


@settings(max_examples=300, deadline=None)
@given(st.builds(lambda d, m, y: f"{d}/{m}/{y}", st.integers(0, 40), st.integers(0, 14), st.integers(0, 9999)))
def test_compiled_strptime_reads_dates_as_strptime(text):
    parse = compile_strptime("%d/%m/%Y")
    assert strptime_answer(parse, text) == strptime_answer(lambda value: datetime.strptime(value, "%d/%m/%Y"), text)
