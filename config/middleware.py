"""The Content-Security-Policy header of every HTML page.

Django 5.2 has none of its own. Django 6.0 adds SECURE_CSP / SECURE_CSP_REPORT_ONLY (dicts of directive ->
sources) and a middleware that sends them: this one reads settings of those names and that shape, so moving to
Django's is a settings change. RESYNC_CSP_PATHS gives a path prefix directives of its own on top of the policy, for
the few third-party pages that cannot live under the strict one (each says why next to it in settings).

Only HTML answers carry it: a browser applies a CSP to the document it renders, so on JSON (the API), scripts or
images the header would be bytes for nothing. An answer that already has the header (a view that set its own) is
left alone.
"""

from django.conf import settings

HEADERS = (("SECURE_CSP", "Content-Security-Policy"),
           ("SECURE_CSP_REPORT_ONLY", "Content-Security-Policy-Report-Only"))


def policy_text(directives):
    """"default-src 'self'; img-src 'self' data:; ..." from {directive: [sources]}; an empty list is a directive
    without sources (upgrade-insecure-requests), None leaves the directive out."""
    return "; ".join(" ".join([directive, *sources]) for directive, sources in directives.items()
                     if sources is not None)


def policy_for(policy, path):
    """The policy's text for a request path: the longest matching RESYNC_CSP_PATHS prefix's directives replace
    the policy's own."""
    directives = dict(policy)
    overrides = getattr(settings, "RESYNC_CSP_PATHS", {})
    prefixes = [prefix for prefix in overrides if path.startswith(prefix)]
    if prefixes:
        directives.update(overrides[max(prefixes, key=len)])
    return policy_text(directives)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not response.get("Content-Type", "").startswith("text/html"):
            return response
        # With DEBUG, Django's technical 404 and 500 pages style and script themselves inline; refused, they would
        # hide the traceback a developer needs. With DEBUG off these answers are our own templates and get the
        # policy like any page.
        if settings.DEBUG and response.status_code in (404, 500):
            return response
        for setting, header in HEADERS:
            policy = getattr(settings, setting, None)
            if policy and header not in response.headers:
                response.headers[header] = policy_for(policy, request.path)
        return response
