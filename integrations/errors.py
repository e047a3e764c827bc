"""The error vocabulary every connector speaks: categories, their defaults, and the one exception type.

The table is the error model of docs/architecture.md. A connector raises ConnectorError (or reports one per record
in a WriteResult); the engine turns it into a RecordError without knowing which system it came from.
"""

from django.db import models


class ErrorCategory(models.TextChoices):
    CONNECTION = "connection", "Connection"
    TIMEOUT = "timeout", "Timeout"
    RATE_LIMIT = "rate_limit", "Rate limit"
    AUTH = "auth", "Authentication"
    PERMISSION = "permission", "Permission"
    VALIDATION = "validation", "Validation"
    DUPLICATE = "duplicate", "Duplicate"
    NOT_FOUND = "not_found", "Not found"
    MAPPING = "mapping", "Mapping"
    CONFLICT = "conflict", "Conflict"
    UNKNOWN = "unknown", "Unknown"


class Durability(models.TextChoices):
    EPHEMERAL = "ephemeral", "Ephemeral"
    DURABLE = "durable", "Durable"


# category -> (retryable, durability). Retryable errors are worth trying again unchanged; durable ones need
# a fix (data, mapping, credentials) before a retry can succeed.
CATEGORY_DEFAULTS = {
    ErrorCategory.CONNECTION: (True, Durability.EPHEMERAL),
    ErrorCategory.TIMEOUT: (True, Durability.EPHEMERAL),
    ErrorCategory.RATE_LIMIT: (True, Durability.EPHEMERAL),
    ErrorCategory.AUTH: (False, Durability.DURABLE),
    ErrorCategory.PERMISSION: (False, Durability.DURABLE),
    ErrorCategory.VALIDATION: (False, Durability.DURABLE),
    ErrorCategory.DUPLICATE: (False, Durability.DURABLE),
    ErrorCategory.NOT_FOUND: (False, Durability.DURABLE),
    ErrorCategory.MAPPING: (False, Durability.DURABLE),
    ErrorCategory.CONFLICT: (False, Durability.DURABLE),
    ErrorCategory.UNKNOWN: (True, Durability.EPHEMERAL),
}


class ConnectorError(Exception):
    """A classified failure of an external system or of one record sent to it.

    `message` is for the operator; `detail` is technical (already redacted: never put credentials in it).
    `retry_after` is in seconds, as the target asked. `field` names the offending field when there is one.
    `may_have_applied` says the request may have reached the target and been carried out although no answer
    says so (a read timeout, a 500 or a gateway error after sending): a create must not be sent again blindly.
    """

    def __init__(
        self,
        category,
        message,
        *,
        code="",
        detail="",
        retryable=None,
        retry_after=None,
        field="",
        may_have_applied=False,
    ):
        super().__init__(message)
        self.category = ErrorCategory(category)
        default_retryable, _durability = CATEGORY_DEFAULTS[self.category]
        self.message = message
        self.code = code or self.category.value
        self.detail = detail
        self.retryable = default_retryable if retryable is None else retryable
        # Durability follows retryability: an error worth retrying unchanged is by definition ephemeral.
        self.durability = Durability.EPHEMERAL if self.retryable else Durability.DURABLE
        self.retry_after = retry_after
        self.field = field
        self.may_have_applied = may_have_applied

    def __repr__(self):
        return f"ConnectorError({self.category.value!r}, {self.message!r}, code={self.code!r}, field={self.field!r})"
