"""API authentication and access: tokens, the organization and role of a request (throttling: accounts.throttling).

Kept apart from accounts.api because DRF imports these classes while it is itself being imported: this module
must not import DRF's views or viewsets.
"""

from django.contrib.auth.models import AnonymousUser
from rest_framework import exceptions, permissions
from rest_framework.authentication import BaseAuthentication

from accounts.access import membership_for_request
from accounts.models import ApiToken, Role
from accounts.services import api_token_authenticate
from accounts.throttling import TokenRateThrottle  # noqa: F401 (its earlier home; settings name accounts.throttling)

ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class TokenPrincipal(AnonymousUser):
    """The caller of a request authenticated by an API token: no user, an organization and a role."""

    def __init__(self, token):
        super().__init__()
        self.token = token

    @property
    def is_authenticated(self):
        return True

    def __str__(self):
        return f"token {self.token.prefix}"


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <token>`. An unknown or revoked token is a 401, never a fallback to anonymous."""

    keyword = "bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != self.keyword:
            return None
        token = api_token_authenticate(credentials.strip())
        if token is None:
            raise exceptions.AuthenticationFailed("The token is unknown or revoked.", code="invalid_token")
        return TokenPrincipal(token), token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


def resolve_organization(request):
    """Set request.org and request.role from the token, or from the session user's membership."""
    if getattr(request, "org", None) is not None:
        return request.org
    if isinstance(request.auth, ApiToken):
        request.org, request.role = request.auth.organization, request.auth.role
        return request.org
    user = request.user
    if not user or not user.is_authenticated:
        raise exceptions.NotAuthenticated()
    # The same membership the browser views act through (accounts.access), so the UI's calls see its org.
    membership = membership_for_request(request)
    if membership is None:
        raise exceptions.NotFound()
    request.org, request.role = membership.organization, membership.role
    return request.org


class IsOrganizationMember(permissions.BasePermission):
    """Reads need any role; writes need `view.write_role` (member by default); some views need admin."""

    def has_permission(self, request, view):
        resolve_organization(request)
        needed = getattr(view, "read_role", Role.VIEWER)
        if request.method not in permissions.SAFE_METHODS:
            needed = getattr(view, "write_role", Role.MEMBER)
        if ROLE_RANK[request.role] < ROLE_RANK[needed]:
            raise exceptions.PermissionDenied(f"This needs the {needed} role; you have {request.role}.")
        return True
