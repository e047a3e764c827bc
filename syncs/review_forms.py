"""Forms of the review queue: its mapping filter, and the correction of one record in review.

The correction form only turns what a person typed into the values a record holds (whole numbers, numbers,
true / false) and describes each input with the far side's schema. It does not judge the values: that is
`syncs.review.error_edit_and_retry`'s job, the same check the API's edit-and-retry runs, whose field-keyed
refusal the view puts next to each input.
"""

import json
import re
from decimal import Decimal, InvalidOperation

from django import forms

from integrations.connectors.base import FieldType
from mappings.models import Mapping
from mappings.transforms import is_blank

# Inputs that tell a phone's or a browser's keyboard what to offer. Never type="number": a browser submits an
# empty string for text it cannot read as a number, and the person's typing would be lost.
INPUT_ATTRS = {
    FieldType.EMAIL: {"type": "email", "autocomplete": "off"},
    FieldType.PHONE: {"type": "tel", "autocomplete": "off"},
    FieldType.URL: {"type": "url"},
    FieldType.INTEGER: {"inputmode": "numeric"},
    FieldType.NUMBER: {"inputmode": "decimal"},
}
TYPE_NAMES = {
    FieldType.STRING: "Text", FieldType.TEXT: "Long text", FieldType.EMAIL: "Email address",
    FieldType.PHONE: "Phone number", FieldType.INTEGER: "Whole number", FieldType.NUMBER: "Number",
    FieldType.BOOLEAN: "True or false", FieldType.DATE: "Date", FieldType.DATETIME: "Date and time",
    FieldType.URL: "URL",
}
WHOLE_NUMBER = re.compile(r"[+-]?\d+")
TRUE, FALSE = "true", "false"


class ReviewQueueFilters(forms.Form):
    mapping = forms.ModelChoiceField(queryset=Mapping.objects.none(), required=False, to_field_name="code",
                                     empty_label="Any mapping")

    def __init__(self, data=None, *, organization):
        super().__init__(data)
        self.fields["mapping"].queryset = Mapping.objects.for_org(organization).order_by("name", "pk")


class RetryOptionsForm(forms.Form):
    force = forms.BooleanField(
        required=False, label="Overwrite the target record even if it changed after the failure",
        help_text="Without this, a record someone edited in the target since is left alone and comes back here.",
    )


def constraints_of(spec):
    """What the schema says of a field, as a person reads it: "Required · Email address · at most 100
    characters"."""
    if spec is None:
        return "Not in the target's schema"
    parts = ["Required" if spec.required else "Optional", TYPE_NAMES.get(spec.type, spec.type.capitalize())]
    if spec.max_length:
        parts.append(f"at most {spec.max_length} characters")
    if spec.format == "e164":
        parts.append("international format like +14155552671")
    elif spec.type in (FieldType.DATE, FieldType.DATETIME):
        parts.append(f"like {_date_example(spec)}")
    if spec.read_only:
        parts.append("read-only in the target")
    return " · ".join(parts)


def _date_example(spec):
    if "%" in spec.format:
        return spec.format.replace("%Y", "2024").replace("%m", "03").replace("%d", "05").replace(
            "%H", "14").replace("%M", "30").replace("%S", "00")
    return "2024-03-05T14:30:00" if spec.type == FieldType.DATETIME else "2024-03-05"


def shown(value):
    """A record's value as the text of its input."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return TRUE if value else FALSE
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class CorrectionForm(forms.Form):
    """One input per field the mapping writes, then per other field of the transformed record (the payload as
    it failed, or as last corrected) and per field the far side requires, each labelled from the schema.

    `schema` is the far side's ObjectSchema, or None when it could not be described: the inputs are then plain
    text and the service refuses to save until it can check them.
    """

    prefix = "value"

    def __init__(self, data=None, *, payload, schema, mapped_fields=()):
        super().__init__(data)
        self.payload = dict(payload or {})
        self.schema = schema
        spec_of = schema.fields if schema is not None else {}
        required = [name for name, spec in spec_of.items() if spec.required and not spec.read_only]
        # The mapping's fields in its order, then any other field the record holds or the target requires by name:
        # a JSON column on PostgreSQL does not keep the record's own key order.
        for name in dict.fromkeys([*mapped_fields, *sorted({*self.payload, *required})]):
            spec = spec_of.get(name)
            self.fields[name] = self._input(name, spec)
            self.initial[name] = shown(self.payload.get(name))

    def _input(self, name, spec):
        label = (spec.label if spec is not None and spec.label else name)
        attrs = {}
        if spec is not None and spec.required:
            attrs["aria-required"] = "true"
        help_text = f"{constraints_of(spec)} · field {name}" if label != name else constraints_of(spec)
        if spec is not None and spec.type == FieldType.BOOLEAN:
            current = shown(self.payload.get(name))
            choices = [("", "—"), (TRUE, "True"), (FALSE, "False")]
            if current.strip().lower() not in ("", TRUE, FALSE):
                # The value that failed stays a choice: what is shown is what the record held.
                choices.append((current, current))
            return forms.ChoiceField(label=label, choices=choices, required=False, help_text=help_text,
                                     widget=forms.Select(attrs=attrs))
        attrs.update(INPUT_ATTRS.get(spec.type, {}) if spec is not None else {})
        long_value = len(shown(self.payload.get(name))) > 120
        if (spec is not None and spec.type == FieldType.TEXT) or long_value:
            widget = forms.Textarea(attrs={**attrs, "rows": 3})
        else:
            widget = forms.TextInput(attrs=attrs)
        # No max_length here: an over-long value must be shown whole to be shortened, and the check is the
        # service's.
        return forms.CharField(label=label, required=False, strip=False, help_text=help_text, widget=widget)

    def corrected_payload(self):
        """The record to write: each input turned into the value of its field's type where it reads as one;
        what does not stays text for the service to refuse next to its field. An input left as it was keeps
        the record's own value, and an empty input of a field the record did not hold adds nothing."""
        payload = {}
        spec_of = self.schema.fields if self.schema is not None else {}
        for name in self.fields:
            text = self.cleaned_data.get(name, "")
            original = self.payload.get(name)
            if name in self.payload and text == shown(original):
                payload[name] = original
                continue
            if is_blank(text):
                if name in self.payload:
                    payload[name] = "" if isinstance(original, str) else None
                continue
            payload[name] = _typed(text, spec_of.get(name), original)
        return payload

    def add_service_errors(self, error_dict):
        """The service's refusal, keyed by field, next to each input (a key that is no input: above the form)."""
        for name, messages in error_dict.items():
            for message in messages:
                self.add_error(name if name in self.fields else None, message)


def _typed(text, spec, original):
    kind = spec.type if spec is not None else None
    stripped = text.strip()
    if kind == FieldType.INTEGER and WHOLE_NUMBER.fullmatch(stripped):
        return int(stripped)
    if kind == FieldType.NUMBER:
        try:
            number = Decimal(stripped)
        except InvalidOperation:
            return text
        if number.is_finite():
            return int(number) if number == number.to_integral_value() else float(number)
        return text
    if kind == FieldType.BOOLEAN and stripped.lower() in (TRUE, FALSE):
        return stripped.lower() == TRUE
    if isinstance(original, dict | list):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text
