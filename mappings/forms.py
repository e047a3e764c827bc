"""The mapping editor of the browser UI: what the person typed, read back from the form and handed to the service.

`MappingEditor` holds one editing session: the settings (a Django form, `MappingForm`), the field mapping rows
(source field → target field, transforms with their arguments, required / default / skip-invalid and a sample
value for the live preview), the match keys and the per-category retry policy. It is built from a saved mapping
or from a POST, never loses what was typed, and turns the service's ValidationError keys ("name",
"field_mappings[2].transforms", "match_keys[0].source", "retry_policy") into errors at the right field or row.

Nothing here checks a rule of its own: mappings.services (mapping_create / mapping_update) decides, as for the
API; the transforms' argument names come from the registry (mappings.transforms.TRANSFORMS) and the live preview
runs the engine's own compiled plan (mappings.plan).
"""

import json
import re
from dataclasses import dataclass, field

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from integrations.connectors.base import FieldSpec, ObjectSchema
from integrations.errors import ConnectorError, ErrorCategory
from integrations.services import connection_objects, connection_schema
from mappings.models import (
    ConflictPolicy,
    Direction,
    ErrorStrategy,
    LoggingLevel,
    Mapping,
    ScheduleType,
    WriteMode,
)
from mappings.plan import FieldRule, compile_record_plan
from mappings.transforms import TRANSFORMS

# How an argument is typed in the form; an argument not named here is text. The registry says which arguments a
# transform takes and which are required; this only says how to read them from a text box.
ARGUMENT_KINDS = {
    ("truncate", "length"): "integer",
    ("split", "index"): "integer",
    ("concat", "fields"): "list",
    ("concat", "include_value"): "boolean",
    ("value_map", "map"): "json",
}
ARGUMENT_HELP = {
    ("phone_e164", "country"): "Two-letter region such as GB; empty: the mapping's default country.",
    ("truncate", "length"): "Characters to keep.",
    ("default", "value"): "Written when the value is empty.",
    ("date_format", "input"): "iso, or a pattern such as %d/%m/%Y.",
    ("date_format", "output"): "iso, or a pattern such as %Y-%m-%d.",
    ("value_map", "map"): 'JSON, such as {"M": "Male", "F": "Female"}.',
    ("value_map", "fallback"): "For a value not in the map; $keep keeps it as it came.",
    ("concat", "fields"): "Source fields, separated by commas.",
    ("concat", "separator"): "Between the parts; a space when empty.",
    ("concat", "include_value"): "Start with this row's own value.",
    ("split", "separator"): "Where to split.",
    ("split", "index"): "0 is the first part, -1 the last.",
}
TRANSFORM_CHOICES = [(name, transform.label or name) for name, transform in TRANSFORMS.items()]
RETRY_CHOICES = [("", "Default"), ("yes", "Retry"), ("no", "Never retry")]
FIELD_MAPPING_KEY = re.compile(r"field_mappings\[(\d+)\]\.?(\w*)")
MATCH_KEY_KEY = re.compile(r"match_keys\[(\d+)\]\.?(\w*)")
MISSING = object()


