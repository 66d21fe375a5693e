"""The report role and skm_kernel_facts through real ansible-playbook on this machine.

This machine is a Firecracker VM (no loadable modules, no EFI, an empty .builtin_trusted_keys), so the
running kernel's evidence says our certificate is in no module-trusting keyring: the host needs attention,
whatever its module audit says. keyctl is used when installed (make test-runtime installs keyutils).
"""

from __future__ import annotations

import json
import re
import shutil

from tests.lib.ansible_run import REPO, run_module, run_playbook
from tests.lib.keys import make_key

PLAYBOOK = REPO / "tests" / "roles" / "report" / "tests_report.yml"


def test_report_role_writes_json_markdown_and_one_self_contained_html(tmp_path, debian_kernel, debian_sample):
    modules = tmp_path / "modules"
    modules.mkdir()
    for rel in debian_sample[:2]:
        shutil.copy(debian_kernel.modules_dir / rel, modules / rel.name)
    key = make_key(tmp_path / "key", "p256", cn="skm report fleet")
    proc = run_playbook(PLAYBOOK, "-e", f"skm_test_root={tmp_path}", "-e", f"skm_test_cert={key.cert}")
    stats = json.loads(proc.stdout)["stats"]["localhost"]
    assert stats["failures"] == 0, proc.stdout[-4000:]
    report = json.loads((tmp_path / "report" / "fleet-report.json").read_text())
    assert report["schema"] == "skm.modsign/fleet-report" and report["schema_version"] == 2
    (host,) = report["hosts"]
    assert host["modules_total"] == 2 and host["modules_foreign"] == 2      # Debian-signed, not by our key
    runtime = host["runtime"]
    assert runtime["certificates"][0]["trusted_for_modules"] in (False, None)
    assert runtime["efi"]["secure_boot"]["state"] in ("absent", "known", "unknown")
    assert host["status"] == "attention" and report["totals"]["attention"] == 1
    page = (tmp_path / "report" / "fleet-report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and len(re.findall(r'<tr class="host ', page)) == 1
    assert not re.search(r'\s(?:src|href)=', page)
    assert "| localhost |" in (tmp_path / "report" / "fleet-report.md").read_text()


def test_kernel_facts_reads_this_machine_and_changes_nothing(tmp_path):
    key = make_key(tmp_path / "key", "p256", cn="skm facts fleet")
    result = run_module("skm_kernel_facts", {"certificates": [str(key.cert)]}, check=True)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    assert result["certificates"][0]["subject"] == "skm.modsign tests: skm facts fleet"
    assert result["taint"]["state"] == "known"                 # the sysctl read in chunks (ENOMEM otherwise)
    assert result["verdict"]["state"] in ("attention", "unknown")
    assert result["certificates"][0]["trusted_for_modules"] is not True


def test_kernel_facts_fails_cleanly_on_a_certificate_that_is_not_one(tmp_path):
    bad = tmp_path / "bad.crt"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
    result = run_module("skm_kernel_facts", {"certificates": [str(bad)]})
    assert result.get("failed") and str(bad) in (result.get("path") or "") + result["msg"]
    assert "Traceback" not in result["_stdout"]
