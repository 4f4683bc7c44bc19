from __future__ import annotations

from django.contrib import admin

from rooms.models import Entry, Membership, Room, RoomBar, RoomInvite


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "owner", "visibility", "last_seq", "created"]
    list_filter = ["visibility"]
    search_fields = ["name", "slug", "owner__username"]
    raw_id_fields = ["owner"]
    readonly_fields = ["last_seq"]  # only entry_submit moves it, under the room's lock
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["room", "user", "role", "joined"]
    list_filter = ["role"]
    search_fields = ["room__slug", "user__username"]
    raw_id_fields = ["room", "user"]


@admin.register(Entry)
class EntryAdmin(admin.ModelAdmin):
    """History is durable: entries are read-only here (no add, change or delete)."""

    list_display = ["room", "seq", "author", "expression", "result", "error", "created"]
    list_filter = ["room"]
    search_fields = ["expression", "author__username"]
    list_select_related = ["room", "author"]
    show_full_result_count = False

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(RoomInvite)
class RoomInviteAdmin(admin.ModelAdmin):
    """Invite links: revoke one by setting `revoked_at` (the owner's reset revokes them all)."""

    list_display = ["room", "created_by", "created", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["room__slug", "created_by__username"]
    raw_id_fields = ["room", "created_by"]
    readonly_fields = ["token", "created"]
    list_select_related = ["room", "created_by"]

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False  # links are made on the members page, with a random token


@admin.register(RoomBar)
class RoomBarAdmin(admin.ModelAdmin):
    """People removed from rooms. Deleting a bar lifts it, as the owner's Unbar does."""

    list_display = ["room", "user", "barred_by", "created"]
    search_fields = ["room__slug", "user__username"]
    raw_id_fields = ["room", "user", "barred_by"]
    list_select_related = ["room", "user", "barred_by"]