class MappingForm(forms.Form):
    """A mapping's own settings, as Django fields (labels, help, errors); the JSON settings live in the editor."""

    name = forms.CharField(max_length=200)
    source_connection = forms.TypedChoiceField(label="Source connection", coerce=int)
    source_object = forms.CharField(label="Source object", max_length=100)
    target_connection = forms.TypedChoiceField(label="Target connection", coerce=int)
    target_object = forms.CharField(label="Target object", max_length=100)
    direction = forms.ChoiceField(choices=Direction.choices)
    conflict_policy = forms.ChoiceField(label="When both sides changed", choices=ConflictPolicy.choices,
                                        help_text="Two-way mappings only.")
    write_mode = forms.ChoiceField(label="Write mode", choices=WriteMode.choices)
    create_if_missing = forms.BooleanField(
        label="Create the target record again when it was deleted", required=False)
    error_strategy = forms.ChoiceField(label="When a record fails", choices=ErrorStrategy.choices)
    retry_schedule = forms.CharField(
        label="Retry schedule", max_length=300,
        help_text="Seconds before each automatic retry, separated by commas: 60, 300, 1800.")
    max_retries = forms.IntegerField(label="Retries", min_value=0, max_value=20)
    automated_replay = forms.BooleanField(label="Replay transient failures at once, in a linked run",
                                          required=False)
    replay_attempts = forms.IntegerField(label="Replay attempts", min_value=0, max_value=20)
    pause_after_failed_runs = forms.IntegerField(
        label="Pause after failed runs in a row", min_value=0, max_value=1000, help_text="0: never pause.")
    auto_fix = forms.BooleanField(
        label="Auto-fix values that do not fit the target (recorded as warnings)", required=False)
    default_phone_country = forms.CharField(label="Default phone country", max_length=2,
                                            help_text="Two-letter region such as US or GB.")
    logging_level = forms.ChoiceField(label="Record snapshots", choices=LoggingLevel.choices)
    batch_size = forms.IntegerField(label="Batch size", min_value=1, max_value=1000,
                                    help_text="Records per page read and per batch (1 to 1,000).")
    schedule_type = forms.ChoiceField(label="Schedule", choices=ScheduleType.choices)
    schedule_interval_minutes = forms.IntegerField(label="Every (minutes)", min_value=1, max_value=525600,
                                                   required=False)
    schedule_cron = forms.CharField(label="Cron expression", max_length=100, required=False,
                                    help_text="Five fields, such as */15 * * * * (UTC).")

    def __init__(self, *args, connections=(), object_choices=None, editor_url="", **kwargs):
        super().__init__(*args, **kwargs)
        choices = [("", "Choose a connection…")] + [(c.pk, c.name) for c in connections]
        for side in ("source", "target"):
            self.fields[f"{side}_connection"].choices = choices
            objects = (object_choices or {}).get(side)
            if objects is not None:
                self.fields[f"{side}_object"].widget = forms.Select(choices=[("", "Choose an object…"), *objects])
        # The editor re-renders on these (htmx): new objects, fields, or settings that only apply to one choice.
        for name in ("source_connection", "source_object", "target_connection", "target_object", "direction",
                     "schedule_type"):
            self.fields[name].widget.attrs.update(editor_refresh_attributes(editor_url))

    def clean_retry_schedule(self):
        text = self.cleaned_data["retry_schedule"]
        try:
            return [int(part) for part in re.split(r"[,\s]+", text.strip()) if part]
        except ValueError:
            raise ValidationError("Whole numbers of seconds, separated by commas, such as 60, 300, 1800.") from None

    def clean_schedule_cron(self):
        return self.cleaned_data["schedule_cron"].strip()


def editor_refresh_attributes(editor_url):
    """htmx attributes of a choice that re-renders the editor with everything typed (nothing is saved)."""
    return {"hx-post": editor_url, "hx-trigger": "change", "hx-vals": '{"editor": "refresh"}',
            "hx-target": "#mapping-editor", "hx-select": "#mapping-editor", "hx-swap": "outerHTML"}


@dataclass
class TransformStep:
    name: str
    args: dict  # as typed: argument name -> text (or bool for a checkbox)

    def arguments(self, prefix):
        transform = TRANSFORMS.get(self.name)
        if transform is None:
            return []
        return [{
            "name": arg, "required": required, "kind": ARGUMENT_KINDS.get((self.name, arg), "text"),
            "help": ARGUMENT_HELP.get((self.name, arg), ""), "input": f"{prefix}-{arg}",
            "value": self.args.get(arg, False if ARGUMENT_KINDS.get((self.name, arg)) == "boolean" else ""),
        } for arg, required in transform.arguments.items()]

    def spec(self):
        """The {"name", "args"} spec the service checks; what cannot be read stays as typed, for its message."""
        args = {}
        for arg in (TRANSFORMS[self.name].arguments if self.name in TRANSFORMS else ()):
            kind, value = ARGUMENT_KINDS.get((self.name, arg), "text"), self.args.get(arg)
            if kind == "boolean":
                if value:
                    args[arg] = True
                continue
            if value is None or value == "":
                continue
            args[arg] = _read_argument(kind, value)
        return {"name": self.name, "args": args}

    @classmethod
    def from_spec(cls, spec):
        name = spec.get("name", "") if isinstance(spec, dict) else ""
        args = (spec.get("args") or {}) if isinstance(spec, dict) else {}
        return cls(name=name, args={arg: _show_argument(ARGUMENT_KINDS.get((name, arg), "text"), value)
                                    for arg, value in (args.items() if isinstance(args, dict) else ())})


