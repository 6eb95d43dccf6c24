"""Four real ``tourno work`` processes drain 2,000 emails to a real SMTP
server (aiosmtpd on loopback) while one of them is killed with SIGKILL.

The server records the Message-ID of every message it accepts. Message-IDs
are a function of the outbox row (``<outbox-{id}-{hash}@domain>``), so a row
sent twice shows up as the same Message-ID twice.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import tourno_cmd
from tests.mail.test_mail import free_port
from tourno import db as tdb
from tourno.jobs.periodic import SendBulkEmailsJob
from tourno.mail import message, store
from tourno.mail.models import EmailOutbox
from tourno.queue import dispatch_many

pytestmark = pytest.mark.slow

ROWS = 2000
WORKERS = 4
DOMAIN = "tourno.test"


class MessageIds:
    """aiosmtpd handler: the Message-ID of every accepted message, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.ids.append(str(msg["Message-ID"]))
        return "250 2.0.0 Ok: queued"

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.ids)


@pytest.fixture
def smtp_ids():
    handler = MessageIds()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


class Workers:
    """``tourno work`` subprocesses, output in log files; killed at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, env: dict[str, str]) -> subprocess.Popen:
        log = self.directory / f"worker-{len(self.procs)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                tourno_cmd("work", "--sleep", "0.2"),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append((proc, log))
        return proc

    def logs(self) -> str:
        return "".join(
            f"--- pid {p.pid} rc={p.poll()}\n{log.read_text(errors='replace')[-3000:]}"
            for p, log in self.procs
        )

    def kill_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc, _ in self.procs:
            proc.wait(10)


@pytest.fixture
def workers(tmp_path):
    manager = Workers(tmp_path)
    try:
        yield manager
    finally:
        manager.kill_all()


def wait_for(condition: Callable[[], Any], what: str, workers: Workers, timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it is truthy (no bare sleeps: the machine is small and noisy)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{workers.logs()}")
        time.sleep(0.02)


def count(pg, where: str, params: tuple = ()) -> int:
    return pg.scalar(f"SELECT count(*) FROM email_outbox WHERE {where}", params)


def test_four_workers_drain_2000_emails_and_a_sigkill_loses_none(pg, smtp_ids, workers):
    """Every row ends ``sent``, every row's Message-ID reaches the server, and
    at most one message is delivered twice.

    The bound: the killed worker's drain sends one message at a time over one
    SMTP connection and commits each row's outcome before it sends the next.
    So of the rows it held in ``sending`` when it died, at most one (the
    message in flight) can have reached the server without its ``sent``
    being recorded; the reaper returns all of them to ``pending`` and they are
    sent again, that one a second time. Rows of the live workers are never
    reaped (the reap runs once they are idle), so they are sent exactly once.
    """
    now = tdb.utcnow()
    EmailOutbox.insert_many(
        [
            {
                "dedupe_key": f"crash:{i}",
                "to_email": f"p{i}@example.com",
                "template": "test",
                "context": {},
                "priority": 5,
                "available_at": now - dt.timedelta(minutes=1),
                "created_at": now - dt.timedelta(minutes=1),
            }
            for i in range(ROWS)
        ]
    ).execute()
    env = pg.env(
        TOURNO_MAIL_TRANSPORT="smtp",
        TOURNO_MAIL_HOST="127.0.0.1",
        TOURNO_MAIL_PORT=str(smtp_ids.port),
        TOURNO_MAIL_FROM=f"Tourno <noreply@{DOMAIN}>",
        TOURNO_MAIL_RATE="100000",
    )
    procs = [workers.start(env) for _ in range(WORKERS)]
    wait_for(lambda: pg.scalar("SELECT count(*) FROM workers") == WORKERS, "the workers to register", workers)
    # One drain per worker; each drains until the outbox is empty.
    dispatch_many([SendBulkEmailsJob() for _ in range(WORKERS)])

    victim = procs[0]
    mine = "locked_by LIKE %s"
    victim_lock = (f"%:{victim.pid}:%",)

    def mid_drain() -> bool:
        return (
            count(pg, "status = 'sent'") >= ROWS // 5
            and count(pg, "status = 'pending'") > ROWS // 5
            and count(pg, f"status = 'sending' AND {mine}", victim_lock) > 0
        )

    wait_for(mid_drain, "the victim to hold a claimed batch in the middle of the drain", workers)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(10) == -signal.SIGKILL
    held = count(pg, f"status = 'sending' AND {mine}", victim_lock)
    assert held > 0, "the victim died between batches: the test proves nothing"
    assert count(pg, "status = 'sent'") < ROWS

    # The live workers send everything else; the victim's rows wait for the reaper.
    def others_done() -> bool:
        return count(pg, "status = 'pending'") == 0 and count(pg, "status = 'sending'") == held

    wait_for(others_done, "the live workers to drain the rest", workers, timeout=90)
    assert count(pg, f"status = 'sending' AND {mine}", victim_lock) == held
    assert count(pg, "status = 'sent'") == ROWS - held

    # Ten minutes do not pass in a test: the reap age is a parameter.
    assert store.reap(now=tdb.utcnow(), max_attempts=8, reap_after=dt.timedelta(0)) == held
    assert count(pg, "status = 'pending'") == held
    SendBulkEmailsJob().dispatch()
    wait_for(lambda: count(pg, "status = 'sent'") == ROWS, "the reaped rows to be sent", workers)

    for proc in procs[1:]:
        proc.send_signal(signal.SIGTERM)
    for proc in procs[1:]:
        assert proc.wait(30) == 0, workers.logs()

    assert count(pg, "status <> 'sent'") == 0
    delivered = Counter(smtp_ids.snapshot())
    expected = {
        message.message_id(row_id, key, DOMAIN): row_id
        for row_id, key in pg.rows("SELECT id, dedupe_key FROM email_outbox")
    }
    assert set(delivered) == set(expected)  # every row delivered, nothing else
    twice = {mid: n for mid, n in delivered.items() if n > 1}
    assert sum(delivered.values()) == ROWS + sum(n - 1 for n in twice.values())
    assert len(twice) <= 1 and all(n == 2 for n in twice.values()), twice
    # A duplicate can only be one of the rows the victim held; those went out a second time.
    reaped = {
        row_id for (row_id,) in pg.rows("SELECT id FROM email_outbox WHERE attempts = 2 AND status = 'sent'")
    }
    assert len(reaped) == held
    assert {expected[mid] for mid in twice} <= reaped
