"""skm_kernel_facts on a real booted kernel (make test-runtime; a few minutes under TCG, not in make test).

Debian's stock kernel boots under qemu with OVMF (tests/vm/vm.py: Secure Boot capable firmware in setup
mode, so no lockdown); real ansible-playbook runs skm_kernel_facts inside the guest, and each answer is
held against the guest's own tools: ``keyctl``, ``/proc/keys``, ``/proc/sys/kernel/tainted``,
``/sys/module/*/taint``, ``/sys/module/module/parameters/sig_enforce``, efivarfs and ``dmesg``. Our
certificate is in no keyring of that kernel; Debian's CA is built in, and the names the module reads
from the keyring match the ones we compute from the certificates built into the kernel image itself.

Modules loaded (copies of small Debian modules, see tests/runtime/guest.py): Debian-signed (verified, no
taint), unsigned and signed by our key without enforcement (both load and taint E; the kernel logs
"module verification failed" once, naming the first), then with sig_enforce switched on at runtime an
unsigned one and one with our key (both refused: "Loading of ... is rejected").

SKM_RUNTIME_CAPTURE=1 also records the guest's files and command output into
tests/unit/captured_runtime/debian-qemu/ for the unit tests (make runtime-capture).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess

import pytest

from tests.lib.keys import make_key
from tests.runtime import guest
from tests.vm.ansible_vm import run_module_in_vm
from tests.vm.vm import DebianVM

CAPTURED = pathlib.Path(__file__).resolve().parents[1] / "unit" / "captured_runtime" / "debian-qemu"
OURS = "/root/ours.crt"


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return make_key(tmp_path_factory.mktemp("key"), "rsa2048", cn="skm runtime fleet")


@pytest.fixture(scope="module")
def vm(debian_kernel, key, tmp_path_factory):
    work = tmp_path_factory.mktemp("runtime-vm")
    modules = guest.module_copies(debian_kernel, key, work)
    with DebianVM(debian_kernel, workdir=work / "vm") as machine:
        guest.install_tools(machine)
        guest.install_modules(machine, debian_kernel, modules)
        machine.put(OURS, key.cert.read_bytes(), 0o644)
        yield machine


def facts(vm, **args):
    result = run_module_in_vm(vm, "skm_kernel_facts", {"certificates": [OURS], **args})
    assert not result.get("failed"), result.get("msg") or result["_stdout"]
    assert result["changed"] is False
    return result


def cat(vm, path) -> str:
    return guest.sh(vm, f"cat {path}")


def proc_keys_count(vm, ring) -> int | None:
    for line in cat(vm, "/proc/keys").splitlines():
        if re.search(r" keyring +%s: " % re.escape(ring), line):
            tail = line.rsplit(": ", 1)[1]
            return 0 if tail == "empty" else int(tail)
    return None


@pytest.fixture(scope="module")
def loaded(vm, debian_kernel):
    """Load the Debian-signed, the unsigned and our-key copies without enforcement; then read the facts."""
    for name in ("crc7", "crc16", "crc-itu-t"):
        proc = guest.insmod(vm, debian_kernel, name)
        assert proc.returncode == 0, (name, proc.stderr)
    return facts(vm)


def test_keyrings_match_keyctl_and_proc_keys(vm, loaded, debian_kernel):
    from ansible_collections.skm.modsign.plugins.module_utils._kernel_image import builtin_certificates
    from ansible_collections.skm.modsign.plugins.module_utils._pkcs7 import certificate_id
    from ansible_collections.skm.modsign.plugins.module_utils._runtime import kernel_name
    rings = loaded["keyrings"]["keyrings"]
    assert loaded["keyrings"]["source"] == "keyctl"
    for ring in guest.KEYRINGS:
        proc = vm.run(["keyctl", "rlist", "%:" + ring])
        if proc.returncode:
            assert rings[ring]["state"] == "absent", (ring, rings[ring])
            assert proc_keys_count(vm, ring) is None
            continue
        ids = sorted(int(x) for x in proc.stdout.split())
        assert sorted(e["id"] for e in rings[ring]["value"]) == ids, ring
        assert proc_keys_count(vm, ring) == len(ids), ring
    shown = guest.sh(vm, "keyctl show %:.builtin_trusted_keys")
    builtin = [e for e in rings[".builtin_trusted_keys"]["value"] if e["type"] == "asymmetric"]
    assert builtin, "Debian's kernel has its CA built in"
    for entry in builtin:
        assert entry["description"] in shown and entry["state"] == "known"
    image = {}
    for cert in builtin_certificates(debian_kernel.vmlinuz.read_bytes(), str(debian_kernel.vmlinuz)):
        cid = certificate_id(cert.der)
        image[kernel_name(cid.subject)] = (cid.skid or b"").hex()
    assert {e["subject"]: e["key_id"] for e in builtin} == image
    assert loaded["module_trusting_keyrings"][0] == ".secondary_trusted_keys"
    assert ".builtin_trusted_keys" in loaded["module_trusting_keyrings"]
    assert ".platform" not in loaded["module_trusting_keyrings"]


def test_our_certificate_is_in_no_keyring_of_the_stock_kernel(loaded, key):
    (cert,) = loaded["certificates"]
    assert cert["keyrings"] == [] and cert["trusted_for_modules"] is False
    assert cert["subject"] == "skm.modsign tests: skm runtime fleet"   # the kernel's "O: CN"
    assert loaded["verdict"]["state"] == "attention"


def test_taint_and_modules_match_sysfs(vm, loaded):
    mask = int(cat(vm, "/proc/sys/kernel/tainted"))
    assert loaded["taint"]["mask"] == mask and "E" in loaded["taint"]["value"]
    by_name = {m["name"]: m for m in loaded["modules"]["value"]}
    for name, module in by_name.items():
        assert module["taint"] == cat(vm, f"/sys/module/{name}/taint").strip(), name
    assert by_name["crc7"]["kernel_verified"] is True and by_name["crc7"]["ours"] is False
    assert by_name["crc7"]["signer"] == guest.sh(vm, "/usr/sbin/modinfo -F signer crc7").strip()
    assert by_name["crc16"]["taint"] == "E" and by_name["crc16"]["signature"]["value"] == "unsigned"
    ours = by_name["crc_itu_t"]
    assert ours["taint"] == "E" and ours["ours"] is True and ours["signer"] == "skm runtime fleet"
    assert ours["sig_key"] == guest.sh(vm, "/usr/sbin/modinfo -F sig_key crc_itu_t").strip()
    assert by_name["efivarfs"]["kernel_verified"] is True
    assert "crc16" in " ".join(loaded["verdict"]["attention"]) and "crc_itu_t" in " ".join(loaded["verdict"]["attention"])


def test_rejection_message_names_the_module(vm, loaded):
    log = guest.sh(vm, "dmesg")
    assert "crc16: module verification failed" in log
    (failed,) = [r for r in loaded["rejections"]["value"] if r["kind"] == "verification_failed"]
    assert failed["module"] == "crc16" and loaded["rejections"]["source"] == "dmesg"


def test_efi_lockdown_and_enforcement_match_the_guest(vm, loaded):
    sb = vm.run(["cat", "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"]).stdout
    assert loaded["efi"]["secure_boot"] == {"state": "known", "value": sb[4] == 1}
    assert loaded["efi"]["secure_boot"]["value"] is False and loaded["efi"]["setup_mode"]["value"] is True
    assert loaded["efi"]["mok_sb_state"]["state"] == "absent"      # no shim in this boot path
    assert loaded["lockdown"]["value"] == re.search(r"\[(\w+)\]", cat(vm, "/sys/kernel/security/lockdown"))[1]
    assert loaded["sig_enforce"]["value"] is (cat(vm, "/sys/module/module/parameters/sig_enforce").strip() == "Y")
    assert loaded["config_module_sig_force"]["value"] is False   # Debian: CONFIG_MODULE_SIG_FORCE is not set


def test_capture_for_unit_tests(vm, loaded, key):
    if not os.environ.get("SKM_RUNTIME_CAPTURE"):
        pytest.skip("SKM_RUNTIME_CAPTURE=1 records the guest for tests/unit (make runtime-capture)")
    guest.capture(vm, CAPTURED)
    (CAPTURED / "ours.crt").write_bytes(key.cert.read_bytes())   # the certificate only; the key stays in tmp
    (CAPTURED / "expected.json").write_text(json.dumps(
        {k: loaded[k] for k in ("certificates", "module_trusting_keyrings", "taint", "modules", "rejections",
                                "efi", "lockdown", "sig_enforce", "config_module_sig_force", "keyrings",
                                "verdict")}, indent=1, sort_keys=True) + "\n")


def test_the_stock_kernel_refuses_our_certificate_in_its_secondary_keyring(vm, loaded, tmp_path):
    """keyctl padd to .secondary_trusted_keys needs a certificate signed by a built-in key; ours is not.

    The certificate is signed with sha256: one signed with sha512 (make_key's) is refused earlier, with
    ENOPKG ("Package not installed"), because Debian 6.1 has sha512 as a module that nothing loaded here.
    """
    der = tmp_path / "second.der"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes", "-days", "30",
                    "-keyout", str(tmp_path / "second.key"), "-outform", "DER", "-out", str(der),
                    "-subj", "/CN=skm runtime second", "-addext", "keyUsage=digitalSignature"],
                   check=True, capture_output=True)
    proc = vm.run(["keyctl", "padd", "asymmetric", "", "%:.secondary_trusted_keys"], input=der.read_bytes())
    # restrict_link_by_builtin_and_secondary_trusted: no key in those keyrings signed it (ENOKEY), or it was refused
    assert proc.returncode != 0, proc.stderr
    assert b"Required key not available" in proc.stderr or b"Key was rejected by service" in proc.stderr, proc.stderr
    result = facts(vm)
    assert result["certificates"][0]["trusted_for_modules"] is False
    assert result["keyrings"]["keyrings"][".secondary_trusted_keys"]["value"] == \
        loaded["keyrings"]["keyrings"][".secondary_trusted_keys"]["value"]


def test_without_keyctl_membership_is_unknown_never_trusted(vm, loaded):
    guest.sh(vm, "mv /usr/bin/keyctl /usr/bin/keyctl.off")
    try:
        result = facts(vm)
    finally:
        guest.sh(vm, "mv /usr/bin/keyctl.off /usr/bin/keyctl")
    assert result["keyrings"]["source"] == "/proc/keys"
    ring = result["keyrings"]["keyrings"][".builtin_trusted_keys"]
    assert ring["state"] == "unknown" and ring["count"] == proc_keys_count(vm, ".builtin_trusted_keys")
    assert result["certificates"][0]["trusted_for_modules"] is None
    assert result["module_trusting_keyrings"] is None


def test_enforced_at_runtime_the_kernel_refuses_and_says_so(vm, debian_kernel, loaded):
    guest.sh(vm, "echo Y > /sys/module/module/parameters/sig_enforce")
    assert guest.insmod(vm, debian_kernel, "cordic").returncode != 0
    assert guest.insmod(vm, debian_kernel, "crc8").returncode != 0
    result = facts(vm)
    assert result["sig_enforce"]["value"] is True
    log = guest.sh(vm, "dmesg")
    rejected = [r["detail"] for r in result["rejections"]["value"] if r["kind"] == "rejected"]
    # busybox insmod tries finit_module, then init_module: the kernel may say it once per attempt
    assert set(rejected) == {"unsigned module", "module with unavailable key"}
    assert rejected.index("module with unavailable key") > rejected.index("unsigned module")
    assert log.count("is rejected") == len(rejected)
    names = {m["name"] for m in result["modules"]["value"]}
    assert "cordic" not in names and "crc8" not in names
