"""Boot Debian's own kernel under qemu (TCG) with OVMF UEFI firmware and run commands in it.

Reusable test harness (no KVM needed): ``with DebianVM(kernel, profile="setup-mode") as vm: vm.run([...])``.

What is real: the OVMF firmware and its non-volatile variable store (a private copy of an OVMF_VARS
file, kept across ``vm.restart()``), the Debian kernel with efivarfs (its own ``efivarfs.ko``), and
the binaries copied from this host into the initramfs (busybox, mokutil and its libraries, python3).
Commands go over the VM's second serial port to ``tests/vm/agent.py`` (a JSON-lines agent);
the first serial port is the kernel console, kept in ``console.log``.

Firmware profiles (Debian package ovmf):
  setup-mode   OVMF_CODE_4M.secboot.fd + OVMF_VARS_4M.fd: Secure Boot capable, no keys enrolled
               (SecureBoot=0, SetupMode=1) - the kernel boots unsigned.
  no-smm       OVMF_CODE_4M.fd + OVMF_VARS_4M.fd: the build without SMM (Debian's still has the
               SecureBoot variable; mokutil reports "SecureBoot disabled" there too).
Run ``python -m tests.vm.vm`` to boot once and print ``mokutil --sb-state``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
OVMF = pathlib.Path("/usr/share/OVMF")
PROFILES = {
    "setup-mode": ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.fd", True),
    "no-smm": ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", False),
}
# Host binaries the guest needs; their shared libraries come along (found by ldd).
GUEST_BINARIES = ["/bin/busybox", "/usr/bin/mokutil", "/usr/bin/python3"]
PYTHON_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
               "distutils", "unittest", "site-packages", "dist-packages"}
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mkdir -p /proc /sys /dev /tmp /root /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
insmod /lib/efivarfs.ko
mount -t efivarfs efivarfs /sys/firmware/efi/efivars || echo "SKM-VM: no efivarfs"
exec /usr/bin/python3 /agent.py /dev/ttyS1
"""


class VMError(RuntimeError):
    pass