def _read_argument(kind, text):
    if kind == "integer":
        try:
            return int(text.strip())
        except ValueError:
            return text
    if kind == "list":
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind == "json":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _show_argument(kind, value):
    if kind == "boolean":
        return bool(value)
    if kind == "list" and isinstance(value, list):
        return ", ".join(map(str, value))
    if kind == "json" or not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return value


@dataclass
class FieldRow:
    """One field mapping as typed, with its errors ({field name or "": [messages]}) and its preview."""

    source_field: str = ""
    target_field: str = ""
    transforms: list = field(default_factory=list)
    required: bool = False
    default_value: str = ""
    skip_invalid: bool = False
    sample: str = ""
    reverse_transforms: str = "[]"  # kept as it was: the editor does not edit the two-way reverse transforms
    errors: dict = field(default_factory=dict)
    preview: dict | None = None
    index: int = 0

    @property
    def prefix(self):
        return f"fm-{self.index}"

    @property
    def source_name(self):
        return f"{self.prefix}-source_field"

    @property
    def target_name(self):
        return f"{self.prefix}-target_field"

    def is_blank(self):
        return not (self.source_field or self.target_field or self.transforms or self.default_value)

    def item(self):
        """The dict of FIELD_MAPPING_FIELDS the service takes."""
        try:
            reverse = json.loads(self.reverse_transforms or "[]")
        except ValueError:
            reverse = self.reverse_transforms
        return {
            "source_field": self.source_field, "target_field": self.target_field,
            "transforms": [step.spec() for step in self.transforms], "reverse_transforms": reverse,
            "required": self.required, "default_value": self.default_value or None,
            "skip_invalid": self.skip_invalid,
        }

    def steps(self):
        return [{"step": step, "index": position, "prefix": f"{self.prefix}-t-{position}",
                 "arguments": step.arguments(f"{self.prefix}-t-{position}")}
                for position, step in enumerate(self.transforms)]


