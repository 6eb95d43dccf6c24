"""``tourno serve`` as an operator runs it: a real gunicorn subprocess on a
free loopback port, real HTTP, real signals; and ``tourno users``."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import tourno_cmd

STARTUP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc = proc
        self.port = port
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def close(self) -> None:
        """Stop it if it still runs (SIGTERM, then SIGKILL) and release its pipe."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)
        self.proc.stderr.close()

    def wait_for_line(self, text: str, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged; stderr:\n{''.join(self.lines)}")

    def request(self, method: str, path: str, body=None, token: str | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()


def start_server(env: dict[str, str], workers: int = 2, *args: str, graceful: int = 20) -> Server:
    """A real ``tourno serve`` on a free loopback port, once it answers
    /healthz; ``args`` are more options for the command."""
    port = free_port()
    proc = subprocess.Popen(
        tourno_cmd(
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--graceful-timeout",
            str(graceful),
            *args,
        ),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = Server(proc, port)
    server.wait_for_line("Booting worker")
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            if server.request("GET", "/healthz")[0] == 200:
                return server
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def server(pg) -> Iterator[Server]:
    s = start_server(pg.env())
    yield s
    s.close()


def server_connections(pg) -> int:
    return pg.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )


#: tourno serve's default threads per worker: each holds at most one pooled connection.
THREADS = 4


def assert_connections_pooled(pg, workers: int = 2) -> None:
    """The server keeps its connections for the next requests, at most one
    per worker thread (a pool, not a connection per request)."""
    open_now = server_connections(pg)
    assert 1 <= open_now <= workers * THREADS, open_now


def test_health_ready_and_sigterm_exit_0(server, pg):
    assert server.request("GET", "/healthz") == (200, {"status": "ok"})
    # Forked workers share no connection with the master: none is open until a request needs one...
    assert server_connections(pg) == 0
    status, body = server.request("GET", "/readyz")
    assert status == 200 and body["status"] == "ready"
    # ...and a request's connection goes back to its worker's pool at its end.
    for _ in range(5):
        assert server.request("GET", "/api/v1/tournaments")[0] == 200
    assert_connections_pooled(pg)
    status, body = server.request("GET", "/api/v1/nowhere")
    assert status == 404 and body["error"]["code"] == "not_found"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0


def raw_exchange(port: int, request: bytes) -> tuple[int, str, dict]:
    """Send raw bytes; (status, Content-Type, JSON body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):  # bounded: the server closes the connection
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers.get("content-type", ""), json.loads(body)


def chunked_post(port: int, path: str, body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        parts = (body[i : i + 65536] for i in range(0, len(body), 65536))
        conn.request(
            "POST", path, body=parts, headers={"Content-Type": "application/json"}, encode_chunked=True
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_gunicorns_own_refusals_and_chunked_bodies_get_the_json_error_shape(server, pg):
    limit = 1024 * 1024
    # A chunked body has no Content-Length for werkzeug to refuse: it used to
    # be cut at the limit and answered 400 "malformed JSON".
    over = b'{"email": "a@b.c", "display_name": "' + b"x" * limit + b'"}'
    status, body = chunked_post(server.port, "/api/v1/users", over)
    assert status == 413, body
    assert body["error"]["code"] == "payload_too_large"
    # Exactly the limit is no error of size (the display name is too long for its field).
    exact = b'{"email": "a@b.c", "display_name": "' + b"x" * (limit - 38) + b'"}'
    assert len(exact) == limit
    status, body = chunked_post(server.port, "/api/v1/users", exact)
    assert status == 422, body
    assert set(body["error"]["fields"]) == {"display_name"}
    # A small chunked body works.
    status, body = chunked_post(server.port, "/api/v1/users", b'{"email": "c@h.k", "display_name": "Chunk"}')
    assert status == 201, body
    # gunicorn answers these before the app sees them; they are JSON too.
    long_line = b"GET /api/v1/tournaments?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    big_header = b"GET /api/v1/tournaments HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    many = b"".join(b"X-%d: a\r\n" % i for i in range(200))
    many_headers = b"GET /api/v1/tournaments HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    garbage = b"NOT A REQUEST\r\n\r\n"
    for request, expected, code in [
        (long_line, 414, "uri_too_long"),
        (big_header, 431, "request_header_fields_too_large"),
        (many_headers, 431, "request_header_fields_too_large"),
        (garbage, 400, "bad_request"),
    ]:
        status, content_type, body = raw_exchange(server.port, request)
        assert (status, content_type) == (expected, "application/json"), body
        assert set(body) == {"error"} and body["error"]["code"] == code
        assert set(body["error"]) == {"code", "message", "fields"}
    # The workers keep serving.
    assert server.request("GET", "/api/v1/tournaments")[0] == 200


def test_sigterm_finishes_the_request_in_flight(pg):
    server = start_server(pg.env(), workers=1)
    try:
        body = json.dumps({"email": "late@example.com", "display_name": "Late"}).encode()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        head = (
            f"POST /api/v1/users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        # A first request answered on the connection: the worker holds it
        # (kept alive), so the next one is in flight from its first byte. The
        # worker reads a request in full before a thread runs it (serve_worker).
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}\n'):
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        sock.sendall(head + body[:10])
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_line("Handling signal: term")
        sock.sendall(body[10:])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        sock.close()
        assert reply.startswith(b"HTTP/1.1 201"), reply[:200]
        assert server.proc.wait(timeout=30) == 0
        assert pg.scalar("SELECT count(*) FROM users WHERE email = 'late@example.com'") == 1
    finally:
        server.close()


def test_users_cli_create_token_list(pg):
    env = pg.env()
    run = lambda *args: subprocess.run(tourno_cmd(*args), env=env, capture_output=True, text=True, timeout=60)  # noqa: E731
    created = run("users", "create", "--email", "Boss@Example.com", "--name", "Boss", "--role", "admin")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert "shown once" in created.stderr
    stored = pg.scalar("SELECT api_token_hash FROM users WHERE email = 'boss@example.com'")
    import hashlib

    assert stored == hashlib.sha256(token.encode()).hexdigest()
    dup = run("users", "create", "--email", "boss@example.com", "--name", "B", "--role", "organizer")
    assert dup.returncode == 2 and "email: is already in use" in dup.stderr
    rotated = run("users", "token", "BOSS@example.com")
    assert rotated.returncode == 0
    assert (
        pg.scalar("SELECT api_token_hash FROM users")
        == hashlib.sha256(rotated.stdout.strip().encode()).hexdigest()
    )
    assert run("users", "token", "nobody@example.com").returncode == 1
    listed = run("users", "list")
    assert listed.returncode == 0 and "boss@example.com" in listed.stdout and "admin" in listed.stdout
    for args in (
        ("serve", "--help"),
        ("users", "--help"),
        ("users", "create", "--help"),
        ("users", "token", "--help"),
        ("users", "list", "--help"),
    ):
        assert run(*args).returncode == 0


def test_serve_refuses_a_bad_bind(pg):
    result = subprocess.run(
        tourno_cmd("serve", "--bind", "nonsense"), env=pg.env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "HOST:PORT" in result.stderr
    env = pg.env(TOURNO_BIND="localhost:99999")
    result = subprocess.run(tourno_cmd("serve"), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "TOURNO_BIND" in result.stderr


def test_end_to_end_16_players_to_a_champion(server, pg):
    env = pg.env()
    created = subprocess.run(
        tourno_cmd("users", "create", "--email", "org@example.com", "--name", "Org", "--role", "organizer"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    org = created.stdout.strip().splitlines()[-1]

    tokens: dict[int, str] = {}  # user id -> token
    for i in range(16):
        status, body = server.request(
            "POST", "/api/v1/users", {"email": f"p{i}@example.com", "display_name": f"P{i}"}
        )
        assert status == 201, body
        tokens[body["user"]["id"]] = body["token"]

    status, body = server.request(
        "POST",
        "/api/v1/tournaments",
        {"name": "Open", "game": "Chess", "format": "single_elimination", "capacity": 16},
        org,
    )
    assert status == 201, body
    tid = body["tournament"]["id"]
    assert server.request("POST", f"/api/v1/tournaments/{tid}/publish", token=org)[0] == 200
    token_of_participant: dict[int, str] = {}
    for token in tokens.values():
        status, body = server.request("POST", f"/api/v1/tournaments/{tid}/register", token=token)
        assert status == 201, body
        token_of_participant[body["participant"]["id"]] = token
    status, body = server.request("POST", f"/api/v1/tournaments/{tid}/start", token=org)
    assert status == 200 and body["tournament"]["state"] == "underway", body

    played = 0
    for _ in range(20):  # rounds, with room to spare
        status, body = server.request("GET", f"/api/v1/tournaments/{tid}/matches?state=open")
        assert status == 200
        if not body["matches"]:
            break
        for m in body["matches"]:
            # The lower participant id wins 2-1: player 1 reports, player 2 confirms.
            p1, p2 = m["player1_id"], m["player2_id"]
            s1, s2 = (2, 1) if p1 < p2 else (1, 2)
            status, rep = server.request(
                "POST",
                f"/api/v1/matches/{m['id']}/reports",
                {"player1_score": s1, "player2_score": s2},
                token_of_participant[p1],
            )
            assert status == 201, rep
            status, conf = server.request(
                "POST", f"/api/v1/matches/{m['id']}/confirm", token=token_of_participant[p2]
            )
            assert status == 200 and conf["match"]["state"] == "complete", conf
            played += 1
    assert played == 15
    status, body = server.request("GET", f"/api/v1/tournaments/{tid}")
    assert body["tournament"]["state"] == "complete", body
    status, body = server.request("GET", f"/api/v1/tournaments/{tid}/standings")
    assert status == 200
    table = body["standings"]
    assert len(table) == 16
    champion = min(token_of_participant)
    assert table[0]["participant_id"] == champion and table[0]["rank"] == 1
    assert table[0]["final_rank"] == 1 and table[0]["wins"] == 4
