"""Writing and checking mappings: a mapping and its field mappings are saved together, in one transaction, after
every rule has been checked; its django-q schedule follows it. `mapping_validate` checks a saved mapping against
the live schemas of both connections and reports every problem instead of raising.

The API, the admin and the command line call these; the JSON settings (match keys, filters, retry schedule and
policy) are checked here, where every caller passes, not in a serializer.
"""

from datetime import datetime

import phonenumbers
from croniter import croniter
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.errors import ConnectorError
from integrations.models import ConnectionStatus
from integrations.services import connection_describe
from mappings.models import Direction, FieldMapping, Mapping, ScheduleType, WriteMode
from mappings.transforms import validate_transforms

# What a caller may set on a mapping; everything else is state the engine keeps.
MAPPING_FIELDS = (
    "name", "source_connection", "source_object", "target_connection", "target_object", "direction", "match_keys",
    "write_mode", "create_if_missing", "conflict_policy", "error_strategy", "retry_schedule", "max_retries",
    "retry_policy", "pause_after_failed_runs", "automated_replay", "replay_attempts", "logging_level", "auto_fix",
    "default_phone_country", "filters", "batch_size", "schedule_type", "schedule_interval_minutes", "schedule_cron",
    "is_active",
)
FIELD_MAPPING_FIELDS = (
    "source_field", "target_field", "transforms", "reverse_transforms", "required", "default_value", "skip_invalid",
    "position",
)
# The record links of a mapping hold ids of these objects: moving a linked mapping elsewhere would update the
# wrong records.
ENDPOINT_FIELDS = ("source_connection", "source_object", "target_connection", "target_object")

FILTER_OPERATORS = ("empty", "not_empty", "equals", "not_equals", "contains", "in", "not_in")
OPERATORS_WITHOUT_VALUE = ("empty", "not_empty")
LIST_OPERATORS = ("in", "not_in")
MAX_FIELD_NAME = 100
MAX_DELAY_SECONDS = 7 * 24 * 3600  # a retry a week later is as far as a schedule sensibly goes
MAX_DELAYS = 20
MAX_FIELD_MAPPINGS = 500


class MappingBusy(Exception):
    """The mapping has a run queued or running: it cannot be deleted under it."""


# --- create, update, delete ---------------------------------------------------------------------------------------


@transaction.atomic
def mapping_create(*, organization, field_mappings=(), **fields) -> Mapping:
    """Create a mapping and its field mappings (a list of dicts of FIELD_MAPPING_FIELDS); raise ValidationError
    naming every problem, with keys like "filters[0].op" or "field_mappings[2].transforms"."""
    mapping = Mapping(organization=organization)
    return _mapping_save(mapping, fields, list(field_mappings))


@transaction.atomic
def mapping_update(*, mapping, field_mappings=None, **fields) -> Mapping:
    """Change a mapping. A list of `field_mappings` replaces all of them; None keeps them as they are. A mapping
    whose settings a form has already set (the admin's, new or not) is saved by calling this with none."""
    # Two updates at once would each replace the field mappings and collide on their unique target field.
    Mapping.objects.select_for_update().filter(pk=mapping.pk).first()
    return _mapping_save(mapping, fields, None if field_mappings is None else list(field_mappings))


@transaction.atomic
def mapping_delete(*, mapping) -> None:
    """Delete a mapping with its schedule, runs, errors and links; refused while a run of it is active."""
    from django_q.models import Schedule

    from syncs.schedules import schedule_name
    from syncs.services import mapping_active_run

    if mapping_active_run(mapping) is not None:
        raise MappingBusy(f"A run of “{mapping}” is queued or running: cancel it or wait for it to finish.")
    Schedule.objects.filter(name=schedule_name(mapping)).delete()
    mapping.delete()


