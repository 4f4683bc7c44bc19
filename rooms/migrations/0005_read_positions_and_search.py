"""Read positions, the room's latest activity, and the trigram index behind history search.

The index is PostgreSQL's (pg_trgm, GIN over `UPPER(expression)`: Django's `icontains` compares
`UPPER(expression::text) LIKE UPPER(%q%)`, which this index serves). It is created only on
PostgreSQL: the embedded SQLite default migrates without it (and searches by a scan).
"""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery

TRIGRAM_INDEX = "entry_expression_upper_trgm"


def backfill(apps, schema_editor):
    """Existing members start having read everything, each room's activity is its newest entry."""
    Room = apps.get_model("rooms", "Room")
    Membership = apps.get_model("rooms", "Membership")
    Entry = apps.get_model("rooms", "Entry")
    Membership.objects.update(
        last_read_seq=Subquery(Room.objects.filter(pk=OuterRef("room_id")).values("last_seq")[:1])
    )
    Room.objects.filter(last_seq__gt=0).update(
        last_activity=Subquery(
            Entry.objects.filter(room_id=OuterRef("pk"), seq=OuterRef("last_seq")).values(
                "created"
            )[:1]
        )
    )


def trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {TRIGRAM_INDEX} ON rooms_entry "
        "USING gin ((UPPER(expression::text)) gin_trgm_ops)"
    )


def trigram_index_drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {TRIGRAM_INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("rooms", "0004_invites_and_bars"),
    ]

    operations = [
        migrations.AddField(
            model_name="membership",
            name="last_read_seq",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="room",
            name="last_activity",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.RunPython(trigram_index, trigram_index_drop),
    ]
