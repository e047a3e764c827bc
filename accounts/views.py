"""Browser views of accounts: logging in (with the demo's credentials shown in development) and switching the
organization the session acts for."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from accounts.access import SESSION_ORG_KEY, memberships_for_user
from accounts.management.commands import demo


class LoginView(auth_views.LoginView):
    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        # Development only, and only once `manage.py demo` has created the account, so they always work.
        if settings.DEBUG and get_user_model().objects.filter(username=demo.USERNAME, is_active=True).exists():
            context["demo_credentials"] = {"username": demo.USERNAME, "password": demo.PASSWORD}
        return context


@login_required
@require_POST
def organization_switch(request):
    """Act for another of the user's organizations from now on. Switching changes nothing in either
    organization, so viewers may switch too."""
    slug = request.POST.get("organization", "")
    membership = next((m for m in memberships_for_user(request.user) if m.organization.slug == slug), None)
    if membership is None:
        # Not one of the user's organizations: the same answer as one that does not exist.
        messages.error(request, "You are not a member of that organization.")
    else:
        request.session[SESSION_ORG_KEY] = membership.organization.slug
        messages.success(request, f"You are now working in {membership.organization.name}.")
    # Home, not back: the page the user was on may show an object of the organization just left.
    return redirect("home")
