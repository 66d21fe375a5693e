"""The slow Secure Boot proof (make test-secureboot): Debian's stock signed kernel, MOK enrolled headlessly.

1. build (or reuse) the disk: tests/secureboot/build_image.sh; boot it: OVMF with Microsoft's keys, shim,
   GRUB and the kernel all Debian's signed binaries. `mokutil --sb-state` must say "SecureBoot enabled",
   /sys/kernel/security/lockdown must select [integrity].
2. stage a certificate made here: `mokutil --generate-hash` (password on stdin) + `mokutil --import
   --hash-file` over ssh.
3. three reboots into the real MokManager, each driven on the serial console (socat on the VM's serial
   socket, under pexpect) by plugins/module_utils/_mokmanager.py:
     a fingerprint that is not the staged one -> refused and declined ("No"), nothing enrolled;
     a wrong password -> MokManager retries, then fails, nothing enrolled;
     the right fingerprint and password -> enrolled, MokManager reboots.
   Each session's console is saved to tests/unit/captured_mokmanager/ (password masked) for the unit tests.
4. after the enrollment: `mokutil --test-key` says enrolled, and the certificate is in a kernel keyring
   (read from /proc/keys in the guest).
Prints the boot-by-boot timings, the keyrings seen and the enrollment transcript; exits non-zero on failure.

    .venv/bin/python tests/secureboot/run_secureboot.py [--keep] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "build" / "collections"))

from tests.secureboot import replay  # noqa: E402
from tests.secureboot.sbvm import SecureBootVM, build_disk  # noqa: E402

CAPTURED = REPO / "tests" / "unit" / "captured_mokmanager"
PASSWORD = "skm-test-0ne-time"      # a test VM's one-time MOK password; never printed (masked in transcripts)
WRONG_PASSWORD = "not-the-password"


def mokmanager():
    link = REPO / "build" / "collections" / "ansible_collections" / "skm" / "modsign"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO)
    from ansible_collections.skm.modsign.plugins.module_utils import _mokmanager
    return _mokmanager


def make_certificate(directory: pathlib.Path) -> bytes:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-sha256",
                    "-subj", "/CN=skm.modsign secure boot test MOK", "-keyout", str(directory / "mok.key"),
                    "-outform", "DER", "-out", str(directory / "mok.der"),
                    "-addext", "extendedKeyUsage=codeSigning", "-addext", "keyUsage=digitalSignature"],
                   check=True, capture_output=True)
    return (directory / "mok.der").read_bytes()


def stage(vm: SecureBootVM, der: bytes) -> str:
    vm.put("/root/mok.der", der, "0644")
    vm.ssh("mokutil --generate-hash | tail -n 1 > /root/mok.hash", input=f"{PASSWORD}\n{PASSWORD}\n".encode())
    out = vm.ssh("mokutil --import /root/mok.der --hash-file /root/mok.hash; mokutil --list-new", check=False)
    return out.stdout + out.stderr


def pending(vm: SecureBootVM) -> bool:
    return "skm.modsign secure boot test MOK" in vm.ssh("mokutil --list-new", check=False).stdout


KEYRINGS_SCRIPT = r"""
for ring in .builtin_trusted_keys .secondary_trusted_keys .machine .platform .blacklist; do
  keyctl describe %:$ring >/dev/null 2>&1 || continue
  echo "$ring"
  for k in $(keyctl rlist %:$ring 2>/dev/null); do printf '\t%s\n' "$(keyctl describe $k | cut -d';' -f5-)"; done
