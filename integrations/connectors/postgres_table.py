"""PostgreSQL tables and views as objects: read by an updated-at column, written in bulk.

Every table and view of one schema is an object; its columns, from the catalog, are the fields. A record's id is
the value of the id column (SourceRecord.id = str(value)), kept out of `data`. Reads are keyset-paginated in
(updated_at, id) order: the page token and the cursor both encode the last row's (updated_at, id). Writes are one
statement per batch (INSERT … RETURNING, UPDATE … FROM (VALUES …), INSERT … ON CONFLICT … DO UPDATE) in one
transaction per write() call; when one record's data sinks the statement, the batch is redone row by row, each
row in its own savepoint, so the good rows are written and each bad one gets its own error, classified by
SQLSTATE. Webhooks keep the generic scheme of the base (a trigger can send them through a relay).

Identifiers are always quoted by psycopg.sql.Identifier and values always sent as parameters. The host passes
the SSRF guard when the connection is saved and again, pinned to the checked address, on every connect.
"""

import base64
import binascii
import contextlib
import dataclasses
import json
import socket
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import psycopg
from django.conf import settings
from psycopg import sql

from integrations.connectors import http
from integrations.connectors.base import (
    Connector,
    FieldSpec,
    FieldType,
    ObjectSchema,
    ObjectSummary,
    Page,
    SettingField,
    SourceRecord,
    WriteAction,
    WriteOperation,
    WriteResult,
)
from integrations.crypto import CredentialsDecryptionError
from integrations.errors import ConnectorError, ErrorCategory
from integrations.redaction import scrub_text

DEFAULT_PORT = 5432
CONNECT_TIMEOUT = 10  # seconds
STATEMENT_TIMEOUT_MS = 60_000
MAX_PAGE_SIZE = 5000
# PostgreSQL truncates longer names (NAMEDATALEN - 1); a longer one would silently name another column.
MAX_IDENTIFIER_BYTES = 63
# The protocol's limit on parameters in one statement: a batch of wide rows is split below it.
MAX_PARAMETERS = 65535
MAX_MESSAGE_LENGTH = 500
MAX_DETAIL_LENGTH = 2000

# Tables, partitioned tables, views, materialized views and foreign tables.
OBJECT_KINDS = ("r", "p", "v", "m", "f")

# Base type names (domains resolved) -> FieldType. Unlisted types (uuid, json, arrays...) are strings.
FIELD_TYPES = {
    "varchar": FieldType.STRING,
    "bpchar": FieldType.STRING,
    "text": FieldType.TEXT,
    "int2": FieldType.INTEGER,
    "int4": FieldType.INTEGER,
    "int8": FieldType.INTEGER,
    "numeric": FieldType.NUMBER,
    "float4": FieldType.NUMBER,
    "float8": FieldType.NUMBER,
    "bool": FieldType.BOOLEAN,
    "date": FieldType.DATE,
    "timestamp": FieldType.DATETIME,
    "timestamptz": FieldType.DATETIME,
}

# SQLSTATE -> (category, code, retryable). Looked up by the full code, then by its class (first two characters);
# retryable None means the category's default.
SQLSTATE_ERRORS = {
    "23505": (ErrorCategory.DUPLICATE, "unique_violation", None),
    "23502": (ErrorCategory.VALIDATION, "required_missing", None),
    "22001": (ErrorCategory.VALIDATION, "too_long", None),
    "23514": (ErrorCategory.VALIDATION, "check_violation", None),
    "23503": (ErrorCategory.VALIDATION, "foreign_key_violation", None),
    "22P02": (ErrorCategory.VALIDATION, "invalid_value", None),
    "22007": (ErrorCategory.VALIDATION, "invalid_value", None),
    "22008": (ErrorCategory.VALIDATION, "invalid_value", None),
    "22003": (ErrorCategory.VALIDATION, "invalid_value", None),
    "42804": (ErrorCategory.VALIDATION, "invalid_value", None),  # datatype_mismatch
    "42846": (ErrorCategory.VALIDATION, "invalid_value", None),  # cannot_coerce: a value of the wrong kind
    "21000": (ErrorCategory.VALIDATION, "key_repeated", None),  # one upsert key twice in one statement
    "P0001": (ErrorCategory.VALIDATION, "refused_by_trigger", None),
    "42703": (ErrorCategory.MAPPING, "field_not_found", None),
    "42P01": (ErrorCategory.MAPPING, "object_not_found", None),
    "3F000": (ErrorCategory.MAPPING, "schema_not_found", None),
    "3D000": (ErrorCategory.MAPPING, "database_not_found", None),
    "42P10": (ErrorCategory.MAPPING, "key_not_unique", None),  # ON CONFLICT without a matching unique index
    "428C9": (ErrorCategory.MAPPING, "read_only_field", None),  # a value for a GENERATED ALWAYS column
    "28P01": (ErrorCategory.AUTH, "invalid_password", None),
    "28000": (ErrorCategory.AUTH, "invalid_authorization", None),
    "42501": (ErrorCategory.PERMISSION, "insufficient_privilege", None),
    "25006": (ErrorCategory.PERMISSION, "read_only_database", None),  # a hot standby
    "57014": (ErrorCategory.TIMEOUT, "statement_timeout", None),
    "55P03": (ErrorCategory.TIMEOUT, "lock_not_available", None),
    "40001": (ErrorCategory.UNKNOWN, "serialization_failure", True),
    "40P01": (ErrorCategory.UNKNOWN, "deadlock_detected", True),
    "53300": (ErrorCategory.CONNECTION, "too_many_connections", None),
    "08": (ErrorCategory.CONNECTION, "connection_failed", None),
    "53": (ErrorCategory.CONNECTION, "insufficient_resources", None),
    "57": (ErrorCategory.CONNECTION, "server_unavailable", None),  # admin shutdown, crash, starting up
    "22": (ErrorCategory.VALIDATION, "invalid_value", None),
    "23": (ErrorCategory.VALIDATION, "constraint_violation", None),
    "28": (ErrorCategory.AUTH, "invalid_authorization", None),
    "40": (ErrorCategory.UNKNOWN, "transaction_rollback", True),
    # Other syntax or access rule errors: the schema changed under the mapping; the same statement fails again.
    "42": (ErrorCategory.MAPPING, "statement_refused", None),
}
# Errors that belong to one record's data: the batch is redone row by row to find it.
RECORD_ERROR_CLASSES = ("21", "22", "23")
RECORD_ERROR_CODES = ("42804", "42846", "P0001")

