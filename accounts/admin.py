from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import AccessToken, User
from accounts.tokens import token_revoke

admin.site.register(User, UserAdmin)


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin):
    """Tokens are made by their owner (the token is shown only to them); here they are seen and
    revoked, through the service, so their sockets close at once."""

    list_display = ("name", "owner", "scope", "created", "last_used", "revoked")
    list_filter = ("scope", ("revoked", admin.EmptyFieldListFilter))
    search_fields = ("name", "owner__username")
    readonly_fields = ("owner", "scope", "token_hash", "created", "last_used", "revoked")
    fields = ("name", *readonly_fields)
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens (closes their sockets)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[AccessToken]) -> None:
        for token in queryset.filter(revoked__isnull=True).select_related("owner"):
            token_revoke(owner=token.owner, token_id=token.pk)