done
"""


def keyrings(vm: SecureBootVM) -> dict:
    """Keyring name -> the descriptions of the keys in it (keyctl, in the guest; one ssh call)."""
    seen: dict[str, list[str]] = {}
    ring = ""
    for line in vm.ssh(KEYRINGS_SCRIPT, check=False).stdout.splitlines():
        if line.startswith("\t"):
            seen[ring].append(line.strip())
        elif line.strip():
            ring = line.strip()
            seen[ring] = []
    if ".blacklist" in seen:
        seen[".blacklist"] = ["%d hashes/keys (dbx)" % len(seen[".blacklist"])]
    return seen


def session(vm: SecureBootVM, mm, name: str, record: bool, staged_sha1: str, **dialogue_options):
    """Reboot into MokManager and run one dialogue on the serial console; returns (result, error)."""
    started, offset = vm.begin_reboot()
    console = mm.CommandConsole(["socat", "-", f"UNIX-CONNECT:{vm.serial}"])
    dialogue = mm.Dialogue(console, countdown_timeout=vm.boot_timeout, screen_timeout=120, key_delay=0.5,
                           **dialogue_options)
    result = error = None
    t0 = time.monotonic()
    try:
        result = dialogue.run()
    except mm.MokManagerError as exc:
        error = exc
    finally:
        took = round(time.monotonic() - t0, 1)
        console.close()
    if record:
        replay.save(CAPTURED / f"{name}.json", dialogue.transcript.events, case=name, staged_sha1=staged_sha1,
                    screens=dialogue.screens, error=str(error) if error else None,
                    source="real shim MokManager (Debian shim-signed) in tests/secureboot's VM, OVMF serial console")
    timing = vm.wait_booted(started, offset, label=f"reboot via MokManager ({name})")
    timing["mokmanager dialogue"] = took
    return result, error, dialogue


MODULES_SCRIPT = r"""
kver=$(uname -r); sf=/usr/lib/linux-kbuild-${kver%.*}/scripts/sign-file
dkms add -m skm_hello -v 1.0 >/dev/null 2>&1; dkms install -m skm_hello -v 1.0 -k $kver >/tmp/dkms.log 2>&1
echo "dkms rc=$? signer=$(modinfo -F signer skm_hello 2>&1)"
modprobe skm_hello && echo "DKMS-SIGNED LOADED: $(grep -c '^skm_hello ' /proc/modules)"
modprobe -r skm_hello
rm -rf /tmp/h && cp -r /usr/src/skm_hello-1.0 /tmp/h
make -s -C /lib/modules/$kver/build M=/tmp/h modules >/tmp/make.log 2>&1
cp /tmp/h/skm_hello.ko /tmp/unsigned.ko
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=foreign -keyout /tmp/f.key -outform DER \
  -out /tmp/f.der 2>/dev/null
cp /tmp/unsigned.ko /tmp/foreign.ko && $sf sha256 /tmp/f.key /tmp/f.der /tmp/foreign.ko
dmesg -C
echo "UNSIGNED: $(insmod /tmp/unsigned.ko 2>&1; echo rc=$?)"
echo "FOREIGN: $(insmod /tmp/foreign.ko 2>&1; echo rc=$?)"
echo "KERNEL SAID:"; dmesg | grep -iE 'lockdown|module|key|skm' | tail -n 5
"""


def modules(vm: SecureBootVM, work: pathlib.Path, der: bytes, failures: list) -> None:
    """DKMS's own signing with our (now enrolled) key; an unsigned and a foreign-signed build are refused."""
    vm.put("/var/lib/dkms/mok.key", (work / "mok.key").read_bytes(), "0600")
    vm.put("/var/lib/dkms/mok.pub", der, "0644")
    out = vm.ssh(MODULES_SCRIPT, check=False, timeout=2400).stdout
    print(out.strip())
    check("DKMS-SIGNED LOADED: 1" in out, "our DKMS-built, our-key-signed skm_hello loads", failures)
    for label in ("UNSIGNED", "FOREIGN"):
        said = re.search(label + r": (.*)", out)
        check(bool(said) and "rc=0" not in said.group(1),
              f"{label.lower()} module refused: {said.group(1) if said else 'not tried'}", failures)


def restage_if_dropped(vm: SecureBootVM, der: bytes, after: str) -> None:
    still = pending(vm)
    print(f"after {after} the request is {'still' if still else 'no longer'} staged", flush=True)
    if not still:
        stage(vm, der)


def check(condition: bool, what: str, failures: list) -> None:
    print(("ok     " if condition else "FAILED ") + what, flush=True)
    if not condition:
        failures.append(what)


