from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("organization/switch/", views.organization_switch, name="organization_switch"),
    # The section's address leads to the first page the user may open; the nav marks it for every page below.
    path("settings/", views.settings_home, name="settings"),
    path("settings/tokens/", views.api_tokens, name="api_tokens"),
    path("settings/tokens/<uuid:code>/revoke/", views.api_token_revoke_view, name="api_token_revoke"),
]
