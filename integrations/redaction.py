"""Scrubbing secrets out of anything Resync stores or logs: snapshots, technical details, log lines.

The key list follows Sentry's default scrubber (password, secret, token, api_key, auth, credentials, ...).
"""

import re

REDACTED = "[redacted]"

SECRET_KEY_PATTERN = re.compile(
    r"pass(word|wd)?|secret|token|api[_-]?key|apikey|auth|credential|private[_-]?key|bearer|session|cookie|signature",
    re.IGNORECASE,
)
# "Authorization: Bearer abc", "api_key=abc", "token": "abc" inside free text.
SECRET_IN_TEXT = re.compile(
    r"(?i)(bearer\s+|(?:pass(?:word)?|secret|token|api[_-]?key|apikey|access[_-]?key|client[_-]?secret)"
    r"[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;]+)"
)


# Keys that look secret to the pattern but are not: paging cursors are needed to fetch a failed batch again.
NOT_SECRET_KEYS = {"page_token", "next_page_token"}


def _is_secret_key(key):
    return isinstance(key, str) and key.lower() not in NOT_SECRET_KEYS and bool(SECRET_KEY_PATTERN.search(key))


def scrub(value):
    """A copy of `value` with the values of secret-looking keys replaced, recursively."""
    if isinstance(value, dict):
        return {key: (REDACTED if _is_secret_key(key) else scrub(item)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def scrub_text(text, secrets=()):
    """Free text with secret assignments masked, and every known secret value (e.g. credentials) removed."""
    text = SECRET_IN_TEXT.sub(lambda m: m.group(1) + REDACTED, text)
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return text
