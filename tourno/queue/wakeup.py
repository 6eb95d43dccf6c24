"""Wake-ups for SQLite workers: Unix datagram sockets next to the database file.

SQLite has no NOTIFY, so an idle SQLite worker would only find a new job on
its ``--sleep`` poll. Instead each worker's monitor binds a datagram socket
in a directory beside the database (``<db>.wake/<pid>.sock``), and whatever
dispatches (any process on the host: the API, the scheduler, a CLI, another
worker) sends one datagram to every socket there once its transaction has
committed. The poll stays as the fallback: a lost datagram, a full socket
buffer or a directory nobody may write to only makes a job wait for it.

Why datagrams on files: a sender needs no connection and never blocks (a
full receiver is skipped: it has a wake-up pending anyway), a directory
listing finds every worker on the host, and the sockets die with their
processes. A socket whose process is gone refuses datagrams; the sender
removes its file.

A datagram holds lines, each a notice: ``ready QUEUE`` (a job is ready now)
or ``due QUEUE EPOCH`` (a delayed job is due then, in epoch seconds), the
same notices PostgreSQL sends with NOTIFY.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import select
import socket
import threading
from pathlib import Path

log = logging.getLogger(__name__)

#: The longest AF_UNIX path Linux accepts is 107 bytes; longer ones are
#: reached through the directory's descriptor (``/proc/self/fd/N/name``).
MAX_PATH = 100
#: The most a datagram carries (the queues of one transaction, in practice a line or two).
MAX_DATAGRAM = 65_000


def wake_dir(database_file: str) -> Path | None:
    """The folder of wake-up sockets for this database file (None for an
    in-memory database: no other process can dispatch to it)."""
    if not database_file or database_file == ":memory:" or database_file.startswith("file::memory:"):
        return None
    return Path(os.path.abspath(database_file) + ".wake")


def _pid_of(name: str) -> int | None:
    stem = name.removesuffix(".sock").split("-", 1)[0]
    return int(stem) if stem.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


class _Dir:
    """A wake-up folder, with the short address of each socket in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def address(self, name: str) -> str:
        full = str(self.path / name)
        if len(full.encode()) <= MAX_PATH:
            return full
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._fd}/{name}"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Listener:
    """One worker's socket: bound by the monitor thread, read with :meth:`wait`."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        self._dir = _Dir(folder)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        pid = os.getpid()
        self.name = ""
        for n in range(100):
            name = f"{pid}.sock" if n == 0 else f"{pid}-{n}.sock"
            path = folder / name
            if n == 0 and path.exists():
                path.unlink(missing_ok=True)  # a dead process of the same pid
            try:
                self.sock.bind(self._dir.address(name))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    self.close()
                    raise
                continue  # another worker in this process has it
            self.name = name
            break
        else:
            self.close()
            raise OSError(errno.EADDRINUSE, f"no free wake-up socket name in {folder}")

    def wait(self, timeout: float) -> list[str]:
        """Block up to ``timeout`` seconds for a datagram; return the notice
        lines of every datagram waiting."""
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        lines: list[str] = []
        if not ready:
            return lines
        while True:
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return lines
            lines += data.decode("utf-8", "replace").splitlines()

    def close(self) -> None:
        if self.name:
            try:
                (self._dir.path / self.name).unlink(missing_ok=True)
            except OSError:
                pass
            self.name = ""
        self.sock.close()
        self._dir.close()


_sender: socket.socket | None = None
_sender_lock = threading.Lock()


def _sending_socket() -> socket.socket:
    """One unbound datagram socket per process for every send (sendto on it
    is safe from any thread), closed at exit."""
    global _sender
    with _sender_lock:
        if _sender is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            atexit.register(sock.close)
            _sender = sock
        return _sender


class _Targets:
    """The sockets of one folder as a sender sees them: (name, address)
    pairs, listed again only when the folder's mtime changes (a worker came,
    left or was cleaned up), so that a dispatch costs a stat, not a listing."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.mtime = -1
        self.pairs: list[tuple[str, str]] = []
        self._dir = _Dir(folder)  # its descriptor stays open for long paths

    def current(self) -> list[tuple[str, str]]:
        try:
            mtime = os.stat(self.folder).st_mtime_ns
            if mtime != self.mtime:
                names = sorted(n for n in os.listdir(self.folder) if n.endswith(".sock"))
                self.pairs = [(n, self._dir.address(n)) for n in names]
                self.mtime = mtime
        except OSError:
            # No folder: no SQLite worker has listened here yet.
            self.mtime, self.pairs = -1, []
            self._dir.close()
        return self.pairs


_targets: dict[Path, _Targets] = {}
_targets_lock = threading.Lock()


def send(folder: Path, lines: list[str]) -> int:
    """Send ``lines`` as one datagram to every socket in ``folder``, without
    blocking; remove the files of sockets whose process is gone. Returns how
    many sockets took it. Never raises: a wake-up is a hint."""
    with _targets_lock:
        targets = _targets.get(folder)
        if targets is None:
            targets = _targets[folder] = _Targets(folder)
        pairs = targets.current()
    if not pairs:
        return 0
    data = "\n".join(lines).encode()[:MAX_DATAGRAM]
    sock = _sending_socket()
    sent = 0
    for name, address in pairs:
        try:
            sock.sendto(data, address)
            sent += 1
        except (BlockingIOError, InterruptedError):
            pass  # its queue is full: a wake-up is pending there already
        except (ConnectionRefusedError, FileNotFoundError):
            pid = _pid_of(name)
            if pid is not None and not _alive(pid):
                try:
                    (folder / name).unlink(missing_ok=True)
                except OSError:
                    pass
        except OSError as exc:
            log.debug("wake-up to %s failed: %s", folder / name, exc)
    return sent
