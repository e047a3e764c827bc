"""Suggested fixes for error groups, applied in one step: the change to the mapping that the group's cause calls
for, then the group retried, one record first.

Seed 000 names a fix per cause, and each is a Fix below with a stable kind:

| cause (category / code)                   | kind                            | the change                       |
| ----------------------------------------- | ------------------------------- | -------------------------------- |
| validation / invalid phone                | add_phone_e164                  | phone_e164 on the field          |
| validation / too long                     | add_truncate                    | truncate to the target's limit   |
| validation / required missing             | set_default, filter_out_missing | a default, or a filter           |
| duplicate (the target's "already exists") | match_and_upsert                | a match key on the field, upsert |
| mapping / field not found                 | refresh_schema_and_remap        | schema described again, remapped |

The values come from what is known, never guessed: the length from the target's schema (or the error's own
words), the match key from the error's field (or the target's unique fields), the new field from the schema as
described again. A default is the operator's to choose: that fix takes a parameter, checked like any value of
the field.

This lives in syncs, not mappings: its subject is an error group (a fingerprint of record errors, retried
through syncs.groups), and mappings must not depend on the errors of runs. The mapping is changed only through
mappings.services.mapping_update, which checks it as every other caller's change; the group is retried only
through syncs.groups.error_group_retry. The API, the browser views and anything else call error_group_fixes and
error_group_fix_apply.
"""

import difflib
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from integrations.connectors.base import FieldType, ObjectSchema
from integrations.errors import ConnectorError, ErrorCategory
from integrations.services import connection_schema_refresh
from mappings.models import Mapping, WriteMode
from mappings.services import FIELD_MAPPING_FIELDS, mapping_update
from mappings.validation import MISSING, TRUNCATABLE_TYPES, ValidationResult, compile_field_check
from syncs.events import log_event
from syncs.groups import PENDING_STATUSES, error_group_retry
from syncs.models import (
    UNRESOLVED_ERROR_STATUSES,
    ErrorGroupRetry,
    ErrorLevel,
    GroupRetryStatus,
    RecordError,
)

FORWARD = "forward"

# The codes each cause goes by: Resync's own checks (mappings.validation) first, then what targets answer (the
# sandbox, HubSpot, Salesforce, PostgreSQL, Shopify).
INVALID_PHONE_CODES = frozenset({"invalid_phone", "INVALID_PHONE_NUMBER", "invalid_phone_number"})
TOO_LONG_CODES = frozenset({"too_long", "STRING_TOO_LONG", "string_too_long", "value_too_long", "TOO_LONG"})
REQUIRED_CODES = frozenset({"required_missing", "REQUIRED_FIELD_MISSING", "REQUIRED_FIELD_MISSING_VALUE"})
FIELD_NOT_FOUND_CODES = frozenset({"field_not_found", "unknown_field", "UNKNOWN_FIELD", "PROPERTY_DOESNT_EXIST",
                                   "INVALID_FIELD"})
# Duplicates a match key cannot settle: two source records on one key, several targets on it, or a target record
# another source record holds.
UNMATCHABLE_DUPLICATE_CODES = frozenset({"duplicate_in_source", "ambiguous_match", "already_linked"})
# "…; the target allows 80", "…; the maximum is 80", "maximum length of 80", "at most 80 characters"
LIMIT_IN_WORDS = re.compile(r"(?:allows|maximum(?: length)? (?:is|of)|max(?:imum)?[ _]length[:= ]+|at most)\s*(\d+)",
                            re.IGNORECASE)
# Where a new transform goes in a field's chain: before the ones that shape the final value.
FINAL_TRANSFORMS = ("truncate", "default")
RECENT_RETRIES = timedelta(hours=24)
RECENT_RETRIES_SHOWN = 10


class ErrorGroupNotFound(ObjectDoesNotExist):
    """No record error of the organization has this fingerprint (another organization's group included)."""


class AlreadyApplied(Exception):
    """The change a fix would make is already in the mapping."""


# --- what a suggestion says ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixParam:
    """A value the operator gives when applying a fix."""

    name: str
    label: str
    help: str
    suggested: Any = None
    choices: tuple = ()  # the values allowed, when only some are


