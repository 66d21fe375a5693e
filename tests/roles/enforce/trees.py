"""Boot file trees for the enforce tests, and a way to run real bootloader tools over them.

The tools (update-grub/grub-mkconfig, Fedora's grubby, kernel-install) only know absolute
paths (/boot, /etc/default, /etc/kernel). Each run happens in a private mount namespace
(`unshare -m`) in which the prepared tree's directories are bind-mounted over the real ones,
so the tools run unmodified on our files and the host's own directories are never touched;
the mounts vanish with the process.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from tests.lib.ansible_run import ansible_env, bin_path  # noqa: E402

ARG = "module.sig_enforce=1"
GRUB_DEFAULTS = pathlib.Path("/usr/share/grub/default/grub")   # what grub2-common installs as /etc/default/grub
MACHINE_ID = "3d1219c7c4c5404aaa1f6d2a48adfda4"
GRUBBY_SHARED = REPO.parent / "shared" / "tools" / "grubby" / "grubby-bls"   # ../shared beside the clone


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


def install_kernel(boot: pathlib.Path, kernel, version: str | None = None) -> str:
    """Debian's real vmlinuz/config under /boot as ``version`` (default: its own)."""
    version = version or kernel.version
    boot.mkdir(parents=True, exist_ok=True)
    for name in ("vmlinuz", "config", "System.map"):
        src = kernel.root / "boot" / f"{name}-{kernel.version}"
        dst = boot / f"{name}-{version}"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    (boot / f"initrd.img-{version}").write_bytes(b"\x1f\x8b")   # a name to find; GRUB never opens it here
    return version


def debian_grub_tree(base: pathlib.Path, kernel, versions=("6.1.0-55-amd64", None)) -> pathlib.Path:
    """/boot with two Debian kernels and /etc/default as grub2-common ships it."""
    boot = base / "boot"
    for version in versions:
        install_kernel(boot, kernel, version)
    (boot / "grub").mkdir()
    default = base / "etc" / "default"
    (default / "grub.d").mkdir(parents=True)
    shutil.copy(GRUB_DEFAULTS, default / "grub")
    for cfg in pathlib.Path("/etc/default/grub.d").glob("*.cfg"):
        shutil.copy(cfg, default / "grub.d" / cfg.name)
    return base


def grubby_tree(base: pathlib.Path, kernel_versions=("6.5.6-300.fc39.x86_64", "6.6.9-200.fc39.x86_64"),
                kernelopts: bool = False) -> pathlib.Path:
    """A Fedora-like /boot: BLS entries as kernel-install writes them, grubenv, /etc/default/grub, /etc/kernel/cmdline."""
    root_opts = "root=UUID=0f8e1c2a-55aa-4d1c-9a4e-0c1f2b3c4d5e ro rhgb quiet"
    entries = base / "boot" / "loader" / "entries"
    entries.mkdir(parents=True)
    for version in kernel_versions:
        (base / "boot" / f"vmlinuz-{version}").write_bytes(b"MZ")
        (base / "boot" / f"initramfs-{version}.img").write_bytes(b"\x1f\x8b")
        options = "$kernelopts" if kernelopts else root_opts
        (entries / f"{MACHINE_ID}-{version}.conf").write_text(
            f"title Fedora Linux ({version}) 39 (Thirty Nine)\nversion {version}\nlinux /vmlinuz-{version}\n"
            f"initrd /initramfs-{version}.img\noptions {options}\ngrub_users $grub_users\n"
            f"grub_arg --unrestricted\ngrub_class fedora\n")
    grub2 = base / "boot" / "grub2"
    grub2.mkdir()
    subprocess.run(["grub-editenv", str(grub2 / "grubenv"), "create"], check=True)
    env_vars = [f"saved_entry={MACHINE_ID}-{kernel_versions[-1]}"]
    if kernelopts:
        env_vars.append(f"kernelopts={root_opts}")
    subprocess.run(["grub-editenv", str(grub2 / "grubenv"), "set", *env_vars], check=True)
    default = base / "etc" / "default"
    default.mkdir(parents=True)
    (default / "grub").write_text(
        'GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR="$(sed \'s, release .*$,,g\' /etc/system-release)"\nGRUB_DEFAULT=saved\n'
        'GRUB_DISABLE_SUBMENU=true\nGRUB_TERMINAL_OUTPUT="console"\n'
        'GRUB_CMDLINE_LINUX="rhgb quiet"\nGRUB_DISABLE_RECOVERY="true"\nGRUB_ENABLE_BLSCFG=true\n')
    kdir = base / "etc" / "kernel"
    kdir.mkdir(parents=True)
    (kdir / "cmdline").write_text(root_opts + "\n")
    return base


