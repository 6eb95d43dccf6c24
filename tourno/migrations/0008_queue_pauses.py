"""queue_pauses: the queues no worker may claim from (``tourno queue pause``);
a queue is paused while its row exists."""

import peewee

from tourno.db import TimestampField


def up(migrator, db):
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class QueuePause(Base):
        queue = peewee.CharField(max_length=255, primary_key=True)
        paused_at = TimestampField()

        class Meta:
            table_name = "queue_pauses"

    db.create_tables([QueuePause])


def down(migrator, db):
    db.execute_sql("DROP TABLE IF EXISTS queue_pauses")
