"""Who you are: the custom user model, in place from the first migration."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """A Calcrooms user; usernames are what rooms show next to entries and in presence."""

    class Meta:
        db_table = "accounts_user"

    def __str__(self) -> str:
        return self.username
