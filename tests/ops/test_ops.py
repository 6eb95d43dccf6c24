"""The operator's files: supervisord.conf, systemd/, bin/, and sd_notify.

The supervisord tests run the real supervisord on the repository's
``supervisord.conf`` unchanged: its paths and worker count come from
``TOURNO_HOME`` and ``TOURNO_WORKERS`` (a temporary directory, 2 workers), the
database from ``QueueDB.env()``. Waits are polls with deadlines.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, tourno_cmd
from tests.support.jobs import RecordRun, Sleepy
from tourno import systemd
from tourno.config import Settings

BIN = Path(sys.executable).parent
SUPERVISORD = BIN / "supervisord"
SUPERVISORCTL = BIN / "supervisorctl"
WORKERS = ("tourno:tourno-worker_00", "tourno:tourno-worker_01")


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0, logs: Callable[[], str] = str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs()}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def short_tmp():
    """A directory with a short path: a unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="tourno-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- bin/ -----------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["build", "deploy", "install"])
def test_bin_help(script):
    out = subprocess.run([ROOT / "bin" / script, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Usage: {'sudo ' if script == 'install' else ''}bin/{script}")


def test_bin_dry_runs_print_the_steps():
    deploy = subprocess.run(
        [ROOT / "bin" / "deploy", "--dry-run", "--tourno", "tourno"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert deploy.returncode == 0, deploy.stderr
    assert deploy.stdout.splitlines() == ["+ tourno db migrate", "+ tourno queue restart"]
    for manager, api, scheduler in (
        ("systemd", "systemctl reload tourno-serve.service", "systemctl restart tourno-scheduler.service"),
        (
            "supervisor",
            "supervisorctl signal HUP tourno:tourno-serve",
            "supervisorctl restart tourno:tourno-scheduler",
        ),
    ):
        deploy = subprocess.run(
            [ROOT / "bin" / "deploy", "--dry-run", "--tourno", "tourno", "--manager", manager],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert deploy.returncode == 0, deploy.stderr
        assert deploy.stdout.splitlines() == [
            "+ tourno db migrate",
            "+ tourno queue restart",
            f"+ {api}",
            f"+ {scheduler}",
        ]
    install = subprocess.run(
        [ROOT / "bin" / "install", "--systemd", "--workers", "3", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert install.returncode == 0, install.stderr
    assert "tourno db migrate" in install.stdout
    assert (
        "systemctl enable --now tourno-serve.service tourno-scheduler.service "
        "tourno-worker@1.service tourno-worker@2.service tourno-worker@3.service" in install.stdout
    )
    missing = subprocess.run(
        [ROOT / "bin" / "install", "--dry-run"], capture_output=True, text=True, timeout=30
    )
    assert missing.returncode == 2
    assert "--systemd or --supervisor" in missing.stderr


def test_hup_puts_new_code_into_service_without_dropping_a_request(tmp_path):
    """What bin/deploy does to the API: SIGHUP to gunicorn's master. The new
    workers run the code now on disk (a copy of the package, edited), while
    a client keeps asking and never gets an error."""
    import http.client
    import json
    import threading

    code = tmp_path / "code"
    shutil.copytree(ROOT / "tourno", code / "tourno", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_")}
    env.update(TOURNO_DATABASE_URL=f"sqlite:///{tmp_path}/t.db", PYTHONPATH=str(code), PYTHONUNBUFFERED="1")
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            tourno_cmd("serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )

    def healthz() -> dict | None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert response.status == 200, response.status
            return json.loads(response.read())
        finally:
            conn.close()

    def up() -> dict | None:
        try:
            return healthz()
        except OSError:
            return None

    answers: list[dict] = []
    errors: list[str] = []
    stop = threading.Event()

    def client() -> None:
        for _ in range(20_000):
            if stop.is_set():
                return
            try:
                answers.append(healthz())
            except (OSError, AssertionError) as exc:
                errors.append(repr(exc))

    try:
        assert wait_for(up, "the server", logs=log.read_text) == {"status": "ok"}
        health = code / "tourno" / "api" / "health.py"
        source = health.read_text()
        assert 'jsonify({"status": "ok"})' in source
        health.write_text(
            source.replace('jsonify({"status": "ok"})', 'jsonify({"status": "ok", "code": "new"})')
        )
        thread = threading.Thread(target=client)
        thread.start()
        try:
            wait_for(lambda: len(answers) > 10, "answers before the HUP", logs=log.read_text)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: answers and answers[-1].get("code") == "new", "the new code", logs=log.read_text)
            seen = len(answers)
            wait_for(lambda: len(answers) > seen + 10, "answers after the HUP", logs=log.read_text)
        finally:
            stop.set()
            thread.join(timeout=30)
        assert errors == [], errors[:5]
        assert proc.poll() is None, "the master must keep running (same PID for systemd and supervisord)"
        # Old workers finish what they hold, then only the new code answers.
        assert answers[0] == {"status": "ok"}
        assert all(a.get("code") == "new" for a in answers[-10:]), answers[-10:]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=40) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# -- configuration files --------------------------------------------------------------


def test_env_example_lists_every_setting_with_its_default():
    text = (ROOT / "systemd" / "tourno.env.example").read_text()
    listed = dict(re.findall(r"^#(TOURNO_[A-Z_]+)=(.*)$", text, re.MULTILINE))
    for name, default in Settings().describe():
        assert name in listed, f"{name} missing from systemd/tourno.env.example"
        parsed = dict(Settings.from_mapping({name: listed[name]}).describe())[name]
        assert parsed == default, (
            f"{name}: the example's value {listed[name]!r} is not the default {default!r}"
        )
    assert set(listed) == {name for name, _ in Settings().describe()}


def _job_timeout(command: str) -> float:
    return float(re.search(r"--timeout (\d+)", command).group(1))


def test_stop_timeouts_exceed_the_job_timeout():
    conf = (ROOT / "supervisord.conf").read_text()
    command = re.search(r"^command=(tourno work .*)$", conf, re.MULTILINE).group(1)
    stopwait = float(re.search(r"^stopwaitsecs=(\d+)$", conf, re.MULTILINE).group(1))
    assert stopwait > _job_timeout(command)
    unit = (ROOT / "systemd" / "tourno-worker@.service").read_text()
    command = re.search(r"^ExecStart=(\S+ work .*)$", unit, re.MULTILINE).group(1)
    stop = float(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE).group(1))
    assert stop > _job_timeout(command)
    assert "\nType=notify\n" in unit


def test_systemd_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is required in CI (.ci/run installs the systemd package)")
        pytest.skip("systemd-analyze not installed (Debian/Ubuntu package: systemd)")
    # The units name /opt/tourno/venv/bin/tourno, which only bin/install
    # creates; verify checks that ExecStart is executable, so the copies
    # checked here point at this virtualenv's tourno instead. Nothing else
    # changes. verify exits 0 even on unknown keys, so any output fails too.
    units = ("tourno.target", "tourno-worker@.service", "tourno-serve.service", "tourno-scheduler.service")
    for unit in units:
        text = (ROOT / "systemd" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/opt/tourno/venv/bin/tourno", str(BIN / "tourno")))
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout + out.stderr == ""


# -- sd_notify ------------------------------------------------------------------------


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, short_tmp):
    """A datagram socket standing in for systemd's; yields (NOTIFY_SOCKET value, socket)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(short_tmp / "notify.sock")
        sock.bind(address)
        value = address
    else:
        name = f"tourno-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        value = "@" + name
    sock.settimeout(30)
    yield value, sock
    sock.close()


def test_notify_sends_one_datagram(notify_socket):
    value, sock = notify_socket
    assert systemd.notify("READY=1", "STATUS=up", environ={"NOTIFY_SOCKET": value})
    assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_notify_without_socket_is_a_no_op(short_tmp):
    assert systemd.notify("READY=1", environ={}) is False
    # Nobody listening: reported, not raised.
    assert systemd.notify("READY=1", environ={"NOTIFY_SOCKET": str(short_tmp / "gone.sock")}) is False


@pytest.mark.slow
def test_worker_notifies_ready_and_stopping(notify_socket, sqlite):
    value, sock = notify_socket
    RecordRun(key="n1").dispatch()
    proc = subprocess.run(
        tourno_cmd("work", "--stop-when-empty", "--sleep", "0.1"),
        env=sqlite.env(NOTIFY_SOCKET=value),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    messages = [sock.recv(4096).decode().split("\n") for _ in range(2)]
    assert messages[0][0] == "READY=1" and messages[0][1].startswith("STATUS=processing queues default")
    assert messages[1] == ["STOPPING=1", "STATUS=stopping (empty)"]
    assert sqlite.scalar("SELECT count(*) FROM test_runs WHERE key = 'n1'") == 1


# -- supervisord ----------------------------------------------------------------------


def _get(url: str) -> int | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return None


class Supervisor:
    """The real supervisord on the repository's supervisord.conf, in the foreground."""

    def __init__(self, qdb: Any, home: Path) -> None:
        self.home = home
        (home / "log").mkdir()
        self.env = qdb.env(
            TOURNO_HOME=str(home),
            TOURNO_WORKERS=str(len(WORKERS)),
            TOURNO_BIND=f"127.0.0.1:{free_port()}",
            TOURNO_WEB_WORKERS="1",
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        self.seen_pids: set[int] = set()
        self.output = home / "supervisord.out"
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                [SUPERVISORD, "-n", "-c", ROOT / "supervisord.conf"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [SUPERVISORCTL, "-c", ROOT / "supervisord.conf", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def status(self) -> dict[str, tuple[str, int | None]]:
        """{process: (state, pid)} from `supervisorctl status`."""
        result = {}
        for line in self.ctl("status").stdout.splitlines():
            m = re.match(r"(\S+)\s+([A-Z]+)\s*(?:pid (\d+))?", line)
            if m:
                pid = int(m.group(3)) if m.group(3) else None
                result[m.group(1)] = (m.group(2), pid)
                if pid:
                    self.seen_pids.add(pid)
        return result

    def wait_running(self, exclude: set[int] = frozenset()) -> dict[str, int]:
        """Wait until every worker is RUNNING with a pid not in ``exclude``."""

        def running():
            st = self.status()
            ok = all(st.get(w, ("", None))[0] == "RUNNING" and st[w][1] not in exclude for w in WORKERS)
            return {w: st[w][1] for w in WORKERS} if ok else None

        # Generous: a loaded 2-core machine takes seconds to start each worker.
        return wait_for(running, "all workers RUNNING", logs=self.logs, timeout=90)

    def logs(self) -> str:
        parts = [f"--- supervisord rc={self.proc.poll()}\n", self.output.read_text(errors="replace")[-3000:]]
        for log in sorted((self.home / "log").glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}")
        return "".join(parts)

    def shutdown(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # Workers run in their own process groups; none may outlive the test.
        for pid in self.seen_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def supervisor(pg, short_tmp):
    sv = Supervisor(pg, short_tmp)
    try:
        yield sv
    finally:
        sv.shutdown()


@pytest.mark.slow
def test_supervisord_runs_workers_and_stop_loses_nothing(supervisor, pg):
    pids = supervisor.wait_running()
    assert len(set(pids.values())) == 2
    assert oct((supervisor.home / "supervisor.sock").stat().st_mode & 0o777) == "0o700"
    # The API and the scheduler run beside the workers, in the same group.
    wait_for(
        lambda: all(
            supervisor.status().get(p, ("",))[0] == "RUNNING"
            for p in ("tourno:tourno-serve", "tourno:tourno-scheduler")
        ),
        "serve and scheduler RUNNING",
        logs=supervisor.logs,
    )
    health = f"http://{supervisor.env['TOURNO_BIND']}/healthz"
    wait_for(lambda: _get(health) == 200, "the API answering /healthz", logs=supervisor.logs)
    wait_for(
        lambda: pg.scalar("SELECT count(*) FROM schedule_runs") > 0,
        "a scheduled dispatch",
        logs=supervisor.logs,
    )

    for i in range(6):
        RecordRun(key=f"r{i}").dispatch()
    wait_for(
        lambda: (
            pg.scalar("SELECT count(*) FROM test_runs WHERE key LIKE %s", ("r%",)) == 6
            and pg.scalar("SELECT count(*) FROM jobs") == 0
        ),
        "6 jobs processed",
        logs=supervisor.logs,
    )

    # Stop while a job runs: SIGTERM lets it finish, nothing is lost.
    Sleepy(key="long", seconds=2.0).dispatch()
    wait_for(lambda: pg.scalar("SELECT count(*) FROM test_runs WHERE key = 'long'") == 1, "the long job")
    stopped = supervisor.ctl("stop", "tourno:*")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert pg.scalar("SELECT value FROM test_marks WHERE key = 'finished:long'") is not None
    assert pg.scalar("SELECT count(*) FROM jobs") == 0
    assert pg.scalar("SELECT count(*) FROM failed_jobs") == 0
    assert pg.scalar("SELECT count(*) FROM test_runs WHERE key = 'long'") == 1
    assert {state for state, _ in supervisor.status().values()} == {"STOPPED"}
    assert "exit status 0" in (supervisor.home / "supervisord.log").read_text()

    # Jobs dispatched while stopped wait, and run once the workers start.
    RecordRun(key="after").dispatch()
    started = supervisor.ctl("start", "tourno:*")
    assert started.returncode == 0, started.stdout + started.stderr
    supervisor.wait_running(exclude=set(pids.values()))
    wait_for(
        lambda: pg.scalar("SELECT count(*) FROM test_runs WHERE key = 'after'") == 1,
        "the job dispatched while stopped",
        logs=supervisor.logs,
    )


@pytest.mark.slow
def test_supervisorctl_restart_and_queue_restart_cycle_workers(supervisor, pg):
    first = supervisor.wait_running()

    restarted = supervisor.ctl("restart", "tourno:*")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    second = supervisor.wait_running(exclude=set(first.values()))
    # A worker heeds only a restart signalled after it started. supervisord
    # calls a process RUNNING after one second, which on a loaded machine
    # comes before the worker has registered: wait for that.
    workers = {pid for name, pid in second.items() if "worker" in name}
    wait_for(
        lambda: {r[0] for r in pg.rows("SELECT pid FROM workers")} >= workers,
        "the new workers to register",
        timeout=90,
        logs=supervisor.logs,
    )

    # `tourno queue restart`: every worker exits 0 after its current job and
    # supervisord (autorestart=true) starts a new one.
    out = subprocess.run(tourno_cmd("queue", "restart"), env=supervisor.env, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    third = supervisor.wait_running(exclude=set(first.values()) | set(second.values()))
    log = (supervisor.home / "supervisord.log").read_text()
    for name in ("tourno-worker_00", "tourno-worker_01"):
        assert f"exited: {name} (exit status 0; expected)" in log, log

    RecordRun(key="new").dispatch()
    wait_for(
        lambda: pg.scalar("SELECT pid FROM test_runs WHERE key = 'new'"),
        "a job on the new workers",
        logs=supervisor.logs,
    )
    assert pg.scalar("SELECT pid FROM test_runs WHERE key = 'new'") in set(third.values())


@pytest.mark.slow
def test_build_makes_one_file_that_runs_tourno_without_an_install(tmp_path):
    """bin/build's zipapp runs on the bare interpreter (no virtualenv, no
    Tourno installed) and does real work: migrate a database."""
    out = tmp_path / "tourno.pyz"
    build = subprocess.run(
        [str(ROOT / "bin" / "build"), "--output", str(out), "--python", sys.executable],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    assert out.stat().st_mode & 0o111
    # A fresh virtualenv of the base interpreter: no Tourno, no dependencies.
    subprocess.run([Path(sys.base_prefix) / "bin" / "python3", "-m", "venv", tmp_path / "venv"], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SHIV_ROOT": str(tmp_path / "shiv"),
        "TOURNO_DATABASE_URL": f"sqlite:///{tmp_path / 'one.db'}",
    }
    no_tourno = subprocess.run([python, "-c", "import tourno"], env=env, cwd=tmp_path, capture_output=True)
    assert no_tourno.returncode != 0
    for args, expected in (
        (["--version"], "tourno, version"),
        (["db", "migrate"], "0001_queue"),
        (["queue", "status"], "No live workers."),
    ):
        run = subprocess.run(
            [python, str(out), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        assert expected in run.stdout + run.stderr


# -- tourno up ------------------------------------------------------------------------


def test_up_print_config_runs_the_three_programs(short_tmp):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        tourno_cmd("up", "--workers", "3", "--bind", "127.0.0.1:8123", "--print-config"),
        cwd=short_tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    conf = out.stdout
    assert "programs=tourno-serve,tourno-worker,tourno-scheduler" in conf
    assert "numprocs=3" in conf
    assert f"{sys.executable} -m tourno serve --bind 127.0.0.1:8123" in conf
    assert not (short_tmp / "tourno.db").exists()  # printing the config touches nothing


@pytest.mark.slow
def test_up_demo_runs_everything_and_ctrl_c_stops_it_cleanly(short_tmp):
    """The README's first command: API, worker and scheduler under a real
    supervisord on an SQLite file; the demo tournaments start by themselves."""
    import sqlite3

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNO_")}
    env.update(PYTHONPATH=str(ROOT), TOURNO_HEARTBEAT_INTERVAL="1", TOURNO_WORKER_STALE_AFTER="5")
    log = short_tmp / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            tourno_cmd("up", "--demo", "--demo-pace", "1", "--workers", "1", "--bind", f"127.0.0.1:{port}"),
            cwd=short_tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    logs = lambda: log.read_text(errors="replace")[-4000:]  # noqa: E731
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz") == 200, "the API", timeout=60, logs=logs)

        def states() -> dict[str, int]:
            db = sqlite3.connect(short_tmp / "tourno.db", timeout=5)
            try:
                return dict(db.execute("SELECT state, count(*) FROM tournaments GROUP BY state").fetchall())
            finally:
                db.close()

        # The full ones start by themselves; the sprint is played to the end.
        wait_for(
            lambda: states().get("complete", 0) >= 1, "a demo tournament to complete", timeout=90, logs=logs
        )
        assert states().get("underway", 0) >= 2
        status = subprocess.run(
            [SUPERVISORCTL, "-c", short_tmp / ".tourno" / "supervisord.conf", "status"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        pids = [int(p) for p in re.findall(r"RUNNING\s+pid (\d+)", status)]
        assert len(pids) == 3, status
        banner = log.read_text(errors="replace")
        assert "Demo timeline:" in banner and "Demo Deadline" in banner
        # The hint names a supervisorctl that exists (a virtualenv's is rarely on PATH).
        (hint,) = re.findall(r"Processes: (\S+)", banner)
        assert Path(hint).is_file() or hint == sys.executable, hint
        # Mail is one line each, the messages kept as files; never whole messages in the output.
        assert "-------------------- email" not in banner
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0, logs()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
