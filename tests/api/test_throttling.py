"""The API's rate limit holds when the requests arrive together: a real threaded server, many clients at once, and
no more answers than the rate allows, counted in the local-memory cache and in Redis (what production shares
between processes)."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import redis
import requests
import time_machine

from accounts.models import TokenRole
from accounts.services import api_token_create

RATE = 10
CLIENTS = 40
# The middle of a window: the burst cannot straddle two windows of the fixed-window count.
MID_WINDOW = datetime(2030, 1, 7, 12, 0, 30, tzinfo=UTC)
REDIS_URL = "redis://127.0.0.1:6379/11"


def _redis_is_up():
    try:
        return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return False


@pytest.fixture(params=["locmem", "redis"])
def shared_cache(request, settings):
    if request.param == "redis":
        if not _redis_is_up():
            pytest.skip(f"Redis is not answering at {REDIS_URL}")
        # A prefix of this test's own, so that nothing else in that database is read or cleared.
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                       "LOCATION": REDIS_URL, "KEY_PREFIX": f"resync-test-{uuid.uuid4().hex}"}}
    else:
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                       "LOCATION": f"throttle-{uuid.uuid4().hex}"}}
    return request.param


@pytest.fixture
def small_rate(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": f"{RATE}/min"}}


def token_for(org, name="burst"):
    return api_token_create(organization=org, name=name, role=TokenRole.ADMIN)[1]


def burst(url, token, clients=CLIENTS):
    """`clients` requests released at the same instant, each on its own connection."""
    start = threading.Barrier(clients)

    def one(_):
        session = requests.Session()
        start.wait()
        return session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(one, range(clients)))


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_concurrent_requests_gets_exactly_the_rate_through(live_server, org, shared_cache, small_rate):
    token = token_for(org)

    with time_machine.travel(MID_WINDOW, tick=False):
        answers = burst(f"{live_server.url}/api/v1/tokens/", token)

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * RATE + [429] * (CLIENTS - RATE)
    for refused in (answer for answer in answers if answer.status_code == 429):
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        body = refused.json()
        assert body["status"] == 429 and body["code"] == "throttled"
        # The window ends 30 s after MID_WINDOW: that is when to come back, not a full minute later.
        assert refused.headers["Retry-After"] == "30" and body["retry_after"] == 30


@pytest.mark.django_db(transaction=True)
def test_each_token_has_its_own_allowance(live_server, org, other_org, shared_cache, small_rate):
    spent, other = token_for(org, "spent"), token_for(other_org, "other")

    with time_machine.travel(MID_WINDOW, tick=False):
        burst(f"{live_server.url}/api/v1/tokens/", spent, clients=RATE + 5)
        answers = burst(f"{live_server.url}/api/v1/tokens/", other, clients=RATE)
        still_refused = requests.get(f"{live_server.url}/api/v1/tokens/",
                                     headers={"Authorization": f"Bearer {spent}"}, timeout=30)

    assert [answer.status_code for answer in answers] == [200] * RATE
    assert still_refused.status_code == 429


@pytest.mark.django_db(transaction=True)
def test_the_allowance_returns_with_the_next_window(live_server, org, shared_cache, small_rate):
    token = token_for(org)
    headers = {"Authorization": f"Bearer {token}"}

    with time_machine.travel(MID_WINDOW, tick=False) as clock:
        burst(f"{live_server.url}/api/v1/tokens/", token, clients=RATE + 1)
        refused = requests.get(f"{live_server.url}/api/v1/tokens/", headers=headers, timeout=30)
        clock.shift(int(refused.headers["Retry-After"]))
        answers = burst(f"{live_server.url}/api/v1/tokens/", token, clients=RATE + 2)

    assert refused.status_code == 429
    assert sorted(answer.status_code for answer in answers) == [200] * RATE + [429] * 2
