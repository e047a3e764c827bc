"""The login forms of the browser and of the admin: Django's, with the lockout of accounts.lockout asked before a
password is checked and told how each attempt ended."""

import time

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm

from accounts.lockout import LoginAttempts
from accounts.throttling import client_address
from syncs.events import log_event

LOCKED_MESSAGE = ("Too many failed login attempts. For your security, logging in from here is paused: try again in "
                  "{wait}, or ask an administrator to reset your password.")


def _refusal(attempts, until):
    minutes = attempts.refused(until)
    wait = f"{minutes} minute" if minutes == 1 else f"{minutes} minutes"
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
            raise _refusal(attempts, until)
        if not attempts.begin():
            # Concurrent attempts overtook this one while it was on its way: its turn is spent.
            raise _refusal(attempts, time.time() + attempts.lockout_seconds())
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
