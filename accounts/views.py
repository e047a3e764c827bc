"""Browser views of accounts: logging in (with the demo's credentials shown in development), switching the
organization the session acts for, and Settings → API tokens (create, shown once; revoke), which acts through
the services and asks for the roles the API's token resource does."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST

from accounts.access import SESSION_ORG_KEY, get_object_for_org_or_404, memberships_for_user, org_required
from accounts.api import ApiTokenViewSet
from accounts.authentication import ROLE_RANK
from accounts.forms import LoginForm
from accounts.management.commands import demo
from accounts.models import ApiToken, Role, TokenRole
from accounts.services import api_token_create, api_token_revoke


class LoginView(auth_views.LoginView):
    # Locks a username on a client after repeated failures (accounts.forms); the admin's login uses its twin.
    authentication_form = LoginForm

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


# --- Settings ------------------------------------------------------------------------------------------------------


@org_required
def settings_home(request):
    """The Settings section's address: API tokens for those who manage them, else notifications, which every
    member may see (a member sent to the tokens page would only meet a refusal)."""
    if ROLE_RANK[request.membership.role] >= ROLE_RANK[ApiTokenViewSet.read_role]:
        return redirect("api_tokens")
    return redirect("notifications:index")


# --- Settings → API tokens --------------------------------------------------------------------------------------


def _require_role(request, needed):
    """The role the API's token resource asks for (ApiTokenViewSet.read_role / write_role): a token can do what
    its role allows, so only those who could do as much themselves see or hand them out."""
    if ROLE_RANK[request.membership.role] < ROLE_RANK[needed]:
        raise PermissionDenied(f"API tokens are managed by the owners and admins of {request.org.name}; your role "
                               f"is {Role(request.membership.role).label.lower()}.")


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=ApiToken._meta.get_field("name").max_length,
                           help_text="What will use it, so you can tell it apart later: “deploy script”, “BI export”.")
    role = forms.ChoiceField(choices=TokenRole.choices, initial=TokenRole.MEMBER,
                             help_text="Viewer: read only. Member: read, run syncs and act on errors. "
                                       "Admin: everything, API tokens included.")


@org_required
def api_tokens(request):
    """The organization's API tokens; POST creates one and shows its secret on this answer only."""
    _require_role(request, ApiTokenViewSet.read_role)
    form, created, status = ApiTokenForm(), None, 200
    if request.method == "POST":
        _require_role(request, ApiTokenViewSet.write_role)
        form = ApiTokenForm(request.POST)
        if form.is_valid():
            token, plain = api_token_create(organization=request.org, name=form.cleaned_data["name"],
                                            role=form.cleaned_data["role"], created_by=request.user)
            # Rendered, not redirected: the secret is never stored anywhere (a session would keep it), so this
            # answer is the only place it appears.
            created, form = {"token": token, "secret": plain}, ApiTokenForm()
        else:
            status = 400
    tokens = ApiToken.objects.for_org(request.org).select_related("created_by").order_by("-created_at", "-id")
    response = render(request, "accounts/api_tokens.html",
                      {"form": form, "created": created, "tokens": list(tokens)}, status=status)
    if created:
        add_never_cache_headers(response)  # no cache, back button or proxy keeps a copy of the secret
    return response


@org_required
def api_token_revoke_view(request, code):
    """GET: what revoking a token means, and a confirmation; POST: revoke it (revoking twice changes nothing)."""
    _require_role(request, ApiTokenViewSet.write_role)
    token = get_object_for_org_or_404(ApiToken, request.org, code=code)
    if request.method == "POST":
        if token.is_active:
            api_token_revoke(token=token)
            messages.success(request, f"Revoked {token.name} ({token.prefix}…): requests with it are refused from "
                                      "now on.")
        else:
            messages.info(request, f"{token.name} ({token.prefix}…) was already revoked.")
        return redirect("api_tokens")
    return render(request, "accounts/api_token_revoke.html", {"token": token})
