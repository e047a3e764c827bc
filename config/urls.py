from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("hooks/", include("integrations.urls")),
    path("sandbox/api/", include("integrations.sandbox_api")),
    path("api/", include("config.api_urls")),
    path("connections/", include("integrations.urls_ui")),
    path("mappings/", include("mappings.urls_ui")),
    path("settings/notifications/", include("notifications.urls_ui")),
    path("", include("accounts.urls")),
    path("", include("syncs.urls")),
]