class MappingEditor:
    """One editing session of a mapping (new when `mapping` is None): see the module's docstring."""

    transform_choices = TRANSFORM_CHOICES
    transform_names = list(TRANSFORMS)
    # A row's errors shown next to their own input; any other (the row as a whole) is shown above the row.
    row_field_keys = ("source_field", "target_field", "transforms", "default_value")

    def __init__(self, *, organization, connections, mapping=None, data=None, editor_url=""):
        self.organization = organization
        self.editor_url = editor_url
        self.focus = ""  # the id of the field to focus after an editor action (static/js/mapping_editor.js)
        self.mapping = mapping
        self.connections = {connection.pk: connection for connection in connections}
        self.errors: dict[str, list] = {}  # what lands outside the Django form: match keys, retry policy, rows
        self.schema_problems: dict[str, str] = {}
        self.bound = data is not None
        if data is None:
            initial = _initial(mapping)
            self.rows = [FieldRow(**row) for row in initial.pop("rows")]
            self.match_keys = initial.pop("match_keys")
            self.retry_policy = initial.pop("retry_policy")
            self.values = initial
        else:
            self.values = {name: data.get(name, "") for name in MappingForm.base_fields}
            for name in ("create_if_missing", "automated_replay", "auto_fix"):
                self.values[name] = bool(data.get(name))
            self.rows = _rows_from(data)
            self.match_keys = _match_keys_from(data)
            self.retry_policy = {category: {"retry": data.get(f"rp-{category}-retry", ""),
                                            "attempts": data.get(f"rp-{category}-attempts", "").strip(),
                                            "delays": data.get(f"rp-{category}-delays", "").strip()}
                                 for category in ErrorCategory.values}
        self._number_rows()
        self.objects = {side: self._objects(side) for side in ("source", "target")}
        self.schemas = {side: self._schema(side) for side in ("source", "target")}
        self.form = MappingForm(data if self.bound else None, initial=None if self.bound else self.values,
                                connections=connections, editor_url=editor_url, object_choices={
                                    side: [(o.name, o.label or o.name) for o in objects]
                                    for side, objects in self.objects.items() if objects is not None})

    # --- the schemas of the chosen connections ---------------------------------------------------------------

    def connection(self, side):
        try:
            return self.connections.get(int(self.values.get(f"{side}_connection") or 0))
        except (TypeError, ValueError):
            return None

    def _objects(self, side):
        connection = self.connection(side)
        if connection is None:
            return None
        try:
            return connection_objects(connection=connection)
        except ConnectorError as exc:
            self.schema_problems[side] = f"Could not read the objects of {connection.name}: {exc.message}"
            return None

    def _schema(self, side):
        connection, name = self.connection(side), self.values.get(f"{side}_object")
        if connection is None or not name or self.objects[side] is None:
            return None
        if name not in {summary.name for summary in self.objects[side]}:
            return None
        try:
            return connection_schema(connection=connection, object_name=name)
        except ConnectorError as exc:
            self.schema_problems[side] = f"Could not read the fields of {name}: {exc.message}"
            return None

    def field_choices(self, side):
        schema = self.schemas[side]
        if schema is None:
            return None
        return [(spec.name, _field_label(spec)) for spec in schema.fields.values()
                if side == "source" or not spec.read_only]

    @property
    def source_fields(self):
        return self.field_choices("source")

    @property
    def target_fields(self):
        return self.field_choices("target")

    @property
    def source_field_names(self):
        return [name for name, _label in self.source_fields or ()]

    @property
    def target_field_names(self):
        return [name for name, _label in self.target_fields or ()]

    @property
    def two_way(self):
        return self.values.get("direction") == Direction.TWO_WAY

    @property
    def retry_rows(self):
        return [{"category": category, "label": ErrorCategory(category).label, **typed}
                for category, typed in self.retry_policy.items()]

    @property
    def retry_policy_set(self):
        return any(any(typed.values()) for typed in self.retry_policy.values())

    @property
    def unmapped_required(self):
        """Fields the target requires that no row writes yet: each new record would fail without them."""
        schema = self.schemas["target"]
        if schema is None:
            return []
        written = {row.target_field for row in self.rows}
        return [spec.name for spec in schema.fields.values()
                if spec.required and not spec.read_only and spec.name not in written]

    # --- editing actions (add / remove rows, transforms, match keys) -----------------------------------------

    def apply(self, action):
        """An editor button ("add_row", "remove_row:2", "add_transform:2", "remove_transform:2:0",
        "add_match_key", "remove_match_key:0"); anything else only re-renders."""
        verb, _, rest = (action or "").partition(":")
        numbers = [int(part) for part in rest.split(":") if part.isdigit()]
        if verb == "add_row":
            self.rows.append(FieldRow())
            self.focus = f"fm-{len(self.rows) - 1}-source_field"
        elif verb == "remove_row" and numbers and numbers[0] < len(self.rows):
            del self.rows[numbers[0]]
        elif verb == "add_transform" and numbers and numbers[0] < len(self.rows):
            self.rows[numbers[0]].transforms.append(TransformStep(name="trim", args={}))
            self.focus = f"fm-{numbers[0]}-t-{len(self.rows[numbers[0]].transforms) - 1}-name"
        elif verb == "remove_transform" and len(numbers) == 2 and numbers[0] < len(self.rows):
            steps = self.rows[numbers[0]].transforms
            if numbers[1] < len(steps):
                del steps[numbers[1]]
        elif verb == "add_match_key":
            self.match_keys.append({"source": "", "target": "", "errors": {}})
            self.focus = f"mk-{len(self.match_keys) - 1}-source"
        elif verb == "remove_match_key" and numbers and numbers[0] < len(self.match_keys):
            del self.match_keys[numbers[0]]
        self._number_rows()

    def _number_rows(self):
        for index, row in enumerate(self.rows):
            row.index = index
        for index, key in enumerate(self.match_keys):
            key.update(source_name=f"mk-{index}-source", target_name=f"mk-{index}-target")

    # --- saving ----------------------------------------------------------------------------------------------

    def service_arguments(self):
        """The keyword arguments of mapping_create / mapping_update, or None when the form itself is invalid
        (its errors, and the rows' own, are then on the editor)."""
        form_valid = self.form.is_valid()
        policy, policy_problems = self._retry_policy()
        if policy_problems:
            self.errors["retry_policy"] = policy_problems
        kept = self._kept_rows()
        if not form_valid or policy_problems:
            # The rows' own problems too, so one round shows everything.
            from mappings.services import mapping_field_mappings_errors

            stub = Mapping(organization=self.organization)
            self.add_service_errors(mapping_field_mappings_errors(stub, [row.item() for row in kept]), kept=kept)
            return None
        data = dict(self.form.cleaned_data)
        for side in ("source", "target"):
            data[f"{side}_connection"] = self.connections[data[f"{side}_connection"]]
        data["default_phone_country"] = data["default_phone_country"].strip()
        data["match_keys"] = [{"source": key["source"], "target": key["target"]} for key in self.match_keys
                              if key["source"] or key["target"]]
        data["retry_policy"] = policy
        data["field_mappings"] = [row.item() for row in kept]
        return data

    def _kept_rows(self):
        return [row for row in self.rows if not row.is_blank()]

    def _retry_policy(self):
        policy, problems = {}, []
        for category, typed in self.retry_policy.items():
            rule = {}
            if typed["retry"] in ("yes", "no"):
                rule["retry"] = typed["retry"] == "yes"
            label = ErrorCategory(category).label
            if typed["attempts"]:
                try:
                    rule["attempts"] = int(typed["attempts"])
                except ValueError:
                    problems.append(f"{label}: attempts must be a whole number.")
            if typed["delays"]:
                try:
                    rule["delays"] = [int(part) for part in re.split(r"[,\s]+", typed["delays"]) if part]
                except ValueError:
                    problems.append(f"{label}: delays must be whole numbers of seconds, separated by commas.")
            if rule:
                policy[category] = rule
        return policy, problems

    def add_service_errors(self, errors, *, kept=None):
        """Place the service's {key: [messages]} (ValidationError.message_dict) at their fields and rows."""
        kept = self._kept_rows() if kept is None else kept
        matched = [key for key in self.match_keys if key["source"] or key["target"]]
        for key, messages in errors.items():
            if match := FIELD_MAPPING_KEY.fullmatch(key):
                index, name = int(match.group(1)), match.group(2)
                if index < len(kept):
                    kept[index].errors.setdefault(name, []).extend(messages)
                    continue
            if match := MATCH_KEY_KEY.fullmatch(key):
                index, name = int(match.group(1)), match.group(2)
                if index < len(matched):
                    matched[index].setdefault("errors", {}).setdefault(name, []).extend(messages)
                    continue
            if key in self.form.fields and self.form.is_bound:
                if key not in self.form.errors:
                    self.form.add_error(key, messages)
            elif key == NON_FIELD_ERRORS and self.form.is_bound:
                self.form.add_error(None, messages)
            else:
                self.errors.setdefault(key.partition("[")[0] or "mapping", []).extend(
                    messages if "[" not in key else [f"{key}: {message}" for message in messages])

    @property
    def has_row_errors(self):
        return any(row.errors for row in self.rows) or bool(self.errors.get("field_mappings"))

    # --- the live preview ------------------------------------------------------------------------------------

    def sample_record(self):
        """The sample record: every row's sample value under its source field."""
        return {row.source_field: row.sample for row in self.rows if row.source_field and row.sample != ""}

    def preview(self, row):
        """What the engine's compiled plan makes of the sample record for this row: the value written, or the
        errors and warnings a run would record."""
        target = row.target_field or "(target field)"
        spec = self.schemas["target"].fields.get(target) if self.schemas["target"] is not None else None
        # Only this row's field is checked: the other required fields are other rows' business.
        schema = ObjectSchema(name=self.values.get("target_object") or "target",
                              fields={target: spec or FieldSpec(name=target)})
        item = row.item()
        rule = FieldRule(near_field=row.source_field, far_field=target, transforms=item["transforms"],
                         required=row.required, default=item["default_value"], skip_invalid=row.skip_invalid)
        try:
            plan = compile_record_plan(rules=[rule], schema=schema, auto_fix=bool(self.values.get("auto_fix")),
                                       phone_country=(self.values.get("default_phone_country") or "US").upper())
        except ValidationError as exc:
            return {"ok": False, "errors": [message.partition(": ")[2] or message for message in exc.messages],
                    "warnings": [], "shown": ""}
        prepared = plan.apply(self.sample_record())
        return {"ok": prepared.ok, "shown": describe_value(prepared.payload.get(target, MISSING)),
                "errors": [error.message for error in prepared.errors],
                "warnings": [warning.message for warning in prepared.warnings]}

    def fill_previews(self):
        for row in self.rows:
            if row.sample != "" or row.default_value:
                row.preview = self.preview(row)


