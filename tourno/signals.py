"""Signals and waking a sleeping loop, for the worker and the scheduler.

Signal handlers only set flags and wake the loop (STYLE: signals only set
flags); the loop sleeps in :meth:`Waker.wait`, which returns early when
:meth:`Waker.wake` is called from a handler or another thread.

Why a self-pipe and not ``threading.Event``: ``Event.set()`` takes a lock, and
a handler that runs while the main thread holds that lock (inside
``Event.wait``) deadlocks. ``os.write`` to a non-blocking pipe is safe there.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any]


class Waker:
    """A self-pipe: :meth:`wait` sleeps until a timeout or a :meth:`wake`."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self.closed = False

    def fileno(self) -> int:
        """The read end, for callers that ``select`` on it with other sockets."""
        return self._r

    def wake(self) -> None:
        """Interrupt a :meth:`wait` (safe from signal handlers and other threads)."""
        if self.closed:
            return  # its descriptors may belong to another file by now
        try:
            os.write(self._w, b"\0")
        except OSError as exc:
            # EAGAIN: the pipe is full, so a wake-up is pending anyway.
            # EBADF: closed, the loop has ended.
            if exc.errno not in (errno.EAGAIN, errno.EBADF):
                raise

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when woken early."""
        if seconds <= 0:
            return False
        ready, _, _ = select.select([self._r], [], [], seconds)
        if ready:
            self.drain()
        return bool(ready)

    def drain(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


@contextmanager
def installed(handlers: Mapping[signal.Signals, Handler]) -> Iterator[bool]:
    """Install ``handlers`` (signal -> handler) for the block and put
    the previous ones back after it. Off the main thread, where Python cannot
    install handlers, it does nothing and yields False."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    saved: dict[signal.Signals, Any] = {}
    try:
        for sig, handler in handlers.items():
            saved[sig] = signal.signal(sig, handler)
        yield True
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)
