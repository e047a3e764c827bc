"""The tenant chokepoint for browser views: which organization a request acts for, and object lookups in it.

A function view decorated with `org_required` gets `request.org` and `request.membership`; it then reaches
tenant rows only through `Model.objects.for_org(request.org)` or `get_object_for_org_or_404`, so an id of
another organization answers 404 exactly like an id that does not exist.
"""

import functools

from django.contrib.auth.views import redirect_to_login
from django.db.models import Model
from django.http import Http404
from django.shortcuts import get_object_or_404

from accounts.models import Membership

# Where a future organization switcher stores its choice; without it the user's first membership is used.
SESSION_ORG_KEY = "org_slug"


def membership_for_request(request):
    """The membership the request acts through, or None when the user belongs to no organization."""
    memberships = Membership.objects.filter(user=request.user).select_related("organization")
    slug = request.session.get(SESSION_ORG_KEY)
    if slug:
        chosen = memberships.filter(organization__slug=slug).first()
        if chosen is not None:
            return chosen
    # Oldest first, so the fallback does not change when the user joins another organization.
    return memberships.order_by("created_at", "id").first()


def org_required(view):
    """Resolve request.org and request.membership for a function view, or answer login / 404."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        membership = membership_for_request(request)
        if membership is None:
            raise Http404("You are not a member of any organization.")
        request.membership = membership
        request.org = membership.organization
        return view(request, *args, **kwargs)

    return wrapper


def get_object_for_org_or_404(model_or_queryset, org, **lookup):
    """get_object_or_404 restricted to `org`: another organization's object is simply not found."""
    if isinstance(model_or_queryset, type) and issubclass(model_or_queryset, Model):
        queryset = model_or_queryset.objects.all()
    else:
        queryset = model_or_queryset
    return get_object_or_404(queryset.for_org(org), **lookup)
