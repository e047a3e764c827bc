"""Production settings come from the environment: the environment docs/production.md documents passes
`check --deploy --fail-level WARNING`, and with DEBUG off Resync refuses to start on a missing or weak key."""

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- production-environment -->"


def documented_environment():
    """The sh block after the marker in docs/production.md, its <placeholders> filled with real values."""
    text = (ROOT / "docs" / "production.md").read_text()
    block = re.search(rf"{re.escape(MARKER)}\s*```sh\n(.*?)```", text, re.DOTALL).group(1)
    values = {}
    for line in block.strip().splitlines():
        name, value = line.split("=", 1)
        values[name] = value
    fill = {"SECRET_KEY": secrets.token_urlsafe(64), "RESYNC_ENCRYPTION_KEYS": Fernet.generate_key().decode()}
    return {name: fill.get(name) or re.sub(r"<[^>]*>", "placeholder", value) for name, value in values.items()}


def manage(*args, environment):
    # Only the variables given: nothing from the developer's or CI's own environment may make the check pass.
    keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**keep, **environment},
                          capture_output=True, text=True, timeout=120)


def test_the_documented_production_environment_passes_check_deploy():
    environment = documented_environment()
    assert environment["DEBUG"] == "false" and environment["SECURE_HSTS_SECONDS"] == "31536000"

    result = manage("check", "--deploy", "--fail-level", "WARNING", environment=environment)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_without_the_documented_security_settings_check_deploy_fails():
    environment = documented_environment()
    for name in ("SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"):
        del environment[name]

    result = manage("check", "--deploy", "--fail-level", "WARNING", environment=environment)

    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr


@pytest.mark.parametrize("secret_key", [None, "resync-insecure-development-key-change-me-in-production", "short",
                                        "a" * 60])
def test_with_debug_off_resync_refuses_to_start_without_a_real_secret_key(secret_key):
    environment = {name: value for name, value in documented_environment().items() if name != "SECRET_KEY"}
    if secret_key is not None:
        environment["SECRET_KEY"] = secret_key

    result = manage("check", environment=environment)

    assert result.returncode != 0
    assert "SECRET_KEY must be set to a long random value" in result.stderr
    if secret_key:
        assert secret_key not in result.stderr  # the refusal never quotes the key