# libpq reports a refused connection attempt as text without an SQLSTATE; these phrases tell the reasons apart.
CONNECT_FAILURES = [
    (("password authentication failed", "no password supplied", "no pg_hba.conf entry"), ErrorCategory.AUTH,
     "invalid_password", "The server refused the user name or password"),
    (("permission denied",), ErrorCategory.PERMISSION, "insufficient_privilege",
     "The user may not connect to this database"),
    (('role "',), ErrorCategory.AUTH, "invalid_authorization", "The server has no such user"),
    (('database "',), ErrorCategory.MAPPING, "database_not_found", "The database does not exist on the server"),
    (("too many clients", "remaining connection slots"), ErrorCategory.CONNECTION, "too_many_connections",
     "The server has no connection slot free"),
    (("timeout expired",), ErrorCategory.TIMEOUT, "connect_timeout", "The server did not accept a connection in time"),
]
IDENTIFIER_FIELDS = ("database", "user", "schema", "id_column", "updated_at_column", "key_column")


def private_hosts_allowed():
    return bool(getattr(settings, "RESYNC_ALLOW_PRIVATE_URLS", False))


def checked_address(host, port):
    """The one address to connect to: every address `host` resolves to must pass the SSRF guard, and the
    connection is pinned to the one checked, so DNS cannot answer differently at connect time. None where
    private hosts are allowed (libpq then resolves the name itself)."""
    http.guard_host(host, port)
    if private_hosts_allowed():
        return None
    try:
        addresses = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except (OSError, UnicodeError) as exc:
        raise ConnectorError(ErrorCategory.CONNECTION, f"The database host name could not be resolved ({host})",
                             code="dns_failure", detail=f"{type(exc).__name__}: {exc}") from None
    for address in addresses:
        if not http.is_public_address(address):
            raise http.UnsafeURL(f"The host points to a private or reserved address ({host})",
                                 detail=f"{host} resolves to {address}")
    return addresses[0]


_JSON_AS_IS = frozenset({str, int, float, bool, type(None)})


def json_value(value):
    """A column's value as JSON can hold it (snapshots and hashes are JSON): times in ISO 8601, exact decimals
    as numbers where a float holds them exactly, else as text."""
    if type(value) in _JSON_AS_IS:
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        if value.is_finite() and Decimal(repr(float(value))) == value:
            return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
        return str(value)
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID | timedelta) or not isinstance(value, str | int | float | bool | dict | None):
        return str(value)
    return value


def position_text(value):
    """How a keyset value is written into a token: text the column's type reads back exactly."""
    return value.isoformat() if isinstance(value, datetime | date) else str(value)