def _field_label(spec):
    details = [spec.type] if spec.type else []
    if spec.required:
        details.append("required")
    if spec.max_length:
        details.append(f"max {spec.max_length}")
    return f"{spec.label or spec.name} · {spec.name} ({', '.join(details)})" if details else spec.name


def _initial(mapping):
    """What the editor shows for a saved mapping, or the model's defaults for a new one."""
    mapping = mapping or Mapping()
    values = {name: getattr(mapping, name) for name in MappingForm.base_fields
              if name not in ("source_connection", "target_connection", "retry_schedule")}
    values["source_connection"] = mapping.source_connection_id or ""
    values["target_connection"] = mapping.target_connection_id or ""
    values["retry_schedule"] = ", ".join(map(str, mapping.retry_schedule or []))
    values["schedule_interval_minutes"] = mapping.schedule_interval_minutes
    field_mappings = list(mapping.field_mappings.all()) if mapping.pk else []
    values["rows"] = [{
        "source_field": fm.source_field, "target_field": fm.target_field,
        "transforms": [TransformStep.from_spec(spec) for spec in fm.transforms or []],
        "required": fm.required, "default_value": fm.default_value or "", "skip_invalid": fm.skip_invalid,
        "reverse_transforms": json.dumps(fm.reverse_transforms or []),
    } for fm in field_mappings] or [{}]
    values["match_keys"] = [{"source": key.get("source", ""), "target": key.get("target", ""), "errors": {}}
                            for key in mapping.match_keys or [] if isinstance(key, dict)]
    policy = mapping.retry_policy or {}
    values["retry_policy"] = {category: _typed_rule(policy.get(category) or {}) for category in ErrorCategory.values}
    return values


