"""Checks a transformed record (target field -> value) against the target object's schema before any write.

Every problem is reported, not only the first, as a FieldProblem an operator can act on. A field's default fills
an empty value. With auto-fix on, values that are present but do not fit are fixed as seed 000 describes, each
fix recorded as a warning: phone punctuation stripped, over-long text truncated.
"""

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from integrations.connectors.base import FieldSpec, FieldType, ObjectSchema
from integrations.errors import ErrorCategory
from mappings.transforms import is_blank, show_value

# Only free text can be cut short and stay meaningful; a truncated email, phone or URL is wrong data.
TRUNCATABLE_TYPES = {FieldType.STRING, FieldType.TEXT}
BOOLEAN_TEXT = {"true", "false", "1", "0", "yes", "no"}


@dataclass
class FieldProblem:
    field: str
    code: str
    message: str
    category: str
    original: Any = None
    fixed: Any = None


@dataclass
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


def validate_payload(
    payload, schema: ObjectSchema, *, auto_fix=False, phone_country="US", defaults=None, required_fields=()
) -> ValidationResult:
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
            # The operator's default for an empty value, auto-fix or not; it must pass the same checks as any
            # other value.
            value = result.payload[name] = defaults[name]
        if is_blank(value):
            if name in required:
                result.error(name, "required_missing", f"{name} is required by {target} but is empty", original=value)
            continue

        if spec.type == FieldType.PHONE:
            value = _check_phone(result, name, value, spec, auto_fix=auto_fix, country=phone_country)
        else:
            problem = _type_problem(value, spec)
            if problem:
                code, message = problem
                result.error(name, code, f"{name} {message}", original=value)

        if spec.max_length and isinstance(value, str) and len(value) > spec.max_length:
            if auto_fix and spec.type in TRUNCATABLE_TYPES:
                message = f"{name} was truncated from {len(value)} to {spec.max_length} characters"
                result.fix(name, "truncated", message, value, value[: spec.max_length])
            else:
                message = f"{name} is {len(value)} characters long; the target allows {spec.max_length}"
                result.error(name, "too_long", message, original=value)
    return result


def _type_problem(value, spec: FieldSpec):
    """(code, message) when the value cannot be written to a field of this type, else None."""
    if isinstance(value, dict | list):
        return "invalid_type", f"must be a single value, got a {type(value).__name__}"
    if spec.type == FieldType.EMAIL:
        try:
            validate_email(str(value), check_deliverability=False)
        except EmailNotValidError as exc:
            return "invalid_email", f"is not a valid email address: {show_value(value)} ({exc})"
    elif spec.type == FieldType.INTEGER:
        number = _decimal(value)
        if number is None or number != number.to_integral_value():
            return "invalid_type", f"must be a whole number, got {show_value(value)}"
    elif spec.type == FieldType.NUMBER:
        if _decimal(value) is None:
            return "invalid_type", f"must be a number, got {show_value(value)}"
    elif spec.type == FieldType.BOOLEAN:
        if not (isinstance(value, bool) or value in (0, 1) or str(value).strip().lower() in BOOLEAN_TEXT):
            return "invalid_type", f"must be true or false, got {show_value(value)}"
    elif spec.type in (FieldType.DATE, FieldType.DATETIME) and not _is_date(value, spec):
        expected = f"in the format {spec.format}" if "%" in spec.format else "in ISO 8601 format like 2024-03-05"
        kind = "date and time" if spec.type == FieldType.DATETIME else "date"
        return "invalid_date", f"must be a {kind} {expected}, got {show_value(value)}"
    return None


def _decimal(value):
    # A bool is an int to Python, but True in a number field is a mapping mistake.
    if isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _is_date(value, spec: FieldSpec):
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


def _check_phone(result, name, value, spec: FieldSpec, *, auto_fix, country):
    """Record the phone's problem or fix; return the value now in the payload."""
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    e164 = spec.format == "e164"
    if _is_valid_phone(text, country, e164=e164):
        return value
    if auto_fix:
        # Keep a leading "+": it says the number carries its country code.
        stripped = ("+" if text.strip().startswith("+") else "") + re.sub(r"[^0-9]", "", text)
        if stripped != text and _is_valid_phone(stripped, country, e164=e164):
            message = f"{name}: removed punctuation from {show_value(value)}, giving {show_value(stripped)}"
            result.fix(name, "phone_punctuation_stripped", message, value, stripped)
            return stripped
    hint = "; the target expects E.164 like +14155552671 (add the phone_e164 transform)" if e164 else ""
    message = f"{name} is not a valid phone number for {country}: {show_value(value)}{hint}"
    result.error(name, "invalid_phone", message, original=value)
    return value


def _is_valid_phone(text, country, *, e164):
    try:
        number = phonenumbers.parse(text, country or None)
    except phonenumbers.NumberParseException:
        return False
    if not phonenumbers.is_valid_number(number):
        return False
    return not e164 or text == phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
