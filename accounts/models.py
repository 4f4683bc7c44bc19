"""Who you are: the custom user model, in place from the first migration, and the personal
access tokens that let scripts and bots act as a person."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A Calcrooms user; usernames are what rooms show next to entries and in presence."""

    class Meta:
        db_table = "accounts_user"

    def __str__(self) -> str:
        return self.username


class AccessToken(models.Model):
    """A personal access token: a script or bot acting as its owner (`accounts.tokens`).

    Only the SHA-256 of the token is stored; the token itself is shown once, when it is made.
    A revoked token stays listed (with when it was revoked) and never works again.
    """

    class Scope(models.TextChoices):
        READ = "read", "Read"
        WRITE = "write", "Read and write"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_tokens"
    )
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=5, choices=Scope.choices, default=Scope.READ)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)  # sha256 hex
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.owner_id}, {self.scope})"

    @property
    def active(self) -> bool:
        return self.revoked is None
