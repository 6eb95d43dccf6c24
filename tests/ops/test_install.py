"""``bin/install`` for real, as root, into a temporary root (``--root``) with
a real, uniquely named service user, then ``tourno`` through the launcher it
writes. pip is not run: the new virtualenv (built with the system Python, as
in production) reuses this test run's packages (``--packages-from``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
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


class Box:
    """A temporary root, its service user and the paths inside it."""

    def __init__(self, root: Path, user: str) -> None:
        self.root = root
        self.user = user
        self.venv = root / "opt/tourno/venv"
        self.env_file = root / "etc/tourno/tourno.env"
        self.launcher = root / "usr/local/bin/tourno"

    def install(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                INSTALL,
                "--no-service",
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
    if not os.access(sysconfig.get_path("purelib"), os.R_OK):
        _skip_or_fail("this virtualenv's site-packages is not readable")
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

    # Idempotent: a third run finds everything in place.
    third = box.install("--create-database")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "role present" in third.stdout and "database present" in third.stdout
    assert "rebuilding" not in third.stdout


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
