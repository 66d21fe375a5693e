"""A Secure Boot VM from Debian's packages only (tests/secureboot/build_image.sh), under qemu (TCG).

    with SecureBootVM(disk) as vm:     # boots; ssh on 127.0.0.1:<free port>, key made here
        vm.ssh("mokutil --sb-state")
        vm.reboot_to_console()         # reboot; the serial console is then free for MokManager

Firmware: OVMF_CODE_4M.secboot.fd + a private copy of OVMF_VARS_4M.ms.fd (Microsoft's KEK/db enrolled, so
Secure Boot is on and only Microsoft-signed shim boots), q35 with SMM and a secure pflash. The cached raw
disk is opened with snapshot=on: the guest's writes live as long as the qemu process (guest reboots keep
them) and the cache is never changed. The serial port is a unix
socket (serial.sock; ``socat - UNIX-CONNECT:serial.sock`` is the user's "console command") and every byte
of it is logged to console.log. root's ssh key is handed to the guest through fw_cfg.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
OVMF = pathlib.Path("/usr/share/OVMF")
CODE = OVMF / "OVMF_CODE_4M.secboot.fd"
VARS_MS = OVMF / "OVMF_VARS_4M.ms.fd"
# Console markers of the boot stages, in order (first seen after each start/reboot is timed).
STAGES = (("shim/grub", "Booting `Debian"), ("kernel", "Linux version"), ("login prompt", "login:"))


class VMError(RuntimeError):
    pass


def build_disk() -> pathlib.Path:
    out = subprocess.run(["bash", str(HERE / "build_image.sh")], stdout=subprocess.PIPE, text=True, check=True)
    return pathlib.Path(out.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SecureBootVM:
    def __init__(self, disk: pathlib.Path, workdir: str | os.PathLike | None = None, memory_mb: int = 1024,
                 boot_timeout: float = 600.0):
        self.disk = pathlib.Path(disk)
        self._own_dir = workdir is None
        self.dir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="skm-sb-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.vars = self.dir / "OVMF_VARS.fd"
        self.serial = self.dir / "serial.sock"
        self.console = self.dir / "console.log"
        self.key = self.dir / "id_ed25519"
        self.memory_mb = memory_mb
        self.boot_timeout = boot_timeout
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.timings: list[dict] = []   # one per boot: seconds from (re)start to each stage

    # -- lifecycle --------------------------------------------------------------------------------
    def prepare(self) -> None:
        if not self.vars.exists():
            shutil.copyfile(VARS_MS, self.vars)
        if not self.key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "skm-secureboot-test",
                            "-f", str(self.key)], check=True)

    def qemu_argv(self) -> list[str]:
        return ["qemu-system-x86_64", "-machine", "q35,smm=on", "-accel", "tcg", "-m", str(self.memory_mb),
                "-smp", "1", "-display", "none", "-nodefaults", "-vga", "none",
                "-global", "driver=cfi.pflash01,property=secure,value=on",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={self.vars}",
                "-drive", f"if=virtio,format=raw,snapshot=on,file={self.disk}",
                "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-device", "virtio-net-pci,netdev=net0", "-device", "virtio-rng-pci",
                "-fw_cfg", f"name=opt/skm/authorized_keys,file={self.key}.pub",
                "-chardev", f"socket,id=ser0,path={self.serial},server=on,wait=off,logfile={self.console},"
                            "logappend=on",
                "-serial", "chardev:ser0"]

    def start(self) -> "SecureBootVM":
        self.prepare()
        self.port = free_port()
        self.console.touch()
        self.proc = subprocess.Popen(self.qemu_argv(), stdin=subprocess.DEVNULL,
                                     stdout=open(self.dir / "qemu.log", "ab"), stderr=subprocess.STDOUT)
        self.wait_booted(time.monotonic(), self._console_size())
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "SecureBootVM":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_dir and not os.environ.get("SKM_KEEP_VM"):
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- boots ------------------------------------------------------------------------------------
    def _console_size(self) -> int:
        return self.console.stat().st_size if self.console.exists() else 0

    def console_since(self, offset: int) -> str:
        with open(self.console, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode("latin-1")

    def wait_booted(self, started: float, offset: int, label: str = "boot") -> dict:
        """Wait until ssh answers; record when each boot stage showed on the console."""
        timing = {"boot": label}
        deadline = started + self.boot_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise VMError(f"qemu exited during {label}:\n{self.tail()}")
            text = self.console_since(offset)
            for name, marker in STAGES:
                if name not in timing and marker in text:
                    timing[name] = round(time.monotonic() - started, 1)
            if "login prompt" in timing or "kernel" in timing:
                if self.ssh_ok():
                    timing["ssh"] = round(time.monotonic() - started, 1)
                    self.timings.append(timing)
                    return timing
            time.sleep(2)
        raise VMError(f"{label}: no ssh within {self.boot_timeout}s:\n{self.tail()}")

    def ssh_argv(self, command: str) -> list[str]:
        return ["ssh", "-i", str(self.key), "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15",
                "-o", "LogLevel=ERROR", "root@127.0.0.1", command]

    def ssh_ok(self) -> bool:
        try:
            return subprocess.run(self.ssh_argv("true"), capture_output=True, timeout=40, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def ssh(self, command: str, check: bool = True, timeout: float = 600, input: bytes | None = None
            ) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.ssh_argv(command), capture_output=True, timeout=timeout, input=input, check=False)
        out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                          proc.stderr.decode(errors="replace"))
        if check and out.returncode:
            raise VMError(f"{command!r} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def put(self, path: str, data: bytes, mode: str = "0600") -> None:
        self.ssh(f"umask 077; cat > {path} && chmod {mode} {path}", input=data)

    def begin_reboot(self) -> tuple[float, int]:
        """Reboot the guest; returns (time, console offset) to hand to wait_booted after the console work."""
        offset = self._console_size()
        started = time.monotonic()
        self.ssh("systemctl reboot", check=False, timeout=60)
        return started, offset

    def tail(self, lines: int = 40) -> str:
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
