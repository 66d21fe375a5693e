"""Boot a kernel under qemu-system-x86_64 (TCG) with a busybox initramfs that loads each case module.

The initramfs /init mounts proc and sys, prints the kernel's boot messages about certificates, silences the
console (`dmesg -n 1`) and, for each case, runs /load (tests/e2e/load.c: finit_module, then delete_module)
followed by `dmesg -c`, so that every kernel message is tied to the case that caused it. Then it reboots;
qemu runs with -no-reboot, so it exits.

Serial output lines:
  E2E <case> loaded | E2E <case> rejected errno=<n> <text>
  E2E-K <case> <kernel message>
  E2E-BOOT <kernel boot message>
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import time

BUSYBOX = "/bin/busybox"
INIT = """#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "E2E-INFO kernel $(uname -r) cmdline $(cat /proc/cmdline)"
echo "E2E-INFO sig_enforce $(cat /sys/module/module/parameters/sig_enforce 2>/dev/null || echo absent)"
dmesg -n 1
dmesg -c | grep -iE 'x\\.509|keyring' | while read -r line; do echo "E2E-BOOT $line"; done
while read -r name file unload flag; do
  echo "E2E-BEGIN $name"
  /load "$name" "/cases/$file" "$unload" $flag
  dmesg -c | while read -r line; do echo "E2E-K $name $line"; done
done < /cases/list
echo "E2E-END"
sync
reboot -f
"""


@dataclasses.dataclass
class LoadCase:
    name: str
    file: pathlib.Path
    unload: str = "skm_e2e"      # module name to unload after a successful load ("-": none)
    compressed: bool = False       # finit_module with MODULE_INIT_COMPRESSED_FILE


@dataclasses.dataclass
class Verdict:
    name: str
    loaded: bool | None            # None: the kernel said nothing about this case
    errno_text: str = ""
    kernel: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Boot:
    verdicts: dict[str, Verdict]
    info: list[str]
    boot: list[str]
    seconds: float
    console: str
    ended: bool


def make_initramfs(workdir: pathlib.Path, loader: pathlib.Path, cases: list[LoadCase]) -> pathlib.Path:
    root = workdir / "initramfs"
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("bin", "dev", "proc", "sys", "cases"):
        (root / sub).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    shutil.copy2(loader, root / "load")
    os.mknod(root / "dev" / "console", 0o600 | 0o020000, os.makedev(5, 1))
    (root / "init").write_text(INIT)
    (root / "init").chmod(0o755)
    lines = []
    for case in cases:
        shutil.copy2(case.file, root / "cases" / f"{case.name}{''.join(case.file.suffixes)}")
        lines.append(f"{case.name} {case.name}{''.join(case.file.suffixes)} {case.unload}"
                     f"{' compressed' if case.compressed else ''}")
    (root / "cases" / "list").write_text("\n".join(lines) + "\n")
    image = workdir / "initramfs.cpio"
    files = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
    with open(image, "wb") as out:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=root, input=files, stdout=out, check=True)
    return image


def boot(kernel: pathlib.Path, initramfs: pathlib.Path, append: str = "", memory: str = "512M",
         timeout: float = 300) -> Boot:
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", memory, "-smp", "1", "-nographic", "-no-reboot",
           "-kernel", str(kernel), "-initrd", str(initramfs),
           "-append", f"console=ttyS0 loglevel=7 panic=-1 rdinit=/init {append}".strip()]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)
    seconds = time.monotonic() - started
    return parse(proc.stdout + proc.stderr, seconds)


def parse(console: str, seconds: float) -> Boot:
    verdicts: dict[str, Verdict] = {}
    info, boot_lines = [], []
    ended = False
    for raw in console.replace("\r", "").splitlines():
        line = raw.strip()
        if line.startswith("E2E-BEGIN "):
            name = line.split()[1]
            verdicts[name] = Verdict(name, None)
        elif line.startswith("E2E-K "):
            _tag, name, text = (line.split(" ", 2) + [""])[:3]
            verdicts.setdefault(name, Verdict(name, None)).kernel.append(_strip_time(text))
        elif line.startswith("E2E-BOOT "):
            boot_lines.append(_strip_time(line[len("E2E-BOOT "):]))
        elif line.startswith("E2E-INFO "):
            info.append(line[len("E2E-INFO "):])
        elif line == "E2E-END":
            ended = True
        elif line.startswith("E2E "):
            parts = line.split(" ", 3)
            name = parts[1]
            verdict = verdicts.setdefault(name, Verdict(name, None))
            if parts[2] == "loaded":
                verdict.loaded = True
            elif parts[2] == "rejected":
                verdict.loaded = False
                verdict.errno_text = parts[3] if len(parts) > 3 else ""
    return Boot(verdicts, info, boot_lines, seconds, console, ended)


def _strip_time(text: str) -> str:
    # "[    1.234567] message" -> "message"
    if text.startswith("[") and "]" in text:
        return text.split("]", 1)[1].strip()
    return text
