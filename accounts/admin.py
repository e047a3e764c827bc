from django.contrib import admin

from accounts.forms import AdminLoginForm
from accounts.models import ApiToken, IdempotencyRecord, Membership, Organization
from accounts.services import api_token_revoke

# The admin's login locks a username on a client after repeated failures, as the browser's login does.
admin.site.login_form = AdminLoginForm


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "code", "created_at"]
    search_fields = ["name", "slug", "code"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["code", "created_at"]
    date_hierarchy = "created_at"
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role", "organization"]
    search_fields = ["user__username", "user__email", "organization__name", "organization__slug"]
    list_select_related = ["user", "organization"]
    autocomplete_fields = ["user", "organization"]
    readonly_fields = ["created_at"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created through the API or `manage.py api_token` (the only moment the token is shown)."""

    list_display = ["name", "prefix", "organization", "role", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["organization", "role", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "organization__name"]
    list_select_related = ["organization"]
    # Revocation is one-way (the Revoke action): clearing revoked_at here would bring a leaked token back to life.
    # A token's role is fixed when it is created, as in the API: a different role is a new token.
    readonly_fields = ["code", "organization", "prefix", "role", "created_by", "created_at", "last_used_at",
                       "revoked_at"]
    fields = ["code", "organization", "name", "prefix", "role", "created_by", "created_at", "last_used_at",
              "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # Revoked, not deleted (as in the API): the row keeps who had access and until when.
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        for token in queryset:
            api_token_revoke(token=token)
        self.message_user(request, f"Revoked {queryset.count()} token(s).")


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ["key", "organization", "status_code", "created_at"]
    list_filter = ["organization"]
    search_fields = ["key"]
    list_select_related = ["organization"]
    readonly_fields = ["organization", "key", "fingerprint", "status_code", "response", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