@dataclass(frozen=True)
class FixChange:
    """One thing in the mapping a fix changes: a field mapping (as FIELD_MAPPING_FIELDS, None when it is added) or
    the mapping's settings (only those it changes). `changed` names what differs."""

    subject: str  # "field_mapping" or "mapping"
    label: str
    before: dict | None
    after: dict
    changed: tuple


@dataclass(frozen=True)
class Suggestion:
    kind: str
    title: str
    explanation: str
    changes: tuple
    params: tuple = ()


@dataclass
class GroupCause:
    """What a group's errors have in common, and the mapping as it is now."""

    organization: Any
    fingerprint: str
    mapping: Mapping
    category: str
    code: str
    field: str
    direction: str
    sample: RecordError
    field_mappings: list = field(default_factory=list)  # dicts of FIELD_MAPPING_FIELDS, in order

    @property
    def forward(self):
        return self.direction == FORWARD

    @property
    def far_attr(self):
        """The field mapping attribute naming the field the errors are about (the far side's)."""
        return "target_field" if self.forward else "source_field"

    @property
    def transforms_attr(self):
        return "transforms" if self.forward else "reverse_transforms"

    @property
    def far_connection(self):
        return self.mapping.target_connection if self.forward else self.mapping.source_connection

    @property
    def far_object(self):
        return self.mapping.target_object if self.forward else self.mapping.source_object

    @property
    def far_schema(self) -> ObjectSchema | None:
        """The far object's schema as last described (a run describes it before it writes): read from the
        connection's cache, never from the external system, so listing suggestions costs no call."""
        data = (self.far_connection.schema_cache or {}).get("schemas", {}).get(self.far_object)
        return ObjectSchema.from_dict(data) if data else None

    def field_spec(self, name=None):
        schema = self.far_schema
        return schema.fields.get(name or self.field) if schema is not None else None

    def field_mapping_index(self):
        """The position of the field mapping that writes the errors' field, or None."""
        return next((index for index, item in enumerate(self.field_mappings)
                     if self.field and item[self.far_attr] == self.field), None)

    def where(self):
        return self.far_schema.label if self.far_schema is not None and self.far_schema.label else self.far_object


def _field_mapping_dict(field_mapping):
    return {name: getattr(field_mapping, name) for name in FIELD_MAPPING_FIELDS if name != "position"}


def _changed(before, after):
    return tuple(name for name in after if (before or {}).get(name) != after[name])


def _field_mapping_label(item):
    return f"{item['source_field'] or '(no source field)'} → {item['target_field']}"


# --- the fixes -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What applying a fix does to the mapping: the changes shown, and mapping_update's arguments."""

    changes: tuple
    field_mappings: list | None = None
    settings: dict = field(default_factory=dict)


class Fix:
    kind = ""
    title = ""

    def addresses(self, cause: GroupCause) -> bool:
        """Whether this fix is meant for the group's cause at all."""
        raise NotImplementedError

    def params(self, cause: GroupCause) -> tuple:
        return ()

    def clean_params(self, cause: GroupCause, params: dict) -> dict:
        """The parameters, checked: ValidationError keyed "params.<name>"."""
        return {}

    def plan(self, cause: GroupCause, params: dict) -> Plan:
        """The change for these (checked) parameters, or for the suggested ones when `params` is None; raises
        AlreadyApplied when the mapping has it, ValidationError (code not_applicable) when it cannot apply."""
        raise NotImplementedError

    def explanation(self, cause: GroupCause) -> str:
        raise NotImplementedError

    def _field_mapping_plan(self, cause, index, after, *, changed=None):
        """`changed` names what changes when `after` cannot show it: a value the operator has yet to give."""
        items = [dict(item) for item in cause.field_mappings]
        before = items[index] if index is not None else None
        if index is None:
            items.append(after)
        else:
            items[index] = after
        change = FixChange("field_mapping", _field_mapping_label(after), before, after,
                           changed or _changed(before, after))
        return Plan(changes=(change,), field_mappings=items)

    @staticmethod
    def _needs_field_mapping(cause):
        index = cause.field_mapping_index()
        if index is None:
            raise ValidationError(f"No field mapping of “{cause.mapping}” writes {cause.field or 'this field'}.",
                                  code="not_applicable")
        return index


