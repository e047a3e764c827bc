"""Services for organizations' API tokens."""

import hashlib
import secrets
from datetime import timedelta

from django.utils import timezone

from accounts.models import ApiToken

TOKEN_PREFIX = "rsk_"
# last_used_at is written at most this often, so a busy token does not cost a write per request.
LAST_USED_PRECISION = timedelta(minutes=1)


def _digest(plain):
    return hashlib.sha256(plain.encode()).hexdigest()


def api_token_create(*, organization, name, role, created_by=None):
    """Create a token; returns (token, plain). The plain token is never stored and cannot be shown again."""
    prefix = secrets.token_hex(4)
    plain = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        organization=organization, name=name, role=role, prefix=f"{TOKEN_PREFIX}{prefix}", digest=_digest(plain),
        created_by=created_by,
    )
    return token, plain


def api_token_revoke(*, token):
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def api_token_authenticate(plain):
    """The active token for this plain text, or None; records when it was last used."""
    if not plain or not plain.startswith(TOKEN_PREFIX):
        return None
    token = (ApiToken.objects.select_related("organization")
             .filter(digest=_digest(plain), revoked_at__isnull=True).first())
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
