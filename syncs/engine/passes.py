"""The passes of a mapping: what a run reads from and writes to, in each direction, and the checks before it
starts.

A one-way mapping has one pass (source → target); a two-way mapping a forward and then a reverse pass (target →
source). A pass talks about its "near" side (read from) and its "far" side (written to), so nothing after this
module asks which direction it is in: RecordLink is stored source → target, and the pass reads it the right way
round. Both passes hash the same fields of a side (those of field mappings with a source field), so a hash one
pass writes is recognised by the other: that is how unchanged records and echoes of Resync's own writes are told
apart from changes.
"""

import dataclasses
import hashlib
import json
from typing import Any

from django.core.exceptions import ValidationError

from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import ConnectionStatus
from integrations.services import connection_check, connection_schema
from mappings.models import Direction
from mappings.plan import FieldRule, RecordPlan, compile_record_plan
from syncs.models import RecordLink

FORWARD, REVERSE = "forward", "reverse"
# Every column of a link, in the model's order (RecordLink.from_db takes them so).
LINK_COLUMNS = [field.attname for field in RecordLink._meta.concrete_fields]


def _normalize(value):
    if isinstance(value, str):
        return value.strip()
    return value


def record_hash(data, fields):
    """A stable hash of `data` restricted to `fields`: what a side of a link looked like when last synced."""
    canonical = json.dumps({name: _normalize(data.get(name)) for name in sorted(fields)}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass
class SyncPass:
    """One direction of a mapping, described from the side read ("near") to the side written ("far")."""

    direction: str
    near: Any
    near_object: str
    near_connection: Any
    far: Any
    far_object: str
    far_connection: Any
    far_schema: Any
    rules: list[FieldRule]
    match_keys: list[tuple[str, str]]  # (near field, far field)
    near_fields: list[str]  # the fields hashed on each side
    far_fields: list[str]
    filters: list  # the mapping's filters: records of the source ignored on purpose (forward only)
    plan: RecordPlan | None = None  # the rules compiled against the far schema (compile_record_plan)

    # RecordLink columns, read the right way round.
    @property
    def near_column(self):
        return "source_record_id" if self.direction == FORWARD else "target_record_id"

    @property
    def far_column(self):
        return "target_record_id" if self.direction == FORWARD else "source_record_id"

    def link_key(self, link):
        return getattr(link, self.near_column)

    def link_far_id(self, link):
        return getattr(link, self.far_column)

    def link_near_hash(self, link):
        return link.source_hash if self.direction == FORWARD else link.target_hash

    def link_far_hash(self, link):
        return link.target_hash if self.direction == FORWARD else link.source_hash

    def set_near_hash(self, link, value):
        setattr(link, "source_hash" if self.direction == FORWARD else "target_hash", value)

    def link_set(self, link, *, near_id, far_id, near_hash, far_hash):
        setattr(link, self.near_column, near_id)
        setattr(link, self.far_column, far_id)
        self.set_near_hash(link, near_hash)
        setattr(link, "target_hash" if self.direction == FORWARD else "source_hash", far_hash)

    def new_link(self, *, organization, mapping, near_id):
        return RecordLink(organization=organization, mapping=mapping, **{self.near_column: near_id})

    def links(self, *, organization, mapping, near_ids):
        """The existing links of these near records, by near id."""
        rows = RecordLink.objects.for_org(organization).filter(mapping=mapping, **{f"{self.near_column}__in": near_ids})
        return {self.link_key(link): link for link in rows}

    def link_rows(self, *, organization, mapping, near_ids):
        """near id -> the link's row as a tuple (LINK_COLUMNS): a page's links without a model instance each,
        for the records that turn out to need none (link_from_row makes one)."""
        rows = RecordLink.objects.for_org(organization).filter(mapping=mapping, **{f"{self.near_column}__in": near_ids})
        key = LINK_COLUMNS.index(self.near_column)
        return {row[key]: row for row in rows.values_list(*LINK_COLUMNS)}

    def row_near_hash(self, row):
        return row[LINK_COLUMNS.index("source_hash" if self.direction == FORWARD else "target_hash")]

    @staticmethod
    def link_from_row(row):
        return RecordLink.from_db(RecordLink.objects.db, LINK_COLUMNS, row)

    def far_ids_linked(self, *, organization, mapping, far_ids):
        """far id -> near id of existing links of this mapping."""
        if not far_ids:
            return {}
        rows = RecordLink.objects.for_org(organization).filter(mapping=mapping, **{f"{self.far_column}__in": far_ids})
        return dict(rows.values_list(self.far_column, self.near_column))


def build_passes(run, *, check=True):
    """The passes of the run's mapping, after checking that it may run: its connections belong to the run's
    organization and are active, they answer (the same check as "Test connection", which flags an auth failure
    for reauthentication), and every mapped field exists. Raises ConnectorError (a system error) otherwise.
    A worker helping with a run's staged batches skips the call to each system (`check=False`): the worker that
    started the run made it."""
    mapping, org = run.mapping, run.organization
    source_conn, target_conn = mapping.source_connection, mapping.target_connection
    for connection in (source_conn, target_conn):
        # Re-checked in the worker: a task only carries ids, and a crossed mapping must never move data.
        if connection.organization_id != org.pk or mapping.organization_id != org.pk:
            raise ConnectorError(ErrorCategory.PERMISSION, "The mapping uses a connection of another organization",
                                 code="cross_tenant", retryable=False)
        if connection.status != ConnectionStatus.ACTIVE:
            needs_reauth = connection.status == ConnectionStatus.NEEDS_REAUTH
            raise ConnectorError(
                ErrorCategory.AUTH if needs_reauth else ErrorCategory.CONNECTION,
                f"Connection '{connection.name}' is {connection.get_status_display().lower()}"
                + (f": {connection.status_reason}" if connection.status_reason else ""),
                code=f"connection_{connection.status}",
                retryable=False,
            )
    source, target = source_conn.get_connector(), target_conn.get_connector()
    for connection in (source_conn, target_conn) if check else ():
        error = connection_check(connection=connection)
        if error is not None:
            raise error
    field_mappings = list(mapping.field_mappings.all())
    source_schema = _schema(source_conn, mapping.source_object,
                            {fm.source_field for fm in field_mappings if fm.source_field})
    target_schema = _schema(target_conn, mapping.target_object, {fm.target_field for fm in field_mappings})
    for fm in field_mappings:
        if fm.source_field and fm.source_field not in source_schema.fields:
            raise ConnectorError(ErrorCategory.MAPPING,
                                 f"Source field '{fm.source_field}' does not exist in {mapping.source_object}",
                                 code="field_not_found", field=fm.source_field)
        if fm.target_field not in target_schema.fields:
            raise ConnectorError(ErrorCategory.MAPPING,
                                 f"Target field '{fm.target_field}' does not exist in {mapping.target_object}",
                                 code="field_not_found", field=fm.target_field)
    source_fields = [fm.source_field for fm in field_mappings if fm.source_field]
    target_fields = [fm.target_field for fm in field_mappings if fm.source_field]
    forward = SyncPass(
        direction=FORWARD, near=source, near_object=mapping.source_object, near_connection=source_conn, far=target,
        far_object=mapping.target_object, far_connection=target_conn, far_schema=target_schema,
        rules=[FieldRule(fm.source_field, fm.target_field, fm.transforms, fm.required, fm.default_value,
                         fm.skip_invalid) for fm in field_mappings],
        match_keys=[(key["source"], key["target"]) for key in mapping.match_keys or ()],
        near_fields=source_fields, far_fields=target_fields, filters=list(mapping.filters or ()),
    )
    passes = [forward]
    if mapping.direction == Direction.TWO_WAY:
        passes.append(SyncPass(
            direction=REVERSE, near=target, near_object=mapping.target_object, near_connection=target_conn,
            far=source, far_object=mapping.source_object, far_connection=source_conn, far_schema=source_schema,
            rules=[FieldRule(fm.target_field, fm.source_field, fm.reverse_transforms, False, None, fm.skip_invalid)
                   for fm in field_mappings if fm.source_field],
            match_keys=[(key["target"], key["source"]) for key in mapping.match_keys or ()],
            near_fields=target_fields, far_fields=source_fields, filters=[],
        ))
    for sync_pass in passes:
        try:
            sync_pass.plan = compile_record_plan(rules=sync_pass.rules, schema=sync_pass.far_schema,
                                                 phone_country=mapping.default_phone_country, auto_fix=mapping.auto_fix)
        except ValidationError as exc:
            # Every record would fail the same way: the run does not start, and says which specs are wrong.
            raise ConnectorError(ErrorCategory.MAPPING, "Invalid transforms: " + "; ".join(exc.messages),
                                 code="invalid_transform", retryable=False) from None
    return passes


def _schema(connection, object_name, fields):
    """The object's cached schema, described again once when it lacks a mapped field (added since)."""
    schema = connection_schema(connection=connection, object_name=object_name)
    if not fields <= set(schema.fields):
        schema = connection_schema(connection=connection, object_name=object_name, refresh=True)
    return schema
