"""REST API resources of the syncs app (registered in config.api_urls through ROUTES and URLS)."""

ROUTES = []  # (prefix, viewset, basename)
URLS = []  # extra django.urls paths under /api/v1/
