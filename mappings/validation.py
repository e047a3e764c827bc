"""Checks a transformed record (target field -> value) against the target object's schema before any write.

Every problem is reported, not only the first, as a FieldProblem an operator can act on. A field's default fills
an empty value. With auto-fix on, values that are present but do not fit are fixed as seed 000 describes, each
fix recorded as a warning: phone punctuation stripped, over-long text truncated.

The checks of each field are compiled from its FieldSpec once (PayloadValidator): validate_payload compiles them
for one payload, a run (mappings.plan) compiles them once and reuses them for every record.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError

from integrations.connectors.base import FieldSpec, FieldType, ObjectSchema
from integrations.errors import ErrorCategory
from mappings.transforms import E164, EMAIL, compile_strptime, is_blank, normalize_email, show_value

# Only free text can be cut short and stay meaningful; a truncated email, phone or URL is wrong data.
TRUNCATABLE_TYPES = {FieldType.STRING, FieldType.TEXT}
# Types whose values are checked beyond being a single value: any text is fine for the others.
CHECKED_TYPES = {
    FieldType.EMAIL, FieldType.PHONE, FieldType.INTEGER, FieldType.NUMBER, FieldType.BOOLEAN, FieldType.DATE,
    FieldType.DATETIME,
}
BOOLEAN_TEXT = {"true", "false", "1", "0", "yes", "no"}
# What a transform may guarantee (mappings.transforms.Transform.produces) that makes a field type's check redundant.
GUARANTEE_OF_TYPE = {FieldType.PHONE: E164, FieldType.EMAIL: EMAIL}


@dataclass
class FieldProblem:
    field: str
    code: str
    message: str
    category: str
    original: Any = None
    fixed: Any = None


@dataclass(slots=True)  # one per record checked: slots make it cheaper to build and to read
class ValidationResult:
    payload: dict
    errors: list[FieldProblem] = field(default_factory=list)
    warnings: list[FieldProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, name, code, message, category=ErrorCategory.VALIDATION, original=None):
        self.errors.append(FieldProblem(name, code, message, category, original=original))

    def fix(self, name, code, message, original, fixed):
        self.payload[name] = fixed
        self.warnings.append(FieldProblem(name, code, message, ErrorCategory.VALIDATION, original, fixed))


# A field's check: (result, value) -> None, recording problems and fixes in result.
FieldCheck = Callable[[ValidationResult, Any], None]
MISSING = object()  # no default for the field


def validate_payload(
    payload, schema: ObjectSchema, *, auto_fix=False, phone_country="US", defaults=None, required_fields=()
) -> ValidationResult:
    validator = PayloadValidator(
        schema, auto_fix=auto_fix, phone_country=phone_country, defaults=defaults, required_fields=required_fields
    )
    return validator.validate(payload)


class PayloadValidator:
    """validate_payload's checks for one target schema and one set of options, each field's compiled once.

    `guarantees` maps a field to what its transforms guarantee about a value they produced (E164, EMAIL): such a
    value skips its type's check, which would only parse it again. Only a caller that produced the payload itself
    can know this (mappings.plan); a default that fills the field is checked as usual.
    """

    def __init__(
        self, schema: ObjectSchema, *, auto_fix=False, phone_country="US", defaults=None, required_fields=(),
        guarantees=None,
    ):
        self.schema = schema
        self.target = schema.label or schema.name
        self.auto_fix = auto_fix
        self.phone_country = phone_country
        # A blank default fills nothing.
        self.defaults = {name: value for name, value in (defaults or {}).items() if not is_blank(value)}
        required = {name for name, spec in schema.fields.items() if spec.required and not spec.read_only}
        self.required = frozenset(required.union(required_fields))
        self.guarantees = guarantees or {}
        self.checks: dict[str, FieldCheck] = {}

    def check_of(self, name) -> FieldCheck:
        check = self.checks.get(name)
        if check is None:
            check = self.checks[name] = compile_field_check(
                name, self.schema.fields.get(name), target=self.target, required=name in self.required,
                default=self.defaults.get(name, MISSING), auto_fix=self.auto_fix, phone_country=self.phone_country,
                guaranteed=self.guarantees.get(name, ""),
            )
        return check

    def validate(self, payload) -> ValidationResult:
        """Check a copy of payload: the caller's dict is not changed."""
        result = ValidationResult(payload=dict(payload))
        self.check_payload(result)
        return result

    def check_payload(self, result: ValidationResult) -> None:
        """Check result.payload in place: its fields in order, then the required fields it lacks, by name."""
        payload, checks = result.payload, self.checks
        for name, value in list(payload.items()):
            (checks.get(name) or self.check_of(name))(result, value)
        missing = self.required.difference(payload)
        for name in sorted(missing):
            self.check_of(name)(result, None)



