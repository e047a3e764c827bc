"""Connection workflows the engine, the API and the UI share: checking a connection, reconnecting it,
describing its objects.

A connection's config must never hold secrets: `connection_config_secret_keys` finds the keys that look secret,
by redaction's pattern, so they go to the encrypted credentials instead.
"""

from django.utils import timezone

from integrations.connectors import UnknownProvider, get_connector
from integrations.errors import ConnectorError, ErrorCategory
from integrations.models import ConnectionStatus
from integrations.redaction import NOT_SECRET_KEYS, SECRET_KEY_PATTERN
from syncs.events import log_event

__all__ = [
    "connection_check",
    "connection_config_secret_keys",
    "connection_describe",
    "connection_needs_reauth",
    "connection_reconnect",
    "connector_for",
]


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
    """The connection's credentials were refused: syncs and retries stop until someone reconnects it."""
    connection.status, connection.status_reason = ConnectionStatus.NEEDS_REAUTH, error.message[:500]
    connection.last_error = error.message
    connection.save(update_fields=["status", "status_reason", "last_error", "updated_at"])
    log_event("connection_needs_reauth", connection=connection.name, error_code=error.code,
              error_message=error.message)


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
    log_event("connection_reconnected", connection=connection.name)
    return connection


def connection_describe(*, connection):
    """The connection's objects as its system describes them now ({name: ObjectSchema}); raises ConnectorError.

    Nothing is cached: the engine describes the objects again at the start of every run, so a stored copy
    would only go stale.
    """
    return connector_for(connection).describe()


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
