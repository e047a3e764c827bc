"""python manage.py api_token create|list|revoke — organization API tokens from the command line."""

import contextlib

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiToken, Organization, TokenRole
from accounts.services import api_token_create, api_token_revoke


class Command(BaseCommand):
    help = "Create, list or revoke an organization's API tokens. A new token is printed once."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a token and print it (once)")
        create.add_argument("--org", required=True, help="Organization slug")
        create.add_argument("--name", required=True)
        create.add_argument("--role", choices=TokenRole.values, default=TokenRole.MEMBER)
        listing = sub.add_parser("list", help="List tokens (prefixes only)")
        listing.add_argument("--org", required=True)
        revoke = sub.add_parser("revoke", help="Revoke a token by its prefix or id")
        revoke.add_argument("--org", required=True)
        revoke.add_argument("token", help="The token's prefix (rsk_…) or id")

    def handle(self, *args, action, org, **options):
        organization = Organization.objects.filter(slug=org).first()
        if organization is None:
            raise CommandError(f"No organization with slug '{org}'")
        if action == "create":
            token, plain = api_token_create(organization=organization, name=options["name"], role=options["role"])
            self.stderr.write(f"Created token '{token.name}' ({token.role}, id {token.code}) for {organization.slug}; "
                              "store it now, it is not shown again:")
            self.stdout.write(plain)
        elif action == "list":
            for token in ApiToken.objects.for_org(organization):
                state = "revoked" if token.revoked_at else "active"
                self.stdout.write(f"{token.prefix}\t{token.code}\t{token.name}\t{token.role}\t{state}\t"
                                  f"last used {token.last_used_at or 'never'}")
        else:
            ident = options["token"]
            tokens = ApiToken.objects.for_org(organization)
            token = tokens.filter(prefix=ident).first()
            if token is None:
                with contextlib.suppress(ValidationError):  # not a UUID: simply no such token
                    token = tokens.filter(code=ident).first()
            if token is None:
                raise CommandError(f"No token '{ident}' in organization '{org}'")
            api_token_revoke(token=token)
            self.stdout.write(f"Revoked {token.prefix} ({token.name}, id {token.code})")
