"""skm_mok_enroll on this host through real ansible-playbook: the failure paths.

This host has no EFI variables (a container/VM without efivarfs), so the real mokutil answers
"EFI variables are not supported on this system": the module must fail clearly or skip when asked,
never with a traceback, never showing the password. The happy paths run against a real UEFI variable
store in tests/vm/test_mok_vm.py (make test-mok).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.lib.ansible_run import ansible_env, bin_path, run_module

PASSWORD = "n0t-in-any-output"

pytestmark = pytest.mark.skipif(os.path.isdir("/sys/firmware/efi/efivars"),
                                reason="this host has EFI variables; the no-EFI paths cannot be seen here")


def clean(result):
    text = result["_stdout"] + result["_stderr"]
    assert PASSWORD not in text
    assert "Traceback" not in text and "MODULE FAILURE" not in text
    return result


@pytest.fixture(scope="module")
def cert(session_keys):
    return session_keys("p256")


def test_no_efi_fails_clearly(cert):
    assert shutil.which("mokutil"), "Debian package mokutil must be installed for this test"
    r = clean(run_module("skm_mok_enroll", {"certificate": str(cert.cert_der), "password": PASSWORD}))
    assert r["failed"] is True and r["changed"] is False
    assert r["secure_boot"] == "unsupported"
    assert "EFI variables are not supported" in r["msg"]


@pytest.mark.parametrize("check", [False, True])
def test_no_efi_skips_when_asked(cert, check):
    r = clean(run_module("skm_mok_enroll", {"certificate": str(cert.cert_der), "password": PASSWORD,
                                            "when_unsupported": "skip"}, check=check))
    assert r.get("skipped") is True and not r.get("failed") and r["changed"] is False


def test_query_needs_no_password(cert):
    r = clean(run_module("skm_mok_enroll", {"certificate": str(cert.cert_der), "state": "query",
                                            "when_unsupported": "skip"}))
    assert r.get("skipped") is True


def _run_without_mokutil(args, tmp_path):
    """ansible-playbook in a private mount namespace where /usr/bin/mokutil is /dev/null (not executable)."""
    play = tmp_path / "play.yml"
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False,
                                 "tasks": [{"name": "under test", "skm.modsign.skm_mok_enroll": args}]}]))
    script = (f"mount --bind /dev/null {shutil.which('mokutil')} && "
              f"exec {bin_path('ansible-playbook')} -i localhost, -c local {play}")
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True,
                          env=ansible_env(), check=False)
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    result["_stdout"], result["_stderr"] = proc.stdout, proc.stderr
    return result


def test_mokutil_missing(cert, tmp_path):
    r = clean(_run_without_mokutil({"certificate": str(cert.cert_der), "password": PASSWORD}, tmp_path))
    assert r["failed"] is True and "mokutil is not installed" in r["msg"]
    r = clean(_run_without_mokutil({"certificate": str(cert.cert_der), "password": PASSWORD,
                                    "when_unsupported": "skip"}, tmp_path))
    assert r.get("skipped") is True


def test_pem_certificate_fails_even_with_skip(cert):
    r = clean(run_module("skm_mok_enroll", {"certificate": str(cert.cert), "password": PASSWORD,
                                            "when_unsupported": "skip"}))
    assert r["failed"] is True and "is PEM; mokutil needs the DER form" in r["msg"]
    assert str(cert.cert) in r["msg"]


def test_private_key_is_refused_without_showing_it(cert):
    r = clean(run_module("skm_mok_enroll", {"certificate": str(cert.key), "password": PASSWORD}))
    assert r["failed"] is True and "private key, not a certificate" in r["msg"]
    assert cert.key.read_text().splitlines()[1] not in r["_stdout"]


def test_missing_certificate(tmp_path):
    r = clean(run_module("skm_mok_enroll", {"certificate": str(tmp_path / "nope.der"), "password": PASSWORD}))
    assert r["failed"] is True and "cannot read certificate" in r["msg"] and "nope.der" in r["msg"]


def test_argument_validation(cert):
    r = clean(run_module("skm_mok_enroll", {"certificate": str(cert.cert_der)}))
    assert r["failed"] is True and "password" in r["msg"]
    r = clean(run_module("skm_mok_enroll", {"certificate": str(cert.cert_der), "state": "query",
                                            "timeout": 40000}))
    assert r["failed"] is True and "timeout must be -1" in r["msg"]
