"""Connection workflows the engine, the API, the admin and the UI share: creating and changing a connection
(its config checked by its connector's declared form, every URL by the SSRF guard), checking it, reconnecting
it, and its schema (cached on the connection, refreshed on demand).

A connection's config must never hold secrets: `connection_config_secret_keys` finds the keys that look secret,
by redaction's pattern, so they go to the encrypted credentials instead.
"""

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from integrations.connectors import CONNECTORS, UnknownProvider, get_connector, get_connector_class
from integrations.connectors.base import ObjectSchema, ObjectSummary
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import Connection, ConnectionStatus
from integrations.redaction import NOT_SECRET_KEYS, SECRET_KEY_PATTERN
from notifications import hooks as notification_hooks
from syncs.events import log_event

__all__ = [
    "ConnectionInUse",
    "connection_check",
    "connection_clean",
    "connection_config_secret_keys",
    "connection_create",
    "connection_delete",
    "connection_describe",
    "connection_hint",
    "connection_needs_reauth",
    "connection_objects",
    "connection_reconnect",
    "connection_schema",
    "connection_schema_refresh",
    "connection_update",
    "connector_for",
    "provider_forms",
]

# What a person can do about a failed check, by category: "Test connection" says it next to the message.
CHECK_HINTS = {
    ErrorCategory.AUTH: "The credentials were refused: enter a new token or key and reconnect.",
    ErrorCategory.PERMISSION: "The credentials work but lack a permission (scope): grant it in the system, then "
                              "reconnect.",
    ErrorCategory.CONNECTION: "The system could not be reached: check the address (instance URL, domain) or its "
                              "status page; Resync retries on its own.",
    ErrorCategory.TIMEOUT: "The system did not answer in time: it may be overloaded; Resync retries on its own.",
    ErrorCategory.RATE_LIMIT: "The system's rate limit is used up: Resync waits and retries.",
    ErrorCategory.NOT_FOUND: "The address answers, but not as this system's API: check the instance URL or "
                             "domain.",
    ErrorCategory.MAPPING: "Resync cannot use this connection as configured.",
}


def connector_for(connection):
    """The connection's connector; a provider no longer in the registry is a classified error, not a crash."""
    try:
        return get_connector(connection)
    except UnknownProvider:
        raise ConnectorError(
            ErrorCategory.MAPPING, f"Resync has no connector for provider '{connection.provider}'",
            code="unknown_provider",
        ) from None


def connection_check(*, connection):
    """Check the connection now; record when and how it went. Returns the ConnectorError, or None when it works.

    An authentication failure marks the connection as needing reauthentication (syncs stop until a reconnect).
    A success does not reactivate a connection that needs reauthentication: that is what reconnect is for.
    """
    error = None
    try:
        connector_for(connection).check()
    except ConnectorError as exc:
        error = exc
    connection.last_checked_at = timezone.now()
    connection.last_error = error.message if error else ""
    # Only these columns: a concurrent edit of the name or config is not overwritten by a check.
    connection.save(update_fields=["last_checked_at", "last_error", "updated_at"])
    if error is not None and error.category == ErrorCategory.AUTH:
        connection_needs_reauth(connection=connection, error=error)
    return error


def connection_needs_reauth(*, connection, error):
    """The connection's credentials were refused: syncs and retries stop until someone reconnects it.

    Only while the refused credentials (those `connection` was loaded with) are still the stored ones: a call
    made with credentials someone has replaced since, by a batch that was under way during the reconnect, says
    nothing about the new ones, and must not undo the reconnect. Returns whether the connection was marked.
    """
    now = timezone.now()
    marked = Connection.objects.filter(
        pk=connection.pk, credentials_ciphertext=connection.credentials_ciphertext,
    ).update(status=ConnectionStatus.NEEDS_REAUTH, status_reason=error.message[:500], last_error=error.message,
             updated_at=now)
    if not marked:
        log_event("auth_failure_after_reconnect", connection=str(connection.code), connection_name=connection.name,
                  error_code=error.code)
        return False
    connection.status, connection.status_reason = ConnectionStatus.NEEDS_REAUTH, error.message[:500]
    connection.last_error, connection.updated_at = error.message, now
    log_event("connection_needs_reauth", connection=str(connection.code), connection_name=connection.name,
              error_code=error.code, error_message=error.message)
    notification_hooks.connection_needs_reauth(connection)  # an auth failure stops its syncs: alert at once
    return True


