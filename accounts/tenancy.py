"""The tenant chokepoint for querysets: every tenant-owned model inherits TenantModel.

Services and views reach tenant rows only through `Model.objects.for_org(org)`; an object of another
organization is then indistinguishable from one that does not exist.
"""

from django.db import models


class TenantQuerySet(models.QuerySet):
    def for_org(self, organization):
        if organization is None:
            # A missing organization is a programming error, never "no filter".
            raise ValueError("for_org() needs an organization")
        return self.filter(organization=organization)


class TenantModel(models.Model):
    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="+")

    objects = TenantQuerySet.as_manager()

    class Meta:
        abstract = True
