"""skm_certificates through real ansible-playbook: every key generation's files on a host in one task.

Oracles: openssl (the DER written is the PEM certificate's DER; the private key file is the key given), file modes
and the `current` link as the signing_key role's other paths and DKMS expect them.
"""

from __future__ import annotations

import os
import subprocess

from tests.lib.ansible_run import run_module
from tests.lib.keys import make_key


def _generation(tmp_path, name, kind="rsa2048", shared=False):
    key = make_key(tmp_path / "controller" / name, kind)
    entry = {"name": name, "certificate": key.cert.read_text()}
    if shared:
        entry.update(private_key=key.key.read_text(), combined=key.combined.read_text())
    return key, entry


def _der_of(pem_path):
    return subprocess.run(["openssl", "x509", "-in", str(pem_path), "-outform", "DER"], check=True,
                          capture_output=True).stdout


def test_generations_written_once_then_unchanged(tmp_path):
    old, old_entry = _generation(tmp_path, "20260101-000000", "p256")
    new, new_entry = _generation(tmp_path, "20261123-112902")
    host = tmp_path / "host"
    args = {"path": str(host), "generations": [old_entry, new_entry]}

    checked = run_module("skm_certificates", args, check=True, diff=True)
    assert checked["changed"] is True and not host.exists()
    assert "signing_key.der" in checked["_stdout"]

    first = run_module("skm_certificates", args)
    assert first["changed"] is True and first["current"] == "20261123-112902", first.get("msg")
    for key, name in ((old, "20260101-000000"), (new, "20261123-112902")):
        directory = host / name
        assert sorted(os.listdir(directory)) == ["signing_key.crt", "signing_key.der"]
        assert (directory / "signing_key.crt").read_bytes() == key.cert.read_bytes()
        assert (directory / "signing_key.der").read_bytes() == _der_of(key.cert)
        for file in directory.iterdir():
            assert file.stat().st_mode & 0o777 == 0o644
    assert os.readlink(host / "current") == "20261123-112902"

    second = run_module("skm_certificates", args)
    assert second["changed"] is False and second["changes"] == []


def test_shared_mode_keys_0600_and_controller_mode_takes_them_away(tmp_path):
    key, entry = _generation(tmp_path, "20261123-112902", shared=True)
    host = tmp_path / "host"
    shared = run_module("skm_certificates", {"path": str(host), "generations": [entry], "private_keys": "present"},
                        diff=True)
    assert shared["changed"] is True, shared.get("msg")
    directory = host / "20261123-112902"
    assert (directory / "signing_key.key").read_bytes() == key.key.read_bytes()
    assert (directory / "signing_key.pem").read_bytes() == key.combined.read_bytes()
    assert (directory / "signing_key.key").stat().st_mode & 0o777 == 0o600
    body = "".join(key.key.read_text().splitlines()[1:-1])[:64]
    assert body not in shared["_stdout"] + shared["_stderr"] and "private key, not shown" in shared["_stdout"]

    cert_only = {"name": entry["name"], "certificate": entry["certificate"]}
    controller = run_module("skm_certificates", {"path": str(host), "generations": [cert_only]}, diff=True)
    assert controller["changed"] is True
    assert sorted(os.listdir(directory)) == ["signing_key.crt", "signing_key.der"]
    assert body not in controller["_stdout"] + controller["_stderr"]


def test_bad_input_names_the_cause_and_writes_nothing(tmp_path):
    host = tmp_path / "host"
    _key, entry = _generation(tmp_path, "20261123-112902")
    not_pem = run_module("skm_certificates", {"path": str(host), "generations": [dict(entry, certificate="hello")]})
    assert not_pem["failed"] and "no PEM certificate" in not_pem["msg"] and "20261123-112902" in not_pem["msg"]
    escape = run_module("skm_certificates", {"path": str(host), "generations": [dict(entry, name="../etc")]})
    assert escape["failed"] and "not a plain directory name" in escape["msg"]
    missing = run_module("skm_certificates", {"path": str(host), "generations": [entry], "private_keys": "present"})
    assert missing["failed"] and "needs private_key and combined" in missing["msg"]
    assert not host.exists()