def compile_field_check(
    name, spec: FieldSpec | None, *, target, required, default=MISSING, auto_fix=False, phone_country="US",
    guaranteed="",
) -> FieldCheck:
    """One field's checks: its default for an empty value, required, its type, its length (truncated with
    auto-fix when it is text)."""
    if spec is None:
        message = f"{name} does not exist in {target}"
        return lambda result, value: result.error(name, "field_not_found", message, ErrorCategory.MAPPING)
    if spec.read_only:
        message = f"{name} is read-only in {target}"
        return lambda result, value: result.error(name, "read_only", message, ErrorCategory.MAPPING)

    check_type = compile_type_check(name, spec, auto_fix=auto_fix, phone_country=phone_country)
    # A value its transforms guarantee, or text for a field that takes any text, has nothing left to check but
    # its length.
    trusted = bool(guaranteed) and guaranteed == GUARANTEE_OF_TYPE.get(spec.type)
    any_text = spec.type not in CHECKED_TYPES
    has_default, max_length = default is not MISSING, spec.max_length
    truncates = auto_fix and spec.type in TRUNCATABLE_TYPES
    missing = f"{name} is required by {target} but is empty"

    def check(result, value):
        if value is None or (isinstance(value, str) and not value.strip()):  # is_blank, inlined: it runs per field
            if not has_default:
                if required:
                    result.error(name, "required_missing", missing, original=value)
                return
            # The operator's default for an empty value, auto-fix or not; it must pass the same checks as any
            # other value.
            value = result.payload[name] = default
            value = check_type(result, value)
        elif not (trusted or (any_text and type(value) is str)):
            value = check_type(result, value)
        if max_length and isinstance(value, str) and len(value) > max_length:
            if truncates:
                message = f"{name} was truncated from {len(value)} to {max_length} characters"
                result.fix(name, "truncated", message, value, value[:max_length])
            else:
                message = f"{name} is {len(value)} characters long; the target allows {max_length}"
                result.error(name, "too_long", message, original=value)

    return check


def compile_type_check(name, spec: FieldSpec, *, auto_fix, phone_country):
    """(result, value) -> the value now in the payload: records the value's type problem, or its phone fix."""
    if spec.type == FieldType.PHONE:
        return compile_phone_check(name, spec, auto_fix=auto_fix, country=phone_country)
    problem_of = compile_type_problem(spec)

    def check_type(result, value):
        problem = problem_of(value)
        if problem:
            code, message = problem
            result.error(name, code, f"{name} {message}", original=value)
        return value

    return check_type


def compile_type_problem(spec: FieldSpec):
    """value -> (code, message) when the value cannot be written to a field of this type, else None."""
    if spec.type == FieldType.EMAIL:

        def problem_of(value):
            if isinstance(value, (dict, list)):
                return structure_problem(value)
            try:
                normalize_email(str(value))
            except EmailNotValidError as exc:
                return "invalid_email", f"is not a valid email address: {show_value(value)} ({exc})"
            return None

    elif spec.type == FieldType.INTEGER:

        def problem_of(value):
            if isinstance(value, (dict, list)):
                return structure_problem(value)
            if type(value) is int or (type(value) is str and value.isascii() and value.isdigit()):
                return None
            number = _decimal(value)
            if number is None or number != number.to_integral_value():
                return "invalid_type", f"must be a whole number, got {show_value(value)}"
            return None

    elif spec.type == FieldType.NUMBER:

        def problem_of(value):
            if isinstance(value, (dict, list)):
                return structure_problem(value)
            if type(value) is not int and _decimal(value) is None:
                return "invalid_type", f"must be a number, got {show_value(value)}"
            return None

    elif spec.type == FieldType.BOOLEAN:

        def problem_of(value):
            if isinstance(value, (dict, list)):
                return structure_problem(value)
            if not (isinstance(value, bool) or value in (0, 1) or str(value).strip().lower() in BOOLEAN_TEXT):
                return "invalid_type", f"must be true or false, got {show_value(value)}"
            return None

    elif spec.type in (FieldType.DATE, FieldType.DATETIME):
        is_date = compile_date_check(spec)
        expected = f"in the format {spec.format}" if "%" in spec.format else "in ISO 8601 format like 2024-03-05"
        kind = "date and time" if spec.type == FieldType.DATETIME else "date"

        def problem_of(value):
            if isinstance(value, (dict, list)):
                return structure_problem(value)
            if not is_date(value):
                return "invalid_date", f"must be a {kind} {expected}, got {show_value(value)}"
            return None

    else:

        def problem_of(value):
            return structure_problem(value) if isinstance(value, (dict, list)) else None

    return problem_of


def structure_problem(value):
    # A structure is refused whatever the field's type, with the same words.
    return "invalid_type", f"must be a single value, got a {type(value).__name__}"


def _decimal(value):
    # A bool is an int to Python, but True in a number field is a mapping mistake.
    if isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def compile_date_check(spec: FieldSpec):
    """value -> whether it is a date (or date and time) the field accepts."""
    datetime_field, pattern = spec.type == FieldType.DATETIME, spec.format
    if "%" in pattern:
        parse = compile_strptime(pattern)
    else:
        parse = datetime.fromisoformat if datetime_field else date.fromisoformat

    def is_date(value):
        if isinstance(value, date):
            return datetime_field or not isinstance(value, datetime)
        if not isinstance(value, str):
            return False
        try:
            parse(value.strip())
        except ValueError:
            return False
        return True

    return is_date


def compile_phone_check(name, spec: FieldSpec, *, auto_fix, country):
    """(result, value) -> the value now in the payload: records the phone's problem, or its fix."""
    e164 = spec.format == "e164"
    hint = "; the target expects E.164 like +14155552671 (add the phone_e164 transform)" if e164 else ""

    def check_phone(result, value):
        text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
        if _is_valid_phone(text, country, e164=e164):
            return value
        if auto_fix:
            # Keep a leading "+": it says the number carries its country code.
            stripped = ("+" if text.strip().startswith("+") else "") + re.sub(r"[^0-9]", "", text)
            if stripped != text and _is_valid_phone(stripped, country, e164=e164):
                message = f"{name}: removed punctuation from {show_value(value)}, giving {show_value(stripped)}"
                result.fix(name, "phone_punctuation_stripped", message, value, stripped)
                return stripped
        message = f"{name} is not a valid phone number for {country}: {show_value(value)}{hint}"
        result.error(name, "invalid_phone", message, original=value)
        return value

    return check_phone


def _is_valid_phone(text, country, *, e164):
    try:
        number = phonenumbers.parse(text, country or None)
    except phonenumbers.NumberParseException:
        return False
    if not phonenumbers.is_valid_number(number):
        return False
    return not e164 or text == phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
