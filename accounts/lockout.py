"""The login lockout: which attempts to log in are refused after repeated failures, counted where every process
sees them. The browser's and the admin's login forms (accounts.forms) ask it before checking a password.

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

from django.conf import settings
from django.core.cache import cache

from accounts.throttling import count_hit
from syncs.events import log_event


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

    def refused(self, until):
        """Note a refused attempt; returns the minutes left of the lock ending at `until` (at least 1)."""
        log_event("login_refused_locked", level=logging.WARNING, username=self.username, client=self.address)
        return max(1, math.ceil((until - time.time()) / 60))

    @staticmethod
    def lockout_seconds():
        return _setting("RESYNC_LOGIN_LOCKOUT", 15 * 60)
