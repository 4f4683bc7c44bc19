from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from project.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),  # ours first: tokens
    path("accounts/", include("allauth.urls")),
    path("", include("rooms.urls")),
]
