"""The contract every connector fulfils, and the plain data types that cross it.

A connector is built from one Connection. It checks the connection, describes objects and fields, reads pages
(from a page token or a modified-since time), fetches records by id, writes a batch of operations with one
result per operation, and finds records by a field's values. Failures are ConnectorError (integrations.errors);
a write reports per-record failures in its results instead of raising, and raises only when the whole call
failed.
"""

import dataclasses
from datetime import datetime
from typing import Any

from integrations.errors import ConnectorError, ErrorCategory


class FieldType:
    STRING = "string"
    TEXT = "text"
    EMAIL = "email"
    PHONE = "phone"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    URL = "url"


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str = FieldType.STRING
    required: bool = False
    max_length: int | None = None
    unique: bool = False
    read_only: bool = False
    label: str = ""
    format: str = ""  # e.g. "e164" for phones, a strftime pattern for dates

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ObjectSchema:
    name: str
    fields: dict[str, FieldSpec]
    label: str = ""

    def as_dict(self):
        return {"name": self.name, "label": self.label, "fields": {k: f.as_dict() for k, f in self.fields.items()}}


@dataclasses.dataclass
class SourceRecord:
    id: str
    data: dict[str, Any]
    modified_at: datetime | None = None


@dataclasses.dataclass
class Page:
    records: list[SourceRecord]
    next_token: str | None  # None: this was the last page


class WriteAction:
    CREATE = "create"
    UPDATE = "update"
    UPSERT = "upsert"


@dataclasses.dataclass
class WriteOperation:
    ref: str  # the caller's key for this operation (the source record id); echoed in the result
    action: str
    data: dict[str, Any]
    target_id: str | None = None  # required for update
    match_field: str | None = None  # required for upsert


@dataclasses.dataclass
class WriteResult:
    ref: str
    ok: bool
    target_id: str | None = None
    action: str | None = None  # what was actually done: create or update
    error: ConnectorError | None = None
    record: dict[str, Any] | None = None  # the target record as stored, when the system returns it


class Connector:
    """Base class: subclasses implement the methods their system supports."""

    label = ""
    # Whether read_page accepts modified_since (delta reads). Without it every run reads everything.
    supports_modified_since = True
    # Whether fetch() works: safe replay re-fetches a failed record before replaying it; without it a retry
    # has only the record's snapshot.
    supports_fetch = False

    def __init__(self, connection):
        self.connection = connection

    def check(self) -> None:
        """Raise ConnectorError when the system cannot be reached or the credentials are not accepted."""
        raise NotImplementedError

    def describe(self) -> dict[str, ObjectSchema]:
        raise NotImplementedError

    def read_page(self, object_name, *, page_token=None, modified_since=None, page_size=100) -> Page:
        raise NotImplementedError

    def next_page_token(self, object_name, page_token, *, modified_since=None, page_size=100):
        """The token of the page after `page_token` without fetching it, or None when unknowable.

        Lets a run go on past a page that failed to load (a batch error) on systems with offset paging.
        """
        return None

    def fetch(self, object_name, ids) -> dict[str, SourceRecord]:
        """Records by id; ids that do not exist are absent from the result."""
        raise NotImplementedError

    def write(self, object_name, operations: list[WriteOperation]) -> list[WriteResult]:
        raise NotImplementedError

    def find(self, object_name, field, values) -> dict[str, list[SourceRecord]]:
        """Records whose `field` equals one of `values`, grouped by value (exact match)."""
        raise NotImplementedError

    def schema_for(self, object_name) -> ObjectSchema:
        schemas = self.describe()
        try:
            return schemas[object_name]
        except KeyError:
            raise ConnectorError(
                ErrorCategory.MAPPING,
                f"Object '{object_name}' does not exist in {self.connection}",
                code="object_not_found",
            ) from None
