"""Encryption of credentials at rest with MultiFernet.

The first key encrypts, every key decrypts: rotate by putting a new key first, re-encrypting every stored value
(`ciphertexts_rotate`, the `rotate_encryption_keys` command), then dropping the old key. A value that no key can
decrypt raises CredentialsDecryptionError; it never comes back as ciphertext pretending to be a secret.

Every encrypted column is a TextField whose name ends in `_ciphertext` (connections' credentials, webhook
endpoints' and notification channels' secrets): rotation finds them by that name, so a new one is rotated too.
"""

import dataclasses
import functools
import json
import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
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


def _keys():
    return settings.RESYNC_ENCRYPTION_KEYS or _key_file_keys()


@functools.cache
def _fernet():
    return MultiFernet([Fernet(key) for key in _keys()])


def encrypt_json(value):
    return _fernet().encrypt(json.dumps(value, sort_keys=True).encode()).decode()


def decrypt_json(token):
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken as exc:
        raise CredentialsDecryptionError("Credentials cannot be decrypted with the configured keys") from exc


def rotate_ciphertext(token):
    return _fernet().rotate(token.encode()).decode()


# --- rotation -----------------------------------------------------------------------------------------------------

CIPHERTEXT_SUFFIX = "_ciphertext"
ROTATION_CHUNK = 500


def encrypted_columns():
    """(model, field name) of every encrypted column of every installed app."""
    return [(model, field.name) for model in apps.get_models() for field in model._meta.concrete_fields
            if field.name.endswith(CIPHERTEXT_SUFFIX)]


def key_file_prepend(key):
    """Put `key` first in the development key file (production keys come from RESYNC_ENCRYPTION_KEYS, which
    only its owner can change). Every process that reads the file afterwards encrypts with the new key."""
    if settings.RESYNC_ENCRYPTION_KEYS:
        raise ValueError("The keys come from RESYNC_ENCRYPTION_KEYS: put the new key first there, restart, "
                         "then rotate")
    Fernet(key)  # a malformed key fails here, before the file is touched
    keys = _key_file_keys()
    path = settings.RESYNC_ENCRYPTION_KEY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join([key, *keys]) + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)  # atomic: a process starting meanwhile reads the old list or the new one
    _fernet.cache_clear()


def key_file_drop_old():
    if settings.RESYNC_ENCRYPTION_KEYS:
        raise ValueError("The keys come from RESYNC_ENCRYPTION_KEYS: remove the old ones there")
    newest = _key_file_keys()[0]
    settings.RESYNC_ENCRYPTION_KEY_FILE.write_text(newest + "\n")
    _fernet.cache_clear()


@dataclasses.dataclass
class RotationReport:
    rotated: int = 0  # re-encrypted with the newest key
    changed_meanwhile: int = 0  # written by someone else during the rotation: already under the current keys
    unreadable: int = 0  # no configured key decrypts it (left as it is)
    old: int = 0  # with check_only: still encrypted with an older key

    def __add__(self, other):
        return RotationReport(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other),
                                                      strict=True)))


def ciphertexts_rotate(*, check_only=False):
    """Re-encrypt every stored value with the newest key; {"app.Model.field": RotationReport}.

    A row is written only if its value is still the one read (compare-and-set), so a credential refreshed
    during the rotation is never overwritten with the older one; the refresh encrypted it with the keys its
    process holds (run this after every process has restarted with the new key first). `check_only` counts the
    values an older key still encrypts, which must be none before an old key is removed.
    """
    newest = Fernet(_keys()[0])
    reports = {}
    for model, column in encrypted_columns():
        report = RotationReport()
        rows = model._base_manager.exclude(**{column: ""}).values_list("pk", column).order_by("pk")
        last_pk = None
        while True:
            chunk = list((rows.filter(pk__gt=last_pk) if last_pk is not None else rows)[:ROTATION_CHUNK])
            if not chunk:
                break
            last_pk = chunk[-1][0]
            for pk, token in chunk:
                report += _rotate_one(model, column, pk, token, newest, check_only)
        reports[f"{model._meta.label}.{column}"] = report
    return reports


def _rotate_one(model, column, pk, token, newest, check_only):
    try:
        newest.decrypt(token.encode())
    except InvalidToken:
        pass
    else:
        return RotationReport()  # already under the newest key: a second rotation rewrites nothing
    try:
        rotated = rotate_ciphertext(token)
    except InvalidToken:
        return RotationReport(unreadable=1)
    if check_only:
        return RotationReport(old=1)
    written = model._base_manager.filter(pk=pk, **{column: token}).update(**{column: rotated})
    return RotationReport(rotated=1) if written else RotationReport(changed_meanwhile=1)
