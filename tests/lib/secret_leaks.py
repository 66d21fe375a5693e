"""Search everything an Ansible run shows or leaves behind for secrets (private key bytes, passphrases, passwords).

Used by tests/integration/test_secret_leaks.py (modules) and test_secret_leaks_roles.py (roles).

- ``Secrets`` holds every form of every secret as bytes to search for: the text of a passphrase or password;
  a private key as written (PEM body, i.e. its DER, encrypted or not) and decrypted (PKCS#8 and traditional
  DER), each raw, in hex (both cases), in base64 and as 64-character base64 lines.
- ``capture_run`` runs one ansible-playbook at -vvvv with private temp and log places and records what a
  person or a log could see: stdout, stderr, the argument list of every process on the machine while it ran
  (/proc/*/cmdline, polled) and every file left in its temp places and the given work directories.
- ``leaks`` searches captures for secrets; ``LeakRun`` is one task list run and searched at once.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import pathlib
import subprocess
import threading
from typing import Callable, Iterable, Iterator

import yaml
from cryptography.hazmat.primitives import serialization

from ansible_collections.skm.modsign.plugins.module_utils._trailer import strip_signature
from tests.lib.ansible_run import ansible_env, bin_path


def unsigned_module_copies(debian_kernel, relative_paths: Iterable, directory: pathlib.Path) -> pathlib.Path:
    """Unsigned copies of real Debian modules (their signatures cut off) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for rel in relative_paths:
        source = debian_kernel.modules_dir / rel
        (directory / source.name).write_bytes(strip_signature(source.read_bytes()))
    return directory


class Secrets:
    """Every form of every secret, as bytes to search for."""

    def __init__(self) -> None:
        self.needles: dict[bytes, str] = {}

    def text(self, label: str, value: str) -> None:
        self.needles[value.encode()] = label

    def der(self, label: str, der: bytes) -> None:
        b64 = base64.b64encode(der)
        self.needles[der] = label + " (DER)"
        self.needles[der.hex().encode()] = label + " (DER, hex)"
        self.needles[der.hex().upper().encode()] = label + " (DER, HEX)"
        self.needles[b64] = label + " (DER, base64)"
        for start in range(0, len(b64) - 63, 64):
            self.needles[b64[start:start + 64]] = label + " (base64 line)"

    def private_key(self, label: str, pem: bytes, passphrase: str | None) -> None:
        """The first PEM private key in ``pem`` (a key file or key+certificate), as written and decrypted."""
        block = pem.split(b"-----BEGIN ")[1]
        body = b"".join(line for line in block.splitlines()[1:] if b":" not in line and not line.startswith(b"-"))
        self.der(label + " as written", base64.b64decode(body))
        key = serialization.load_pem_private_key(pem, passphrase.encode() if passphrase else None)
        for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
            self.der(label + " decrypted", key.private_bytes(serialization.Encoding.DER, fmt,
                                                             serialization.NoEncryption()))

    def found_in(self, data: bytes) -> list[str]:
        return sorted({label for needle, label in self.needles.items() if needle in data})


@contextlib.contextmanager
def watched_cmdlines(interval: float = 0.01) -> Iterator[set[bytes]]:
    """The argument lists of every process seen on the machine while the block runs (polled)."""
    stop, seen = threading.Event(), set()

    def watch() -> None:
        while not stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as handle:
                            seen.add(handle.read())
                    except OSError:
                        pass
            stop.wait(interval)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        stop.set()
        watcher.join()


@dataclasses.dataclass
class Capture:
    """What one run showed and left: searched later, when every secret (also those it made) is known."""

    label: str
    returncode: int
    stdout: bytes
    stderr: bytes
    cmdlines: set[bytes]
    files: dict[pathlib.Path, bytes]   # every regular file in the searched places, read right after the run
    remote_tmp_left: list[str]         # what Ansible left in its remote temp directory (must be nothing)


def read_files(directories: Iterable[pathlib.Path]) -> dict[pathlib.Path, bytes]:
    found = {}
    for directory in directories:
        if not directory.exists():
            continue
        for path in [directory, *directory.rglob("*")]:
            if path.is_file() and not path.is_symlink():
                found[path.resolve()] = path.read_bytes()
    return found


