"""skm_mok_enroll against the real mokutil over a real UEFI variable store (make test-mok, 5-9 min under TCG).

Set-up (tests/vm/vm.py): qemu (TCG) boots OVMF firmware with a private copy of its variable store,
OVMF loads Debian's own kernel, efivarfs is mounted, and real ansible-playbook on this host runs the
module *inside* the VM (connection plugin tests/vm/connection_plugins/skm_vm.py), where it calls
Debian's mokutil binary. Oracles: mokutil itself (--list-new/--list-delete/--test-key), the EFI
variables it wrote, openssl's SHA-1 fingerprint, the Linux kernel reading MokListRT at boot.

What this proves: the module reads the state from real mokutil output, stages MokNew/MokAuth,
MokDel/MokDelAuth and MokTimeout in non-volatile variables that survive a power cycle, is idempotent,
changes nothing in check mode, cancels requests the right way, never shows the password in argument
lists, output or leftover files.

What it cannot prove: the MokManager confirmation itself (shim is not in this boot path; the person
at the console is not either). The one faked layer is what MokManager + shim would do after the
confirmation: ``confirm_like_mokmanager`` copies MokNew's signature list into MokListRT (the
variable shim publishes at boot) and removes MokNew/MokAuth, through efivarfs. mokutil's behaviour
is never faked.
"""

from __future__ import annotations

import pathlib
import subprocess

import pytest

from tests.vm.ansible_vm import run_module_in_vm
from tests.vm.vm import DebianVM

G = "605dab50-e046-4300-abb6-3dd810dd8b23"
V = "/sys/firmware/efi/efivars"
PASSWORD = "Sk-mok-TEST-8c1f"  # 16 characters: also valid for --trust-mok


def make_cert(tmp: pathlib.Path, cn: str) -> tuple[bytes, str]:
    der = tmp / f"{cn}.der"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(tmp / f"{cn}.key"), "-outform", "DER", "-out", str(der), "-days", "30",
                    "-subj", f"/CN={cn}", "-addext", "extendedKeyUsage=codeSigning"],
                   check=True, capture_output=True)
    fp = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(der), "-noout", "-fingerprint", "-sha1"],
                        check=True, capture_output=True, text=True).stdout.strip().split("=", 1)[1].lower()
    return der.read_bytes(), fp


@pytest.fixture(scope="module")
def vm(debian_kernel, tmp_path_factory):
    with DebianVM(debian_kernel, workdir=tmp_path_factory.mktemp("vm")) as machine:
        yield machine


@pytest.fixture(scope="module")
def certs(vm, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("certs")
    out = {}
    for name in ("fleet", "second"):
        der, fp = make_cert(tmp, name)
        FILES[f"/root/{name}.der"] = der
        out[name] = fp
    FILES["/root/fleet.pem"] = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(tmp / "fleet.der")],
                                              check=True, capture_output=True).stdout
    put_files(vm)
    return out


FILES: dict[str, bytes] = {}  # the guest's /root is in its initramfs: put again after each boot


def put_files(vm):
    for path, data in FILES.items():
        vm.put(path, data)


def power_cycle(vm):
    vm.restart()
    put_files(vm)


def mokutil(vm, *args) -> str:
    proc = vm.run(["mokutil", *args])
    return (proc.stdout + proc.stderr).decode()


def run(vm, args, check=False):
    result = run_module_in_vm(vm, "skm_mok_enroll", args, check=check)
    assert PASSWORD not in result["_stdout"] + result["_stderr"]
    return result


def efivar(vm, name) -> bytes | None:
    proc = vm.run(["cat", f"{V}/{name}-{G}"])
    return proc.stdout if proc.returncode == 0 else None


def confirm_like_mokmanager(vm):
    """The faked layer: what MokManager (MokNew -> MokList) and shim (MokList -> MokListRT) do."""
    script = f"""
import fcntl, os, struct
v, g = "{V}", "{G}"
new = open(f"{{v}}/MokNew-{{g}}", "rb").read()
with open(f"{{v}}/MokListRT-{{g}}", "wb") as out:
    out.write(b"\\x07\\x00\\x00\\x00" + new[4:])
for name in ("MokNew", "MokAuth"):
    fd = os.open(f"{{v}}/{{name}}-{{g}}", os.O_RDONLY)  # efivarfs files are immutable: chattr -i
    flags = struct.unpack("I", fcntl.ioctl(fd, 0x80086601, b"\\0" * 8)[:4])[0]
    fcntl.ioctl(fd, 0x40086602, struct.pack("I", flags & ~0x10) + b"\\0" * 4)
    os.close(fd)
    os.unlink(f"{{v}}/{{name}}-{{g}}")
"""
    proc = vm.run(["python3", "-c", script])
    assert proc.returncode == 0, proc.stderr


WATCHER = """
import os
seen = set()
while True:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                line = open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\\0", b" ")
            except OSError:
                continue
            if line and line not in seen:
                seen.add(line)
                with open("/tmp/ps.log", "ab") as log:
                    log.write(line + b"\\n")
"""


def test_query_fresh_host(vm, certs):
    r = run(vm, {"certificate": "/root/fleet.der", "state": "query"})
    assert r["changed"] is False and r["state"] == "absent"
    assert r["secure_boot"] == "disabled" and r["before"]["setup_mode"] is True  # OVMF without keys
    assert r["reboot_required"] is False and r["console_steps"] == []
    assert r["fingerprint"] == certs["fleet"]


