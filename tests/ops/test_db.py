"""tourno.db's shared helpers and tourno.signals, on real databases and real signals.

The helpers that reach into peewee's per-thread state are pinned here: a
peewee upgrade that moves that state fails these tests, not a worker in
production.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import peewee
import pytest

from tourno import db as tdb
from tourno.errors import first_line
from tourno.signals import Waker, installed


def test_write_transaction_commits_and_rolls_back(qdb):
    with tdb.write_transaction():
        qdb.database.execute_sql(qdb.sql("INSERT INTO test_marks (key, value) VALUES (%s, %s)"), ("a", "1"))
    with pytest.raises(RuntimeError), tdb.write_transaction():
        qdb.database.execute_sql(qdb.sql("INSERT INTO test_marks (key, value) VALUES (%s, %s)"), ("b", "2"))
        raise RuntimeError("undo")
    assert qdb.rows("SELECT key FROM test_marks ORDER BY key") == [("a",)]


def test_sql_adapts_placeholders_to_the_database(qdb):
    text = tdb.sql("SELECT %s + %s")
    assert text == ("SELECT %s + %s" if qdb.kind == "postgres" else "SELECT ? + ?")
    assert qdb.database.execute_sql(text, (2, 3)).fetchone()[0] == 5


def test_commit_callbacks_are_visible_until_the_transaction_ends(qdb):
    seen: list[str] = []
    with tdb.write_transaction():
        qdb.database.after_commit(lambda: seen.append("committed"))
        assert len(tdb.commit_callbacks()) == 1
    assert seen == ["committed"]
    assert tdb.commit_callbacks() == []


def test_reset_transaction_state_after_a_raw_rollback(qdb):
    seen: list[str] = []
    txn = qdb.database.atomic()
    txn.__enter__()
    qdb.database.after_commit(lambda: seen.append("committed"))
    qdb.database.execute_sql(qdb.sql("INSERT INTO test_marks (key, value) VALUES (%s, %s)"), ("x", "1"))
    assert tdb.connection_in_transaction()
    qdb.database.execute_sql("ROLLBACK")
    tdb.reset_transaction_state()
    assert not qdb.database.in_transaction()
    assert not tdb.connection_in_transaction()
    assert tdb.commit_callbacks() == []
    # The connection is usable and autocommits again.
    qdb.database.execute_sql(qdb.sql("INSERT INTO test_marks (key, value) VALUES (%s, %s)"), ("y", "2"))
    assert qdb.rows("SELECT key FROM test_marks") == [("y",)]
    assert seen == []


def test_bounded_count_is_exact_up_to_its_cap_and_an_estimate_above(qdb):
    qdb.database.execute_sql(
        qdb.sql("INSERT INTO test_marks (key, value) VALUES " + ", ".join(["(%s, %s)"] * 40)),
        [v for i in range(40) for v in (f"k{i}", "x")],
    )
    query = "SELECT 1 FROM test_marks WHERE value = 'x'"
    exact = tdb.bounded_count(query, cap=40)
    assert (exact, exact.estimated, str(exact)) == (40, False, "40")
    assert tdb.bounded_count(query, cap=None) == 40
    over = tdb.bounded_count(query, cap=10)
    if qdb.kind == "sqlite":  # no planner estimates: always exact
        assert (over, over.estimated) == (40, False)
        return
    # Past the cap, never less than cap + 1; with fresh statistics, the planner's figure.
    assert over.estimated and over >= 11
    qdb.database.execute_sql("ANALYZE test_marks")
    analyzed = tdb.bounded_count(query, cap=10)
    assert analyzed.estimated and analyzed == 40 and str(analyzed) == "≈40"
    # A peewee query works as well, with its parameters.
    marks = peewee.Table("test_marks", ("key", "value")).bind(qdb.database)
    assert tdb.bounded_count(marks.select(marks.key).where(marks.value == "x"), cap=100) == 40


def test_discard_connection_drops_a_broken_connection(pg):
    (pid,) = pg.database.execute_sql("SELECT pg_backend_pid()").fetchone()
    killer = tdb.connect(pg.url)
    killer.connect()
    killer.execute_sql("SELECT pg_terminate_backend(%s)", (pid,))
    killer.close()
    with pytest.raises(tdb.OUTAGE_ERRORS):
        with pg.database.atomic():
            pg.database.execute_sql("SELECT 1")
    tdb.discard_connection()
    tdb.open_connection()
    assert pg.database.execute_sql("SELECT pg_backend_pid()").fetchone()[0] != pid


def test_open_connection_names_the_problem_in_one_line():
    tdb.init("postgresql://postgres@127.0.0.1:1/nothing")
    with pytest.raises(tdb.DatabaseUnavailable) as info:
        tdb.open_connection()
    assert "\n" not in str(info.value) and str(info.value)


@pytest.mark.parametrize(
    ("exc", "with_type", "text"),
    [
        (ValueError("bad input\nmore"), True, "ValueError: bad input"),
        (ValueError("bad input"), False, "bad input"),
        (ValueError(""), True, "ValueError"),
        (peewee.OperationalError("  \n"), False, "OperationalError"),
    ],
)
def test_first_line(exc, with_type, text):
    assert first_line(exc, with_type=with_type) == text


def test_waker_wakes_a_wait_from_another_thread():
    waker = Waker()
    try:
        threading.Timer(0.05, waker.wake).start()
        started = time.monotonic()
        assert waker.wait(5.0) is True
        assert time.monotonic() - started < 4.0
        assert waker.wait(0.01) is False  # drained: no stale wake-up left
    finally:
        waker.close()
    waker.wake()  # after close: ignored, not an error


def test_installed_restores_the_previous_handlers_and_a_signal_wakes_the_wait():
    received: list[int] = []
    waker = Waker()
    previous = signal.getsignal(signal.SIGUSR1)

    def on_signal(signum, frame):
        received.append(signum)
        waker.wake()

    try:
        with installed({signal.SIGUSR1: on_signal}) as active:
            assert active is True
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
            assert waker.wait(5.0) is True
        assert received == [signal.SIGUSR1]
        assert signal.getsignal(signal.SIGUSR1) is previous
    finally:
        waker.close()


def test_installed_does_nothing_off_the_main_thread():
    result: list[object] = []

    def body():
        with installed({signal.SIGUSR1: lambda *a: None}) as active:
            result.append(active)
        result.append(signal.getsignal(signal.SIGUSR1))

    previous = signal.getsignal(signal.SIGUSR1)
    thread = threading.Thread(target=body)
    thread.start()
    thread.join(5)
    assert result == [False, previous]


def test_in_manual_commit_tells_a_manual_block_from_a_transaction(qdb):
    assert tdb.in_manual_commit() is False  # no transaction at all
    with tdb.write_transaction():
        assert tdb.in_manual_commit() is False
    with qdb.database.manual_commit():
        assert tdb.in_manual_commit() is True
        qdb.database.begin()
        qdb.database.execute_sql(qdb.sql("INSERT INTO test_marks (key, value) VALUES (%s, %s)"), ("m", "1"))
        qdb.database.commit()
    assert tdb.in_manual_commit() is False
    assert qdb.rows("SELECT key FROM test_marks") == [("m",)]


def test_peewee_errors_turns_a_raw_cursor_error_into_peewees(pg):
    with pytest.raises(peewee.ProgrammingError), tdb.peewee_errors():
        pg.database.cursor().execute("SELECT * FROM no_such_table")