CASES = ("fingerprint_mismatch", "wrong_password", "enroll")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--keep", action="store_true", help="keep the VM's directory (console.log, disk overlay)")
    parser.add_argument("--no-record", action="store_true", help="do not rewrite tests/unit/captured_mokmanager")
    parser.add_argument("--case", action="append", choices=CASES,
                        help="run only these MokManager sessions (default: all, in the order listed)")
    args = parser.parse_args()
    cases = args.case or list(CASES)
    mm = mokmanager()
    failures: list[str] = []
    t0 = time.monotonic()
    disk = build_disk()
    print(f"disk {disk} ready in {time.monotonic() - t0:.0f}s", flush=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="skm-sb-run-"))
    der = make_certificate(work)
    expected = mm.fingerprints(der)
    vm = SecureBootVM(disk, workdir=work / "vm")
    try:
        vm.start()
        print(f"first boot: {vm.timings[-1]}", flush=True)
        sb = vm.ssh("mokutil --sb-state", check=False)
        check("SecureBoot enabled" in sb.stdout, f"mokutil --sb-state: {sb.stdout.strip()!r}", failures)
        lockdown = vm.ssh("cat /sys/kernel/security/lockdown").stdout.strip()
        check("[integrity]" in lockdown, f"lockdown: {lockdown!r}", failures)
        print(f"kernel: {vm.ssh('uname -r').stdout.strip()}; keyrings before: {json.dumps(keyrings(vm))}")

        print(stage(vm, der).strip())
        check(pending(vm), "certificate staged (mokutil --list-new)", failures)

        if "fingerprint_mismatch" in cases:
            _outcome, error, _record = session(vm, mm, "fingerprint_mismatch", not args.no_record, expected["sha1"],
                                               password=PASSWORD, expected_fingerprints=["00" * 20])
            check(error is not None and error.declined, f"mismatch refused: {error}", failures)
            restage_if_dropped(vm, der, "the refusal")

        if "wrong_password" in cases:
            _outcome, error, _record = session(vm, mm, "wrong_password", not args.no_record, expected["sha1"],
                                               password=WRONG_PASSWORD, expected_fingerprints=[expected["sha1"]],
                                               password_attempts=3)
            check(error is not None and not error.enrolled and error.screen == "Password",
                  f"wrong password refused: {error}", failures)
            check(PASSWORD not in str(error) and WRONG_PASSWORD not in (error.transcript if error else ""),
                  "no password in the error or its transcript", failures)
            test_key = vm.ssh("mokutil --test-key /root/mok.der", check=False)
            check("is already enrolled" not in test_key.stdout, f"not enrolled after the refusal(s): "
                  f"{test_key.stdout.strip()!r}", failures)
            restage_if_dropped(vm, der, "the wrong password")

        if "enroll" in cases:
            result, error, dialogue = session(vm, mm, "enroll", not args.no_record, expected["sha1"],
                                              password=PASSWORD,
                                              expected_fingerprints=[expected["sha1"], expected["sha256"]])
            check(result is not None and result["enrolled"], f"enrolled headlessly: {error or result['screens']}",
                  failures)
            test_key = vm.ssh("mokutil --test-key /root/mok.der", check=False)
            check("is already enrolled" in test_key.stdout, f"mokutil --test-key: {test_key.stdout.strip()!r}",
                  failures)
            rings = keyrings(vm)
            print(f"keyrings after: {json.dumps(rings, indent=1)}")
            ours = [ring for ring, keys in rings.items() if any("secure boot test MOK" in k for k in keys)]
            check(bool(ours), f"our certificate is in the kernel keyring(s) {ours}", failures)
            if ours:
                modules(vm, work, der, failures)
            print("\n--- headless enrollment transcript (password masked) ---")
            print(dialogue.transcript.text()[-6000:])
    finally:
        vm.stop()
        print("\nboot timings (s from start/reboot):")
        for timing in vm.timings:
            print("  " + json.dumps(timing))
        print(f"total {time.monotonic() - t0:.0f}s; VM directory {vm.dir}" + ("" if args.keep else " (removed)"))
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    print(f"{'PASSED' if not failures else 'FAILED: ' + '; '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