def test_check_mode_changes_nothing(vm, certs):
    r = run(vm, {"certificate": "/root/fleet.der", "password": PASSWORD, "timeout": 30}, check=True)
    assert r["changed"] is True and r["state"] == "pending" and r["after"]["timeout"] == 30
    assert "is not enrolled" in mokutil(vm, "--test-key", "/root/fleet.der")
    assert efivar(vm, "MokNew") is None and efivar(vm, "MokTimeout") is None


def test_present_stages_request_without_leaking_the_password(vm, certs):
    # watch every command line in the VM while the module runs (a tight loop over /proc, no forks)
    vm.put("/tmp/watch.py", WATCHER.encode())
    vm.sh("setsid python3 /tmp/watch.py > /dev/null 2>&1 & echo $! > /tmp/ps.pid")
    r = run(vm, {"certificate": "/root/fleet.der", "password": PASSWORD, "timeout": 30})
    vm.sh("kill $(cat /tmp/ps.pid); sleep 1")
    seen = vm.get("/tmp/ps.log").decode(errors="replace")
    assert r["changed"] is True and r["state"] == "pending" and r["reboot_required"] is True
    assert r["before"]["state"] == "absent" and r["actions"] == ["import: requested", "timeout: 30"]
    assert any(certs["fleet"] in step for step in r["console_steps"])
    assert "within 30 seconds" in r["console_steps"][0]
    # oracles: mokutil and the variable store
    assert "is already in the enrollment request" in mokutil(vm, "--test-key", "/root/fleet.der")
    assert certs["fleet"] in mokutil(vm, "--list-new").lower()
    assert efivar(vm, "MokAuth") is not None
    assert efivar(vm, "MokTimeout")[4:] == (30).to_bytes(4, "little")
    # the password: in no argument list seen, no temporary file left
    assert "mokutil" in seen, "the watcher saw no mokutil process: the leak check proves nothing"
    assert PASSWORD not in seen
    assert vm.sh("ls -a /tmp /root").stdout.decode().count(".skm-mok-") == 0


def test_present_again_is_unchanged(vm, certs):
    for check in (True, False):
        r = run(vm, {"certificate": "/root/fleet.der", "password": PASSWORD, "timeout": 30}, check=check)
        assert r["changed"] is False and r["state"] == "pending" and r["actions"] == []


def test_request_survives_power_cycle_then_confirmation(vm, certs):
    power_cycle(vm)
    assert "is already in the enrollment request" in mokutil(vm, "--test-key", "/root/fleet.der")
    confirm_like_mokmanager(vm)
    power_cycle(vm)  # the kernel reads MokListRT at boot
    r = run(vm, {"certificate": "/root/fleet.der", "state": "query"})
    assert r["state"] == "enrolled" and r["reboot_required"] is False
    assert "is already enrolled" in mokutil(vm, "--test-key", "/root/fleet.der", "--ignore-keyring")
    keyring_words = mokutil(vm, "--test-key", "/root/fleet.der")
    assert r["before"]["in_kernel_keyring"] == ("built-in trusted keyring" in keyring_words)
    r = run(vm, {"certificate": "/root/fleet.der", "password": PASSWORD})
    assert r["changed"] is False and r["state"] == "enrolled"


def test_absent_requests_deletion_and_present_cancels_it(vm, certs):
    r = run(vm, {"certificate": "/root/fleet.der", "state": "absent", "password": PASSWORD})
    assert r["changed"] is True and r["state"] == "pending_delete" and r["reboot_required"] is True
    assert any("Delete MOK" in step for step in r["console_steps"])
    assert certs["fleet"] in mokutil(vm, "--list-delete").lower()
    r = run(vm, {"certificate": "/root/fleet.der", "state": "absent", "password": PASSWORD})
    assert r["changed"] is False and r["state"] == "pending_delete"
    r = run(vm, {"certificate": "/root/fleet.der", "password": PASSWORD})
    assert r["changed"] is True and r["state"] == "enrolled" and r["actions"] == ["import: cancelled"]
    assert certs["fleet"] not in mokutil(vm, "--list-delete").lower()


def test_absent_cancels_a_pending_enrollment(vm, certs):
    r = run(vm, {"certificate": "/root/second.der", "password": PASSWORD})
    assert r["state"] == "pending"
    r = run(vm, {"certificate": "/root/second.der", "state": "absent", "password": PASSWORD})
    assert r["changed"] is True and r["state"] == "absent" and r["actions"] == ["delete: cancelled"]
    assert "is not enrolled" in mokutil(vm, "--test-key", "/root/second.der")


def test_trust_mok_is_staged(vm, certs):
    r = run(vm, {"certificate": "/root/fleet.der", "password": PASSWORD, "trust_mok": True})
    assert r["changed"] is True and r["after"]["trust_mok_pending"] is True and r["reboot_required"] is True
    assert efivar(vm, "MokListTrustedNew") is not None
    r = run(vm, {"certificate": "/root/fleet.der", "password": PASSWORD, "trust_mok": True})
    assert r["changed"] is False


def test_pem_certificate_fails_clearly(vm, certs):
    r = run(vm, {"certificate": "/root/fleet.pem", "password": PASSWORD})
    assert r["failed"] is True and "is PEM" in r["msg"] and "/root/fleet.pem" in r["msg"]
    assert "Traceback" not in r["_stdout"] + r["_stderr"]
