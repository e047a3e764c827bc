from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from accounts import views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("organization/switch/", views.organization_switch, name="organization_switch"),
    # Settings has one page so far; the section's address leads to it, and the nav marks it for every page below.
    path("settings/", RedirectView.as_view(pattern_name="api_tokens"), name="settings"),
    path("settings/tokens/", views.api_tokens, name="api_tokens"),
    path("settings/tokens/<uuid:code>/revoke/", views.api_token_revoke_view, name="api_token_revoke"),
]