def not_applicable(message):
    return ValidationError(message, code="not_applicable")


class AddPhoneE164(Fix):
    kind = "add_phone_e164"
    title = "Format the phone numbers as E.164"

    def addresses(self, cause):
        return cause.category == ErrorCategory.VALIDATION and cause.code in INVALID_PHONE_CODES

    def explanation(self, cause):
        country = cause.mapping.default_phone_country
        return (f"{cause.where()} expects phone numbers in E.164 form, like +14155552671. The phone_e164 transform "
                f"rewrites “(415) 555-2671” and “415.555.2671” into it; numbers without a country code are read as "
                f"{country} numbers (the mapping's default phone country). A value that is no phone number at all "
                "still fails, as a transform error naming it.")

    def plan(self, cause, params):
        index = self._needs_field_mapping(cause)
        item = dict(cause.field_mappings[index])
        transforms = list(item[cause.transforms_attr] or [])
        if any(isinstance(spec, dict) and spec.get("name") == "phone_e164" for spec in transforms):
            raise AlreadyApplied
        at = next((i for i, spec in enumerate(transforms)
                   if isinstance(spec, dict) and spec.get("name") in FINAL_TRANSFORMS), len(transforms))
        transforms.insert(at, {"name": "phone_e164", "args": {}})
        return self._field_mapping_plan(cause, index, {**item, cause.transforms_attr: transforms})


class AddTruncate(Fix):
    kind = "add_truncate"
    title = "Truncate to the target's limit"

    def addresses(self, cause):
        if cause.category != ErrorCategory.VALIDATION or cause.code not in TOO_LONG_CODES:
            return False
        spec = cause.field_spec()
        # A truncated email, phone or URL is wrong data: only free text is cut short.
        return (spec is None or spec.type in TRUNCATABLE_TYPES) and self.limit(cause) is not None

    @staticmethod
    def limit(cause):
        spec = cause.field_spec()
        if spec is not None and spec.max_length:
            return spec.max_length
        for text in (cause.sample.message, cause.sample.detail):
            found = LIMIT_IN_WORDS.search(text or "")
            if found and int(found.group(1)) > 0:
                return int(found.group(1))
        return None

    def explanation(self, cause):
        return (f"{cause.where()} takes at most {self.limit(cause)} characters in {cause.field}. The truncate "
                "transform cuts longer values to that length as the last step, so the record syncs with the start "
                "of the text instead of failing.")

    def plan(self, cause, params):
        index = self._needs_field_mapping(cause)
        limit = self.limit(cause)
        item = dict(cause.field_mappings[index])
        transforms = [dict(spec) if isinstance(spec, dict) else spec for spec in item[cause.transforms_attr] or []]
        existing = next((spec for spec in transforms if isinstance(spec, dict) and spec.get("name") == "truncate"),
                        None)
        if existing is not None:
            length = (existing.get("args") or {}).get("length")
            if isinstance(length, int) and length <= limit:
                raise AlreadyApplied
            existing["args"] = {**(existing.get("args") or {}), "length": limit}
        else:
            transforms.append({"name": "truncate", "args": {"length": limit}})
        return self._field_mapping_plan(cause, index, {**item, cause.transforms_attr: transforms})