class RunPlaces:
    """A run's private places under ``base``: input/ (playbook, variables), tmp/ (TMPDIR, log, results),
    local_tmp/ and remote_tmp/ (Ansible's)."""

    def __init__(self, base: pathlib.Path) -> None:
        self.base = base
        for name in ("input", "tmp", "local_tmp", "remote_tmp"):
            (base / name).mkdir(parents=True, exist_ok=True)
        self.results = base / "tmp" / "results.json"

    def write_input(self, name: str, data) -> pathlib.Path:
        path = self.base / "input" / name
        path.write_text(yaml.safe_dump(data))
        return path

    def env(self, extra: dict | None = None) -> dict:
        return ansible_env(dict({
            "ANSIBLE_STDOUT_CALLBACK": "default",
            "ANSIBLE_LOG_PATH": str(self.base / "tmp" / "ansible.log"),
            "ANSIBLE_LOCAL_TEMP": str(self.base / "local_tmp"),
            "ANSIBLE_REMOTE_TMP": str(self.base / "remote_tmp"),
            "TMPDIR": str(self.base / "tmp"),
        }, **(extra or {})))

    def searched(self) -> list[pathlib.Path]:
        return [self.base / "tmp", self.base / "local_tmp", self.base / "remote_tmp"]


def capture_run(places: RunPlaces, playbook: pathlib.Path, variables: pathlib.Path, label: str,
                args: Iterable[str] = (), workdirs: Iterable[pathlib.Path] = (),
                wrap: Callable[[list[str]], list[str]] | None = None) -> Capture:
    """ansible-playbook -vvvv on localhost with the secrets from a variables file (as from a vault: a secret
    written into a playbook is shown by ansible-core itself, which prints the lines around a failed task).
    ``wrap`` turns the command into the one to run (for example inside a private mount namespace)."""
    cmd = [bin_path("ansible-playbook"), "-i", "localhost,", "-c", "local", "-vvvv",
           "-e", "@" + str(variables), *args, str(playbook)]
    with watched_cmdlines() as seen:
        proc = subprocess.run(wrap(cmd) if wrap else cmd, capture_output=True, env=places.env(), check=False)
    assert b"ESTABLISH LOCAL CONNECTION" in proc.stdout, f"{label}: not a -vvvv run:\n" + proc.stderr[-2000:].decode()
    return Capture(label, proc.returncode, proc.stdout, proc.stderr, set(seen),
                   read_files([*places.searched(), *workdirs]),
                   sorted(p.name for p in (places.base / "remote_tmp").iterdir()))


def leaks(captures: Iterable[Capture], secrets: Secrets, allowed: Iterable[pathlib.Path] = ()) -> list[str]:
    """Where any secret shows in the captures; files in ``allowed`` (the key files themselves) excepted."""
    allowed_paths = {pathlib.Path(p).resolve() for p in allowed}
    found = set()
    for cap in captures:
        for where, data in (("stdout", cap.stdout), ("stderr", cap.stderr)):
            found.update(f"{cap.label}: {where}: {label}" for label in secrets.found_in(data))
        found.update(f"{cap.label}: process argument list: {label}"
                     for cmd in cap.cmdlines for label in secrets.found_in(cmd))
        found.update(f"{cap.label}: file {path}: {label}" for path, data in cap.files.items()
                     if path not in allowed_paths for label in secrets.found_in(data))
    return sorted(found)


def assert_no_leaks(captures: list[Capture], secrets: Secrets, allowed: Iterable[pathlib.Path] = ()) -> None:
    found = leaks(captures, secrets, allowed)
    assert not found, "secret found:\n" + "\n".join(found)
    left = [f"{cap.label}: {cap.remote_tmp_left}" for cap in captures if cap.remote_tmp_left]
    assert not left, f"Ansible left remote temp files: {left}"


class LeakRun:
    """One -vvvv playbook run of a task list (each task's result registered and written out as JSON), searched
    for the secrets right after it."""

    def __init__(self, base: pathlib.Path, tasks: list[dict], secrets_: Secrets,
                 workdirs: list[pathlib.Path], allowed: list[pathlib.Path], variables: dict) -> None:
        self.places = RunPlaces(base)
        self.base = base
        self.secrets = secrets_
        self.workdirs = workdirs
        self.allowed = allowed
        play_tasks = []
        for index, task in enumerate(tasks):
            play_tasks.append(dict(task, register=f"case{index}", ignore_errors=True))
        collect = "{{ {" + ", ".join(f"'case{i}': case{i}" for i in range(len(tasks))) + "} | to_json }}"
        play_tasks.append({"name": "write the returned results", "ansible.builtin.copy": {
            "content": collect, "dest": str(self.places.results), "mode": "0600"}})
        self.playbook = self.places.write_input("play.yml", [{"hosts": "localhost", "gather_facts": False,
                                                              "tasks": play_tasks}])
        self.variables = self.places.write_input("secrets.yml", variables)
        self.stdout = self.stderr = b""

    def run(self) -> dict:
        cap = capture_run(self.places, self.playbook, self.variables, "run", workdirs=self.workdirs)
        assert cap.returncode == 0, cap.stdout[-3000:].decode() + cap.stderr[-2000:].decode()
        self.stdout, self.stderr = cap.stdout, cap.stderr
        assert_no_leaks([cap], self.secrets, self.allowed)
        return json.loads(self.places.results.read_text())