def encode_position(updated_at, record_id):
    raw = json.dumps([position_text(updated_at), position_text(record_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_position(token):
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeError, AttributeError):
        position = None
    if not (isinstance(position, list) and len(position) == 2 and all(isinstance(v, str) for v in position)):
        raise ConnectorError(ErrorCategory.VALIDATION, "The page token or cursor was not made by this connector",
                             code="invalid_cursor", retryable=False)
    return position


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type_schema: str
    type_name: str
    base_type: str  # a domain's underlying type
    not_null: bool
    has_default: bool
    serial: bool
    identity: bool
    generated: bool
    updatable: bool
    max_length: int | None
    unique: bool
    comment: str

    @property
    def type(self):
        """The column's type without its modifier, for casts: a value too long for varchar(n) then fails when
        it is stored instead of being cut short by the cast."""
        return sql.Identifier(self.type_schema, self.type_name)

    def text(self, value):
        """A value as the text PostgreSQL reads into this column's type (sent in a text[] and cast, so that one
        array holds a column's values whatever their Python types). A dict is JSON whatever the column; a list
        is an array, except for a JSON column."""
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dict) or (self.base_type in ("json", "jsonb") and isinstance(value, list)):
            return json.dumps(value)
        if isinstance(value, list | tuple):
            return array_literal(value, self.text)
        if isinstance(value, datetime | date | time):
            return value.isoformat()
        if isinstance(value, bytes | memoryview):
            return "\\x" + bytes(value).hex()
        if isinstance(value, float):
            return repr(value)
        return str(value)


def array_literal(values, text):
    """An array's input text ({"a","b",NULL}); nested lists are sub-arrays."""
    elements = []
    for value in values:
        if value is None:
            elements.append("NULL")
        elif isinstance(value, list | tuple):
            elements.append(array_literal(value, text))
        else:
            elements.append('"' + text(value).replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(elements) + "}"


@dataclasses.dataclass(frozen=True)
class Table:
    schema: str
    name: str
    comment: str
    columns: dict[str, Column]
    constraint_columns: dict[str, str]  # single-column constraints and unique indexes -> their column
    id_column: str
    updated_at_column: str

    @property
    def identifier(self):
        return sql.Identifier(self.schema, self.name)

    def column_for(self, field):
        """The column a field name stands for: "id" is the id column, whatever it is called."""
        return self.columns.get(self.id_column if field == "id" else field)

    def data_columns(self):
        # A column literally called "id" that is not the id column is hidden behind the record id.
        return [name for name in self.columns if name not in (self.id_column, "id")]

    def require(self, *names):
        for name in names:
            if name not in self.columns:
                role = "id" if name == self.id_column else "updated-at"
                raise ConnectorError(
                    ErrorCategory.MAPPING,
                    f'Table "{self.name}" has no column "{name}" (the connection\'s {role} column): choose one it '
                    f"has in the connection's settings",
                    code="field_not_found", field=name,
                )


@dataclasses.dataclass(frozen=True)
class Item:
    """One operation of a write() call: its position in the call and its values by column."""

    index: int
    operation: WriteOperation
    values: dict


class RowsSkipped(Exception):
    """INSERT returned fewer rows than it was given (a BEFORE trigger dropped some): which is which is unknown."""


class PostgresTableConnector(Connector):
    """The tables and views of one schema of a PostgreSQL database.

    Every public call opens one connection and closes it when done; `with connector:` holds one connection
    across calls until the block ends (or close()).
    """

    label = "PostgreSQL table"
    config_fields = (
        SettingField("host", "Host", required=True, placeholder="db.example.com"),
        SettingField("port", "Port", type="integer", default=DEFAULT_PORT),
        SettingField("database", "Database", required=True),
        SettingField("user", "User", required=True),
        SettingField("schema", "Schema", default="public"),
        SettingField("id_column", "Id column", default="id",
                     help="The column whose value is a record's id (usually the primary key)."),
        SettingField("updated_at_column", "Updated-at column", default="updated_at",
                     help="A column every change sets to the time of the change: incremental reads follow it."),
        SettingField("key_column", "Upsert key column",
                     help="The unique column an upsert matches on. Leave empty to use the mapping's match field."),
        SettingField("sslmode", "TLS", type="choice", choices=("disable", "prefer", "require"), default="prefer"),
    )
    secret_fields = (SettingField("password", "Password", type="password", secret=True),)
    supports_incremental = True
    supports_fetch = True
    max_write_batch = 500
    connect_timeout = CONNECT_TIMEOUT
    statement_timeout_ms = STATEMENT_TIMEOUT_MS

    def __init__(self, connection):
        super().__init__(connection)
        self._db = None
        self._held = False
        self._tables = {}
        self._statements = {}  # statement texts by shape of write (_insert_query)

    # -- configuration ------------------------------------------------------------------------------------------

    @classmethod
    def validate_config(cls, config):
        config = config or {}
        problems = super().validate_config(config)
        port = config.get("port", DEFAULT_PORT)
        if "port" not in problems and port not in (None, "") and not 1 <= port <= 65535:
            problems["port"] = ["Port must be between 1 and 65535."]
        for field in cls.config_fields:
            value = config.get(field.name)
            if field.name in IDENTIFIER_FIELDS and field.name not in problems and isinstance(value, str) and (
                    len(value.encode()) > MAX_IDENTIFIER_BYTES or "\x00" in value):
                problems[field.name] = [f"{field.label} must be a name of at most {MAX_IDENTIFIER_BYTES} bytes."]
        host = config.get("host")
        if "host" not in problems and isinstance(host, str) and host:
            try:
                http.guard_host(host, port if "port" not in problems and port else DEFAULT_PORT)
            except ConnectorError as exc:
                problems["host"] = [f"Host: {exc.message}."]
        return problems

    @property
    def config(self):
        return self.connection.config or {}

    def setting(self, name):
        value = self.config.get(name)
        if value in (None, ""):
            value = next(field.default for field in self.config_fields if field.name == name)
        return value

    def password(self):
        try:
            return (self.connection.credentials or {}).get("password") or ""
        except CredentialsDecryptionError:
            return ""  # what the server sees with garbage credentials: none, so an authentication error

    def secrets(self):
        return (self.password(),) if self.password() else ()

    # -- connections --------------------------------------------------------------------------------------------

    def __enter__(self):
        self._held = True  # the connection opened by the first call stays open until close()
        return self

    def close(self):
        self._held = False
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connect(self):
        host, port = self.setting("host"), int(self.setting("port"))
        address = checked_address(host, port)
        params = dict(
            host=host, port=port, dbname=self.setting("database"), user=self.setting("user"),
            password=self.password(), sslmode=self.setting("sslmode"), connect_timeout=self.connect_timeout,
            application_name="resync", autocommit=True,
            # UTC, so a timestamp without time zone is read (and its modified_at made aware) as UTC.
            options=f"-c statement_timeout={int(self.statement_timeout_ms)} -c TimeZone=UTC",
        )
        if address:
            params["hostaddr"] = address
        try:
            return psycopg.connect(**params)
        except psycopg.Error as exc:
            raise self.classify(exc) from None

    @contextlib.contextmanager
    def _session(self, *, writing=False):
        """The connection held open (`with connector:`, opened by its first call), or one opened for this call
        and closed after it. Database errors come out classified."""
        opened = self._db is None or self._db.closed
        if opened:
            self._db = self._connect()
        try:
            yield self._db
        except psycopg.Error as exc:
            raise self.classify(exc, may_have_applied=writing) from None
        finally:
            if opened and not self._held:
                self.close()

    # -- errors -------------------------------------------------------------------------------------------------

    def classify(self, exc, *, table=None, data=None, may_have_applied=False):
        """The ConnectorError a psycopg error stands for, by SQLSTATE (or by libpq's text when a connection
        attempt failed before the server could answer with one). The password never comes out."""
        secrets = self.secrets()
        sqlstate = getattr(exc, "sqlstate", None) or ""
        diag = getattr(exc, "diag", None)
        text = str(exc)
        if not sqlstate:
            category, code, message = ErrorCategory.CONNECTION, "connection_failed", "The database could not be reached"
            retryable = None
            if isinstance(exc, psycopg.OperationalError):
                lowered = text.lower()
                for markers, marker_category, marker_code, marker_message in CONNECT_FAILURES:
                    if any(marker in lowered for marker in markers):
                        category, code, message = marker_category, marker_code, marker_message
                        break
            else:
                # Refused by the client before anything was sent (a value it cannot send): the same again fails.
                category, code, message = ErrorCategory.UNKNOWN, "database_client_error", "The database client failed"
                retryable = False
            detail = f"{type(exc).__name__}: {text}"
            return ConnectorError(
                category, message, code=code, detail=_truncate(scrub_text(detail, secrets), MAX_DETAIL_LENGTH),
                retryable=retryable, may_have_applied=may_have_applied and category == ErrorCategory.CONNECTION,
            )
        category, code, retryable = SQLSTATE_ERRORS.get(
            sqlstate, SQLSTATE_ERRORS.get(sqlstate[:2], (ErrorCategory.UNKNOWN, "database_error", None)))
        primary = (diag.message_primary if diag else None) or text.strip()
        detail = " ".join(part for part in (f"SQLSTATE {sqlstate}:", primary, diag.message_detail if diag else "",
                                             diag.message_hint if diag else "") if part)
        return ConnectorError(
            category, _truncate(scrub_text(primary, secrets), MAX_MESSAGE_LENGTH), code=code,
            detail=_truncate(scrub_text(detail, secrets), MAX_DETAIL_LENGTH), retryable=retryable,
            field=self._error_field(sqlstate, diag, table, data),
            may_have_applied=may_have_applied and category == ErrorCategory.CONNECTION,
        )

    @staticmethod
    def _error_field(sqlstate, diag, table, data):
        column = (diag.column_name if diag else None) or ""
        if not column and table is not None and diag is not None and diag.constraint_name:
            column = table.constraint_columns.get(diag.constraint_name, "")
        if not column and sqlstate == "22001" and table is not None and data:
            # PostgreSQL does not say which value was too long: the one longer than its column allows.
            column = next((name for name, value in data.items() if isinstance(value, str)
                           and (spec := table.column_for(name)) and spec.max_length
                           and len(value) > spec.max_length), "")
        if table is not None and column and column == table.id_column:
            return "id"
        return column

    # -- objects ------------------------------------------------------------------------------------------------

    def check(self):
        schema = self.setting("schema")
        with self._session() as db:
            row = db.execute("SELECT has_schema_privilege(oid, 'USAGE') FROM pg_namespace WHERE nspname = %s",
                             [schema]).fetchone()
        if row is None:
            raise ConnectorError(ErrorCategory.MAPPING, f'Schema "{schema}" does not exist in the database',
                                 code="schema_not_found")
        if not row[0]:
            raise ConnectorError(ErrorCategory.PERMISSION, f'The user may not use schema "{schema}"',
                                 code="insufficient_privilege")

    def list_objects(self):
        with self._session() as db:
            rows = db.execute(
                "SELECT c.relname, COALESCE(obj_description(c.oid, 'pg_class'), '') FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = ANY(%s) AND NOT c.relispartition ORDER BY c.relname",
                [self.setting("schema"), list(OBJECT_KINDS)],
            ).fetchall()
        return [ObjectSummary(name=name, label=comment or name) for name, comment in rows]

    def describe(self):
        with self._session():  # one connection for every object
            return super().describe()

    def describe_object(self, object_name):
        table = self.table(object_name)
        fields = {}
        id_column = table.columns.get(table.id_column)
        if id_column is not None:
            fields["id"] = FieldSpec(
                "id", FieldType.STRING, unique=True, label=id_column.comment or id_column.name,
                read_only=id_column.has_default or id_column.identity or id_column.generated
                or not id_column.updatable,
                required=self._required(id_column),
            )
        for name in table.data_columns():
            column = table.columns[name]
            fields[name] = FieldSpec(
                name, FIELD_TYPES.get(column.base_type, FieldType.STRING), required=self._required(column),
                max_length=column.max_length, unique=column.unique, label=column.comment or name,
                read_only=column.serial or column.identity or column.generated or not column.updatable,
            )
        return ObjectSchema(name=table.name, label=table.comment or table.name, fields=fields)

    @staticmethod
    def _required(column):
        return column.not_null and not (column.has_default or column.identity or column.generated)

    def table(self, object_name):
        """The object's columns and constraints from the catalog (once per connector)."""
        if object_name not in self._tables:
            with self._session() as db:
                self._tables[object_name] = self._load_table(db, object_name)
        return self._tables[object_name]

    def _load_table(self, db, object_name):
        schema = self.setting("schema")
        found = db.execute(
            "SELECT c.oid, COALESCE(obj_description(c.oid, 'pg_class'), '') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind = ANY(%s)",
            [schema, object_name, list(OBJECT_KINDS)],
        ).fetchone()
        if found is None:
            raise self.unknown_object(object_name)
        oid, comment = found
        columns = {}
        for row in db.execute(COLUMNS_QUERY, {"oid": oid}).fetchall():
            column = Column(*row)
            columns[column.name] = column
        constraint_columns = dict(db.execute(CONSTRAINT_COLUMNS_QUERY, {"oid": oid}).fetchall())
        return Table(schema=schema, name=object_name, comment=comment, columns=columns,
                     constraint_columns=constraint_columns, id_column=self.setting("id_column"),
                     updated_at_column=self.setting("updated_at_column"))

    # -- reading ------------------------------------------------------------------------------------------------

    def read_page(self, object_name, *, page_token=None, cursor=None, page_size=100):
        """Rows in (updated_at, id) order after the page token's row. A read from a cursor starts at the
        cursor's timestamp INCLUSIVE: a row changed later to exactly that timestamp (with a lower id) is still
        read; the rows read twice are recognised by their hash. Rows whose updated_at or id is NULL cannot be
        placed in the order and are not read."""
        table = self.table(object_name)
        table.require(table.id_column, table.updated_at_column)
        updated, record_id = table.columns[table.updated_at_column], table.columns[table.id_column]
        page_size = max(1, min(int(page_size), MAX_PAGE_SIZE))
        conditions = [sql.SQL("{} IS NOT NULL AND {} IS NOT NULL").format(
            sql.Identifier(updated.name), sql.Identifier(record_id.name))]
        params = []
        if page_token:
            conditions.append(sql.SQL("({}, {}) > ({}::{}, {}::{})").format(
                sql.Identifier(updated.name), sql.Identifier(record_id.name),
                sql.Placeholder(), updated.type, sql.Placeholder(), record_id.type))
            params += decode_position(page_token)
        elif cursor:
            conditions.append(sql.SQL("{} >= {}::{}").format(sql.Identifier(updated.name), sql.Placeholder(),
                                                             updated.type))
            params.append(decode_position(cursor)[0])
        query = sql.SQL("SELECT * FROM {} WHERE {} ORDER BY {}, {} LIMIT {}").format(
            table.identifier, sql.SQL(" AND ").join(conditions), sql.Identifier(updated.name),
            sql.Identifier(record_id.name), sql.Literal(page_size + 1))
        with self._session() as db:
            rows = self._rows(db.execute(query, params))
        more, rows = len(rows) > page_size, rows[:page_size]
        last = encode_position(rows[-1][updated.name], rows[-1][record_id.name]) if rows else None
        return Page(records=[self.record(table, row) for row in rows], next_token=last if more else None,
                    cursor=last)

    def fetch(self, object_name, ids):
        table = self.table(object_name)
        table.require(table.id_column)
        matches = self._matching(table, table.id_column, [str(i) for i in ids])
        return {given: self.record(table, row) for given, row in matches}

    def find(self, object_name, field, values):
        table = self.table(object_name)
        table.require(table.id_column)
        column = table.column_for(field)
        if column is None:
            raise ConnectorError(ErrorCategory.MAPPING, f'Table "{table.name}" has no column "{field}"',
                                 code="field_not_found", field=field)
        originals = {str(value): value for value in values if value is not None}
        found = {}
        for given, row in self._matching(table, column.name, list(originals)):
            found.setdefault(originals[given], []).append(self.record(table, row))
        return found

    def _matching(self, table, column_name, values):
        """(value asked for, row) for every row whose column equals one of `values` (text), compared in the
        column's own type (so its index serves); when a value is not of that type (an id that is no number),
        compared as text instead."""
        values = list(dict.fromkeys(values))
        if not values:
            return []
        column = sql.Identifier(table.columns[column_name].name)
        typed = sql.SQL("found.{} = given.value::{}").format(column, table.columns[column_name].type)
        as_text = sql.SQL("found.{}::text = given.value").format(column)
        with self._session() as db:
            for comparison in (typed, as_text):
                query = sql.SQL("SELECT given.value, found.* FROM unnest(%s::text[]) AS given(value) "
                                "JOIN {} AS found ON {}").format(table.identifier, comparison)
                try:
                    return self._marked_rows(db.execute(query, [values]))
                except psycopg.DataError:
                    if comparison is as_text:
                        raise
        return []

    def record(self, table, row):
        updated = row.get(table.updated_at_column)
        if isinstance(updated, datetime):
            modified_at = updated if updated.tzinfo else updated.replace(tzinfo=UTC)
        elif isinstance(updated, date):
            modified_at = datetime(updated.year, updated.month, updated.day, tzinfo=UTC)
        else:
            modified_at = None
        data = {name: json_value(row[name]) for name in table.data_columns()}
        return SourceRecord(id=str(row[table.id_column]), data=data, modified_at=modified_at)

    @staticmethod
    def _rows(cur):
        names = [column.name for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @staticmethod
    def _marked_rows(cur):
        """Rows whose first column is a marker of ours (a position, a flag): (marker, the table's row)."""
        names = [column.name for column in cur.description][1:]
        return [(row[0], dict(zip(names, row[1:], strict=True))) for row in cur.fetchall()]

    # -- writing ------------------------------------------------------------------------------------------------

    def write(self, object_name, operations):
        table = self.table(object_name)
        table.require(table.id_column)
        results = [None] * len(operations)
        groups = {}
        seen_targets = {}
        for index, operation in enumerate(operations):
            problem = self._operation_problem(table, operation)
            if problem is not None:
                results[index] = self._failed(operation, problem)
                continue
            values = {table.column_for(field).name: value for field, value in operation.data.items()}
            key = self._upsert_key(table, operation) if operation.action == WriteAction.UPSERT else None
            # UPDATE … FROM changes a row once however many source rows match it: a repeated id waits its turn.
            repeat = 0
            if operation.action == WriteAction.UPDATE:
                repeat = seen_targets.get(str(operation.target_id), 0)
                seen_targets[str(operation.target_id)] = repeat + 1
            shape = (operation.action, tuple(sorted(values)), key, repeat)
            groups.setdefault(shape, []).append(Item(index, operation, values))
        with self._session(writing=True) as db, db.transaction():
            for (action, columns, key, _repeat), items in groups.items():
                rows_per_statement = max(1, MAX_PARAMETERS // (len(columns) + 2))
                for start in range(0, len(items), rows_per_statement):
                    chunk = items[start:start + rows_per_statement]
                    for index, result in self._write_group(db, table, action, columns, key, chunk).items():
                        results[index] = result
        return results

    def _operation_problem(self, table, operation):
        for field in operation.data:
            if table.column_for(field) is None:
                return ConnectorError(ErrorCategory.MAPPING, f'Table "{table.name}" has no column "{field}"',
                                      code="field_not_found", field=field)
        if operation.action == WriteAction.UPDATE and operation.target_id in (None, ""):
            return ConnectorError(ErrorCategory.VALIDATION, "An update needs the id of the row to update",
                                  code="target_id_missing", field="id")
        if operation.action == WriteAction.UPSERT:
            key = self._upsert_key(table, operation)
            if not key or key not in table.columns:
                return ConnectorError(
                    ErrorCategory.MAPPING, "An upsert needs a key column: set one in the connection or match on a "
                    "unique column", code="key_not_found", field=key or "")
            if all(table.column_for(f).name != key or v in (None, "") for f, v in operation.data.items()):
                return ConnectorError(ErrorCategory.VALIDATION, f'An upsert needs a value for its key "{key}"',
                                      code="required_missing", field=key)
        elif operation.action not in (WriteAction.CREATE, WriteAction.UPDATE):
            return ConnectorError(ErrorCategory.VALIDATION, f"Unknown write action '{operation.action}'",
                                  code="unknown_action", retryable=False)
        return None

    def _upsert_key(self, table, operation):
        key = self.config.get("key_column") or operation.match_field
        return table.id_column if key == "id" else key

    def _write_group(self, db, table, action, columns, key, items):
        """{index: WriteResult} for operations of one shape, in one statement; redone row by row when one
        record's data sinks the statement (its savepoint is rolled back, the transaction goes on)."""
        try:
            with db.transaction():
                if action == WriteAction.UPDATE:
                    return self._update(db, table, columns, items)
                return self._insert(db, table, columns, key, items)
        except (psycopg.Error, RowsSkipped) as exc:
            if isinstance(exc, psycopg.Error) and not _is_record_error(exc):
                raise
            if len(items) == 1:
                if isinstance(exc, RowsSkipped):
                    error = ConnectorError(ErrorCategory.VALIDATION, "A trigger of the table skipped the row",
                                           code="row_skipped")
                else:
                    error = self.classify(exc, table=table, data=items[0].operation.data)
                return {items[0].index: self._failed(items[0].operation, error)}
        results = {}
        for item in items:
            results.update(self._write_group(db, table, action, columns, key, [item]))
        return results

    def _insert(self, db, table, columns, key, items):
        """Creates, or upserts on `key`: INSERT … SELECT FROM unnest(one array per column) [ON CONFLICT … DO
        UPDATE] … RETURNING, one row per item. Arrays keep the statement one short text whatever the batch size
        (a VALUES list of a placeholder per value costs more to build and parse than to run)."""
        specs = [table.columns[name] for name in columns]
        if not specs:  # nothing mapped to write: rows of defaults
            query = sql.SQL("INSERT INTO {table} AS target ({id}) VALUES {rows} RETURNING true, target.*").format(
                table=table.identifier, id=sql.Identifier(table.id_column),
                rows=sql.SQL(", ").join([sql.SQL("(DEFAULT)")] * len(items)))
            returned = self._marked_rows(db.execute(query))
        else:
            returned = self._marked_rows(db.execute(self._insert_query(db, table, columns, key),
                                                    self._arrays(specs, items)))
        if len(returned) != len(items):
            raise RowsSkipped()
        # Rows come back in the order of the arrays (WITH ORDINALITY … ORDER BY), as Django's bulk_create relies
        # on for INSERT … VALUES.
        results = {}
        for item, (inserted, row) in zip(items, returned, strict=True):
            done = WriteAction.CREATE if inserted else WriteAction.UPDATE
            results[item.index] = self._succeeded(table, item.operation, done, row)
        return results

    def _insert_query(self, db, table, columns, key):
        """The statement's text for one shape of write, built once per connector (psycopg then caches its parse)."""
        cache_key = ("insert", table.schema, table.name, columns, key)
        if cache_key not in self._statements:
            specs = [table.columns[name] for name in columns]
            names = sql.SQL(", ").join(sql.Identifier(spec.name) for spec in specs)
            aliases = [sql.Identifier(f"value_{number}") for number in range(len(specs))]
            # Each value is cast from its text in the select list (an array column's value is an array too).
            source = sql.SQL("SELECT {casts} FROM unnest({arrays}) WITH ORDINALITY AS source ({aliases}, position) "
                             "ORDER BY position").format(
                casts=sql.SQL(", ").join(sql.SQL("{}::{}").format(alias, spec.type)
                                         for alias, spec in zip(aliases, specs, strict=True)),
                aliases=sql.SQL(", ").join(aliases),
                arrays=sql.SQL(", ").join([sql.SQL("%s::text[]")] * len(specs)))
            if key is not None:
                updated = [name for name in columns if name != key] or [key]
                query = sql.SQL(
                    "INSERT INTO {table} AS target ({names}) {source} ON CONFLICT ({key}) DO UPDATE SET {sets} "
                    # xmax is 0 on a row version this statement inserted, the updater's transaction id otherwise.
                    "RETURNING (target.xmax = 0), target.*"
                ).format(table=table.identifier, names=names, source=source, key=sql.Identifier(key),
                         sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name))
                                                 for name in updated))
            else:
                query = sql.SQL("INSERT INTO {table} AS target ({names}) {source} RETURNING true, target.*").format(
                    table=table.identifier, names=names, source=source)
            self._statements[cache_key] = query.as_string(db)
        return self._statements[cache_key]

    @staticmethod
    def _arrays(specs, items):
        return [[spec.text(item.values[spec.name]) for item in items] for spec in specs]

    def _update(self, db, table, columns, items):
        """Updates by id: one UPDATE … FROM (VALUES …); an id no row has is not found."""
        if not columns:  # nothing to set: the row stays as it is
            return {item.index: WriteResult(ref=item.operation.ref, ok=True, target_id=str(item.operation.target_id),
                                            action=WriteAction.UPDATE) for item in items}
        specs = [table.columns[name] for name in columns]
        cache_key = ("update", table.schema, table.name, columns)
        if cache_key not in self._statements:
            # The source's own column names, so that they never clash with the table's.
            aliases = [sql.Identifier(f"value_{number}") for number in range(len(specs))]
            self._statements[cache_key] = sql.SQL(
                "UPDATE {table} AS target SET {sets} FROM unnest(%s::integer[], %s::text[], {arrays}) "
                "AS source (position, record_id, {aliases}) "
                "WHERE target.{id} = source.record_id::{id_type} RETURNING source.position, target.*"
            ).format(
                table=table.identifier, id_type=table.columns[table.id_column].type,
                arrays=sql.SQL(", ").join([sql.SQL("%s::text[]")] * len(specs)),
                sets=sql.SQL(", ").join(
                    sql.SQL("{} = source.{}::{}").format(sql.Identifier(spec.name), alias, spec.type)
                    for spec, alias in zip(specs, aliases, strict=True)),
                aliases=sql.SQL(", ").join(aliases), id=sql.Identifier(table.id_column),
            ).as_string(db)
        query = self._statements[cache_key]
        params = [[item.index for item in items], [str(item.operation.target_id) for item in items],
                  *self._arrays(specs, items)]
        updated = dict(self._marked_rows(db.execute(query, params)))
        results = {}
        for item in items:
            if item.index in updated:
                results[item.index] = self._succeeded(table, item.operation, WriteAction.UPDATE, updated[item.index])
            else:
                results[item.index] = self._failed(item.operation, ConnectorError(
                    ErrorCategory.NOT_FOUND, f'No row of "{table.name}" has id {item.operation.target_id}',
                    code="record_not_found", field="id"))
        return results

    def _succeeded(self, table, operation, action, row):
        record = self.record(table, row)
        return WriteResult(ref=operation.ref, ok=True, target_id=record.id, action=action, record=record.data)

    @staticmethod
    def _failed(operation, error):
        action = operation.action if operation.action != WriteAction.UPSERT else None
        target_id = str(operation.target_id) if operation.target_id not in (None, "") else None
        return WriteResult(ref=operation.ref, ok=False, target_id=target_id, action=action, error=error)


def _is_record_error(exc):
    sqlstate = exc.sqlstate or ""
    return sqlstate[:2] in RECORD_ERROR_CLASSES or sqlstate in RECORD_ERROR_CODES


def _truncate(text, limit):
    return text if len(text) <= limit else text[: limit - 1] + "…"


# One row per column, in the field order of Column. A domain's base type and length decide its field type.
COLUMNS_QUERY = """
SELECT a.attname,
       tn.nspname,
       t.typname,
       COALESCE(bt.typname, t.typname),
       a.attnotnull OR COALESCE(t.typnotnull, false),
       a.atthasdef,
       COALESCE(pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%%', false),
       a.attidentity <> '',
       a.attgenerated <> '',
       pg_column_is_updatable(a.attrelid, a.attnum, false),
       CASE WHEN COALESCE(bt.typname, t.typname) IN ('varchar', 'bpchar')
             AND (CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END) > 4
            THEN (CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END) - 4 END,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisunique AND i.indpred IS NULL
                AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum),
       COALESCE(col_description(a.attrelid, a.attnum), '')
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_namespace tn ON tn.oid = t.typnamespace
LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# Constraint (or unique index) name -> its column, for constraints on one column: names the field of an error.
CONSTRAINT_COLUMNS_QUERY = """
SELECT con.conname, a.attname FROM pg_constraint con
JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
WHERE con.conrelid = %(oid)s AND cardinality(con.conkey) = 1
UNION
SELECT ic.relname, a.attname FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = %(oid)s AND i.indisunique AND i.indnkeyatts = 1
"""
