from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from project.health import healthz, healthz_live, healthz_ready
from project.metrics_view import metrics_page

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("healthz/live", healthz_live, name="healthz-live"),
    path("healthz/ready", healthz_ready, name="healthz-ready"),
    path("metrics", metrics_page, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),  # ours first: tokens
    path("accounts/", include("allauth.urls")),
    path("", include("rooms.urls")),
]

# An error that the database being down caused outside a view is still a 503, not a 500.
handler500 = "project.outage.server_error"
