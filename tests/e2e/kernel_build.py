"""The e2e kernel: linux-source-6.1, `make tinyconfig`, then skm_kconfig writes the signing options and the
recipe's (tests/e2e/kernel.config, as `extra`) in one go, and the kernel's own olddefconfig must keep them all.
Built once and cached under <cache>/e2e/kernels/<key>, where <key> hashes the trusted certificates'
fingerprints, the recipe and the signing options.

A cached build is reused as is; skm_kconfig is then run in check mode against its .config and must report
no change (the options it would write are the ones the kernel was built with).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import pathlib
import shutil
import subprocess
import time

from tests.e2e import collection
from tests.e2e.kernel_tree import kernel_source
from tests.lib.debian_kernel import cache_dir

HERE = pathlib.Path(__file__).resolve().parent
RECIPE = HERE / "kernel.config"
JOBS = "-j2"
ARCH = "x86_64"
# the in-kernel decompressor of this kernel; 6.1 has one per kernel, gzip or xz (zstd from 6.2)
COMPRESSION = "xz"


@dataclasses.dataclass
class KernelBuild:
    build: pathlib.Path          # O= directory: .config, Module.symvers, arch/x86/boot/bzImage
    cached: bool
    seconds: float               # time spent here (configure + build, or the cache look-up)
    notes: list[str]

    @property
    def bzimage(self) -> pathlib.Path:
        return self.build / "arch" / "x86" / "boot" / "bzImage"

    @property
    def config(self) -> pathlib.Path:
        return self.build / ".config"


def fingerprint(cert_pem: pathlib.Path) -> str:
    der = subprocess.run(["openssl", "x509", "-in", str(cert_pem), "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


def source_version(source: pathlib.Path) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL from the tree's Makefile (the cache key must not depend on where it is)."""
    head = dict(line.split(" = ", 1) for line in (source / "Makefile").read_text().splitlines()[:6]
                if " = " in line)
    return ".".join(head.get(k, "?").strip() for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL"))


def _make(build: pathlib.Path, *targets: str, source: pathlib.Path, log: pathlib.Path) -> None:
    cmd = ["make", "-C", str(source), f"O={build}", f"ARCH={ARCH}", JOBS, *targets]
    with open(log, "ab") as out:
        out.write(("\n$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError(f"make {' '.join(targets)} failed (rc={proc.returncode}); log {log}:\n" + "\n".join(tail))


def read_config(path: pathlib.Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            values[line[2:-len(" is not set")]] = "n"
    return values


def _missing(config: pathlib.Path, wanted: dict[str, str]) -> list[str]:
    have = read_config(config)
    return [f"{name}={value} (have {have.get(name, 'absent')})" for name, value in wanted.items()
            if have.get(name, "n") != value]


def build_kernel(signing: collection.SigningSetup) -> KernelBuild:
    """Configure (skm_kconfig, then the kernel's olddefconfig) and build the e2e kernel, or reuse the cached one."""
    started = time.monotonic()
    source = kernel_source()
    recipe = read_config(RECIPE)
    key_material = {
        "source": source_version(source),
        "recipe": recipe,
        "trusted": sorted(fingerprint(c) for c in signing.trusted_certs),
        "kconfig": signing.kconfig_args,
        "compression": COMPRESSION,
    }
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:20]
    base = cache_dir() / "e2e" / "kernels"
    base.mkdir(parents=True, exist_ok=True)
    build = base / key
    notes = []
    with open(base / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (build / ".complete").exists() and (build / "source" / "Makefile").exists():
            check = signing.write_kconfig(build / ".config", recipe, check=True)
            if check["changed"]:
                raise AssertionError(f"skm_kconfig (check mode) would change the cached kernel's config: {check}")
            notes.append(f"cached kernel {build.name}; skm_kconfig in check mode: unchanged")
            return KernelBuild(build, True, time.monotonic() - started, notes)
        shutil.rmtree(build, ignore_errors=True)
        build.mkdir()
        (build / "recipe.json").write_text(json.dumps(key_material, indent=2, sort_keys=True) + "\n")
        log = build / "build.log"
        _make(build, "tinyconfig", source=source, log=log)
        result = signing.write_kconfig(build / ".config", recipe, check=False)
        written = sum(len(f["changes"]) for f in result["files"])
        if not result["changed"]:
            raise AssertionError(f"skm_kconfig changed nothing in a fresh tinyconfig: {result}")
        notes.append(f"skm_kconfig set {written} options")
        _make(build, "olddefconfig", source=source, log=log)
        lost = _missing(build / ".config", signing.expected_config())
        if lost:
            raise AssertionError("the kernel's olddefconfig dropped signing options: " + ", ".join(lost))
        lost = _missing(build / ".config", recipe)
        if lost:
            raise AssertionError("the kernel's olddefconfig dropped recipe options: " + ", ".join(lost))
        again = signing.write_kconfig(build / ".config", recipe, check=True)
        if again["changed"]:
            raise AssertionError(f"skm_kconfig would change the config after olddefconfig: {again}")
        notes.append("olddefconfig kept them (skm_kconfig check mode: unchanged)")
        _make(build, "bzImage", "modules", source=source, log=log)
        (build / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")
        notes.append(f"built kernel {build.name} in {time.monotonic() - started:.0f}s")
        return KernelBuild(build, False, time.monotonic() - started, notes)


def build_module(kernel: KernelBuild, workdir: pathlib.Path) -> pathlib.Path:
    """tests/e2e/module built out of tree against the e2e kernel: `make -C <build> M=<dir>`."""
    moddir = workdir / "module"
    shutil.rmtree(moddir, ignore_errors=True)
    shutil.copytree(HERE / "module", moddir)
    proc = subprocess.run(["make", "-C", str(kernel.build), f"M={moddir}", f"ARCH={ARCH}", JOBS, "modules"],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"module build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return moddir / "skm_e2e.ko"


def build_loader(workdir: pathlib.Path) -> pathlib.Path:
    out = workdir / "load"
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(out), str(HERE / "load.c")], check=True)
    return out
