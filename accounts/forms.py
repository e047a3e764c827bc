"""The login forms of the browser and of the admin, which lock an account on one client after repeated failures.

Five failed attempts at one username from one client address within 15 minutes lock that pair for 15 minutes
(RESYNC_LOGIN_FAILURES, RESYNC_LOGIN_WINDOW, RESYNC_LOGIN_LOCKOUT); many failures from one address, whatever the
usernames (password spraying), lock the address (RESYNC_LOGIN_ADDRESS_FAILURES). The pair, not the username alone,
is what locks: anyone could otherwise keep a colleague out by typing wrong passwords under their name.

Every attempt counts, whether the username exists or not, and a locked attempt never reaches the password check:
the answer, and its timing, are the same for an account that exists and one that does not. The counters live in
the cache (accounts.throttling.count_hit: atomic, shared between processes when CACHE_URL is Redis), so attempts
sent at once cannot all slip in before the count catches up.
"""

import hashlib
import logging
import math
import time

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache

from accounts.throttling import client_address, count_hit
from syncs.events import log_event

LOCKED_MESSAGE = ("Too many failed login attempts. For your security, logging in from here is paused: try again in "
                  "{wait}, or ask an administrator to reset your password.")


def _setting(name, default):
    # Read at each attempt, so a changed setting applies at once (tests override them).
    return getattr(settings, name, default)


def _digest(value):
    # Usernames are whatever a client typed: hashed, they make safe, fixed-length cache keys.
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class LoginAttempts:
    """The counters of one username on one client address."""

    def __init__(self, username, address):
        self.username, self.address = username, address
        pair = f"{_digest(username.casefold())}:{_digest(address)}"
        self.pair_key = f"login:attempts:{pair}"
        self.pair_lock = f"login:locked:{pair}"
        self.address_key = f"login:failures:{_digest(address)}"
        self.address_lock = f"login:locked-address:{_digest(address)}"

    def locked_until(self):
        """When the lock on this username and address ends (a timestamp), or None."""
        until = [t for t in cache.get_many([self.pair_lock, self.address_lock]).values() if t]
        return max(until) if until else None

    def begin(self):
        """Count this attempt before checking its password, so that concurrent attempts each take their own turn;
        returns False when the allowance is spent."""
        attempts = count_hit(self.pair_key, _setting("RESYNC_LOGIN_WINDOW", 15 * 60))
        return attempts <= _setting("RESYNC_LOGIN_FAILURES", 5)

    def failed(self):
        attempts = cache.get(self.pair_key, 0)
        # A coarser count of failures per address: spraying one password over many usernames.
        failures = count_hit(self.address_key, _setting("RESYNC_LOGIN_WINDOW", 15 * 60))
        locked = False
        if attempts >= _setting("RESYNC_LOGIN_FAILURES", 5):
            locked |= self._lock(self.pair_lock, self.pair_key, reason="username_and_address", attempts=attempts)
        if failures >= _setting("RESYNC_LOGIN_ADDRESS_FAILURES", 50):
            locked |= self._lock(self.address_lock, self.address_key, reason="address", attempts=failures)
        if not locked:
            log_event("login_failed", level=logging.WARNING, username=self.username, client=self.address,
                      attempts=attempts)

    def succeeded(self):
        # The address's count is left alone: one valid account must not reset a spraying attacker's count.
        cache.delete(self.pair_key)

    def _lock(self, lock_key, count_key, *, reason, attempts):
        lockout = _setting("RESYNC_LOGIN_LOCKOUT", 15 * 60)
        until = time.time() + lockout
        # add, not set: attempts refused while locked must not push the end of the lock further away.
        if not cache.add(lock_key, until, lockout):
            return False
        cache.delete(count_key)  # the lock's end starts a fresh allowance
        log_event("login_locked", level=logging.WARNING, username=self.username, client=self.address,
                  reason=reason, attempts=attempts, locked_seconds=lockout)
        return True

    def refuse(self, until):
        minutes = max(1, math.ceil((until - time.time()) / 60))
        wait = f"{minutes} minute" if minutes == 1 else f"{minutes} minutes"
        log_event("login_refused_locked", level=logging.WARNING, username=self.username, client=self.address)
        return forms.ValidationError(LOCKED_MESSAGE.format(wait=wait), code="locked")


class LockoutMixin:
    """For a Django AuthenticationForm: refuse a locked username and address, count every attempt, clear the
    count after a success."""

    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if not username or not password:
            return super().clean()  # nothing was tried: the required-field errors say what is missing
        attempts = LoginAttempts(username, client_address(self.request) if self.request else "")
        until = attempts.locked_until()
        if until is not None:
            raise attempts.refuse(until)
        if not attempts.begin():
            # Concurrent attempts overtook this one while it was on its way: its turn is spent.
            raise attempts.refuse(time.time() + _setting("RESYNC_LOGIN_LOCKOUT", 15 * 60))
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            # Only a wrong password counts: a right one refused for another reason (an account without admin
            # access at the admin's login) is no attempt at guessing.
            if self.get_user() is None:
                attempts.failed()
            else:
                attempts.succeeded()
            raise
        attempts.succeeded()
        log_event("login_succeeded", username=username, client=attempts.address)
        return cleaned


class LoginForm(LockoutMixin, AuthenticationForm):
    """The browser's login form (accounts.views.LoginView)."""


class AdminLoginForm(LockoutMixin, AdminAuthenticationForm):
    """The admin site's login form (admin.site.login_form, set in accounts.admin)."""
