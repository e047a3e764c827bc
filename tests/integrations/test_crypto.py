"""Credentials at rest: encrypted in the column, unreadable with the wrong key, and rotatable with MultiFernet."""

import json

import pytest
from cryptography.fernet import Fernet
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
