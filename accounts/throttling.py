"""Counting in the cache without losing counts to concurrency: the API's rate limit and the login lockout.

Both count with cache.add + cache.incr, which are atomic in Redis (and under the local-memory cache's lock), so
N requests arriving at once get N different counts. DRF's SimpleRateThrottle instead reads a list of timestamps,
appends to it and writes it back: requests that read the list at the same moment all pass, and with several
processes the limit is only a suggestion (tests/api/test_throttling.py measures both).

With the default local-memory cache each process counts on its own; set CACHE_URL to Redis when several
processes serve requests, so that they share one count.

This module is imported while DRF reads its settings: it must not import DRF's views or viewsets.
"""

import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import ApiToken


def count_hit(key, timeout):
    """Add one to the counter `key` and return the new count. A new counter expires `timeout` seconds after its
    first hit: the window does not slide with later hits."""
    for _ in range(3):
        if cache.add(key, 1, timeout):
            return 1
        try:
            return cache.incr(key)
        except ValueError:
            # It expired between add and incr: start it again.
            continue
    return cache.incr(key)


def client_address(request):
    """The address of the client, not of the proxy in front of us: the last RESYNC_NUM_PROXIES hops of
    X-Forwarded-For were added by our own proxies (docs/production.md); anything before them the client may have
    written itself, so it is never trusted."""
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = getattr(settings, "RESYNC_NUM_PROXIES", 0)
    if proxies:
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if hops:
            return hops[-min(proxies, len(hops))]
    return remote


class TokenRateThrottle(SimpleRateThrottle):
    """The API's rate limit (REST_FRAMEWORK's "api" rate) per token, or per user for the UI's session calls, or per
    client address: a fixed window counted atomically.

    A fixed window lets a client spend its allowance at the end of one window and again at the start of the next
    (at most twice the rate over one window's length); in exchange one atomic increment per request decides,
    whatever the number of concurrent requests or processes.
    """

    scope = "api"
    cache_format = "throttle:%(scope)s:%(ident)s:%(window)d"

    def __init__(self):
        # Read when asked, not when the class is created, so a changed setting (tests, RESYNC_API_RATE) applies.
        from rest_framework.settings import api_settings

        self.rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self.wait_seconds = None

    def get_ident_key(self, request):
        if isinstance(request.auth, ApiToken):
            return f"token-{request.auth.pk}"
        if request.user and request.user.is_authenticated:
            return f"user-{request.user.pk}"
        return f"ip-{client_address(request)}"

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        key = self.cache_format % {"scope": self.scope, "ident": self.get_ident_key(request), "window": window}
        # A little longer than the window, so the counter cannot vanish while its window is still current.
        hits = count_hit(key, self.duration + 5)
        if hits <= self.num_requests:
            return True
        self.wait_seconds = max(1, int((window + 1) * self.duration - now + 0.999))
        return False

    def wait(self):
        return self.wait_seconds
