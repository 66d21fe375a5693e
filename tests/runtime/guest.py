"""Put what skm_kernel_facts reads into a tests/vm DebianVM guest, and record the guest's evidence.

Test machinery, not part of the collection. The guest is Debian's own kernel under qemu with OVMF
(tests/vm/vm.py); its initramfs has busybox and python3. This adds the real tools a host has:
keyutils' ``keyctl`` and kmod's ``modinfo``/``depmod`` (this host's binaries and their libraries), the
kernel's config in /boot, securityfs, and copies of small Debian modules under /lib/modules/<ver>:
Debian-signed as shipped, with the signature cut off (unsigned), and signed with our test key by the
kernel's own sign-file.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess

from tests.lib.debian_kernel import SIGN_FILE
from tests.runtime.capture_host import kernel_log_excerpt

KEYRINGS = (".builtin_trusted_keys", ".secondary_trusted_keys", ".machine", ".platform", ".blacklist")
TOOLS = {"/usr/bin/keyctl": [], "/usr/bin/kmod": ["/usr/sbin/modinfo", "/usr/sbin/depmod"]}
# Small Debian modules with no dependencies (lib/): what the test loads, and how each copy is signed.
MODULES = {"crc7": "debian", "crc16": "unsigned", "crc-itu-t": "ours", "cordic": "unsigned", "crc8": "ours"}
MODULE_DIR = {"cordic": "kernel/lib/math"}


def _libraries(binary: str) -> set[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return {part for line in out.splitlines() for part in line.split() if part.startswith("/")}


def sh(vm, script: str, check: bool = True) -> str:
    proc = vm.sh(script)
    if check and proc.returncode:
        raise AssertionError(f"guest: {script}: rc {proc.returncode}: {proc.stderr.decode()}{proc.stdout.decode()}")
    return proc.stdout.decode()


def install_tools(vm) -> None:
    for binary, links in TOOLS.items():
        for lib in sorted(_libraries(binary)):
            if vm.run(["test", "-e", lib]).returncode:
                sh(vm, f"mkdir -p {shlex.quote(os.path.dirname(lib))}")
                vm.put(lib, pathlib.Path(os.path.realpath(lib)).read_bytes(), 0o755)
        vm.put(binary, pathlib.Path(binary).read_bytes(), 0o755)
        for link in links:
            sh(vm, f"rm -f {link}; ln -s {binary} {link}")
    sh(vm, "mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security")


def module_copies(kernel, key, workdir: pathlib.Path) -> dict[str, bytes]:
    """name -> module bytes, each as MODULES says (our signature by the kernel's sign-file, sha256)."""
    from ansible_collections.skm.modsign.plugins.module_utils._trailer import parse_signature
    out = {}
    for name, how in MODULES.items():
        path = kernel.modules_dir / MODULE_DIR.get(name, "kernel/lib") / f"{name}.ko"
        data = path.read_bytes()
        if how != "debian":
            data = parse_signature(data, str(path)).payload
        if how == "ours":
            copy = workdir / f"{name}.ko"
            copy.write_bytes(data)
            subprocess.run([SIGN_FILE, "sha256", str(key.key), str(key.cert), str(copy)], check=True)
            data = copy.read_bytes()
        out[name] = data
    return out


def install_modules(vm, kernel, modules: dict[str, bytes]) -> None:
    base = f"/lib/modules/{kernel.version}"
    sh(vm, f"mkdir -p {base}/kernel/lib/math {base}/kernel/fs/efivarfs /boot")
    for name, data in modules.items():
        vm.put(f"{base}/{MODULE_DIR.get(name, 'kernel/lib')}/{name}.ko", data, 0o644)
    vm.put(f"{base}/kernel/fs/efivarfs/efivarfs.ko",
           (kernel.modules_dir / "kernel/fs/efivarfs/efivarfs.ko").read_bytes(), 0o644)
    vm.put(f"/boot/config-{kernel.version}", kernel.config.read_bytes(), 0o644)
    sh(vm, f"/usr/sbin/depmod {kernel.version}")  # kmod's: busybox sh prefers its own applets


def insmod(vm, kernel, name: str) -> subprocess.CompletedProcess:
    return vm.run(["insmod", f"/lib/modules/{kernel.version}/{MODULE_DIR.get(name, 'kernel/lib')}/{name}.ko"])


# ---------------------------------------------------------------- captures for the unit tests

def capture(vm, destination: pathlib.Path) -> None:
    """The files skm_kernel_facts reads and the output of the commands it runs, as a tree + commands.json."""
    files = ["/proc/keys", "/proc/key-users", "/proc/modules", "/proc/sys/kernel/tainted",
             "/proc/sys/kernel/osrelease", "/sys/kernel/security/lockdown",
             "/sys/module/module/parameters/sig_enforce"]
    files += [f"/sys/module/{line.split()[0]}/taint" for line in sh(vm, "cat /proc/modules").splitlines()]
    efivars = "/sys/firmware/efi/efivars"
    for var in ("SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", "SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c",
                "MokSBStateRT-605dab50-e046-4300-abb6-3dd810dd8b23",
                "MokListTrustedRT-605dab50-e046-4300-abb6-3dd810dd8b23"):
        files.append(f"{efivars}/{var}")
    for path in files:
        proc = vm.run(["cat", path])
        if proc.returncode == 0:
            target = destination / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(proc.stdout)
    (destination / "sys/firmware/efi/efivars").mkdir(parents=True, exist_ok=True)
    commands = {}

    def record(argv):
        proc = vm.run(argv)
        name = os.path.basename(argv[0])   # as skm_kernel_facts asks for it (kmod's modinfo by path: see above)
        commands[" ".join([name] + argv[1:])] = [proc.returncode, proc.stdout.decode(), proc.stderr.decode()]
        return proc.stdout.decode() if proc.returncode == 0 else ""

    for ring in KEYRINGS:
        for key_id in record(["keyctl", "rlist", "%:" + ring]).split():
            if ring != ".blacklist":
                record(["keyctl", "rdescribe", key_id])
    record(["keyctl", "show", "%:.builtin_trusted_keys"])
    record(["/usr/sbin/modinfo"] + [line.split()[0] for line in sh(vm, "cat /proc/modules").splitlines()])
    record(["dmesg"])
    commands["dmesg"][1] = kernel_log_excerpt(commands["dmesg"][1])
    (destination / "commands.json").write_text(json.dumps(commands, indent=1, sort_keys=True) + "\n")