def _typed_rule(rule):
    retry = rule.get("retry")
    return {"retry": "" if retry is None else ("yes" if retry else "no"),
            "attempts": "" if rule.get("attempts") is None else str(rule["attempts"]),
            "delays": ", ".join(map(str, rule.get("delays") or []))}


def _indices(data, pattern):
    return sorted({int(match.group(1)) for key in data if (match := re.fullmatch(pattern, key))})


def _rows_from(data):
    rows = []
    for index in _indices(data, r"fm-(\d+)-target_field"):
        prefix = f"fm-{index}"
        steps = []
        for position in _indices(data, rf"{prefix}-t-(\d+)-name"):
            step_prefix = f"{prefix}-t-{position}"
            name = data.get(f"{step_prefix}-name", "")
            arguments = TRANSFORMS[name].arguments if name in TRANSFORMS else {}
            steps.append(TransformStep(name=name, args={
                arg: (bool(data.get(f"{step_prefix}-{arg}")) if ARGUMENT_KINDS.get((name, arg)) == "boolean"
                      else data.get(f"{step_prefix}-{arg}", ""))
                for arg in arguments}))
        rows.append(FieldRow(
            source_field=data.get(f"{prefix}-source_field", "").strip(),
            target_field=data.get(f"{prefix}-target_field", "").strip(),
            transforms=steps,
            required=bool(data.get(f"{prefix}-required")),
            default_value=data.get(f"{prefix}-default_value", ""),
            skip_invalid=bool(data.get(f"{prefix}-skip_invalid")),
            sample=data.get(f"{prefix}-sample", ""),
            reverse_transforms=data.get(f"{prefix}-reverse_transforms", "[]"),
        ))
    return rows


def _match_keys_from(data):
    return [{"source": data.get(f"mk-{index}-source", "").strip(),
             "target": data.get(f"mk-{index}-target", "").strip(), "errors": {}}
            for index in _indices(data, r"mk-(\d+)-source")]


def describe_value(value) -> str:
    """A previewed value as the person reads it: text in quotes, nothing as 'empty'."""
    if value is MISSING:
        return "not written"
    if value is None:
        return "empty (null)"
    if isinstance(value, str):
        return f"“{value}”"
    return json.dumps(value, ensure_ascii=False, default=str)