class SetDefault(Fix):
    kind = "set_default"
    title = "Write a default when the value is empty"

    def addresses(self, cause):
        # Defaults are a forward rule (the reverse direction writes what the target holds).
        return cause.category == ErrorCategory.VALIDATION and cause.code in REQUIRED_CODES and cause.forward

    def params(self, cause):
        spec = cause.field_spec()
        kind = f" ({spec.type})" if spec is not None and spec.type != FieldType.STRING else ""
        return (FixParam("value", "Default value",
                         f"Written to {cause.field}{kind} when a record has no value for it; checked like any value "
                         "of the field."),)

    def clean_params(self, cause, params):
        value = params.get("value")
        if not isinstance(value, str) or not value.strip():
            raise ValidationError({"params.value": ["Give the value to write when the record has none."]})
        value = value.strip()
        if len(value) > 500:
            raise ValidationError({"params.value": ["A default has at most 500 characters."]})
        spec = cause.field_spec()
        if spec is not None:
            result = ValidationResult(payload={cause.field: value})
            check = compile_field_check(cause.field, spec, target=cause.where(), required=True, default=MISSING,
                                        phone_country=cause.mapping.default_phone_country)
            check(result, value)
            if result.errors:
                raise ValidationError({"params.value": [result.errors[0].message]})
        return {"value": value}

    def explanation(self, cause):
        return (f"{cause.where()} requires {cause.field}, and these records have no value for it. A default is "
                "written instead of the empty value, so they sync; choose one that tells people the value was "
                "missing.")

    def plan(self, cause, params):
        index = cause.field_mapping_index()
        value = (params or {}).get("value")
        if index is None:
            spec = cause.field_spec()
            if spec is None or spec.read_only:
                raise not_applicable(f"{cause.field} is not a field {cause.where()} lets Resync write.")
            item = {"source_field": "", "target_field": cause.field, "transforms": [], "reverse_transforms": [],
                    "required": False, "default_value": value, "skip_invalid": False}
            return self._field_mapping_plan(cause, None, item, changed=("default_value",))
        item = dict(cause.field_mappings[index])
        current = item["default_value"]
        if current not in (None, "") and (value is None or value == current):
            raise AlreadyApplied
        return self._field_mapping_plan(cause, index, {**item, "default_value": value}, changed=("default_value",))


class FilterOutMissing(Fix):
    kind = "filter_out_missing"
    title = "Ignore the records that lack it"

    def addresses(self, cause):
        return cause.category == ErrorCategory.VALIDATION and cause.code in REQUIRED_CODES and cause.forward

    def source_field(self, cause):
        index = cause.field_mapping_index()
        return cause.field_mappings[index]["source_field"] if index is not None else ""

    def explanation(self, cause):
        source = self.source_field(cause)
        return (f"Records whose {source} is empty are ignored on purpose, each with the filter's reason, instead "
                f"of failing: use this when a record without {cause.field} should not be in {cause.where()}. "
                "Retrying the group ignores the records it holds now.")

    def plan(self, cause, params):
        source = self.source_field(cause)
        if not source:
            raise not_applicable(f"No source field feeds {cause.field}: there is nothing to filter on.")
        filters = [dict(rule) for rule in cause.mapping.filters or []]
        if any(isinstance(rule, dict) and rule.get("field") == source and rule.get("op") == "empty"
               for rule in filters):
            raise AlreadyApplied
        rule = {"field": source, "op": "empty",
                "reason": f"No {source}: {cause.where()} requires {cause.field}"[:500]}
        before = {"filters": list(cause.mapping.filters or [])}
        after = {"filters": [*filters, rule]}
        change = FixChange("mapping", "Filters", before, after, ("filters",))
        return Plan(changes=(change,), settings=after)


class MatchAndUpsert(Fix):
    kind = "match_and_upsert"
    title = "Match on the key and update the existing record"

    def addresses(self, cause):
        return cause.category == ErrorCategory.DUPLICATE and cause.code not in UNMATCHABLE_DUPLICATE_CODES

    def key(self, cause):
        """(source field, target field) to match on: the error's field, else the first unique field of the far
        object that a field mapping writes."""
        candidates = [cause.field] if cause.field else []
        schema = cause.far_schema
        if not candidates and schema is not None:
            candidates = [name for name, spec in schema.fields.items() if spec.unique and not spec.read_only]
        for name in candidates:
            item = next((item for item in cause.field_mappings if item[cause.far_attr] == name), None)
            if item is not None and item["source_field"]:
                return item["source_field"], item["target_field"]
        return None

    def explanation(self, cause):
        key = self.key(cause)
        far = key[1] if cause.forward else key[0]
        return (f"{cause.where()} already holds a record with the same {far}. Matching on {far} finds that "
                "record, links it and updates it instead of creating a second one.")

    def plan(self, cause, params):
        key = self.key(cause)
        if key is None:
            raise not_applicable("No field mapping writes a unique field to match on.")
        source, target = key
        mapping = cause.mapping
        keys = [dict(item) for item in mapping.match_keys or []]
        has_key = any(isinstance(item, dict) and item.get("source") == source and item.get("target") == target
                      for item in keys)
        if has_key and mapping.write_mode != WriteMode.CREATE_ONLY:
            raise AlreadyApplied
        before = {"match_keys": list(mapping.match_keys or []), "write_mode": mapping.write_mode}
        after = {"match_keys": keys if has_key else [*keys, {"source": source, "target": target}],
                 "write_mode": WriteMode.UPSERT if mapping.write_mode == WriteMode.CREATE_ONLY else mapping.write_mode}
        change = FixChange("mapping", "Match keys and write mode", before, after, _changed(before, after))
        return Plan(changes=(change,), settings={name: after[name] for name in change.changed})


