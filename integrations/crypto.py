"""Encryption of credentials at rest with MultiFernet.

The first key encrypts, every key decrypts: rotate by putting a new key first, then re-encrypting
(`rotate_ciphertext`). A value that no key can decrypt raises CredentialsDecryptionError; it never comes back
as ciphertext pretending to be a secret.
"""

import functools
import json
import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class CredentialsDecryptionError(Exception):
    pass


def _key_file_keys():
    path = settings.RESYNC_ENCRYPTION_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: when a web server and a worker start together, exactly one of them writes the key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode() + "\n")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@functools.cache
def _fernet():
    keys = settings.RESYNC_ENCRYPTION_KEYS or _key_file_keys()
    return MultiFernet([Fernet(key) for key in keys])


def encrypt_json(value):
    return _fernet().encrypt(json.dumps(value, sort_keys=True).encode()).decode()


def decrypt_json(token):
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken as exc:
        raise CredentialsDecryptionError("Credentials cannot be decrypted with the configured keys") from exc


def rotate_ciphertext(token):
    return _fernet().rotate(token.encode()).decode()
