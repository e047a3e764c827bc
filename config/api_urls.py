"""The REST API at /api/v1/: every app's resources on one router, the OpenAPI schema and its docs."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from accounts.api import ApiTokenViewSet
from config.api import api_not_found

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("tokens", ApiTokenViewSet, basename="token")

urlpatterns = [
    path("v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("v1/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("v1/", include(router.urls)),
    re_path(r"^.*$", api_not_found),
]