def grubby_source(shared: pathlib.Path = GRUBBY_SHARED) -> tuple[pathlib.Path | None, str]:
    """Fedora's own grubby (the grubby-bls script of Fedora's grubby package): (file, "") or (None, why not).

    Debian 12 packages no grubby. The script is a test fixture beside the clone, ../shared/tools/grubby
    (see its README), or the file $SKM_GRUBBY names; it is never copied into this repository. A set
    SKM_GRUBBY that names no readable file is an error, not a reason to skip.
    """
    named = os.environ.get("SKM_GRUBBY")
    if named:
        if not (os.path.isfile(named) and os.access(named, os.R_OK)):
            raise FileNotFoundError(f"SKM_GRUBBY={named} is not a readable file")
        return pathlib.Path(named), ""
    if shared.is_file():
        return shared, ""
    return None, f"Fedora's grubby from ../shared/tools/grubby (absent: no {shared}; or set SKM_GRUBBY)"


def fedora_grubby(tools: pathlib.Path, script: pathlib.Path) -> pathlib.Path:
    """A directory for PATH with Fedora's grubby (a copy of ``script``) and grub-common's editenv as grub2-editenv."""
    tools.mkdir(parents=True, exist_ok=True)
    shutil.copy(script, tools / "grubby")
    (tools / "grubby").chmod(0o755)
    (tools / "grub2-editenv").symlink_to(shutil.which("grub-editenv"))
    return tools


def systemd_boot_tree(base: pathlib.Path, versions=("6.1.0-55-amd64", "6.1.0-56-amd64"),
                      esp: str = "efi") -> pathlib.Path:
    """An ESP as `bootctl install` + `kernel-install add` leave it (type #1 entries)."""
    root = base / esp
    (root / "loader" / "entries").mkdir(parents=True)
    (root / "EFI" / "systemd").mkdir(parents=True)
    (root / "EFI" / "systemd" / "systemd-bootx64.efi").write_bytes(b"MZ")
    (root / "loader" / "loader.conf").write_text(f"timeout 3\ndefault {MACHINE_ID}-*\n")
    for version in versions:
        (root / MACHINE_ID / version).mkdir(parents=True)
        (root / MACHINE_ID / version / "linux").write_bytes(b"MZ")
        (root / "loader" / "entries" / f"{MACHINE_ID}-{version}.conf").write_text(
            f"# Boot Loader Specification type#1 entry\ntitle      Debian GNU/Linux 12 (bookworm)\n"
            f"version    {version}\nmachine-id {MACHINE_ID}\nsort-key   debian\n"
            f"options    root=UUID=0f8e1c2a-55aa-4d1c-9a4e-0c1f2b3c4d5e ro quiet\n"
            f"linux      /{MACHINE_ID}/{version}/linux\n")
    return base


def _mounts(binds: dict) -> str:
    lines = ["set -e", "mount --make-rprivate /"]
    for src, dst in binds.items():
        lines.append(f"mkdir -p {shlex.quote(str(dst))}")
        lines.append(f"mount --bind {shlex.quote(str(src))} {shlex.quote(str(dst))}")
    return "\n".join(lines)


def in_namespace(binds: dict, argv: list, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``argv`` with ``binds`` ({tree dir: real dir}) mounted over the real directories, privately."""
    script = _mounts(binds) + "\nexec " + " ".join(shlex.quote(a) for a in argv)
    return subprocess.run(["unshare", "-m", "bash", "-c", script], capture_output=True, text=True, env=env, check=False)


def run_module_in(binds: dict, module: str, args: dict, check: bool = False, diff: bool = False,
                  path_prefix: str | None = None, tmp: pathlib.Path | None = None) -> dict:
    """``skm.modsign.<module>`` through ansible-playbook inside the namespace; its task result."""
    play = [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "under test", f"skm.modsign.{module}": args,
                        **({"environment": {"PATH": f"{path_prefix}:{os.environ['PATH']}"}} if path_prefix else {})}]}]
    tmp = tmp or pathlib.Path("/tmp")
    playbook = tmp / f"play-{os.getpid()}-{id(args)}.json"
    playbook.write_text(json.dumps(play))
    argv = [bin_path("ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)]
    argv += (["--check"] if check else []) + (["--diff"] if diff else [])
    proc = in_namespace(binds, argv, ansible_env())
    playbook.unlink()
    try:
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(f"no result (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result["_stdout"], result["_stderr"] = proc.stdout, proc.stderr
    return result


def snapshot(base: pathlib.Path) -> dict:
    """Every regular file under ``base`` (relative path -> bytes), to prove what changed."""
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()
            and not p.is_symlink()}