class RefreshSchemaAndRemap(Fix):
    kind = "refresh_schema_and_remap"
    title = "Refresh the schema and map another field"

    def addresses(self, cause):
        return (cause.category in (ErrorCategory.MAPPING, ErrorCategory.VALIDATION)
                and cause.code in FIELD_NOT_FOUND_CODES and cause.field_mapping_index() is not None)

    def choices(self, cause):
        """Fields of the far object a field mapping may be moved to: writable, not written by another one."""
        schema = cause.far_schema
        if schema is None:
            return ()
        index = cause.field_mapping_index()
        taken = {item[cause.far_attr] for position, item in enumerate(cause.field_mappings) if position != index}
        return tuple(name for name, spec in schema.fields.items() if not spec.read_only and name not in taken)

    def suggested(self, cause):
        choices = [name for name in self.choices(cause) if name != cause.field]
        close = difflib.get_close_matches(cause.field, choices, n=1, cutoff=0.5)
        return close[0] if close else None

    def params(self, cause):
        return (FixParam("field", "Map to", f"The field of {cause.where()} to write instead of {cause.field}, "
                                            "checked against the schema described again.",
                         suggested=self.suggested(cause), choices=self.choices(cause)),)

    def clean_params(self, cause, params):
        name = params.get("field")
        if not isinstance(name, str) or not name.strip():
            raise ValidationError({"params.field": [f"Name the field of {cause.where()} to write instead."]})
        return {"field": name.strip()}

    def explanation(self, cause):
        schema = cause.far_schema
        known = schema is not None and cause.field in schema.fields
        stale = (" The schema Resync keeps still lists it, so it changed since it was last described."
                 if known else "")
        return (f"{cause.where()} says {cause.field} does not exist.{stale} Its schema is described again, then "
                "the field mapping writes the field you choose instead.")

    def plan(self, cause, params):
        index = self._needs_field_mapping(cause)
        name = (params or {}).get("field") or self.suggested(cause)
        item = dict(cause.field_mappings[index])
        if params is not None and name == item[cause.far_attr]:
            raise AlreadyApplied  # the field is back after the refresh: nothing to remap
        return self._field_mapping_plan(cause, index, {**item, cause.far_attr: name})

    def prepare(self, cause, params):
        """Describe the far object again (an external call, made before anything is locked) and check the
        chosen field against what it says now."""
        try:
            connection_schema_refresh(connection=cause.far_connection)
        except ConnectorError as exc:
            raise ValidationError(f"Could not describe {cause.far_connection} again: {exc.message}",
                                  code="schema_unavailable") from None
        cause.far_connection.refresh_from_db(fields=["schema_cache", "schema_refreshed_at"])
        spec = cause.field_spec(params["field"])
        if spec is None or spec.read_only:
            known = ", ".join(self.choices(cause)) or "none"
            problem = "is read-only" if spec is not None else "does not exist"
            raise ValidationError({"params.field": [
                f"{params['field']} {problem} in {cause.where()} as just described (fields you can map: {known})."]})


FIXES = {fix.kind: fix for fix in (AddPhoneE164(), AddTruncate(), SetDefault(), FilterOutMissing(),
                                   MatchAndUpsert(), RefreshSchemaAndRemap())}
KINDS = tuple(FIXES)


# --- reading a group -------------------------------------------------------------------------------------------


def _mapping_queryset(organization):
    return (Mapping.objects.for_org(organization).select_related("source_connection", "target_connection")
            .prefetch_related("field_mappings"))


