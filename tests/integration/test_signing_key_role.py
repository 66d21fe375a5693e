"""The signing_key role in each mode (then MOK and the report roles) through real ansible-playbook.

Checks what lands on the "host" (here a directory of localhost): which files, which modes, no private
key in controller mode, both certificates trusted through a rotation, a second run changes nothing.
MOK: this machine has no EFI variables, so the mok role must skip cleanly and report 'unsupported'.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _signing as signing
from tests.lib.ansible_run import REPO, run_playbook

PLAYBOOK = REPO / "tests" / "roles" / "signing_key" / "tests_modes.yml"


def converge(root: pathlib.Path, mode: str, **extra: str) -> tuple[dict, dict]:
    args = ["-e", f"skm_test_root={root}", "-e", f"mode={mode}"]
    for key, value in extra.items():
        args += ["-e", f"{key}={value}"]
    proc = run_playbook(PLAYBOOK, *args)
    report = json.loads(proc.stdout)
    stats = report["stats"]["localhost"]
    assert stats["failures"] == 0 and stats["unreachable"] == 0, proc.stdout[-4000:]
    return stats, json.loads((root / "facts.json").read_text())


@pytest.fixture
def root(tmp_path, debian_kernel, debian_sample):
    modules = tmp_path / "modules"
    modules.mkdir()
    for rel in debian_sample[:3]:
        shutil.copy(debian_kernel.modules_dir / rel, modules / rel.name)
    return tmp_path


@pytest.mark.parametrize("mode", ["controller", "shared", "host"])
def test_modes_put_only_what_each_host_needs(mode, root):
    stats, facts = converge(root, mode)
    assert stats["changed"] > 0
    again, facts2 = converge(root, mode)
    assert again["changed"] == 0, "second converge changed something"
    assert facts2["fingerprint"] == facts["fingerprint"] and len(facts["fingerprint"]) == 64
    host = root / "host" / "current"
    names = sorted(p.name for p in host.iterdir())
    if mode == "controller":
        assert names == ["signing_key.crt", "signing_key.der"]
        assert facts["private_key"] == ""
        assert (root / "controller" / "current" / "signing_key.key").exists()
    elif mode == "shared":
        assert names == ["signing_key.crt", "signing_key.der", "signing_key.key", "signing_key.pem"]
        assert (host / "signing_key.key").read_bytes() == (root / "controller" / "current" / "signing_key.key").read_bytes()
        assert oct((host / "signing_key.key").stat().st_mode & 0o777) == "0o600"
    else:
        assert not (root / "controller").exists(), "host mode made a key on the controller"
        assert "signing_key.key" in names
    # The certificate handed to the host is the key's own (fingerprint as the fact says).
    trusted = signing.TrustedCertificate.from_file(facts["certificate"])
    assert trusted.id.fingerprint == facts["fingerprint"]
    assert facts["mok"] == "unsupported" and facts["pending"] == []
    # The report audited the three Debian-signed modules: none is signed by our key.
    report = json.loads((root / "report" / "fleet-report.json").read_text())
    row = report["hosts"][0]
    assert row["host"] == "localhost" and int(row["modules_total"]) == 3 and int(row["modules_foreign"]) == 3
    assert "| localhost |" in (root / "report" / "fleet-report.md").read_text()


def test_rotation_keeps_the_previous_certificate_trusted(root):
    _stats, first = converge(root, "controller")
    _stats, rotated = converge(root, "controller", refresh="always")
    assert rotated["fingerprint"] != first["fingerprint"]
    assert len(rotated["trusted"]) == 2
    fingerprints = {signing.TrustedCertificate.from_file(p).id.fingerprint for p in rotated["trusted"]}
    assert fingerprints == {first["fingerprint"], rotated["fingerprint"]}
    assert all(re.search(r"/\d{8}-\d{6}(-\d+)?/signing_key.crt$", p) for p in rotated["trusted"])


def test_switching_to_controller_mode_removes_host_private_keys(root):
    converge(root, "shared")
    assert (root / "host" / "current" / "signing_key.key").exists()
    converge(root, "controller")
    assert not list((root / "host").rglob("signing_key.key")) and not list((root / "host").rglob("signing_key.pem"))
