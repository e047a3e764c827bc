"""Credentials at rest: encrypted in the column, unreadable with the wrong key, and rotatable with MultiFernet."""

import json
from io import StringIO

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection as db_connection

from integrations import crypto
from integrations.crypto import CredentialsDecryptionError
from integrations.models import Connection

CANARY = {"api_key": "canary-api-key-7c1e", "client_secret": "canary-client-secret-93ab"}


@pytest.fixture
def keys(settings):
    """Set the encryption keys for one test; the cached MultiFernet is rebuilt before and after."""

    def use(*new_keys):
        settings.RESYNC_ENCRYPTION_KEYS = list(new_keys)
        crypto._fernet.cache_clear()

    yield use
    crypto._fernet.cache_clear()


def new_key():
    return Fernet.generate_key().decode()


def test_the_database_column_holds_no_plaintext(org, keys):
    keys(new_key())
    connection = Connection.objects.create(organization=org, name="CRM", provider="sandbox")
    connection.credentials = CANARY
    connection.save()

    with db_connection.cursor() as cursor:
        cursor.execute("SELECT * FROM integrations_connection WHERE id = %s", [connection.pk])
        row = " ".join(str(value) for value in cursor.fetchone())

    for secret in CANARY.values():
        assert secret not in row
    assert "api_key" not in row
    assert Connection.objects.get(pk=connection.pk).credentials == CANARY


def test_empty_credentials_store_nothing(org, keys):
    keys(new_key())
    connection = Connection.objects.create(organization=org, name="CRM", provider="sandbox")
    connection.credentials = {}

    assert connection.credentials_ciphertext == ""
    assert connection.credentials == {}


def test_every_encryption_yields_a_new_ciphertext(keys):
    keys(new_key())

    assert crypto.encrypt_json(CANARY) != crypto.encrypt_json(CANARY)


def test_a_wrong_key_raises_instead_of_returning_ciphertext(org, keys):
    keys(new_key())
    connection = Connection.objects.create(organization=org, name="CRM", provider="sandbox")
    connection.credentials = CANARY
    connection.save()

    keys(new_key())

    with pytest.raises(CredentialsDecryptionError):
        _ = Connection.objects.get(pk=connection.pk).credentials
    with pytest.raises(CredentialsDecryptionError):
        crypto.decrypt_json(connection.credentials_ciphertext)


def test_garbage_ciphertext_raises(keys):
    keys(new_key())

    with pytest.raises(CredentialsDecryptionError):
        crypto.decrypt_json("not-a-fernet-token")


def test_an_old_key_still_decrypts_after_a_new_key_is_put_first(org, keys):
    old, new = new_key(), new_key()
    keys(old)
    connection = Connection.objects.create(organization=org, name="CRM", provider="sandbox")
    connection.credentials = CANARY
    connection.save()

    keys(new, old)

    assert Connection.objects.get(pk=connection.pk).credentials == CANARY


def test_rotation_re_encrypts_under_the_new_key(keys):
    old, new = new_key(), new_key()
    keys(old)
    token = crypto.encrypt_json(CANARY)

    keys(new, old)
    rotated = crypto.rotate_ciphertext(token)

    keys(new)
    assert crypto.decrypt_json(rotated) == CANARY
    with pytest.raises(CredentialsDecryptionError):
        crypto.decrypt_json(token)


def test_new_values_are_encrypted_with_the_first_key(keys):
    old, new = new_key(), new_key()
    keys(new, old)
    token = crypto.encrypt_json(CANARY)

    assert json.loads(Fernet(new.encode()).decrypt(token.encode())) == CANARY
    keys(old)
    with pytest.raises(CredentialsDecryptionError):
        crypto.decrypt_json(token)


# --- rotating the keys with the command -----------------------------------------------------------------------


@pytest.fixture
def key_file(settings, tmp_path):
    """The development key file in a temporary folder, with one key in it."""
    settings.RESYNC_ENCRYPTION_KEYS = []
    settings.RESYNC_ENCRYPTION_KEY_FILE = tmp_path / "encryption.key"
    settings.RESYNC_ENCRYPTION_KEY_FILE.write_text(new_key() + "\n")
    crypto._fernet.cache_clear()
    yield settings.RESYNC_ENCRYPTION_KEY_FILE
    crypto._fernet.cache_clear()


