"""Repeated failed logins lock a username on a client, at the browser's login and at the admin's, without telling
whether the username exists, and unlock when the lock's time is up."""

import json
import logging
import re
import uuid
from datetime import UTC, datetime
from unittest import mock

import pytest
import time_machine
from django.contrib.auth import authenticate, get_user_model
from django.urls import reverse

pytestmark = pytest.mark.django_db

START = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
LOCKED = "Too many failed login attempts"
WRONG = "Please enter a correct username and password"


@pytest.fixture(autouse=True)
def fresh_cache(settings):
    # Counts of other tests (same process, same addresses) must not lock anyone here.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                   "LOCATION": f"lockout-{uuid.uuid4().hex}"}}
    # Dozens of logins per test: a fast hasher (autouse, so it hashes the users the other fixtures create too).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


@pytest.fixture
def json_lines():
    from syncs.events import JsonFormatter

    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(json.loads(JsonFormatter().format(record)))

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("resync.sync")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_user("root", "root@example.org", "root-password", is_staff=True,
                                                is_superuser=True)


def login(client, username, password, address="198.51.100.7", url=None, **extra):
    url = url or reverse("login")
    data = {"username": username, "password": password}
    if url == reverse("admin:login"):
        data["next"] = reverse("admin:index")
    return client.post(url, data, REMOTE_ADDR=address, **extra)


def fail(client, username, times, **kwargs):
    for _ in range(times):
        response = login(client, username, "not-the-password", **kwargs)
        assert response.status_code == 200 and WRONG in response.content.decode()


def test_the_sixth_attempt_is_refused_even_with_the_right_password(client, alice, clock):
    fail(client, "alice", 5)

    response = login(client, "alice", "alice-password")

    page = response.content.decode()
    assert response.status_code == 200 and LOCKED in page and "try again in 15 minutes" in page
    assert "_auth_user_id" not in client.session


def test_four_failures_do_not_lock(client, alice, clock):
    fail(client, "alice", 4)

    assert login(client, "alice", "alice-password").status_code == 302


def test_another_user_or_another_address_is_not_locked(client, alice, bob, clock):
    fail(client, "alice", 5)

    assert login(client, "bob", "bob-password").status_code == 302  # same address, other user
    client.logout()
    assert login(client, "alice", "alice-password", address="203.0.113.20").status_code == 302  # other address


def test_the_lock_ends_after_its_window(client, alice, clock):
    fail(client, "alice", 5)
    clock.shift(14 * 60)
    assert LOCKED in login(client, "alice", "alice-password").content.decode()
    assert "try again in 1 minute," in login(client, "alice", "alice-password").content.decode()

    clock.shift(60 + 1)

    assert login(client, "alice", "alice-password").status_code == 302


def test_attempts_while_locked_do_not_lengthen_the_lock(client, alice, clock):
    fail(client, "alice", 5)
    for _ in range(10):
        clock.shift(60)
        login(client, "alice", "still-wrong")

    clock.shift(5 * 60 + 1)

    assert login(client, "alice", "alice-password").status_code == 302


def test_after_the_lock_a_fresh_allowance_of_attempts(client, alice, clock):
    fail(client, "alice", 5)
    clock.shift(15 * 60 + 1)

    fail(client, "alice", 4)
    assert login(client, "alice", "alice-password").status_code == 302


def test_a_successful_login_clears_the_failures(client, alice, clock):
    fail(client, "alice", 4)
    assert login(client, "alice", "alice-password").status_code == 302
    client.logout()

    fail(client, "alice", 4)

    assert login(client, "alice", "alice-password").status_code == 302


def test_the_username_is_counted_whatever_its_letter_case(client, alice, clock):
    fail(client, "ALICE", 3)
    fail(client, "Alice", 2)

    assert LOCKED in login(client, "alice", "alice-password").content.decode()


