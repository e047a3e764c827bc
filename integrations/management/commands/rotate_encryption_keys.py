"""python manage.py rotate_encryption_keys [--new-key | --generate] [--check] [--drop-old]

Credentials and signing secrets are encrypted with the first of the configured keys and decrypted with any of
them. To rotate:

- keys in RESYNC_ENCRYPTION_KEYS (production): `--generate` prints a new key; put it first in the variable,
  restart every web and worker process, run this command (it re-encrypts every stored value with the new key),
  `--check` until it reports no value under an older key, then remove the old key from the variable and restart.
- the development key file (var/encryption.key): `--new-key` puts a new key first and re-encrypts;
  `--drop-old` then removes the older keys, refusing while any value still needs them.

Safe to run while syncs run: a value written meanwhile is left as that writer encrypted it, and counted.
"""

from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand, CommandError

from integrations import crypto


class Command(BaseCommand):
    help = "Re-encrypt every stored credential and secret with the newest encryption key."

    def add_arguments(self, parser):
        parser.add_argument("--generate", action="store_true", help="Print a new key and change nothing")
        parser.add_argument("--new-key", action="store_true",
                            help="Put a new key first in the development key file, then re-encrypt")
        parser.add_argument("--check", action="store_true",
                            help="Count the values an older key still encrypts; fail if there are any")
        parser.add_argument("--drop-old", action="store_true",
                            help="After re-encrypting, remove the older keys from the development key file")

    def handle(self, *args, generate, new_key, check, drop_old, **options):
        if generate:
            self.stdout.write(Fernet.generate_key().decode())
            return
        try:
            if new_key:
                crypto.key_file_prepend(Fernet.generate_key().decode())
                self.stdout.write("A new key is first in the key file.")
            reports = crypto.ciphertexts_rotate(check_only=check)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        total = crypto.RotationReport()
        for column, report in reports.items():
            total += report
            self.stdout.write(
                f"{column}: {report.old} under an older key" if check else
                f"{column}: {report.rotated} re-encrypted, {report.changed_meanwhile} changed meanwhile, "
                f"{report.unreadable} unreadable")
        if total.unreadable:
            self.stderr.write(f"{total.unreadable} values no configured key decrypts: they were encrypted with a "
                              "key that is no longer configured (re-enter those credentials)")
        if check and total.old:
            raise CommandError(f"{total.old} values still need an older key: run without --check first")
        if drop_old:
            # Checked again after the rotation: a value another process wrote meanwhile may still need an old key.
            still_old = sum(report.old for report in crypto.ciphertexts_rotate(check_only=True).values())
            if still_old:
                raise CommandError(f"{still_old} values still need an older key, which is kept. Run again once "
                                   "the writes have settled.")
            try:
                crypto.key_file_drop_old()
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write("The older keys are removed from the key file.")
