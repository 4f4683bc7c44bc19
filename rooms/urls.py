from __future__ import annotations

from django.urls import path

from rooms import views

app_name = "rooms"

urlpatterns = [
    path("", views.room_list, name="list"),
    path("rooms/new/", views.room_create, name="create"),
    path("rooms/<slug:slug>/", views.room_detail, name="detail"),
    path("rooms/<slug:slug>/join/", views.room_join, name="join"),
    path("rooms/<slug:slug>/leave/", views.room_leave, name="leave"),
    path("rooms/<slug:slug>/entries/", views.room_entries, name="entries"),
    path("rooms/<slug:slug>/presence/", views.room_presence, name="presence"),
    path("rooms/<slug:slug>/members/", views.room_members, name="members"),
    path("rooms/<slug:slug>/delete/", views.room_delete, name="delete"),
    path(
        "rooms/<slug:slug>/members/<int:user_id>/remove/",
        views.member_remove,
        name="member_remove",
    ),
    path(
        "rooms/<slug:slug>/members/<int:user_id>/unbar/",
        views.member_unbar,
        name="member_unbar",
    ),
    path("rooms/<slug:slug>/invite/reset/", views.invite_reset, name="invite_reset"),
    path("rooms/<slug:slug>/history/", views.room_history, name="history"),
    path("rooms/<slug:slug>/export.csv", views.room_export, {"fmt": "csv"}, name="export_csv"),
    path("rooms/<slug:slug>/export.json", views.room_export, {"fmt": "json"}, name="export_json"),
    path("invite/<str:token>/", views.invite_accept, name="invite"),
]
