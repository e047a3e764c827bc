"""The REST API at /api/v1/: every app's resources (its api.ROUTES and api.URLS), the OpenAPI schema and docs."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from accounts import api as accounts_api
from config.api import api_not_found
from integrations import api as integrations_api
from mappings import api as mappings_api
from notifications import api as notifications_api
from syncs import api as syncs_api

API_MODULES = (accounts_api, integrations_api, mappings_api, syncs_api, notifications_api)

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
for module in API_MODULES:
    for prefix, viewset, basename in module.ROUTES:
        router.register(prefix, viewset, basename=basename)

urlpatterns = [
    path("v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file (?script), not inline: see SECURE_CSP.
    path("v1/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    *[path("v1/", include(module.URLS)) for module in API_MODULES if module.URLS],
    path("v1/", include(router.urls)),
    re_path(r"^[\s\S]*$", api_not_found),  # [\s\S], not ".": even a path with a newline is an API 404
]