def test_the_admin_login_locks_too(client, admin_user, clock):
    admin_login = reverse("admin:login")
    for _ in range(5):
        assert "staff account" in login(client, "root", "wrong", url=admin_login).content.decode()

    refused = login(client, "root", "root-password", url=admin_login)

    assert refused.status_code == 200 and LOCKED in refused.content.decode()
    clock.shift(15 * 60 + 1)
    assert login(client, "root", "root-password", url=admin_login).status_code == 302


def test_failures_at_either_login_count_together(client, admin_user, clock):
    fail(client, "root", 3)
    for _ in range(2):
        login(client, "root", "wrong", url=reverse("admin:login"))

    assert LOCKED in login(client, "root", "root-password", url=reverse("admin:login")).content.decode()
    assert LOCKED in login(client, "root", "root-password").content.decode()


def test_a_user_without_admin_access_is_not_counted_as_guessing(client, alice, clock):
    # The right password, refused by the admin because alice is not staff: no lock after five of them.
    for _ in range(6):
        assert "staff account" in login(client, "alice", "alice-password", url=reverse("admin:login")).content.decode()

    assert login(client, "alice", "alice-password").status_code == 302


def _form_answer(response):
    """The page without what differs between any two answers: the CSRF token and the username typed back."""
    page = response.content.decode()
    page = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", page)
    return re.sub(r'name="username" id="id_username"\s+value="[^"]*"', "", page)


def test_the_answers_do_not_tell_whether_the_user_exists(client, alice, clock):
    existing = [login(client, "alice", "wrong") for _ in range(6)]
    missing = [login(client, "nobody-by-this-name", "wrong") for _ in range(6)]

    assert [_form_answer(r) for r in existing] == [_form_answer(r) for r in missing]
    assert [r.status_code for r in existing] == [r.status_code for r in missing] == [200] * 6
    assert LOCKED in existing[-1].content.decode() and LOCKED in missing[-1].content.decode()


def test_a_locked_attempt_checks_no_password_for_either_kind_of_username(client, alice, clock):
    # Nothing slow runs behind a lock, for an existing user or not: no timing tells them apart.
    fail(client, "alice", 5)
    fail(client, "nobody-by-this-name", 5)

    with mock.patch("django.contrib.auth.forms.authenticate", wraps=authenticate) as checked:
        login(client, "alice", "alice-password")
        login(client, "nobody-by-this-name", "whatever")

    assert checked.call_count == 0


def test_many_usernames_from_one_address_lock_the_address(client, alice, settings, clock):
    settings.RESYNC_LOGIN_ADDRESS_FAILURES = 6
    for name in ("ann", "ben", "cat"):
        fail(client, name, 2)

    assert LOCKED in login(client, "alice", "alice-password").content.decode()
    assert login(client, "alice", "alice-password", address="203.0.113.20").status_code == 302


def test_behind_our_proxy_the_client_is_the_address_the_proxy_saw(client, alice, settings, clock):
    settings.RESYNC_NUM_PROXIES = 1
    for spoofed in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"):
        # What the client wrote itself comes before the hop our proxy appended: it changes nothing.
        login(client, "alice", "wrong", address="127.0.0.1", HTTP_X_FORWARDED_FOR=f"{spoofed}, 198.51.100.7")

    assert LOCKED in login(client, "alice", "alice-password", address="127.0.0.1",
                           HTTP_X_FORWARDED_FOR="198.51.100.7").content.decode()
    assert login(client, "alice", "alice-password", address="127.0.0.1",
                 HTTP_X_FORWARDED_FOR="203.0.113.20").status_code == 302


def test_failures_and_locks_are_logged_without_the_password(client, alice, clock, json_lines):
    fail(client, "alice", 5)
    login(client, "alice", "alice-password")

    events = [line["event"] for line in json_lines]
    assert events == ["login_failed"] * 4 + ["login_locked", "login_refused_locked"]
    locked = json_lines[4]
    assert locked["level"] == "warning"
    assert locked["username"] == "alice" and locked["client"] == "198.51.100.7"
    assert locked["locked_seconds"] == 15 * 60 and locked["attempts"] == 5
    logged = json.dumps(json_lines)
    assert "not-the-password" not in logged and "alice-password" not in logged