def connection_reconnect(*, connection, credentials=None):
    """Store new credentials (if given), check the connection, and make it active again when it answers.

    Raises the check's ConnectorError when it still fails; the new credentials are kept either way, so a
    second try after fixing the other side needs no re-entry.
    """
    if credentials is not None:
        connection.credentials = credentials
        connection.save(update_fields=["credentials_ciphertext", "updated_at"])
    error = connection_check(connection=connection)
    if error is not None:
        raise error
    connection.status, connection.status_reason = ConnectionStatus.ACTIVE, ""
    connection.save(update_fields=["status", "status_reason", "updated_at"])
    log_event("connection_reconnected", connection=str(connection.code), connection_name=connection.name)
    return connection


def connection_hint(error):
    """What to do about a failed check, in a sentence (empty when there is nothing useful to add)."""
    return CHECK_HINTS.get(error.category, "")


# --- create and change ---------------------------------------------------------------------------------------


CONNECTION_FIELDS = ("name", "config", "credentials", "status", "max_concurrency")


def provider_forms():
    """Every provider with its connection form: [{"key", "label", "config_fields", "secret_fields"}]."""
    forms = []
    for key, (label, _path) in CONNECTORS.items():
        connector = get_connector_class(key)
        forms.append({"key": key, "label": label,
                      "config_fields": [field.as_dict() for field in connector.config_fields],
                      "secret_fields": [field.as_dict() for field in connector.secret_fields]})
    return forms


@transaction.atomic
def connection_create(*, organization, name, provider, config=None, credentials=None, max_concurrency=None):
    """Create a connection after its connector has checked the config (URLs through the SSRF guard) and the
    credentials; raise ValidationError keyed by field ("config.base_url", "credentials.api_key", "name")."""
    if provider not in CONNECTORS:
        raise ValidationError({"provider": [f"Unknown provider “{provider}”."]})
    connection = Connection(organization=organization, name=name, provider=provider, config=config or {})
    if max_concurrency is not None:
        connection.max_concurrency = max_concurrency
    if credentials:
        connection.credentials = credentials
    return _connection_save(connection, credentials=credentials)


@transaction.atomic
def connection_update(*, connection, **fields):
    """Change a connection's name, config (replaced as a whole), credentials or status; the same checks as
    connection_create. Credentials given are replaced; {} removes them. A changed config empties the schema
    cache: the other address may describe other objects. A connection whose fields were set by a form (the
    admin's) is saved by calling this with the credentials only."""
    unknown = set(fields) - set(CONNECTION_FIELDS)
    if unknown:
        raise TypeError(f"Not a connection setting: {', '.join(sorted(unknown))}")
    credentials = fields.pop("credentials", None)
    for name, value in fields.items():
        setattr(connection, name, value)
    if credentials is not None:
        connection.credentials = credentials
    stored = Connection.objects.filter(pk=connection.pk).values_list("config", flat=True).first()
    if connection.pk and stored != connection.config:
        connection.schema_cache, connection.schema_refreshed_at = {}, None
    return _connection_save(connection, credentials=credentials)


def connection_clean(connection, *, credentials=None):
    """Every problem that keeps `connection`, its settings already set on it, from being saved, keyed by field
    ("config.base_url", "credentials.api_key", "name"); `credentials` are the new ones, if any. The admin's form
    shows them before it saves; connection_create and connection_update raise them."""
    errors = {}
    stored = connection.pk and Connection.objects.filter(pk=connection.pk).values("provider", "organization_id").first()
    if stored:
        if stored["provider"] != connection.provider:
            errors["provider"] = ["The provider of a connection cannot change: create a new connection."]
        if stored["organization_id"] != connection.organization_id:
            errors["organization"] = ["A connection cannot move to another organization."]
    try:
        connector = get_connector_class(connection.provider)
    except UnknownProvider:
        connector = None  # a provider retired after the connection was made: its config cannot be checked
    if connector is not None:
        for key, messages in connector.validate_config(connection.config).items():
            errors[f"config.{key}"] = messages
        if credentials:
            for key, messages in connector.validate_credentials(credentials).items():
                errors[f"credentials.{key}"] = messages
    for path in connection_config_secret_keys(connection.config):
        errors[path] = ["This looks like a secret: put it in credentials, which are stored encrypted."]
    if connection.organization_id is not None:
        clash = Connection.objects.for_org(connection.organization).filter(name=connection.name)
        if clash.exclude(pk=connection.pk).exists():
            errors["name"] = ["Another connection of your organization has this name."]
    return errors