def stored(model, pk, column):
    return model._base_manager.values_list(column, flat=True).get(pk=pk)


def rotate(*args):
    out = StringIO()
    call_command("rotate_encryption_keys", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_every_encrypted_column_is_found_by_its_name():
    columns = {f"{model._meta.label}.{column}" for model, column in crypto.encrypted_columns()}

    assert {"integrations.Connection.credentials_ciphertext",
            "integrations.WebhookEndpoint.secrets_ciphertext"} <= columns


def test_a_new_key_re_encrypts_everything_and_the_data_stays_readable(org, key_file, make_connection):
    from integrations.webhooks import webhook_endpoint_create

    connection = make_connection()
    connection.credentials = CANARY
    connection.save()
    endpoint, plain = webhook_endpoint_create(connection=connection, name="Events")
    old_key = key_file.read_text().split()[0]
    before = stored(Connection, connection.pk, "credentials_ciphertext")

    output = rotate("--new-key")

    keys = key_file.read_text().split()
    assert len(keys) == 2 and keys[1] == old_key
    assert "integrations.Connection.credentials_ciphertext: 1 re-encrypted" in output
    after = stored(Connection, connection.pk, "credentials_ciphertext")
    assert after != before
    Fernet(keys[0]).decrypt(after.encode())  # under the new key
    with pytest.raises(InvalidToken):
        Fernet(old_key).decrypt(after.encode())
    assert "0 under an older key" in rotate("--check")

    rotate("--drop-old")

    assert key_file.read_text().split() == [keys[0]]
    assert Connection.objects.get(pk=connection.pk).credentials == CANARY
    endpoint.refresh_from_db()
    assert endpoint.secrets == [plain]


def test_check_fails_while_an_older_key_is_still_needed_and_drop_old_keeps_it(org, key_file, make_connection):
    connection = make_connection()
    connection.credentials = CANARY
    connection.save()
    crypto.key_file_prepend(new_key())  # a new key first, nothing re-encrypted yet

    with pytest.raises(CommandError, match="1 values still need an older key"):
        rotate("--check")
    assert len(key_file.read_text().split()) == 2
    assert Connection.objects.get(pk=connection.pk).credentials == CANARY


def test_a_value_changed_during_the_rotation_is_not_overwritten(org, key_file, make_connection, monkeypatch):
    connection = make_connection()
    connection.credentials = CANARY
    connection.save()
    crypto.key_file_prepend(new_key())
    refreshed = {"api_key": "refreshed-meanwhile"}
    real = crypto.rotate_ciphertext

    def rotate_while_a_refresh_lands(token):
        fresh = Connection.objects.get(pk=connection.pk)
        fresh.credentials = refreshed
        fresh.save(update_fields=["credentials_ciphertext"])
        return real(token)

    monkeypatch.setattr(crypto, "rotate_ciphertext", rotate_while_a_refresh_lands)
    reports = crypto.ciphertexts_rotate()

    assert reports["integrations.Connection.credentials_ciphertext"].changed_meanwhile == 1
    assert Connection.objects.get(pk=connection.pk).credentials == refreshed


def test_a_value_no_key_decrypts_is_counted_and_left_alone(org, key_file, make_connection):
    connection = make_connection()
    Connection.objects.filter(pk=connection.pk).update(
        credentials_ciphertext=Fernet(new_key()).encrypt(b'{"api_key": "lost"}').decode())

    output = rotate()

    assert "1 unreadable" in output and "no configured key decrypts" in output


def test_keys_from_the_environment_are_not_rewritten(settings, keys):
    keys(new_key())

    with pytest.raises(CommandError, match="RESYNC_ENCRYPTION_KEYS"):
        rotate("--new-key")
    assert len(rotate("--generate").strip()) == 44  # a Fernet key to put first in the variable