def mapping_run_now(*, mapping, full=False):
    """Queue a manual run: (run, already_active). A mapping already queued or running is not queued twice: its
    active run comes back, with already_active true, and `full` does not apply to it."""
    from syncs.services import mapping_active_run, sync_run_queue

    active = mapping_active_run(mapping)
    run = sync_run_queue(mapping=mapping, options={"full": True} if full else None)
    return run, active is not None and run.pk == active.pk


def _mapping_save(mapping, fields, field_mappings):
    from syncs.schedules import mapping_schedule_sync

    unknown = set(fields) - set(MAPPING_FIELDS)
    if unknown:
        raise TypeError(f"Not a mapping setting: {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        setattr(mapping, name, value)
    if fields.get("is_active"):
        mapping.paused_reason = ""  # the reason of a pause ends with it

    errors = mapping_clean(mapping)
    instances = None
    if field_mappings is not None:
        instances, field_errors = _field_mappings_build(mapping, field_mappings)
        _merge(errors, field_errors)
    if errors:
        raise ValidationError(errors)

    try:
        with transaction.atomic():
            mapping.save()
    except IntegrityError:
        raise ValidationError({"name": [f"A mapping named “{mapping.name}” already exists."]}) from None
    if instances is not None:
        mapping.field_mappings.all().delete()
        for instance in instances:
            instance.mapping = mapping
        FieldMapping.objects.bulk_create(instances)
    mapping_schedule_sync(mapping=mapping)
    return mapping


def mapping_clean(mapping):
    """Every problem that keeps `mapping`, its settings already set on it, from being saved: {key: [messages]},
    keyed like the ValidationError of mapping_create and mapping_update (which call this). Tidies the phone
    country and cron first. The admin's form shows these before it saves."""
    if isinstance(mapping.default_phone_country, str):
        mapping.default_phone_country = mapping.default_phone_country.upper()
    if isinstance(mapping.schedule_cron, str):
        mapping.schedule_cron = mapping.schedule_cron.strip()
    errors = mapping_settings_errors(mapping)
    errors.update(_moved_endpoint_errors(mapping))
    if mapping.organization_id is not None and Mapping.objects.for_org(mapping.organization).filter(
        name=mapping.name
    ).exclude(pk=mapping.pk).exists():
        errors["name"] = [f"A mapping named “{mapping.name}” already exists."]
    try:
        # Excluding a field with an error already reported also skips the constraints that involve it.
        mapping.full_clean(exclude=[name.partition("[")[0] for name in errors])
    except ValidationError as exc:
        _merge(errors, exc.message_dict)
    return errors


def mapping_field_mappings_errors(mapping, items):
    """The problems of a list of field mappings (dicts of FIELD_MAPPING_FIELDS) that would replace the mapping's,
    keyed "field_mappings[i].<field>" by their place in the list."""
    return _field_mappings_build(mapping, list(items))[1]


def _field_mappings_build(mapping, items):
    """Unsaved FieldMapping rows for `items`, and the problems of each keyed "field_mappings[i].<field>"."""
    errors = {}
    if len(items) > MAX_FIELD_MAPPINGS:
        return [], {"field_mappings": [f"At most {MAX_FIELD_MAPPINGS} field mappings."]}
    instances, seen = [], {}
    for index, item in enumerate(items):
        prefix = f"field_mappings[{index}]"
        if not isinstance(item, dict):
            errors[prefix] = ["Each field mapping must be an object."]
            continue
        unknown = sorted(set(item) - set(FIELD_MAPPING_FIELDS))
        if unknown:
            errors[prefix] = [f"Unknown field {', '.join(unknown)}."]
            continue
        instance = FieldMapping(organization=mapping.organization, **{"position": index, **item})
        item_errors = {}
        for name in ("transforms", "reverse_transforms"):
            if _contains_nul(getattr(instance, name)):
                item_errors[name] = ["Must not contain NUL characters."]
        try:
            # The mapping may not be saved yet: it is attached (and its constraint checked) on save.
            instance.full_clean(exclude=["mapping", "organization", *item_errors])
        except ValidationError as exc:
            _merge(item_errors, exc.message_dict)
        target = instance.target_field
        if target and "target_field" not in item_errors:
            if target in seen:
                item_errors["target_field"] = [f"{target} is already written by field_mappings[{seen[target]}]."]
            seen.setdefault(target, index)
        for name, messages in item_errors.items():
            errors[prefix if name == NON_FIELD_ERRORS else f"{prefix}.{name}"] = messages
        instances.append(instance)
    return instances, errors


def _moved_endpoint_errors(mapping):
    # Compared with the stored row, not the instance: a form (the admin's) sets the new values before saving.
    if mapping.pk is None:
        return {}
    columns = {name: f"{name}_id" if name.endswith("_connection") else name for name in ENDPOINT_FIELDS}
    stored = Mapping.objects.filter(pk=mapping.pk).values("organization_id", *columns.values()).first()
    if stored is None:
        return {}
    errors = {}
    if stored["organization_id"] != mapping.organization_id:
        errors["organization"] = ["A mapping cannot move to another organization."]
    moved = [name for name, column in columns.items() if stored[column] != getattr(mapping, column)]
    if moved and mapping.links.exists():
        message = ("This mapping has already synced records, and its record links point into the current "
                   "connections and objects. Create a new mapping to sync other ones.")
        errors.update({name: [message] for name in moved})
    return errors


def _merge(errors, more):
    for name, messages in more.items():
        errors.setdefault(name, []).extend(messages)


# --- the JSON settings -------------------------------------------------------------------------------------------


def mapping_settings_errors(mapping):
    """Problems of the settings a model field cannot check by itself, keyed like "match_keys[1].target"."""
    from syncs.policy import validate_retry_policy

    errors = {}
    _match_keys_errors(mapping.match_keys, errors)
    _filters_errors(mapping.filters, errors)
    _retry_schedule_errors(mapping.retry_schedule, errors)
    policy = mapping.retry_policy
    try:
        validate_retry_policy(policy)
    except ValidationError as exc:
        errors["retry_policy"] = exc.messages
    else:
        for category, rule in policy.items():
            if any(delay > MAX_DELAY_SECONDS for delay in rule.get("delays", [])):
                errors["retry_policy"] = [f"{category}: delays must be at most {MAX_DELAY_SECONDS} seconds."]
    _schedule_errors(mapping, errors)
    country = mapping.default_phone_country
    if isinstance(country, str) and country not in phonenumbers.SUPPORTED_REGIONS:
        errors["default_phone_country"] = [f"“{country}” is not a two-letter region code like US or GB."]
    for name in ("match_keys", "filters", "retry_policy"):
        if name not in errors and _contains_nul(getattr(mapping, name)):
            errors[name] = ["Must not contain NUL characters."]
    return errors


def _match_keys_errors(keys, errors):
    if not isinstance(keys, list):
        errors["match_keys"] = ['Must be a list like [{"source": "email", "target": "email"}].']
        return
    for index, key in enumerate(keys):
        prefix = f"match_keys[{index}]"
        if not isinstance(key, dict):
            errors[prefix] = ['Must be an object like {"source": "email", "target": "email"}.']
            continue
        if unknown := sorted(set(key) - {"source", "target"}):
            errors[prefix] = [f"Unknown key {', '.join(unknown)} (a match key has source and target)."]
        for side in ("source", "target"):
            problem = _field_name_problem(key.get(side))
            if problem:
                errors[f"{prefix}.{side}"] = [problem]


def _filters_errors(filters, errors):
    if not isinstance(filters, list):
        errors["filters"] = ['Must be a list like [{"field": "email", "op": "empty", "reason": "No email"}].']
        return
    for index, rule in enumerate(filters):
        prefix = f"filters[{index}]"
        if not isinstance(rule, dict):
            errors[prefix] = ['Must be an object like {"field": "email", "op": "empty", "reason": "No email"}.']
            continue
        if unknown := sorted(set(rule) - {"field", "op", "value", "reason"}):
            errors[prefix] = [f"Unknown key {', '.join(unknown)} (a filter has field, op, value and reason)."]
        if problem := _field_name_problem(rule.get("field")):
            errors[f"{prefix}.field"] = [problem]
        reason = rule.get("reason")
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
            errors[f"{prefix}.reason"] = ["Say why these records are ignored (text, at most 500 characters)."]
        op = rule.get("op")
        if op not in FILTER_OPERATORS:
            errors[f"{prefix}.op"] = [f"Must be one of {', '.join(FILTER_OPERATORS)}."]
            continue
        value = rule.get("value")
        if op in OPERATORS_WITHOUT_VALUE:
            if "value" in rule:
                errors[f"{prefix}.value"] = [f"“{op}” takes no value."]
        elif "value" not in rule:
            errors[f"{prefix}.value"] = [f"“{op}” needs a value."]
        elif op in LIST_OPERATORS:
            if not isinstance(value, list) or not value or not all(_is_scalar(item) for item in value):
                errors[f"{prefix}.value"] = [f"“{op}” needs a non-empty list of values."]
        elif op == "contains":
            if not isinstance(value, str) or not value:
                errors[f"{prefix}.value"] = ["“contains” needs non-empty text."]
        elif not _is_scalar(value):
            errors[f"{prefix}.value"] = [f"“{op}” needs a single value (text, number, true, false or null)."]


def _retry_schedule_errors(schedule, errors):
    if (not isinstance(schedule, list) or not schedule or len(schedule) > MAX_DELAYS
            or not all(_is_int(delay) and 0 < delay <= MAX_DELAY_SECONDS for delay in schedule)):
        errors["retry_schedule"] = [
            f"Must be a list of 1 to {MAX_DELAYS} delays in seconds, each from 1 to {MAX_DELAY_SECONDS}, "
            "like [60, 300, 1800]."
        ]


def _schedule_errors(mapping, errors):
    cron = mapping.schedule_cron
    if cron and not _is_usable_cron(cron):
        errors["schedule_cron"] = [
            f"“{cron}” is not a cron expression that ever fires: use five fields like */15 * * * * or 0 3 * * 1-5."
        ]
    if mapping.schedule_type == ScheduleType.INTERVAL and not mapping.schedule_interval_minutes:
        errors["schedule_interval_minutes"] = ["An interval schedule needs the minutes between runs."]
    if mapping.schedule_type == ScheduleType.CRON and not cron:
        errors["schedule_cron"] = ["A cron schedule needs a cron expression."]


def _is_usable_cron(expression):
    if not isinstance(expression, str) or "\x00" in expression:
        return False
    if not expression.startswith("@") and len(expression.split()) != 5:
        return False  # croniter also takes seconds and years; a schedule runs at most once a minute
    try:
        # Valid syntax is not enough: "0 0 31 2 *" never fires, and the schedule needs a next run.
        return croniter.is_valid(expression) and croniter(expression, timezone.now()).get_next(datetime) is not None
    except (ValueError, KeyError, TypeError):
        return False


def _field_name_problem(value):
    if not isinstance(value, str) or not value.strip():
        return "Must be a field name."
    if len(value) > MAX_FIELD_NAME:
        return f"A field name has at most {MAX_FIELD_NAME} characters."
    return ""


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_scalar(value):
    return value is None or isinstance(value, str | int | float | bool)


def _contains_nul(value):
    # PostgreSQL refuses \u0000 in jsonb: without this check such a body would be a 500, not a 400.
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


# --- validation against the live schemas -------------------------------------------------------------------------


def mapping_validate(mapping) -> list[dict]:
    """Every problem of `mapping` against its connections' current schemas, as {field, code, message}.

    Checks both objects exist, every mapped, matched and filtered field exists (and can be written), every field
    the target requires is written, and every transform is known. Never raises for a problem of the mapping or
    of a connection: an unreachable connection is one more problem.
    """
    problems = []

    def report(field, code, message):
        problems.append({"field": field, "code": code, "message": message})

    source = _schema(mapping, "source", report)
    target = _schema(mapping, "target", report)
    field_mappings = list(mapping.field_mappings.all())
    two_way = mapping.direction == Direction.TWO_WAY
    if not field_mappings:
        report("field_mappings", "no_field_mappings", "The mapping has no field mappings: nothing would be written.")

    for index, fm in enumerate(field_mappings):
        prefix = f"field_mappings[{index}]"
        for name in ("transforms", "reverse_transforms"):
            try:
                validate_transforms(getattr(fm, name) or [])
            except ValidationError as exc:
                report(f"{prefix}.{name}", "invalid_transform", " ".join(exc.messages))
        if fm.source_field and source is not None:
            _field_problem(report, f"{prefix}.source_field", fm.source_field, source, writes=two_way)
        if target is not None:
            _field_problem(report, f"{prefix}.target_field", fm.target_field, target, writes=True)
        if not fm.source_field and fm.default_value in (None, "") and not fm.transforms:
            report(f"{prefix}.source_field", "no_value",
                   f"{fm.target_field} has no source field, no default value and no transform: it is always empty.")

    for index, key in enumerate(mapping.match_keys or []):
        for side, schema in (("source", source), ("target", target)):
            if schema is not None and isinstance(key, dict):
                _field_problem(report, f"match_keys[{index}].{side}", key.get(side), schema, writes=False)
    for index, rule in enumerate(mapping.filters or []):
        if source is not None and isinstance(rule, dict):
            _field_problem(report, f"filters[{index}].field", rule.get("field"), source, writes=False)

    if mapping.write_mode != WriteMode.UPDATE_ONLY:
        # A record can only be created with every field its object requires.
        written = {fm.target_field for fm in field_mappings}
        sides = [(target, written, "target_object")]
        if two_way:
            sides.append((source, {fm.source_field for fm in field_mappings if fm.source_field}, "source_object"))
        for schema, fields, name in sides:
            for spec in (schema.fields.values() if schema is not None else ()):
                if spec.required and not spec.read_only and spec.name not in fields:
                    report(name, "required_unmapped",
                           f"{spec.label or spec.name} ({spec.name}) is required by {schema.label or schema.name} "
                           "but no field mapping writes it: every new record would fail.")
    return problems


def _schema(mapping, side, report):
    """The live schema of one side's object, or None after reporting why there is none."""
    connection = getattr(mapping, f"{side}_connection")
    object_name = getattr(mapping, f"{side}_object")
    if connection.status != ConnectionStatus.ACTIVE:
        report(f"{side}_connection", f"connection_{connection.status}",
               f"Connection “{connection}” is {connection.get_status_display().lower()}"
               + (f": {connection.status_reason}" if connection.status_reason else "")
               + "; runs stop until it is active again.")
    try:
        # The one way to describe a connection: a provider missing from the registry is a ConnectorError too.
        schemas = connection_describe(connection=connection)
    except ConnectorError as exc:
        report(f"{side}_connection", exc.code, f"Could not read the schema of “{connection}”: {exc.message}")
        return None
    schema = schemas.get(object_name)
    if schema is None:
        known = ", ".join(sorted(schemas)) or "none"
        report(f"{side}_object", "object_not_found",
               f"“{object_name}” does not exist in {connection} (objects: {known}).")
    return schema


def _field_problem(report, path, name, schema, *, writes):
    spec = schema.fields.get(name) if isinstance(name, str) else None
    where = schema.label or schema.name
    if spec is None:
        report(path, "field_not_found", f"{name} does not exist in {where}.")
    elif writes and spec.read_only:
        report(path, "read_only", f"{name} is read-only in {where}: it cannot be written.")