def _connection_save(connection, *, credentials):
    errors = connection_clean(connection, credentials=credentials)
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            connection.save()
    except IntegrityError:
        raise ValidationError({"name": ["Another connection of your organization has this name."]}) from None
    return connection


class ConnectionInUse(Exception):
    """Mappings use the connection: it cannot be deleted under them."""

    def __init__(self, connection, mappings):
        self.mappings = mappings
        super().__init__(
            f"Connection '{connection.name}' is used by the mapping(s) {', '.join(repr(m.name) for m in mappings)}: "
            "delete them or move them to another connection first."
        )


@transaction.atomic
def connection_delete(*, connection):
    """Delete a connection with its webhook endpoints and sandbox data; raise ConnectionInUse while a mapping
    uses it (the database's PROTECT decides, so a mapping made meanwhile counts too). Runs belong to mappings:
    a connection with a run queued or running is always in use."""
    try:
        with transaction.atomic():
            connection.delete()
    except ProtectedError as exc:
        mappings = sorted(set(exc.protected_objects), key=lambda mapping: mapping.name)
        raise ConnectionInUse(connection, mappings) from None
    log_event("connection_deleted", connection=str(connection.code), connection_name=connection.name)


# --- schema ------------------------------------------------------------------------------------------------------


def connection_objects(*, connection, refresh=False):
    """The objects of the connection's system ([ObjectSummary]), cached on the connection."""
    cached = (connection.schema_cache or {}).get("objects")
    if cached is not None and not refresh:
        return [ObjectSummary(**item) for item in cached]
    objects = connector_for(connection).list_objects()
    _cache_update(connection, objects=[{"name": o.name, "label": o.label} for o in objects])
    return objects


def connection_schema(*, connection, object_name, refresh=False):
    """One object's schema, cached on the connection; raises ConnectorError (an unknown object is a mapping
    error). `refresh` describes it again now."""
    cached = (connection.schema_cache or {}).get("schemas", {}).get(object_name)
    if cached is not None and not refresh:
        return ObjectSchema.from_dict(cached)
    schema = connector_for(connection).describe_object(object_name)
    _cache_update(connection, schemas={object_name: schema.as_dict()})
    return schema


def connection_describe(*, connection, refresh=False):
    """Every object of the connection with its fields ({name: ObjectSchema}), from the cache where it has them;
    raises ConnectorError."""
    objects = connection_objects(connection=connection, refresh=refresh)
    return {summary.name: connection_schema(connection=connection, object_name=summary.name, refresh=refresh)
            for summary in objects}


def connection_schema_refresh(*, connection):
    """"Refresh schema": describe every object again now and replace the cache."""
    connection.schema_cache = {}
    schemas = connection_describe(connection=connection, refresh=True)
    log_event("connection_schema_refreshed", connection=str(connection.code), connection_name=connection.name,
              objects=len(schemas))
    return schemas


def _cache_update(connection, *, objects=None, schemas=None):
    with transaction.atomic():
        # Another process may have cached other objects meanwhile: merge into the stored cache, not ours.
        row = Connection.objects.select_for_update().filter(pk=connection.pk).first()
        cache = dict((row.schema_cache if row is not None else connection.schema_cache) or {})
        if objects is not None:
            cache["objects"] = objects
        if schemas:
            cache["schemas"] = {**cache.get("schemas", {}), **schemas}
        connection.schema_cache = cache
        connection.schema_refreshed_at = timezone.now()
        if row is not None:
            Connection.objects.filter(pk=connection.pk).update(schema_cache=cache,
                                                               schema_refreshed_at=connection.schema_refreshed_at)


def connection_config_secret_keys(config, path="config"):
    """Paths of the keys in `config` that look secret (password, token, api_key, ...), recursively.

    A flag (true/false/null) under such a key is not a secret, e.g. the sandbox's faults.expired_credentials.
    """
    found = []
    if isinstance(config, dict):
        for key, value in config.items():
            key_path = f"{path}.{key}"
            if (
                isinstance(key, str) and key.lower() not in NOT_SECRET_KEYS and SECRET_KEY_PATTERN.search(key)
                and not isinstance(value, bool) and value is not None
            ):
                found.append(key_path)
            else:
                found += connection_config_secret_keys(value, key_path)
    elif isinstance(config, list):
        for index, item in enumerate(config):
            found += connection_config_secret_keys(item, f"{path}[{index}]")
    return found
