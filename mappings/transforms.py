"""The registry of named transforms a FieldMapping applies to a value on its way to the target.

A FieldMapping stores its transforms as [{"name": "truncate", "args": {"length": 40}}, ...]. Each transform
checks its own arguments (validate_transforms, when a mapping is saved) and compiles them into a step, a plain
function (value, record) -> value; compile_transforms checks a list of specs once and chains their steps, so a run
pays for the checks once, not per record (mappings.plan). A value that cannot be transformed raises TransformError
with a message for the operator; None and "" pass through most transforms untouched so a later `default` can fill
them.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import email_validator
import phonenumbers
from django.core.exceptions import ValidationError
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

KEEP = "$keep"  # value_map fallback: keep the value as it came

# What a transform guarantees about a value it returns that is not blank, so validation need not check it again.
E164 = "e164"  # a valid phone number in E.164 format, whatever the default region
EMAIL = "email"  # a valid email address, as validate_email normalizes it


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


# An address validate_email accepts without Unicode, quoting, IDNA or special-use names: a dot-atom before the @,
# host labels of letters, digits and single hyphens, and a top-level domain of letters. The library takes 16 µs
# for any address, more than a whole record's other transforms.
PLAIN_EMAIL = re.compile(
    r"(?P<local>[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+)*)"
    r"@(?P<domain>(?:[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*\.)+(?P<tld>[a-zA-Z]+))\Z"
)
# Read once: an address under any of these names (or with a top-level domain one of them ends in) goes to the library.
SPECIAL_USE_TOP_LEVEL = frozenset(name.rsplit(".", 1)[-1] for name in email_validator.SPECIAL_USE_DOMAIN_NAMES)
CASE_INSENSITIVE_LOCAL_PARTS = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def normalize_email(text):
    """validate_email(text, check_deliverability=False).normalized: raises EmailNotValidError as it does."""
    match = PLAIN_EMAIL.match(text)
    if match is not None and len(text) <= 254:
        local, domain, top_level = match.group("local", "domain", "tld")
        if (
            len(local) <= 64
            and (len(domain) <= 63 or max(map(len, domain.split("."))) <= 63)
            and top_level.lower() not in SPECIAL_USE_TOP_LEVEL
        ):
            # As the library does: the domain lowercased, the local part kept but for RFC 2142's mailbox names.
            if local.lower() in CASE_INSENSITIVE_LOCAL_PARTS:
                local = local.lower()
            return f"{local}@{domain.lower()}"
    return validate_email(text, check_deliverability=False).normalized


class Transform:
    name = ""
    label = ""
    # argument name -> required
    arguments: dict[str, bool] = {}
    produces = ""  # E164, EMAIL or "": what every value this transform returns that is not blank is known to be

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

    def compile(self, args, *, phone_country):
        """The step (value, record) -> value for checked args: everything that depends only on the args is done
        here, once, not per record."""
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
    convert: Callable[[str], str]

    def compile(self, args, *, phone_country):
        convert, text = type(self).convert, self.text

        def step(value, record):
            if value is None:
                return None
            return convert(value if type(value) is str else text(value))

        return step


class Trim(TextTransform):
    name = "trim"
    label = "Trim surrounding whitespace"
    convert = staticmethod(str.strip)


class Lowercase(TextTransform):
    name = "lowercase"
    label = "Lowercase"
    convert = staticmethod(str.lower)


class Uppercase(TextTransform):
    name = "uppercase"
    label = "Uppercase"
    convert = staticmethod(str.upper)


NOT_ASCII_DIGIT = re.compile(r"[^0-9]")


class DigitsOnly(TextTransform):
    name = "digits_only"
    label = "Keep digits only"

    @staticmethod
    def convert(text):
        if text.isascii():
            return NOT_ASCII_DIGIT.sub("", text)
        # int() maps any Unicode decimal digit (fullwidth, Arabic-Indic) to its ASCII value.
        return "".join(str(int(char)) for char in text if char.isdecimal())


class PhoneE164(Transform):
    name = "phone_e164"
    label = "Phone number in E.164 format"
    arguments = {"country": False}
    produces = E164

    def check_args(self, args):
        country = args.get("country")
        if country is not None and (
            not isinstance(country, str) or country.upper() not in phonenumbers.SUPPORTED_REGIONS
        ):
            raise ValidationError(
                f"phone_e164: country must be a two-letter region code like GB, got {show_value(country)}"
            )

    def compile(self, args, *, phone_country):
        country = (args.get("country") or phone_country or "").upper()
        region, shown = country or None, country or "none"
        text, fail = self.text, self.fail
        parse, is_valid, format_number = phonenumbers.parse, phonenumbers.is_valid_number, phonenumbers.format_number
        e164, parse_error = phonenumbers.PhoneNumberFormat.E164, phonenumbers.NumberParseException

        def step(value, record):
            if is_blank(value):
                return value
            try:
                number = parse(value if type(value) is str else text(value), region)
            except parse_error:
                raise fail(value, f"is not a phone number (default region {shown})") from None
            if not is_valid(number):
                raise fail(value, f"is not a valid phone number (default region {shown})")
            # E.164 has no room for an extension: it is dropped.
            return format_number(number, e164)

        return step


class EmailNormalize(Transform):
    name = "email_normalize"
    label = "Normalize email address"
    produces = EMAIL

    def compile(self, args, *, phone_country):
        text, fail = self.text, self.fail

        def step(value, record):
            if is_blank(value):
                return value
            try:
                return normalize_email((value if type(value) is str else text(value)).strip().lower())
            except EmailNotValidError as exc:
                raise fail(value, f"is not a valid email address: {exc}") from None

        return step


class Truncate(Transform):
    name = "truncate"
    label = "Truncate to a length"
    arguments = {"length": True}

    def check_args(self, args):
        length = args["length"]
        if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
            raise ValidationError(f"truncate: length must be a whole number above 0, got {show_value(length)}")

    def compile(self, args, *, phone_country):
        length, text = args["length"], self.text

        def step(value, record):
            if value is None:
                return None
            return (value if type(value) is str else text(value))[:length]

        return step


class Default(Transform):
    name = "default"
    label = "Default when empty"
    arguments = {"value": True}

    def compile(self, args, *, phone_country):
        default = args["value"]

        def step(value, record):
            return default if is_blank(value) else value

        return step


# Directives that carry a time of day: a pattern without them parses to a date, not a datetime.
TIME_DIRECTIVE = re.compile(r"%[HIMSfpzZXcT]")
# datetime.strptime's own expressions (CPython's _strptime.TimeRE) for its numeric directives. A pattern of these
# and separators parses with one match and no locale lookup, in a third of strptime's time, with its answers.
NUMERIC_DIRECTIVES = {
    "d": r"(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])",
    "m": r"(?P<m>1[0-2]|0[1-9]|[1-9])",
    "Y": r"(?P<Y>\d\d\d\d)",
    "H": r"(?P<H>2[0-3]|[0-1]\d|\d)",
    "M": r"(?P<M>[0-5]\d|\d)",
    "S": r"(?P<S>6[0-1]|[0-5]\d|\d)",
}


def compile_strptime(pattern) -> Callable[[str], datetime]:
    """text -> datetime.strptime(text, pattern), raising ValueError as it does."""
    # Built as _strptime builds its expression: regex characters escaped, whitespace matching any whitespace.
    rest = re.sub(r"\s+", r"\\s+", re.sub(r"([\\.^$*+?\(\){}\[\]|])", r"\\\1", pattern))
    expression = ""
    while "%" in rest:
        index = rest.index("%")
        directive = rest[index + 1 : index + 2]
        if directive not in NUMERIC_DIRECTIVES:
            return lambda text: datetime.strptime(text, pattern)
        expression += rest[:index] + NUMERIC_DIRECTIVES[directive]
        rest = rest[index + 2 :]
    try:
        regex = re.compile(expression + rest, re.IGNORECASE)
    except re.error:  # a directive given twice: strptime's own error, then
        return lambda text: datetime.strptime(text, pattern)
    match = regex.match
    # (position among datetime's year, month, day, hour, minute, second; group number) of each directive used
    present = tuple((position, regex.groupindex[name]) for position, name in enumerate("YmdHMS")
                    if name in regex.groupindex)

    def parse(text):
        found = match(text)
        if found is None or found.end() != len(text):
            raise ValueError(f"time data {text!r} does not match format {pattern!r}")
        values = [1900, 1, 1, 0, 0, 0]  # strptime's values for what the pattern leaves out
        for position, group in present:
            values[position] = int(found[group])
        return datetime(*values)

    return parse


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

    def compile(self, args, *, phone_country):
        pattern, output = args["input"], args["output"]
        text, fail = self.text, self.fail
        expected = "an ISO 8601 date" if pattern == "iso" else f"a date in the format {pattern}"
        keeps_time = pattern != "iso" and bool(TIME_DIRECTIVE.search(pattern))
        strptime = compile_strptime(pattern) if pattern != "iso" else None

        def parse(value):
            stripped = (value if type(value) is str else text(value)).strip()
            try:
                if pattern == "iso":
                    try:
                        return date.fromisoformat(stripped)
                    except ValueError:
                        return datetime.fromisoformat(stripped)
                parsed = strptime(stripped)
                return parsed if keeps_time else parsed.date()
            except ValueError:
                raise fail(value, f"is not {expected}") from None

        def step(value, record):
            if is_blank(value):
                return value
            parsed = value if isinstance(value, date) else parse(value)
            return parsed.isoformat() if output == "iso" else parsed.strftime(output)

        return step


class ValueMap(Transform):
    name = "value_map"
    label = "Map values"
    arguments = {"map": True, "fallback": False}

    def check_args(self, args):
        if not isinstance(args["map"], dict) or not args["map"]:
            raise ValidationError(
                f'value_map: map must be a non-empty object like {{"M": "Male"}}, got {show_value(args["map"])}'
            )

    def compile(self, args, *, phone_country):
        mapping, fail = dict(args["map"]), self.fail
        has_fallback, fallback = "fallback" in args, args.get("fallback")
        keeps = has_fallback and fallback == KEEP
        unknown = f"is not in the value map (known values: {', '.join(map(str, list(mapping)[:10]))})"

        def step(value, record):
            if value is None:
                return None
            # Keys of a JSON object are strings: look 1 up as "1" and True as "true".
            if type(value) is str:
                key = value
            else:
                key = ("true" if value else "false") if isinstance(value, bool) else str(value)
            if key in mapping:
                return mapping[key]
            if not has_fallback:
                raise fail(value, unknown)
            return value if keeps else fallback

        return step


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

    def compile(self, args, *, phone_country):
        fields, include_value = tuple(args["fields"]), args.get("include_value", False)
        join, text = args.get("separator", " ").join, self.text

        def step(value, record):
            parts = [value] if include_value else []
            parts.extend(record.get(field) for field in fields)
            texts = []
            for part in parts:
                # The separator is ours to place: stray whitespace around a part would double it.
                if isinstance(part, str):
                    part = part.strip()
                    if part:
                        texts.append(part)
                elif part is not None:
                    texts.append(text(part).strip())
            return join(texts) or None

        return step


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

    def compile(self, args, *, phone_country):
        separator, index, text = args["separator"], args["index"], self.text

        def step(value, record):
            if value is None:
                return None
            parts = (value if type(value) is str else text(value)).split(separator)
            try:
                return parts[index]
            except IndexError:
                return None

        return step


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


@dataclass(frozen=True)
class CompiledTransforms:
    """A list of specs, checked once and chained into one function run(value, record) -> value."""

    run: Callable[[Any, dict], Any]
    produces: str = ""  # what a result that is not blank is known to be (E164, EMAIL), from the last transform


def unchanged(value, record):
    return value


def compile_transforms(specs, *, phone_country="US") -> CompiledTransforms:
    """Check every spec (ValidationError as validate_transforms raises it) and bind each one's arguments into its
    step. None is no transforms, as for a field mapping saved without any; a tuple is as good as a list."""
    specs = list(specs or ()) if specs is None or isinstance(specs, tuple) else specs
    validate_transforms(specs)
    transforms = [TRANSFORMS[spec["name"]] for spec in specs]
    steps = [
        transform.compile(spec.get("args") or {}, phone_country=phone_country)
        for transform, spec in zip(transforms, specs, strict=True)
    ]
    produces = transforms[-1].produces if transforms else ""
    # One or two transforms is the usual field mapping: call their steps directly, without a loop.
    if not steps:
        run = unchanged
    elif len(steps) == 1:
        run = steps[0]
    elif len(steps) == 2:
        first, second = steps

        def run(value, record):
            return second(first(value, record), record)
    else:

        def run(value, record):
            for step in steps:
                value = step(value, record)
            return value

    return CompiledTransforms(run=run, produces=produces)


def apply_transforms(value, specs, *, context: TransformContext) -> Any:
    """Apply specs to one value (a preview, a single field); a run compiles its specs once with mappings.plan."""
    specs = list(specs or ())
    try:
        compiled = compile_transforms(specs, phone_country=context.phone_country)
    except ValidationError:
        # Specs are validated when a mapping is saved; checking again keeps a stale or hand-edited one from
        # failing with a KeyError deep inside a transform.
        spec, problem = next((spec, spec_problem(spec)) for spec in specs if spec_problem(spec))
        name = spec.get("name", "") if isinstance(spec, dict) else ""
        raise TransformError(f"Invalid transform: {problem}", transform=name, value=value) from None
    return compiled.run(value, context.record)
