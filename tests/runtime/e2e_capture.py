"""Record the evidence of the e2e kernel (ours: our certificates built in, CONFIG_MODULE_SIG_FORCE=y).

python -m tests.runtime.e2e_capture  (after `make e2e` has built and cached the kernel)

Boots the cached e2e kernel (tests/e2e, tinyconfig: no EFI, no secondary keyring, no securityfs) under qemu
with a busybox initramfs plus this host's keyctl and its libraries, loads tests/e2e/module signed with our
RSA key (the kernel's own sign-file, sha512) and an unsigned copy, and prints /proc/keys, keyctl's view of
each keyring, the taint, /proc/modules, sig_enforce and the kernel log. Writes the same tree as the other
captures to tests/unit/captured_runtime/e2e-6.1-ours/ (the kernel is too small to run python3, so
skm_kernel_facts' reader runs on the capture, in tests/unit/test_runtime.py). modinfo is recorded on this
host against the very module file the guest loaded. Only public certificates are copied.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

from tests.e2e.kernel_build import ARCH, JOBS
from tests.lib.debian_kernel import SIGN_FILE, cache_dir
from tests.runtime.capture_host import KEYRINGS

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parents[0] / "unit" / "captured_runtime" / "e2e-6.1-ours"
KEYCTL = "/usr/bin/keyctl"
INIT = r"""#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
dump() { echo "SKM-BEGIN $1"; sh -c "$2" 2>&1; echo "SKM-RC $?"; echo "SKM-END $1"; }
insmod /signed/skm_e2e.ko; echo "SKM-INSMOD signed rc=$?"
insmod /unsigned/skm_e2e.ko; echo "SKM-INSMOD unsigned rc=$?"
dump proc/keys "cat /proc/keys"
dump proc/key-users "cat /proc/key-users"
dump proc/modules "cat /proc/modules"
dump proc/sys/kernel/tainted "cat /proc/sys/kernel/tainted"
dump proc/sys/kernel/osrelease "cat /proc/sys/kernel/osrelease"
dump sys/module/module/parameters/sig_enforce "cat /sys/module/module/parameters/sig_enforce"
dump sys/module/skm_e2e/taint "cat /sys/module/skm_e2e/taint"
for ring in %(rings)s; do
  dump "keyctl rlist %%:$ring" "keyctl rlist %%:$ring"
  for id in $(keyctl rlist %%:$ring 2>/dev/null); do dump "keyctl rdescribe $id" "keyctl rdescribe $id"; done
done
dump "keyctl show %%:.builtin_trusted_keys" "keyctl show %%:.builtin_trusted_keys"
dump dmesg dmesg
echo SKM-DONE
reboot -f
"""


def _libraries(binary: str) -> set[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return {p for line in out.splitlines() for p in line.split() if p.startswith("/")}


def kernel_dir() -> pathlib.Path:
    for build in sorted((cache_dir() / "e2e" / "kernels").glob("*/arch/x86/boot/bzImage")):
        return build.parents[3]
    raise SystemExit("no cached e2e kernel: run make e2e first")


def modules(build: pathlib.Path, work: pathlib.Path) -> dict[str, pathlib.Path]:
    moddir = work / "module"
    shutil.copytree(HERE.parent / "e2e" / "module", moddir)
    subprocess.run(["make", "-C", str(build), f"M={moddir}", f"ARCH={ARCH}", JOBS, "modules"], check=True,
                   capture_output=True)
    keys = cache_dir() / "e2e" / "keys" / "rsa"
    out = {}
    for kind in ("signed", "unsigned"):
        (work / kind).mkdir()
        out[kind] = work / kind / "skm_e2e.ko"
        shutil.copy(moddir / "skm_e2e.ko", out[kind])
        subprocess.run(["strip", "--strip-debug", str(out[kind])], check=True)   # a small initramfs
    subprocess.run([SIGN_FILE, "sha512", str(keys / "signing_key.key"), str(keys / "signing_key.crt"),
                    str(out["signed"])], check=True)
    return out


def initramfs(work: pathlib.Path, mods: dict[str, pathlib.Path]) -> pathlib.Path:
    root = work / "root"
    for sub in ("bin", "dev", "proc", "sys", "signed", "unsigned", "usr/bin"):
        (root / sub).mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    shutil.copy2(KEYCTL, root / "usr" / "bin" / "keyctl")
    for lib in _libraries(KEYCTL):
        dst = root / lib.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dst)
    for kind, path in mods.items():
        shutil.copy2(path, root / kind / "skm_e2e.ko")
    os.mknod(root / "dev" / "console", 0o600 | 0o020000, os.makedev(5, 1))
    (root / "init").write_text(INIT % {"rings": " ".join(KEYRINGS)})
    (root / "init").chmod(0o755)
    image = work / "initramfs.cpio"
    files = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
    with open(image, "wb") as out:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=root, input=files, stdout=out, check=True)
    return image


def parse(console: str) -> dict[str, list]:
    found = {}
    for match in re.finditer(r"SKM-BEGIN (.+?)\r?\n(.*?)SKM-RC (\d+)\r?\nSKM-END \1", console, re.S):
        rc, text = int(match.group(3)), match.group(2).replace("\r\n", "\n")
        found[match.group(1)] = [rc, text, ""] if rc == 0 else [rc, "", text]   # 2>&1: a failure's text is stderr
    return found


def main(out: pathlib.Path = OUT) -> pathlib.Path:
    build = kernel_dir()
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        mods = modules(build, work)
        image = initramfs(work, mods)
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", "512M", "-smp", "1", "-nographic", "-no-reboot",
               "-kernel", str(build / "arch/x86/boot/bzImage"), "-initrd", str(image),
               "-append", "console=ttyS0 loglevel=4 panic=-1 rdinit=/init"]
        console = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=600,
                                 stdin=subprocess.DEVNULL, check=False).stdout
        assert "SKM-DONE" in console, console[-3000:]
        found = parse(console)
        modinfo = subprocess.run(["modinfo", str(mods["signed"])], capture_output=True, text=True, check=True).stdout
    shutil.rmtree(out, ignore_errors=True)
    commands = {}
    for name, (rc, text, err) in found.items():
        if name.startswith("keyctl ") or name == "dmesg":
            commands[name] = [rc, text, err]
        elif rc == 0:
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    commands["modinfo skm_e2e"] = [0, modinfo, ""]
    (out / "commands.json").write_text(json.dumps(commands, indent=1, sort_keys=True) + "\n")
    for kind in ("rsa", "p384"):
        shutil.copy(cache_dir() / "e2e" / "keys" / kind / "signing_key.crt", out / f"ours-{kind}.crt")
    release = (out / "proc/sys/kernel/osrelease").read_text().strip()
    (out / "boot").mkdir()
    # The key paths name this machine's cache; the capture keeps them relative (e2e-keys/<kind>/...).
    config = (build / ".config").read_text().replace(str(cache_dir() / "e2e" / "keys") + "/", "e2e-keys/")
    (out / "boot" / f"config-{release}").write_text(config)
    (out / "insmod.txt").write_text("\n".join(re.findall(r"SKM-INSMOD .*", console)) + "\n")
    return out


if __name__ == "__main__":
    print(main())
