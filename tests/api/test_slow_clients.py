"""Slow clients against a real ``tourno serve`` (gunicorn subprocess, loopback):
they cost the server no thread, and a request that never fully arrives gets
408. bench/slowloris.py measures the same for longer."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.api.test_serve import Server, assert_connections_pooled, start_server

SLOW_CLIENTS = 100
READ_TIMEOUT = 2


def start(env: dict[str, str], *args: str) -> Server:
    """``tourno serve`` with two workers; ``--workers`` in ``args`` wins (click keeps the last)."""
    return start_server(env, 2, *args, graceful=5)


@pytest.fixture
def server(pg) -> Iterator[Server]:
    s = start(pg.env(), "--read-timeout", str(READ_TIMEOUT))
    yield s
    s.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_reply(sock: socket.socket) -> bytes:
    """Everything until the server closes (bounded by the socket timeout)."""
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


def timed_healthz(port: int) -> float:
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    return time.monotonic() - start


def test_slow_header_clients_do_not_stall_the_api(server, pg):
    slow = []
    try:
        for _ in range(SLOW_CLIENTS):
            s = connect(server.port)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(s)
        # They trickle a byte each; the API answers others at once, database
        # requests included, from several threads at a time.
        for s in slow:
            s.sendall(b"a")
        assert timed_healthz(server.port) < 2
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: server.request("GET", "/api/v1/tournaments")[0], range(24)))
        assert statuses == [200] * 24
        for s in slow:
            s.sendall(b"a")
        assert timed_healthz(server.port) < 2
        # The threads' connections wait in the pools, no more than one each.
        assert_connections_pooled(pg)
        # Past the read timeout every slow client has its answer: 408, then EOF.
        for s in slow:
            reply = read_reply(s)
            assert reply.startswith(b"HTTP/1.1 408 "), reply[:100]
        body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["code"] == "request_timeout"
    finally:
        for s in slow:
            s.close()


def test_a_body_that_never_arrives_gets_408_and_a_slow_one_is_served(server, pg):
    body = json.dumps({"email": "slow@example.com", "display_name": "Slow"}).encode()
    head = (
        "POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    stalled = connect(server.port)
    trickled = connect(server.port)
    try:
        stalled.sendall(head + body[:5])
        started = time.monotonic()
        # Within the read timeout, in pieces: a slow body is still a request.
        for i in range(0, len(body), 10):
            trickled.sendall((head if i == 0 else b"") + body[i : i + 10])
            time.sleep(0.05)
        assert read_reply(trickled).startswith(b"HTTP/1.1 201 ")
        reply = read_reply(stalled)
        assert reply.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), reply[:100]
        assert time.monotonic() - started < READ_TIMEOUT + 3
    finally:
        stalled.close()
        trickled.close()
    assert pg.scalar("SELECT count(*) FROM users") == 1


def test_keep_alive_pipelining_and_the_size_limits(server):
    s = connect(server.port)
    try:
        # Two requests in one packet, on a kept-alive connection.
        s.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        reply = read_reply(s)
        assert reply.count(b"HTTP/1.1 200 OK") == 2, reply
    finally:
        s.close()
    # Headers without end are not buffered without end.
    s = connect(server.port)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 70_000)
        reply = read_reply(s)
        assert reply.startswith(b"HTTP/1.1 431 "), reply[:100]
    finally:
        s.close()
    # A body above the API's 1 MiB is refused at once, not waited for.
    s = connect(server.port)
    try:
        s.sendall(
            b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2000000\r\nConnection: close\r\n\r\n{"
        )
        started = time.monotonic()
        reply = read_reply(s)
        assert reply.startswith(b"HTTP/1.1 413 "), reply[:100]
        assert time.monotonic() - started < READ_TIMEOUT
    finally:
        s.close()


def test_one_thread_is_enough_for_slow_and_pipelining_clients(pg):
    # One process, one thread: any client that held the thread would stall the rest.
    server = start(pg.env(), "--workers", "1", "--threads", "1", "--read-timeout", str(READ_TIMEOUT))
    held = []
    try:
        for _ in range(3):
            s = connect(server.port)
            # A whole request, then the start of a next one that never ends.
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nX-Slow: ")
            held.append(s)
        slow = connect(server.port)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        held.append(slow)
        for s in held:
            s.sendall(b"a")
        assert timed_healthz(server.port) < 2
        assert server.request("GET", "/api/v1/tournaments")[0] == 200
        for s in held[:3]:
            reply = read_reply(s)
            assert reply.startswith(b"HTTP/1.1 200 OK"), reply[:100]
            assert b"HTTP/1.1 408 Request Timeout" in reply, reply[-300:]
        assert read_reply(slow).startswith(b"HTTP/1.1 408 ")
    finally:
        for s in held:
            s.close()
        server.close()
