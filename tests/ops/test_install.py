"""``bin/install`` for real, as root, into a temporary root (``--root``) with
a real, uniquely named service user, then ``tourno`` through the launcher it
writes. pip is not run: the new virtualenv (built with the system Python, as
in production) reuses this test run's packages (``--packages-from``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _admin

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "bin" / "install"
SYSTEM_PYTHON = "/usr/bin/python3"
IN_CI = os.environ.get("CI") == "true"


def _why_not() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "bin/install needs root (it creates a system user)"
    for tool in ("runuser", "useradd", "userdel"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing"
    if sys.prefix == sys.base_prefix:
        return "the tests do not run from a virtualenv, so there is none to reuse"
    system = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if system != ours:
        return f"{SYSTEM_PYTHON} is Python {system}, this virtualenv {ours}: its packages cannot be reused"
    return None


def _skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


def world_readable(path: Path) -> bool:
    """Whether any user may read the directory ``path`` (and reach it)."""
    if not path.stat().st_mode & stat.S_IROTH:
        return False
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


class Box:
    """A temporary root, its service user and the paths inside it."""

    def __init__(self, root: Path, user: str) -> None:
        self.root = root
        self.user = user
        self.venv = root / "opt/tourno/venv"
        self.env_file = root / "etc/tourno/tourno.env"
        self.launcher = root / "usr/local/bin/tourno"

    def install(self, *args: str, mode: str = "--no-service") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                INSTALL,
                mode,
                "--root",
                str(self.root),
                "--user",
                self.user,
                "--packages-from",
                sys.prefix,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )

    def env(self) -> dict[str, str]:
        values = {}
        for line in self.env_file.read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                values[key] = value
        return values

    def doctor(self, *run_as: str) -> tuple[int, dict[str, dict]]:
        out = subprocess.run(
            [*run_as, self.launcher, "doctor", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        if out.returncode not in (0, 1):
            raise AssertionError(f"doctor exited {out.returncode}: {out.stderr}")
        return out.returncode, {c["name"]: c for c in json.loads(out.stdout)["checks"]}


@pytest.fixture
def box() -> Iterator[Box]:
    reason = _why_not()
    if reason:
        _skip_or_fail(reason)
    for path in (Path(sysconfig.get_path("purelib")), ROOT):
        if not world_readable(path):
            _skip_or_fail(
                f"{path} is not readable by other users, so the service user cannot import Tourno from it"
            )
    # Not under pytest's tmp_path: /tmp/pytest-of-root is 0700, and the
    # service user must reach the files.
    root = Path(tempfile.mkdtemp(prefix="tourno-install-", dir="/tmp"))
    root.chmod(0o755)
    user = f"tourno-t{os.getpid()}"
    try:
        yield Box(root, user)
    finally:
        subprocess.run(["userdel", user], capture_output=True, timeout=30)
        subprocess.run(["groupdel", user], capture_output=True, timeout=30)
        shutil.rmtree(root, ignore_errors=True)
        admin = _admin()
        admin.connect()
        try:
            admin.execute_sql(f'DROP DATABASE IF EXISTS "{user}" WITH (FORCE)')
            admin.execute_sql(f'DROP ROLE IF EXISTS "{user}"')
        finally:
            admin.close()


def test_install_runs_doctor_through_the_launcher_and_repairs_its_venv(box):
    first = box.install()
    assert first.returncode == 0, first.stdout + first.stderr
    settings = box.env()
    # A database named before migrating, never a file in the working directory.
    assert settings["TOURNO_DATABASE_URL"] == f"sqlite:///{box.root}/var/lib/tourno/tourno.db"
    secret = settings["TOURNO_SECRET_KEY"]
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert secret not in first.stdout + first.stderr
    assert oct(box.env_file.stat().st_mode & 0o777) == "0o640"
    # The venv is built with the system interpreter, not whatever ran the tests.
    venv_python = (box.venv / "bin/python").resolve()
    assert str(venv_python).startswith("/usr/"), venv_python

    # As root, the launcher runs Tourno as the service user with the env file.
    code, checks = box.doctor()
    assert code == 1  # no worker, no scheduler on this box: doctor says so
    assert checks["database"]["status"] == "ok"
    assert checks["migrations"]["status"] == "ok", checks["migrations"]
    assert str(box.root) in checks["configuration"]["detail"]
    assert (box.root / "var/lib/tourno/tourno.db").stat().st_uid == int(
        subprocess.run(["id", "-u", box.user], capture_output=True, text=True, check=True).stdout
    )
    # Another unprivileged user cannot read the settings: a clear refusal.
    other = subprocess.run(
        ["runuser", "-u", "nobody", "--", box.launcher, "doctor"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert other.returncode == 77
    assert "run it as root" in other.stderr and "cannot read" in other.stderr
    # The service user itself runs it directly, with the same settings.
    code, checks = box.doctor("runuser", "-u", box.user, "--")
    assert checks["migrations"]["status"] == "ok" and str(box.root) in checks["configuration"]["detail"]

    # A venv whose interpreter has gone (or that the user cannot run) is rebuilt;
    # this run also moves to PostgreSQL on this machine and migrates it.
    for name in ("python", "python3"):
        link = box.venv / "bin" / name
        link.unlink()
        link.symlink_to("/nonexistent/python3")
    second = box.install("--create-database")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "rebuilding it" in second.stdout
    settings = box.env()
    assert settings["TOURNO_DATABASE_URL"] == f"postgresql:///{box.user}?host=/var/run/postgresql"
    assert settings["TOURNO_SECRET_KEY"] == secret, "a re-run must keep the secret key"
    code, checks = box.doctor()
    assert checks["database"]["status"] == "ok"
    assert checks["migrations"]["status"] == "ok", checks["migrations"]
    assert "postgresql" in checks["configuration"]["detail"]

    # Idempotent: a third run finds everything in place; with --systemd under
    # --root it writes the units for the service user and starts nothing.
    third = box.install("--create-database", mode="--systemd")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "role present" in third.stdout and "database present" in third.stdout
    assert "rebuilding" not in third.stdout
    assert "+ systemctl" not in third.stdout and "(--root: not enabled or started)" in third.stdout
    worker_unit = (box.root / "etc/systemd/system/tourno-worker@.service").read_text()
    assert f"\nUser={box.user}\n" in worker_unit and f"\nGroup={box.user}\n" in worker_unit


def test_an_interpreter_the_service_user_cannot_run_is_refused(box):
    # Like pyenv's under /root: root runs it, the service user cannot reach it.
    private = box.root / "private"
    private.mkdir(mode=0o700)
    python = private / "python3"
    python.write_text(f'#!/bin/sh\nexec {SYSTEM_PYTHON} "$@"\n')
    python.chmod(0o755)
    out = box.install("--python", str(python))
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1, out.stderr
    assert f"cannot run {python}" in out.stderr
    assert "--python /usr/bin/python3" in out.stderr
    assert not box.venv.exists()


def test_bad_options_exit_2(box):
    for args in (["--workers", "0"], ["--user", "Bad User"], ["--database-url", "nonsense"]):
        out = box.install(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith("bin/install: ") and out.stderr.count("\n") == 1


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))


def test_supervisor_mode_runs_every_program_as_the_service_user_and_deploy_cycles_them(box):
    out = box.install("--workers", "2", "--nginx", "--server-name", "api.test.example", mode="--supervisor")
    assert out.returncode == 0, out.stdout + out.stderr
    conf = (box.root / "etc/supervisor/conf.d/tourno.conf").read_text()
    assert conf.count(f"user={box.user}\n") == 3  # worker, serve, scheduler
    site = (box.root / "etc/nginx/sites-available/tourno").read_text()
    assert "server_name api.test.example;" in site and "example.com" not in site
    # Not enabled before its certificate exists: nginx would not start.
    assert not (box.root / "etc/nginx/sites-enabled/tourno").exists()
    assert "No certificate for api.test.example yet" in out.stdout

    # Debian's supervisord (root) with its conf.d include: here the same
    # program, with a main file of its own.
    main_conf = box.root / "supervisord.conf"
    main_conf.write_text(
        f"[unix_http_server]\nfile={box.root}/supervisor.sock\nchmod=0700\n"
        f"[supervisord]\nlogfile={box.root}/supervisord.log\npidfile={box.root}/supervisord.pid\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{box.root}/supervisor.sock\n"
        f"[include]\nfiles = {box.root}/etc/supervisor/conf.d/*.conf\n"
    )
    bin_dir = Path(sys.prefix) / "bin"
    ctl = [str(bin_dir / "supervisorctl"), "-c", str(main_conf)]

    def pids() -> dict[str, int]:
        status = subprocess.run([*ctl, "status"], capture_output=True, text=True, timeout=30).stdout
        return {m[1]: int(m[2]) for m in re.finditer(r"^tourno:(\S+)\s+RUNNING\s+pid (\d+)", status, re.M)}

    def wait(condition, what: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)
        return value

    subprocess.run([str(bin_dir / "supervisord"), "-c", str(main_conf)], check=True, timeout=30)
    try:
        before = wait(lambda: len(pids()) == 4 and pids(), "four programs RUNNING")
        service_uid = int(subprocess.run(["id", "-u", box.user], capture_output=True, text=True).stdout)
        for name, pid in before.items():
            assert uid_of(pid) == service_uid, f"{name} runs as uid {uid_of(pid)}"
        # Both workers heartbeat as the service user through the launcher's settings.
        wait(lambda: "2 alive" in box.doctor()[1]["workers"]["detail"], "two live workers")

        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        deploy = subprocess.run(
            [ROOT / "bin/deploy", "--tourno", str(box.launcher), "--supervisorctl", " ".join(ctl)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        assert "signal HUP tourno:tourno-serve" in deploy.stdout
        after = wait(
            lambda: (
                (p := pids())
                and len(p) == 4
                and all(p[n] != before[n] for n in p if n != "tourno-serve")
                and p
            ),
            "workers and scheduler restarted",
        )
        # The API's master stays (its workers are replaced, the socket kept).
        assert after["tourno-serve"] == before["tourno-serve"]
        for pid in after.values():
            assert uid_of(pid) == service_uid
    finally:
        subprocess.run([*ctl, "shutdown"], capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while subprocess.run(["pgrep", "-u", box.user], capture_output=True).returncode == 0:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
