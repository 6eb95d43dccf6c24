"""The gunicorn worker of ``tourno serve``: gthread, but a thread only ever
gets a request that has fully arrived.

Stock gthread hands a connection to a thread once its first byte is in; the
thread then blocks reading the rest of the headers, and the app blocks
reading the body. A client sending a byte a second holds that thread for as
long as it likes, so as many such clients as there are threads stall the API
(with sync workers, as many as there are processes: two). Here the worker's
main loop, which already multiplexes its sockets with a selector, reads each
request's headers, and a body of announced length up to the API's limit,
from the non-blocking socket into a buffer; only then does a thread take the
request, and the parser reads it from that buffer. A slow client costs a
buffer and a selector entry, never a thread, so the thread pool is the
request concurrency (and so the bound on database connections per process).

A request that has not fully arrived ``read_timeout`` seconds after its first
byte is answered 408 and closed (an idle connection that sent nothing is
closed quietly), as nginx's ``client_header_timeout`` and
``client_body_timeout`` do; headers that go on past MAX_HEADER_BYTES get 431. Chunked bodies and ``Expect: 100-continue`` are
handed over after the headers: the parser and the app read those as
gunicorn always has (behind the reverse proxy, which buffers them, they do not
occur). TLS connections are not buffered (``tourno serve`` has no TLS; the
proxy terminates it).

Everything here is in the worker's main thread except :meth:`handle`.
"""

from __future__ import annotations

import errno
import io
import json
import selectors
import socket
import time
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from tourno.api.errors import error_document
from tourno.api.worker import refusal, response_bytes

#: Header bytes buffered at most (nginx allows 32 KiB): a request whose
#: headers go on past this is answered 431 by the main loop. Smaller ones
#: meet the parser's own limits (limit_request_line, limit_request_fields).
MAX_HEADER_BYTES = 64 * 1024
#: Seconds a connection answered 408 is read (and discarded) before closing.
LINGER_SECONDS = 2.0


class PendingRequest:
    """What the main loop has read of one request so far."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.buffer = bytearray()
        self.end: int | None = None  # where the body ends, once the headers are in

    def complete(self, max_body: int) -> bool:
        if self.end is None:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return False
            self.end = head_end + 4 + body_to_buffer(bytes(self.buffer[:head_end]), max_body)
        return len(self.buffer) >= self.end

    def headers_too_large(self) -> bool:
        return self.end is None and len(self.buffer) > MAX_HEADER_BYTES


def body_to_buffer(head: bytes, max_body: int) -> int:
    """How many body bytes to wait for before a thread takes the request: the
    Content-Length, when it is the only framing and within the API's limit;
    otherwise 0, and the parser (or the app, with 413) decides."""
    lengths = []
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        name = name.strip().lower()
        if not sep or name in (b"transfer-encoding", b"expect"):
            return 0
        if name == b"content-length":
            lengths.append(value.strip())
    if len(lengths) != 1 or not lengths[0].isdigit():
        return 0
    length = int(lengths[0])
    return length if length <= max_body else 0


def timeout_response(seconds: float) -> bytes:
    """408 in the API's error shape, for the main loop to send."""
    document = error_document("request_timeout", f"the request did not arrive in full within {seconds:g} s")
    body = json.dumps(document, separators=(",", ":")).encode() + b"\n"
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


HEADERS_TOO_LARGE = response_bytes(
    431, "Request Header Fields Too Large", f"the request headers are larger than {MAX_HEADER_BYTES} bytes"
)


