"""skm_mok_console through real ansible-playbook, its console command replaying REAL MokManager screens.

The console command is tests/secureboot/replay.py serving a recording of tests/unit/captured_mokmanager/ on
stdio (the real screens from make test-secureboot): the module runs it under pexpect in a pseudo-terminal,
exactly as it runs `ipmitool sol activate` or `socat - UNIX-CONNECT:...`.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

from tests.lib.ansible_run import run_module

REPO = pathlib.Path(__file__).resolve().parents[2]
CAPTURED = REPO / "tests" / "unit" / "captured_mokmanager"
PASSWORD = "integration-secret-9"

pytestmark = pytest.mark.skipif(not (CAPTURED / "enroll.json").exists(), reason="no recorded MokManager screens")


def console(case):
    return [sys.executable, str(REPO / "tests" / "secureboot" / "replay.py"), str(CAPTURED / f"{case}.json")]


def staged(case):
    return json.loads((CAPTURED / f"{case}.json").read_text())["staged_sha1"]


def options(case, **extra):
    return dict(console_command=console(case), password=PASSWORD, fingerprint=staged(case), countdown_timeout=20,
                screen_timeout=10, key_delay=0.2, **extra)


def test_enrolls_over_a_pty_console():
    result = run_module("skm_mok_console", options("enroll"))
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["enrolled"] is True
    assert result["fingerprint"] == staged("enroll")
    assert "<<password>>" in result["transcript"]
    assert PASSWORD not in result["_stdout"] + result["_stderr"]


def test_refuses_another_key_and_says_where(tmp_path):
    transcript = tmp_path / "t.txt"
    # The real run behind this recording expected a fingerprint of zeros; MokManager showed the staged key's.
    args = options("fingerprint_mismatch", transcript_path=str(transcript)) | {"fingerprint": "00" * 20}
    result = run_module("skm_mok_console", args)
    assert result["failed"] and result["declined"] is True and result["enrolled"] is False
    assert result["screen"] == "View key 0" and "refused" in result["msg"]
    assert oct(transcript.stat().st_mode & 0o777) == "0o600"
    assert PASSWORD not in result["_stdout"] + result["_stderr"] + transcript.read_text()


def test_check_mode_runs_no_console():
    args = options("enroll")
    args["console_command"] = ["/nonexistent/console"]
    result = run_module("skm_mok_console", args, check=True)
    assert result["changed"] is True and result["enrolled"] is False and "would attach" in result["msg"]


def test_a_console_command_that_does_not_exist():
    args = options("enroll")
    args["console_command"] = "/nonexistent/console --flag"
    result = run_module("skm_mok_console", args)
    assert result["failed"] and "/nonexistent/console" in result["msg"]
    assert PASSWORD not in result["_stdout"] + result["_stderr"]
