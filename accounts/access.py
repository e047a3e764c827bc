"""The tenant chokepoint for browser views: which organization a request acts for, and object lookups in it.

A function view decorated with `org_required` (a class-based view: `OrgRequiredMixin`) gets `request.org`,
`request.membership` and `request.memberships` (every organization the user may switch to). A viewer may look
but not act: any request with an unsafe method (POST, PUT, PATCH, DELETE) from a viewer answers 403. The view
then reaches tenant rows only through `Model.objects.for_org(request.org)` or `get_object_for_org_or_404`, so an
id of another organization answers 404 exactly like an id that does not exist.
"""

import functools

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import Http404
from django.shortcuts import get_object_or_404
from django_htmx.http import HttpResponseClientRedirect

from accounts.models import Membership

# Where the organization switcher (accounts.views.organization_switch) stores its choice; without it the user's
# first membership is used.
SESSION_ORG_KEY = "org_slug"

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

VIEWER_REFUSAL = "Your role in this organization is viewer: you can look at everything but not change anything."


def memberships_for_user(user):
    """The user's memberships with their organizations, oldest first."""
    # Oldest first, so the fallback does not change when the user joins another organization.
    return list(Membership.objects.filter(user=user).select_related("organization").order_by("created_at", "id"))


def membership_for_request(request, memberships=None):
    """The membership the request acts through, or None when the user belongs to no organization."""
    memberships = memberships_for_user(request.user) if memberships is None else memberships
    slug = request.session.get(SESSION_ORG_KEY)
    chosen = next((membership for membership in memberships if membership.organization.slug == slug), None)
    return chosen or next(iter(memberships), None)


def resolve_org(request):
    """Set request.org, request.membership and request.memberships; refuse viewers' unsafe requests.

    Returns a redirect to the login page for an anonymous user, None otherwise; raises Http404 for a user of
    no organization and PermissionDenied for a viewer's POST.
    """
    if not request.user.is_authenticated:
        if getattr(request, "htmx", False):
            # A polled partial of an expired session: send the whole page to the login, not into the partial.
            return HttpResponseClientRedirect(redirect_to_login(request.htmx.current_url_abs_path or "/").url)
        return redirect_to_login(request.get_full_path())
    # One query serves both the choice and the switcher's list.
    memberships = memberships_for_user(request.user)
    membership = membership_for_request(request, memberships)
    if membership is None:
        raise Http404("You are not a member of any organization.")
    request.memberships = memberships
    request.membership = membership
    request.org = membership.organization
    if request.method not in SAFE_METHODS and not membership.can_write:
        raise PermissionDenied(VIEWER_REFUSAL)
    return None


def org_required(view):
    """Resolve the organization for a function view (see resolve_org), or answer login / 404 / 403."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        refusal = resolve_org(request)
        if refusal is not None:
            return refusal
        return view(request, *args, **kwargs)

    return wrapper


class OrgRequiredMixin:
    """org_required for class-based views. A view with a model or queryset (DetailView, UpdateView...) looks
    its objects up in request.org only, so another organization's id answers 404."""

    def dispatch(self, request, *args, **kwargs):
        refusal = resolve_org(request)
        if refusal is not None:
            return refusal
        return super().dispatch(request, *args, **kwargs)

    def get_queryset(self):
        return super().get_queryset().for_org(self.request.org)


def get_object_for_org_or_404(model_or_queryset, org, **lookup):
    """get_object_or_404 restricted to `org`: another organization's object is simply not found."""
    if isinstance(model_or_queryset, type) and issubclass(model_or_queryset, Model):
        queryset = model_or_queryset.objects.all()
    else:
        queryset = model_or_queryset
    return get_object_or_404(queryset.for_org(org), **lookup)