class BufferingThreadWorker(ThreadWorker):
    """gthread with requests read in full by the main loop (see the module)."""

    #: Seconds from a request's first byte to its last (headers and body).
    read_timeout: float = 10.0
    #: Bodies up to this size are buffered before a thread takes the request
    #: (the API's MAX_CONTENT_LENGTH).
    max_body_bytes: int = 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: dict[TConn, PendingRequest] = {}
        #: Connections answered 408, half-closed, read until the client closes
        #: (so the kernel sends no RST over the answer), until their deadline.
        self.closing: dict[TConn, float] = {}

    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.start_reading(TConn(self.cfg, client, address, listener.getsockname()))

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        # A kept-alive connection's next request: buffered like the first.
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.start_reading(conn)

    def start_reading(self, conn: TConn, already: bytes = b"") -> None:
        if self.cfg.is_ssl:
            super().enqueue_req(conn)
            return
        conn.sock.setblocking(False)
        pending = PendingRequest(time.monotonic() + self.read_timeout)
        pending.buffer += already
        self.reading[conn] = pending
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_request_bytes, conn))
        if already:
            self.consider(conn, pending)

    def enqueue_req(self, conn: TConn) -> None:
        # After a kept-alive response, gunicorn hands a connection straight
        # back to a thread when bytes of a next (pipelined) request are left
        # over; they may be only part of it, so the loop reads the rest.
        if getattr(conn, "prebuffered", None) is None and conn.parser is not None and not self.cfg.is_ssl:
            leftover = conn.parser.unreader.buf.getvalue()
            if leftover:
                conn.parser.unreader.buf = io.BytesIO()
                self.start_reading(conn, leftover)
                return
        super().enqueue_req(conn)

    def on_request_bytes(self, conn: TConn, client: socket.socket) -> None:
        pending = self.reading[conn]
        try:
            data = client.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.stop_reading(conn)
            self.nr_conns -= 1
            conn.close()
            return
        if not pending.buffer:
            # The clock starts at the first byte: an idle kept-alive
            # connection is the keepalive timeout's business.
            pending.deadline = time.monotonic() + self.read_timeout
        pending.buffer += data
        self.consider(conn, pending)

    def consider(self, conn: TConn, pending: PendingRequest) -> None:
        """Hand a complete request to a thread; refuse endless headers."""
        if pending.complete(self.max_body_bytes):
            self.stop_reading(conn)
            conn.prebuffered = bytes(pending.buffer)
            conn.data_ready = True
            super().enqueue_req(conn)
        elif pending.headers_too_large():
            self.stop_reading(conn)
            self.answer_and_close(conn, HEADERS_TOO_LARGE)

    def stop_reading(self, conn: TConn) -> PendingRequest:
        self.poller.unregister(conn.sock)
        return self.reading.pop(conn)

    def handle(self, conn: TConn) -> Any:
        # In a pool thread: give the parser what the main loop has read.
        data = getattr(conn, "prebuffered", None)
        if data is not None:
            conn.prebuffered = None
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(data)
        return super().handle(conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: Exception) -> None:
        # gunicorn's own refusals (414, 431, 400 ...) in the API's JSON shape,
        # built by tourno.api.worker.
        answer = refusal(exc)
        if answer is None:
            super().handle_error(req, client, addr, exc)
            return
        status, reason, message = answer
        self.log.warning("Invalid request from ip=%s: %s (%s)", addr[0] if addr else "", exc, status)
        try:
            util.write_nonblock(client, response_bytes(status, reason, message))
        except OSError:
            self.log.debug("Failed to send error message.")

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn, pending in list(self.reading.items()):
            if now < pending.deadline:
                continue
            self.stop_reading(conn)
            if not pending.buffer:
                self.nr_conns -= 1
                conn.close()
                continue
            self.log.info("request from %s incomplete after %g s: 408", conn.client, self.read_timeout)
            self.answer_and_close(conn, timeout_response(self.read_timeout))
        for conn, deadline in list(self.closing.items()):
            if now >= deadline:
                self.finish_closing(conn)

    def answer_and_close(self, conn: TConn, response: bytes) -> None:
        """Send a short answer, half-close, and read what the client still
        sends until it closes (or LINGER_SECONDS pass), so the kernel does
        not reset the connection over the answer."""
        try:
            conn.sock.send(response)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.nr_conns -= 1
            conn.close()
            return
        self.closing[conn] = time.monotonic() + LINGER_SECONDS
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_closing_bytes, conn))

    def on_closing_bytes(self, conn: TConn, client: socket.socket) -> None:
        try:
            if client.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.finish_closing(conn)

    def finish_closing(self, conn: TConn) -> None:
        self.poller.unregister(conn.sock)
        del self.closing[conn]
        self.nr_conns -= 1
        conn.close()
