"""A run's record plan: every field mapping of one direction, checked once and compiled for every record.

When a run starts, compile_record_plan checks every transform spec (an invalid one refuses the whole plan, with
every problem named) and compiles each rule's transforms and each target field's checks into plain functions.
Per record, RecordPlan.apply(data) does what the engine's preparation did with apply_transforms and
validate_payload: the transforms of each rule, then the target schema's checks with defaults, required fields and
auto-fix, skip_invalid turning a field's problem into a warning. Nothing is checked twice: a value produced by
phone_e164 or email_normalize is known to be valid, so its field's check does not parse it again.

A run compiles one plan per direction when it builds its passes, then per record calls plan.apply(record.data),
or plan.validate_corrected(payload) for an operator's corrected record.
"""

from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

from integrations.connectors.base import ObjectSchema
from integrations.errors import ConnectorError, ErrorCategory
from mappings.transforms import TransformError, compile_transforms, unchanged
from mappings.validation import PayloadValidator, ValidationResult


@dataclass(frozen=True)
class FieldRule:
    """One field of one direction: read near_field (none: the value is None), transform, write far_field.

    The engine's own rules have the same attributes; any object with them will do.
    """

    near_field: str
    far_field: str
    transforms: list | tuple = ()
    required: bool = False
    default: Any = None
    skip_invalid: bool = False


@dataclass(slots=True)
class PreparedRecord:
    """A record's payload for the far side, with its problems as the engine reports them.

    When a transform failed, `payload` holds only what was transformed and nothing was validated.
    """

    payload: dict
    errors: list[ConnectorError] = field(default_factory=list)
    warnings: list[ConnectorError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def compile_record_plan(*, rules, schema: ObjectSchema, phone_country, auto_fix) -> "RecordPlan":
    """Check and compile the rules of one direction against the far side's schema.

    Raises ValidationError (code "invalid_transform") naming every invalid transform spec as
    "<far field>: Transform <n>: <problem>": a run should refuse to start on it rather than fail every record.
    """
    rules = list(rules)
    compiled, messages = [], []
    for rule in rules:
        try:
            compiled.append(compile_transforms(rule.transforms, phone_country=phone_country))
        except ValidationError as exc:
            messages.extend(f"{rule.far_field}: {message}" for message in exc.messages)
    if messages:
        raise ValidationError([ValidationError(message, code="invalid_transform") for message in messages])

    writers: dict[str, int] = {}
    for rule in rules:
        writers[rule.far_field] = writers.get(rule.far_field, 0) + 1
    # A field written by two rules keeps the value of whichever succeeded last: what it is known to be depends on
    # the record, so it is checked in full.
    guarantees = {
        rule.far_field: transforms.produces
        for rule, transforms in zip(rules, compiled, strict=True)
        if transforms.produces and writers[rule.far_field] == 1
    }
    defaults = {rule.far_field: rule.default for rule in rules if rule.default is not None}
    required = [rule.far_field for rule in rules if rule.required]
    skip_invalid = set()
    for far_field in writers:
        # The first rule of a field decides, as the engine has always looked it up.
        if next(rule for rule in rules if rule.far_field == far_field).skip_invalid:
            skip_invalid.add(far_field)

    options = {"auto_fix": auto_fix, "phone_country": phone_country, "defaults": defaults, "required_fields": required}
    validator = PayloadValidator(schema, guarantees=guarantees, **options)
    return RecordPlan(
        steps=tuple(
            (rule.near_field or None, rule.far_field, None if transforms.run is unchanged else transforms.run,
             rule.skip_invalid)
            for rule, transforms in zip(rules, compiled, strict=True)
        ),
        validator=validator,
        # A payload every rule wrote to, the usual record, is checked in this order (as check_payload orders it):
        # its fields as the rules first write them, then the required fields no rule writes, by name.
        field_checks=tuple((name, validator.check_of(name)) for name in writers),
        missing_checks=tuple(validator.check_of(name) for name in sorted(validator.required.difference(writers))),
        corrected=PayloadValidator(schema, **{**options, "auto_fix": False}),
        skip_invalid=frozenset(skip_invalid),
    )


@dataclass(frozen=True)
class RecordPlan:
    """Compiled by compile_record_plan; apply it to every record of the run's direction."""

    # (near field or None, far field, transform function or None, skip_invalid), in the rules' order
    steps: tuple
    validator: PayloadValidator
    field_checks: tuple  # (far field, its check)
    missing_checks: tuple  # the checks of required fields that no rule writes
    corrected: PayloadValidator  # the same checks without auto-fix, trusting nothing: for an operator's payload
    skip_invalid: frozenset

    def apply(self, data: dict) -> PreparedRecord:
        """Transform, default and validate one near record's data (not changed)."""
        payload, errors, warnings = {}, [], []
        for near_field, far_field, run, skip in self.steps:
            value = data.get(near_field) if near_field else None
            if run is None:
                payload[far_field] = value
                continue
            try:
                payload[far_field] = run(value, data)
            except TransformError as exc:
                problem = ConnectorError(
                    ErrorCategory.MAPPING, f"{far_field}: {exc}", code="transform_failed", field=far_field,
                    detail=f"value {value!r} of {near_field or '(none)'}",
                )
                (warnings if skip else errors).append(problem)
        if errors:
            return PreparedRecord(payload, errors, warnings)
        result = ValidationResult(payload)
        if not warnings:
            # Every rule wrote its field, so the payload's fields are in field_checks' order.
            for name, check in self.field_checks:
                check(result, payload[name])
            for check in self.missing_checks:
                check(result, None)
        else:  # a skip_invalid transform left a field out, or moved it after others
            self.validator.check_payload(result)
        return self._report(result, warnings)

    def validate_corrected(self, payload: dict) -> PreparedRecord:
        """Validate an operator's corrected record: no transforms, the same checks, defaults and skip_invalid, but
        never auto-fix (what the operator typed is written as typed, or refused). The dict is not changed."""
        return self._report(self.corrected.validate(payload), [])

    def _report(self, result: ValidationResult, warnings) -> PreparedRecord:
        prepared = PreparedRecord(result.payload, [], warnings)
        if not result.errors and not result.warnings:
            return prepared
        for warning in result.warnings:
            warnings.append(ConnectorError(
                ErrorCategory.VALIDATION, warning.message, code=warning.code, field=warning.field, retryable=False
            ))
        for problem in result.errors:
            error = ConnectorError(problem.category, problem.message, code=problem.code, field=problem.field)
            if problem.field in self.skip_invalid and problem.category == ErrorCategory.VALIDATION:
                result.payload.pop(problem.field, None)
                warnings.append(error)
            else:
                prepared.errors.append(error)
        return prepared