def group_cause(*, organization, fingerprint, mapping=None):
    """The cause of the group `fingerprint` from its latest record error (resolved ones too: a group whose
    errors all synced still has a cause). Raises ErrorGroupNotFound."""
    sample = (RecordError.objects.for_org(organization).filter(fingerprint=fingerprint, level=ErrorLevel.RECORD)
              .order_by("-pk").first())
    if sample is None:
        raise ErrorGroupNotFound(f"No error group {fingerprint}.")
    if mapping is None:
        mapping = _mapping_queryset(organization).get(pk=sample.mapping_id)
    return _cause(organization, fingerprint, mapping, sample)


def _cause(organization, fingerprint, mapping, sample):
    return GroupCause(
        organization=organization, fingerprint=fingerprint, mapping=mapping, category=sample.category,
        code=sample.error_code, field=sample.field, direction=sample.direction or FORWARD, sample=sample,
        field_mappings=[_field_mapping_dict(item) for item in mapping.field_mappings.all()],
    )


def cause_suggestions(cause: GroupCause) -> list[Suggestion]:
    """The fixes for this cause that would change the mapping now, each with what it would change."""
    suggestions = []
    for fix in FIXES.values():
        if not fix.addresses(cause):
            continue
        try:
            plan = fix.plan(cause, None)
        except (AlreadyApplied, ValidationError):
            continue
        suggestions.append(Suggestion(kind=fix.kind, title=fix.title, explanation=fix.explanation(cause),
                                      changes=plan.changes, params=fix.params(cause)))
    return suggestions


def error_group_fixes(*, organization, fingerprint) -> list[Suggestion]:
    """The suggested fixes of one error group. Raises ErrorGroupNotFound."""
    return cause_suggestions(group_cause(organization=organization, fingerprint=fingerprint))


def group_mappings(*, organization, groups):
    """pk -> mapping of these rows of syncs.groups.error_groups, with what working out their fixes reads."""
    return _mapping_queryset(organization).in_bulk({row["mapping_id"] for row in groups})


def error_groups_fixes(*, organization, groups, mappings=None, samples=None) -> dict:
    """fingerprint -> suggested fixes, for rows of syncs.groups.error_groups (a page of them): their mappings
    (group_mappings) and samples read in two queries and a prefetch whatever the number of groups, or given by a
    caller that has them already."""
    groups = list(groups)
    if mappings is None:
        mappings = group_mappings(organization=organization, groups=groups)
    if samples is None:
        samples = RecordError.objects.for_org(organization).in_bulk([row["sample_id"] for row in groups])
    answer = {}
    for row in groups:
        mapping, sample = mappings.get(row["mapping_id"]), samples.get(row["sample_id"])
        if mapping is not None and sample is not None:
            answer[row["fingerprint"]] = cause_suggestions(_cause(organization, row["fingerprint"], mapping, sample))
    return answer


# --- applying one ----------------------------------------------------------------------------------------------