def agent_request(socket_path, message: dict, timeout: float = 300.0, describe=lambda: "") -> dict:
    """Send one request to the VM agent at ``socket_path``; return its reply (one connection each)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(socket_path))
        sock.sendall(json.dumps(message).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise VMError(f"no reply from the VM agent within {timeout}s:\n{describe()}")
            sock.settimeout(left)
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise VMError("agent connection closed")
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


def _cache_root() -> pathlib.Path:
    from tests.lib.debian_kernel import cache_dir
    path = cache_dir() / "vm"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _libraries(binary: str) -> set[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
    found = set()
    for line in out.splitlines():
        parts = line.split()
        for part in parts:
            if part.startswith("/"):
                found.add(part)
    return found


def _copy(src: str, root: pathlib.Path) -> None:
    dst = root / src.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        shutil.copy2(os.path.realpath(src), dst)


def build_initramfs(kernel) -> pathlib.Path:
    """An uncompressed newc initramfs for ``kernel`` (a tests.lib.debian_kernel.DebianKernel), cached."""
    python = os.path.realpath("/usr/bin/python3")
    stdlib = pathlib.Path("/usr/lib") / pathlib.Path(python).name
    key = hashlib.sha256()
    for part in (INIT, (HERE / "agent.py").read_text(), kernel.version, python,
                 *(str(os.stat(b).st_mtime_ns) for b in GUEST_BINARIES)):
        key.update(part.encode())
    image = _cache_root() / f"initramfs-{key.hexdigest()[:16]}.cpio"
    if image.exists():
        return image
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp) / "root"
        libs = set()
        for binary in GUEST_BINARIES:
            _copy(binary, root)
            libs |= _libraries(binary)
        for dirpath, dirnames, filenames in os.walk(stdlib):
            rel = pathlib.Path(dirpath).relative_to(stdlib)
            dirnames[:] = [d for d in dirnames if not (rel == pathlib.Path(".") and d in PYTHON_SKIP)]
            for name in filenames:
                src = os.path.join(dirpath, name)
                _copy(src, root)
                if name.endswith(".so"):
                    libs |= _libraries(src)
        for lib in libs:
            _copy(lib, root)
        _copy(str(kernel.modules_dir / "kernel/fs/efivarfs/efivarfs.ko"), root)
        (root / "lib/efivarfs.ko").parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / str(kernel.modules_dir / "kernel/fs/efivarfs/efivarfs.ko").lstrip("/"),
                    root / "lib/efivarfs.ko")
        shutil.copy2(HERE / "agent.py", root / "agent.py")
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        for d in ("bin", "sbin", "usr/bin", "usr/sbin"):
            (root / d).mkdir(parents=True, exist_ok=True)
        files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True, check=True).stdout
        partial = image.with_suffix(".part")
        with open(partial, "wb") as out:
            subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files.encode(),
                           stdout=out, check=True)
        partial.rename(image)
    return image


class DebianVM:
    """One qemu VM: Debian's kernel, OVMF firmware, an initramfs with the agent. Use as a context manager."""

    def __init__(self, kernel, profile: str = "setup-mode", workdir: str | os.PathLike | None = None,
                 memory_mb: int = 768, boot_timeout: float = 240.0, cmdline: str = ""):
        self.kernel = kernel
        self.profile = profile
        self.code, vars_name, self.smm = PROFILES[profile]
        self._own_dir = workdir is None
        self.dir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="skm-vm-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.vars = self.dir / "OVMF_VARS.fd"
        if not self.vars.exists():
            shutil.copyfile(OVMF / vars_name, self.vars)
        self.socket_path = self.dir / "agent.sock"
        self.console = self.dir / "console.log"
        self.memory_mb = memory_mb
        self.boot_timeout = boot_timeout
        self.cmdline = cmdline
        self.proc: subprocess.Popen | None = None
        self.boot_seconds = 0.0

    # -- lifecycle -------------------------------------------------------------------------------
    def qemu_argv(self) -> list[str]:
        machine = "q35,smm=on" if self.smm else "q35"
        argv = ["qemu-system-x86_64", "-machine", machine, "-accel", "tcg", "-m", str(self.memory_mb),
                "-smp", "1", "-display", "none", "-no-reboot", "-nodefaults",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF / self.code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={self.vars}",
                "-kernel", str(self.kernel.vmlinuz), "-initrd", str(build_initramfs(self.kernel)),
                "-append", f"console=ttyS0 panic=-1 loglevel=4 {self.cmdline}".strip(),
                "-chardev", f"file,id=con,path={self.console}", "-serial", "chardev:con",
                "-chardev", f"socket,id=agent,path={self.socket_path},server=on,wait=off",
                "-serial", "chardev:agent"]
        if self.smm:
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
        return argv

    def start(self) -> "DebianVM":
        if self.socket_path.exists():
            self.socket_path.unlink()
        self.console.write_text("")
        started = time.monotonic()
        self.proc = subprocess.Popen(self.qemu_argv(), stdin=subprocess.DEVNULL,
                                     stdout=open(self.dir / "qemu.log", "w"), stderr=subprocess.STDOUT)
        deadline = started + self.boot_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise VMError(f"qemu exited ({self.proc.returncode}) during boot:\n{self.tail()}")
            if "SKM-VM-READY" in self.console.read_text(errors="replace"):
                self.boot_seconds = time.monotonic() - started
                return self
            time.sleep(0.5)
        self.stop()
        raise VMError(f"VM not ready after {self.boot_timeout}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> "DebianVM":
        """Power off and boot again with the same variable store (what a reboot keeps)."""
        self.run(["sync"])
        self.stop()
        return self.start()

    def tail(self, lines: int = 40) -> str:
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> "DebianVM":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- commands --------------------------------------------------------------------------------
    def request(self, message: dict, timeout: float = 300.0) -> dict:
        """Send one request to the agent and return its reply (one connection per request)."""
        if not self.proc or self.proc.poll() is not None:
            raise VMError("VM is not running")
        return agent_request(self.socket_path, message, timeout, self.tail)

    def run(self, argv: list[str], input: bytes = b"", timeout: float = 300.0,
            env: dict | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` in the VM; returns a CompletedProcess with bytes stdout/stderr."""
        reply = self.request({"argv": list(argv), "stdin": base64.b64encode(input).decode(),
                              "timeout": timeout, "env": env or {}}, timeout=timeout + 30)
        return subprocess.CompletedProcess(argv, reply["rc"], base64.b64decode(reply.get("stdout") or ""),
                                           base64.b64decode(reply.get("stderr") or ""))

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run(["/bin/sh", "-c", script], **kwargs)

    def put(self, path: str, data: bytes, mode: int = 0o600) -> None:
        reply = self.request({"put": path, "data": base64.b64encode(data).decode(), "mode": mode})
        if reply["rc"]:
            raise VMError(f"put {path}: {base64.b64decode(reply.get('stderr') or '')!r}")

    def get(self, path: str) -> bytes:
        reply = self.request({"get": path})
        if reply["rc"]:
            raise VMError(f"get {path}: {base64.b64decode(reply.get('stderr') or '')!r}")
        return base64.b64decode(reply["data"])


if __name__ == "__main__":
    import sys
    sys.path.insert(0, str(HERE.parents[1]))
    from tests.lib.debian_kernel import debian_kernel
    t0 = time.monotonic()
    image = build_initramfs(debian_kernel())
    print(f"initramfs {image} ({image.stat().st_size >> 20} MiB) in {time.monotonic() - t0:.1f}s")
    with DebianVM(debian_kernel(), profile=sys.argv[1] if len(sys.argv) > 1 else "setup-mode") as vm:
        print(f"booted in {vm.boot_seconds:.1f}s")
        for argv in (["mokutil", "--sb-state"], ["ls", "/sys/firmware/efi/efivars"]):
            p = vm.run(argv)
            print(argv, p.returncode, p.stdout.decode(), p.stderr.decode())
