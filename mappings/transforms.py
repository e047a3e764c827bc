"""The registry of named transforms a FieldMapping applies to a value on its way to the target.

A FieldMapping stores its transforms as [{"name": "truncate", "args": {"length": 40}}, ...]. Each transform
checks its own arguments (validate_transforms, when a mapping is saved) and turns one value into another
(apply_transforms, per record during a sync). A value that cannot be transformed raises TransformError with a
message for the operator; None and "" pass through most transforms untouched so a later `default` can fill them.
"""

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import phonenumbers
from django.core.exceptions import ValidationError
from email_validator import EmailNotValidError, validate_email

KEEP = "$keep"  # value_map fallback: keep the value as it came


class TransformError(Exception):
    def __init__(self, message, *, transform="", value=None):
        super().__init__(message)
        self.transform = transform
        self.value = value


@dataclass
class TransformContext:
    record: dict
    phone_country: str = "US"


def is_blank(value):
    return value is None or (isinstance(value, str) and not value.strip())


def show_value(value, limit=60):
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return f'"{text}"' if isinstance(value, str) else text


class Transform:
    name = ""
    label = ""
    # argument name -> required
    arguments: dict[str, bool] = {}

    def validate_args(self, args):
        if not isinstance(args, dict):
            raise ValidationError(f"{self.name}: arguments must be an object, got {show_value(args)}")
        unknown = sorted(set(args) - set(self.arguments))
        if unknown:
            accepted = ", ".join(self.arguments) or "no arguments"
            raise ValidationError(f"{self.name}: unknown argument {', '.join(unknown)} (it accepts {accepted})")
        missing = [name for name, required in self.arguments.items() if required and name not in args]
        if missing:
            raise ValidationError(f"{self.name}: missing argument {', '.join(missing)}")
        self.check_args(args)

    def check_args(self, args):
        pass

    def apply(self, value, args, context):
        raise NotImplementedError

    def fail(self, value, problem):
        return TransformError(f"{self.name}: {show_value(value)} {problem}", transform=self.name, value=value)

    def text(self, value):
        # Numbers read from JSON or a database are fine as text; structures are a mapping mistake.
        if isinstance(value, str):
            return value
        if isinstance(value, int | float | Decimal):
            return str(value)
        raise self.fail(value, f"is a {type(value).__name__}, not text")


class TextTransform(Transform):
    def apply(self, value, args, context):
        if value is None:
            return None
        return self.convert(self.text(value))


class Trim(TextTransform):
    name = "trim"
    label = "Trim surrounding whitespace"

    def convert(self, text):
        return text.strip()


class Lowercase(TextTransform):
    name = "lowercase"
    label = "Lowercase"

    def convert(self, text):
        return text.lower()


class Uppercase(TextTransform):
    name = "uppercase"
    label = "Uppercase"

    def convert(self, text):
        return text.upper()


class DigitsOnly(TextTransform):
    name = "digits_only"
    label = "Keep digits only"

    def convert(self, text):
        # int() maps any Unicode decimal digit (fullwidth, Arabic-Indic) to its ASCII value.
        return "".join(str(int(char)) for char in text if char.isdecimal())