def error_group_fix_apply(*, organization, fingerprint, kind, params=None, user=None):
    """Change the mapping as the fix `kind` says, then retry the group: one record first, the rest once it has
    synced (syncs.groups.error_group_retry).

    Safe to repeat: under a lock on the mapping the change is worked out again from the mapping as it is then, so
    a second call (a double click) finds it there, changes nothing and only asks for the retry, which is refused
    while the first one waits for its probe. Returns {kind, changed, changes, mapping, retry, retry_refused}.

    Raises ErrorGroupNotFound; ValidationError keyed "kind" (unknown), "params.<name>" (bad parameter) or by the
    mapping's fields (mapping_update refused the change), or with code not_applicable or schema_unavailable.
    """
    fix = FIXES.get(kind)
    if fix is None:
        raise ValidationError({"kind": [f"Unknown fix “{kind}” (known: {', '.join(KINDS)})."]})
    cause = group_cause(organization=organization, fingerprint=fingerprint)
    if not fix.addresses(cause):
        raise not_applicable(f"“{kind}” does not fix {cause.category} errors with code {cause.code or '(none)'}.")
    params = _clean_params(fix, cause, params)
    if isinstance(fix, RefreshSchemaAndRemap):
        fix.prepare(cause, params)

    with transaction.atomic():
        # Two applies of one fix (a double click) are worked out one after the other, each from the mapping as
        # the other left it.
        mapping = _mapping_queryset(organization).select_for_update(of=("self",)).get(pk=cause.mapping.pk)
        cause = _cause(organization, fingerprint, mapping, cause.sample)
        try:
            plan = fix.plan(cause, params)
        except AlreadyApplied:
            plan = None
        if plan is not None:
            mapping_update(mapping=mapping, field_mappings=plan.field_mappings, **plan.settings)
        retry, refused = None, ""
        try:
            retry = error_group_retry(organization=organization, fingerprint=fingerprint)
        except ValidationError as exc:
            refused = exc.messages[0]
        log_event("error_group_fix_applied", fingerprint=fingerprint, mapping=str(mapping.code), kind=kind,
                  changed=plan is not None, applied_by=str(user) if user is not None else "",
                  changes=[{"label": change.label, "before": change.before, "after": change.after}
                           for change in (plan.changes if plan else ())],
                  retry_queued=retry["queued"] if retry else 0, retry_refused=refused)
    return {"kind": kind, "changed": plan is not None, "changes": list(plan.changes) if plan else [],
            "mapping": mapping, "retry": retry, "retry_refused": refused}


def _clean_params(fix, cause, params):
    params = params or {}
    if not isinstance(params, dict):
        raise ValidationError({"params": ["Must be an object of the fix's parameters."]})
    accepted = [param.name for param in fix.params(cause)]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) or "no parameters"
        raise ValidationError({"params": [f"Unknown parameter {', '.join(unknown)} (this fix takes {takes})."]})
    return fix.clean_params(cause, params)


# --- how a retried group is doing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupProgress:
    """Where a group retry has got to: probing, retrying (the rest), failing (some still fail), recovered or
    stopped, in words."""

    group_retry: ErrorGroupRetry
    state: str
    label: str
    detail: str
    left: int = 0

    @property
    def live(self):
        return self.state in ("probing", "retrying")


def group_retries_progress(*, organization, since=None, limit=RECENT_RETRIES_SHOWN):
    """The latest retry of each group retried lately (the last day by default), newest first, with how far it has
    got: a group that recovered has no error left to list, so this is where it shows."""
    since = since or timezone.now() - RECENT_RETRIES
    latest = {}
    for group_retry in (ErrorGroupRetry.objects.for_org(organization).filter(created_at__gte=since)
                        .select_related("mapping", "probe_error").order_by("-created_at", "-pk")[:limit * 5]):
        latest.setdefault(group_retry.fingerprint, group_retry)
    retries = list(latest.values())[:limit]
    left = {row["fingerprint"]: row for row in (
        RecordError.objects.for_org(organization)
        .filter(fingerprint__in=[r.fingerprint for r in retries], level=ErrorLevel.RECORD,
                status__in=UNRESOLVED_ERROR_STATUSES)
        .values("fingerprint").annotate(total=Count("pk"), pending=Count("pk", filter=Q(status__in=PENDING_STATUSES)))
    )}
    return [_progress(group_retry, left.get(group_retry.fingerprint)) for group_retry in retries]


def _progress(group_retry, left):
    total, pending = (left["total"], left["pending"]) if left else (0, 0)
    if group_retry.status == GroupRetryStatus.PROBING:
        return GroupProgress(group_retry, "probing", "Probing", "Retrying one record first; the rest follow once it "
                                                                "has synced.", total)
    if group_retry.status == GroupRetryStatus.STOPPED:
        return GroupProgress(group_retry, "stopped", "Stopped", group_retry.reason, total)
    if pending:
        return GroupProgress(group_retry, "retrying", "Retrying the rest",
                             f"The first record synced; {pending} more {'is' if pending == 1 else 'are'} being "
                             "retried.", total)
    if total:
        return GroupProgress(group_retry, "failing", "Partly recovered",
                             f"The first record synced, but {total} still fail{'s' if total == 1 else ''}: open the "
                             "group for the reason.", total)
    return GroupProgress(group_retry, "recovered", "Recovered", "Every record of the group has synced or was closed.")
