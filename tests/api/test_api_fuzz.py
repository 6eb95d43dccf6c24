"""Runs the schemathesis fuzzing of the API (``tests/support/fuzz_api.py``) in its own
pytest process: the fuzzer's imports stay out of this process, whose
in-process workers have a memory limit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_fuzzing_the_api_from_its_openapi_document_finds_nothing():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(ROOT / "tests" / "support" / "fuzz_api.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            # One process: the suite's own -n (pyproject addopts) would spread
            # the fuzzer over workers that each start a server.
            "-n",
            "0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
    assert " passed" in summary and "failed" not in summary, summary