class PhoneE164(Transform):
    name = "phone_e164"
    label = "Phone number in E.164 format"
    arguments = {"country": False}

    def check_args(self, args):
        country = args.get("country")
        if country is not None and (
            not isinstance(country, str) or country.upper() not in phonenumbers.SUPPORTED_REGIONS
        ):
            raise ValidationError(
                f"phone_e164: country must be a two-letter region code like GB, got {show_value(country)}"
            )

    def apply(self, value, args, context):
        if is_blank(value):
            return value
        text = self.text(value)
        country = (args.get("country") or context.phone_country or "").upper()
        try:
            number = phonenumbers.parse(text, country or None)
        except phonenumbers.NumberParseException:
            raise self.fail(value, f"is not a phone number (default region {country or 'none'})") from None
        if not phonenumbers.is_valid_number(number):
            raise self.fail(value, f"is not a valid phone number (default region {country or 'none'})")
        # E.164 has no room for an extension: it is dropped.
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class EmailNormalize(Transform):
    name = "email_normalize"
    label = "Normalize email address"

    def apply(self, value, args, context):
        if is_blank(value):
            return value
        text = self.text(value).strip().lower()
        try:
            return validate_email(text, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise self.fail(value, f"is not a valid email address: {exc}") from None


class Truncate(Transform):
    name = "truncate"
    label = "Truncate to a length"
    arguments = {"length": True}

    def check_args(self, args):
        length = args["length"]
        if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
            raise ValidationError(f"truncate: length must be a whole number above 0, got {show_value(length)}")

    def apply(self, value, args, context):
        if value is None:
            return None
        return self.text(value)[: args["length"]]


class Default(Transform):
    name = "default"
    label = "Default when empty"
    arguments = {"value": True}

    def apply(self, value, args, context):
        return args["value"] if is_blank(value) else value


# Directives that carry a time of day: a pattern without them parses to a date, not a datetime.
TIME_DIRECTIVE = re.compile(r"%[HIMSfpzZXcT]")


class DateFormat(Transform):
    name = "date_format"
    label = "Reformat a date"
    arguments = {"input": True, "output": True}

    def check_args(self, args):
        for key in ("input", "output"):
            pattern = args[key]
            if pattern == "iso":
                continue
            if not isinstance(pattern, str) or "%" not in pattern:
                raise ValidationError(
                    f'date_format: {key} must be "iso" or a strftime pattern like %d/%m/%Y, got {show_value(pattern)}'
                )

    def apply(self, value, args, context):
        if is_blank(value):
            return value
        parsed = value if isinstance(value, date) else self.parse(self.text(value).strip(), args["input"], value)
        if args["output"] == "iso":
            return parsed.isoformat()
        return parsed.strftime(args["output"])

    def parse(self, text, pattern, value):
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
            raise self.fail(value, f"is not {expected}") from None


class ValueMap(Transform):
    name = "value_map"
    label = "Map values"
    arguments = {"map": True, "fallback": False}

    def check_args(self, args):
        if not isinstance(args["map"], dict) or not args["map"]:
            raise ValidationError(
                f'value_map: map must be a non-empty object like {{"M": "Male"}}, got {show_value(args["map"])}'
            )

    def apply(self, value, args, context):
        if value is None:
            return None
        mapping = args["map"]
        # Keys of a JSON object are strings: look 1 up as "1" and True as "true".
        key = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if key in mapping:
            return mapping[key]
        if "fallback" not in args:
            raise self.fail(value, f"is not in the value map (known values: {', '.join(map(str, list(mapping)[:10]))})")
        return value if args["fallback"] == KEEP else args["fallback"]


class Concat(Transform):
    name = "concat"
    label = "Join fields"
    arguments = {"fields": True, "separator": False, "include_value": False}

    def check_args(self, args):
        fields = args["fields"]
        if not isinstance(fields, list) or not fields or not all(isinstance(f, str) and f for f in fields):
            raise ValidationError(f"concat: fields must be a non-empty list of field names, got {show_value(fields)}")
        if not isinstance(args.get("separator", " "), str):
            raise ValidationError(f"concat: separator must be text, got {show_value(args['separator'])}")
        if not isinstance(args.get("include_value", False), bool):
            raise ValidationError(
                f"concat: include_value must be true or false, got {show_value(args['include_value'])}"
            )

    def apply(self, value, args, context):
        parts = [context.record.get(field) for field in args["fields"]]
        if args.get("include_value"):
            parts.insert(0, value)
        # The separator is ours to place: stray whitespace around a part would double it.
        texts = [self.text(part).strip() for part in parts if not is_blank(part)]
        return args.get("separator", " ").join(texts) or None


class Split(Transform):
    name = "split"
    label = "Take one part of a split"
    arguments = {"separator": True, "index": True}

    def check_args(self, args):
        if not isinstance(args["separator"], str) or not args["separator"]:
            raise ValidationError(f"split: separator must be non-empty text, got {show_value(args['separator'])}")
        index = args["index"]
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValidationError(f"split: index must be a whole number (0 is the first part), got {show_value(index)}")

    def apply(self, value, args, context):
        if value is None:
            return None
        parts = self.text(value).split(args["separator"])
        try:
            return parts[args["index"]]
        except IndexError:
            return None


TRANSFORMS: dict[str, Transform] = {
    transform.name: transform
    for transform in (
        Trim(),
        Lowercase(),
        Uppercase(),
        PhoneE164(),
        EmailNormalize(),
        Truncate(),
        Default(),
        DigitsOnly(),
        DateFormat(),
        ValueMap(),
        Concat(),
        Split(),
    )
}


def spec_problem(spec):
    """What is wrong with one {"name", "args"} spec, or "" when nothing is."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return f'must be an object like {{"name": "trim", "args": {{}}}}, got {show_value(spec)}'
    extra = sorted(set(spec) - {"name", "args"})
    if extra:
        return f"{spec['name']}: unexpected key {', '.join(extra)} (a transform has only name and args)"
    transform = TRANSFORMS.get(spec["name"])
    if transform is None:
        return f"unknown transform {show_value(spec['name'])} (known: {', '.join(TRANSFORMS)})"
    try:
        transform.validate_args(spec.get("args") or {})
    except ValidationError as exc:
        return " ".join(exc.messages)
    return ""


def validate_transforms(specs) -> None:
    if not isinstance(specs, list):
        raise ValidationError(f"Transforms must be a list, got {show_value(specs)}", code="invalid_transforms")
    problems = [(position, spec_problem(spec)) for position, spec in enumerate(specs, start=1)]
    messages = [f"Transform {position}: {problem}" for position, problem in problems if problem]
    if messages:
        raise ValidationError([ValidationError(message, code="invalid_transform") for message in messages])


def apply_transforms(value, specs, *, context: TransformContext) -> Any:
    for spec in specs or ():
        # Specs are validated when a mapping is saved; checking again keeps a stale or hand-edited one from
        # failing with a KeyError deep inside a transform.
        problem = spec_problem(spec)
        if problem:
            name = spec.get("name", "") if isinstance(spec, dict) else ""
            raise TransformError(f"Invalid transform: {problem}", transform=name, value=value)
        value = TRANSFORMS[spec["name"]].apply(value, spec.get("args") or {}, context)
    return value
