"""The kernel_build role as a kernel packager runs it: `ansible-playbook skm.modsign.kernel_prepare` and
`skm.modsign.kernel_package` from inside a build directory, no inventory, `-e` only, as root and as an
unprivileged build user who owns the tree.

Judges we did not write: openssl (the key matches the certificate, DER is the certificate), the real dkms's own
`safe_source` (the packaged drop-in names each kernel's key), the kernel's Kconfig (`make olddefconfig` keeps what
prepare wrote) and the kernel's certs/ build (the certificate it embeds is skm_genkey's, byte for byte).

Fast cases run in `make test`; the kernel builds (Debian's linux-source-6.1, `make certs/` for a tinyconfig and
for Debian's own config, about 2-6 minutes) and the package's later life (key withdrawn, key refreshed) run with
`make test-kernel-build` (SKM_SLOW=1).
"""

from __future__ import annotations

import json
import os
import pathlib
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import pytest

from ansible_collections.skm.modsign.plugins.module_utils import _kconfig as kconfig
from ansible_collections.skm.modsign.plugins.module_utils._kernel_image import builtin_certificates
from tests.lib.ansible_run import ansible_env, bin_path

slow = pytest.mark.skipif(not os.environ.get("SKM_SLOW"), reason="slow: kernel builds run with make test-kernel-build")
BUILD_USER = "nobody"
# A tinyconfig-ish config: a handful of lines; prepare adds every signing option that is missing.
SMALL_CONFIG = "CONFIG_64BIT=y\nCONFIG_MODULES=y\n# CONFIG_MODULE_SIG is not set\n"


def playbook(name: str, cwd: pathlib.Path, *extra: str, user: str | None = None, check: bool = False) -> dict:
    """`ansible-playbook skm.modsign.<name> -e ...` started in ``cwd`` (no -i: Ansible's implicit localhost)."""
    home = cwd.parent / f".home-{user or 'self'}"
    home.mkdir(exist_ok=True)
    cmd = [bin_path("ansible-playbook"), f"skm.modsign.{name}"]
    for item in extra:
        cmd += ["-e", item]
    if check:
        cmd.append("--check")
    env = ansible_env({"PWD": str(cwd), "HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_REMOTE_TMP": str(home / "rtmp"),
                       "ANSIBLE_HOME": str(home / ".ansible")})
    if user:
        # The build user cannot reach our venv's interpreter (it lives under /root): the system Python of the same
        # version runs Ansible from the venv's site-packages. runuser resets HOME (and maybe PATH): env hands over.
        shutil.chown(home, user)
        env.update(PYTHONPATH=sysconfig.get_paths()["purelib"], ANSIBLE_PYTHON_INTERPRETER=system_python())
        keep = [k for k in env if k.startswith("ANSIBLE_") or k in ("PWD", "HOME", "PATH", "LANG", "PYTHONPATH")]
        cmd = ["runuser", "-u", user, "--", "env", *(f"{k}={env[k]}" for k in keep),
               system_python(), "-m", "ansible.cli.playbook", *cmd[1:]]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"ansible-playbook gave no JSON (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    stats = report["stats"]["localhost"]
    results = [host for play in report["plays"] for task in play["tasks"] for host in task["hosts"].values()]
    return {"rc": proc.returncode, "stats": stats, "results": results, "stdout": proc.stdout,
            "failed": stats["failures"] > 0, "changed": stats["changed"]}


def system_python() -> str:
    path = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if not os.access(path, os.X_OK):
        pytest.skip(f"no {path} for the build user (the venv's Python must match it)")
    return path


def four_times(name: str, cwd: pathlib.Path, *extra: str, user: str | None = None) -> list[dict]:
    runs = [playbook(name, cwd, *extra, user=user, check=check) for check in (True, False, True, False)]
    for run in runs:
        assert not run["failed"] and run["rc"] == 0, run["stdout"][-4000:]
    return runs


def openssl(*args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def assert_key_matches(directory: pathlib.Path) -> None:
    """openssl: the private key's public half is the certificate's, and the DER file is that certificate."""
    assert openssl("pkey", "-in", str(directory / "signing_key.key"), "-pubout") == \
        openssl("x509", "-in", str(directory / "signing_key.crt"), "-noout", "-pubkey")
    assert openssl("x509", "-in", str(directory / "signing_key.crt"), "-outform", "DER") == \
        (directory / "signing_key.der").read_bytes()


def config_values(path: pathlib.Path) -> dict[str, str]:
    return kconfig.values(kconfig.parse_config(path.read_text()))


@pytest.fixture
def scratch():
    """A world-traversable scratch directory (pytest's own tmp is root-only, the build user must get in)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="skm-kernel-build-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def build_tree(scratch: pathlib.Path, debian_config: pathlib.Path, user: str | None) -> pathlib.Path:
    """A kernel build directory owned by ``user`` with two configs for one glob (like genkeys.py --config)."""
    build = scratch / "build"
    (build / "conf").mkdir(parents=True)
    (build / "conf" / "config.small").write_text(SMALL_CONFIG)
    shutil.copy(debian_config, build / "conf" / "config.debian")
    if user:
        for path in [build, *build.rglob("*")]:
            os.chown(path, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    return build


def as_user(request) -> str | None:
    user = request.param
    if user is None:
        return None
    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user (runuser)")
    pwd.getpwnam(user)
    return user


@pytest.fixture(params=[None, BUILD_USER], ids=["as-invoker", "as-build-user"])
def user(request):
    return as_user(request)


def test_prepare_two_configs_one_key_idempotent(scratch, debian_kernel, user):
    build = build_tree(scratch, debian_kernel.config, user)
    glob = "skm_kernel_build_configs=conf/config.*"
    check1, real1, check2, real2 = four_times("kernel_prepare", build, glob, "skm_kernel_build_key_size=2048",
                                              user=user)
    assert check1["changed"] and real1["changed"], "the first run must make a key and change both configs"
    assert check2["changed"] == 0 and real2["changed"] == 0, "a second run changed something"

    keys = build / "certs-local"
    current = keys / "current"
    assert current.is_symlink() and len(os.readlink(current)) == len("20260101-000000")
    generation = current.resolve()
    assert_key_matches(generation)
    owner = pwd.getpwuid(os.geteuid()).pw_name if user is None else user
    for path in generation.iterdir():
        assert pwd.getpwuid(path.stat().st_uid).pw_name == owner, f"{path} not owned by the build user"
    assert oct((generation / "signing_key.key").stat().st_mode & 0o777) == "0o600"
    assert oct((generation / "signing_key.pem").stat().st_mode & 0o777) == "0o600"

    # Both configs name the same key (through current), with the hash and key type built in.
    want = {"CONFIG_MODULE_SIG": "y", "CONFIG_MODULE_SIG_ALL": "y", "CONFIG_MODULE_SIG_SHA512": "y",
            "CONFIG_MODULE_SIG_HASH": '"sha512"', "CONFIG_MODULE_SIG_KEY": f'"{current}/signing_key.pem"',
            "CONFIG_MODULE_SIG_KEY_TYPE_RSA": "y", "CONFIG_CRYPTO_SHA512": "y"}
    for name in ("config.small", "config.debian"):
        have = config_values(build / "conf" / name)
        assert {k: have.get(k) for k in want} == want, name

    # The refresh policy: 'always' makes a new generation; the configs (through current) stay as they are.
    configs_before = {p.name: p.read_bytes() for p in (build / "conf").iterdir()}
    rotated = playbook("kernel_prepare", build, glob, "skm_kernel_build_key_size=2048",
                       "skm_kernel_build_refresh=always", user=user)
    assert not rotated["failed"] and rotated["changed"] == 1, rotated["stdout"][-3000:]
    assert current.resolve() != generation and generation.exists(), "old generation should be kept (keep=3)"
    assert {p.name: p.read_bytes() for p in (build / "conf").iterdir()} == configs_before
    assert_key_matches(current.resolve())


def package(build: pathlib.Path, destdir: pathlib.Path, kver: str, *extra: str, check: bool = False) -> dict:
    run = playbook("kernel_package", build, f"skm_kernel_build_destdir={destdir}", f"skm_kernel_build_kver={kver}",
                   *extra, check=check)
    assert not run["failed"], run["stdout"][-4000:]
    return run


def test_package_certificates_always_key_only_when_asked(scratch, debian_kernel):
    build = build_tree(scratch, debian_kernel.config, None)
    ecdsa = ("skm_kernel_build_configs=conf/config.*", "skm_kernel_build_key_type=ecdsa", "skm_kernel_build_hash=sha384")
    assert not playbook("kernel_prepare", build, *ecdsa)["failed"]
    generation = (build / "certs-local" / "current").resolve()
    kver = "6.1.0-skm-test"
    destdir = build / "pkg"

    check1 = package(build, destdir, kver, check=True)
    assert check1["changed"] and not destdir.exists(), "check mode wrote into the DESTDIR"
    real1, check2, real2 = (package(build, destdir, kver, check=c) for c in (False, True, False))
    assert real1["changed"] and check2["changed"] == 0 and real2["changed"] == 0
    certs_local = destdir / "usr" / "lib" / "modules" / kver / "build" / "certs-local"
    assert os.readlink(certs_local / "current") == generation.name
    shipped = certs_local / generation.name
    assert sorted(p.name for p in shipped.iterdir()) == ["signing_key.crt", "signing_key.der", "skm-key.json"]
    assert sorted(p.name for p in certs_local.iterdir()) == sorted(["current", generation.name])
    for name in ("signing_key.crt", "signing_key.der"):
        assert (shipped / name).read_bytes() == (generation / name).read_bytes()
        assert oct((shipped / name).stat().st_mode & 0o777) == "0o644"
    assert openssl("x509", "-in", str(shipped / "signing_key.crt"), "-outform", "DER") == \
        (shipped / "signing_key.der").read_bytes()

    # Asked for the key (on-host DKMS signing): the key 0600 and the dkms role's hook files.
    with_key = package(build, destdir, kver, "skm_kernel_build_package_key=true")
    again = package(build, destdir, kver, "skm_kernel_build_package_key=true")
    assert with_key["changed"] and again["changed"] == 0
    assert_key_matches(certs_local / "current")
    for name in ("signing_key.key", "signing_key.pem"):
        assert oct((shipped / name).stat().st_mode & 0o777) == "0o600"
    dkms = certs_local / "dkms"
    assert sorted(str(p.relative_to(dkms)) for p in dkms.rglob("*") if p.is_file()) == \
        ["dkms-post-build", "dkms-sign-file", "framework.conf.d/skm-modsign.conf", "kernel-sign.conf"]
    for name in ("dkms-post-build", "dkms-sign-file"):
        assert oct((dkms / name).stat().st_mode & 0o777) == "0o755"
        assert subprocess.run(["sh", "-n", str(dkms / name)], check=False).returncode == 0
    assert f"/usr/lib/modules/{kver}/build/certs-local/current/signing_key.key" in (dkms / "dkms-post-build").read_text()
    assert "hash=sha384" in (dkms / "dkms-sign-file").read_text()
    # The real dkms reads the drop-in with its own safe_source: each kernel's key, the installed wrapper.
    other = "6.6.6-other"
    got = dkms_reads(dkms / "framework.conf.d" / "skm-modsign.conf", other, "mok_signing_key", "mok_certificate",
                     "sign_file")
    base = f"/usr/lib/modules/{other}/build/certs-local"
    assert got == [f"{base}/current/signing_key.key", f"{base}/current/signing_key.crt", f"{base}/dkms/dkms-sign-file"]
    post_build = dkms_reads(dkms / "kernel-sign.conf", other, "POST_BUILD")[0]
    assert post_build == "../" * 6 + f"usr/lib/modules/{other}/build/certs-local/dkms/dkms-post-build {other} x86_64"


@slow
def test_package_key_withdrawn_and_refreshed(scratch, debian_kernel):
    """Asked no longer, the key and the hook leave the package; a refreshed key replaces the packaged one."""
    build = build_tree(scratch, debian_kernel.config, None)
    ecdsa = ("skm_kernel_build_configs=conf/config.*", "skm_kernel_build_key_type=ecdsa", "skm_kernel_build_hash=sha384")
    assert not playbook("kernel_prepare", build, *ecdsa)["failed"]
    kver, destdir = "6.1.0-skm-test", build / "pkg"
    certs_local = destdir / "usr" / "lib" / "modules" / kver / "build" / "certs-local"
    generation = (build / "certs-local" / "current").resolve().name
    package(build, destdir, kver, "skm_kernel_build_package_key=true")
    assert (certs_local / generation / "signing_key.key").exists() and (certs_local / "dkms").is_dir()

    assert package(build, destdir, kver)["changed"]
    assert sorted(p.name for p in (certs_local / generation).iterdir()) == \
        ["signing_key.crt", "signing_key.der", "skm-key.json"]
    assert not (certs_local / "dkms").exists()

    assert not playbook("kernel_prepare", build, *ecdsa, "skm_kernel_build_refresh=always")["failed"]
    newer = (build / "certs-local" / "current").resolve().name
    assert newer != generation
    package(build, destdir, kver)
    assert sorted(p.name for p in certs_local.iterdir()) == sorted(["current", newer])
    assert os.readlink(certs_local / "current") == newer


def dkms_reads(conf: pathlib.Path, kernelver: str, *names: str) -> list[str]:
    """What the real dkms (/usr/sbin/dkms, its own safe_source) reads from a conf file for ``kernelver``."""
    if not os.path.exists("/usr/sbin/dkms"):
        pytest.skip("dkms is not installed")
    script = ('mktemp_or_die() { mktemp; }; deprecated() { :; }; '
              'eval "$(sed -n "/^safe_source()/,/^}/p" /usr/sbin/dkms)"; '
              'kernelver=$1; arch=x86_64; shift; conf=$1; shift; safe_source "$conf" "$@"; '
              'for n in "$@"; do printf "%s\\n" "${!n}"; done')
    out = subprocess.run(["bash", "-c", script, "_", kernelver, str(conf), *names], capture_output=True, text=True,
                         check=True).stdout
    return out.splitlines()


def test_package_fails_clearly_without_a_key(scratch, debian_kernel):
    build = build_tree(scratch, debian_kernel.config, None)
    run = playbook("kernel_package", build, f"skm_kernel_build_destdir={build / 'pkg'}", "skm_kernel_build_kver=6.1")
    assert run["failed"] and "run the prepare step first" in run["stdout"]
    assert not (build / "pkg").exists()
    no_release = playbook("kernel_package", build, f"skm_kernel_build_destdir={build / 'pkg'}")
    assert no_release["failed"] and "kernel.release" in no_release["stdout"]


# ------------------------------------------------------------------ slow: the kernel's own build embeds the key

def make(source: pathlib.Path, out: pathlib.Path, *targets: str) -> str:
    proc = subprocess.run(["make", "-C", str(source), f"O={out}", "ARCH=x86_64", "-j2", *targets],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"make {' '.join(targets)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@slow
def test_kernel_build_embeds_the_prepared_certificate(scratch, debian_kernel):
    from tests.lib.kernel_source import kernel_source
    source = kernel_source()
    build = scratch / "build"
    (build / "conf").mkdir(parents=True)
    tiny = build / "out-tiny"
    make(source, tiny, "tinyconfig")
    shutil.copy(tiny / ".config", build / "conf" / "config.tiny")
    with (build / "conf" / "config.tiny").open("a") as config:
        config.write("CONFIG_MODULES=y\n")
    shutil.copy(debian_kernel.config, build / "conf" / "config.debian")

    prepare = playbook("kernel_prepare", build, "skm_kernel_build_configs=conf/config.*")
    assert not prepare["failed"], prepare["stdout"][-3000:]
    der = (build / "certs-local" / "current" / "signing_key.der").read_bytes()
    wanted = {k: v for k, v in config_values(build / "conf" / "config.tiny").items() if k.startswith("CONFIG_MODULE_SIG")}

    for name, out in (("config.tiny", tiny), ("config.debian", build / "out-debian")):
        out.mkdir(exist_ok=True)
        shutil.copy(build / "conf" / name, out / ".config")
        make(source, out, "olddefconfig")
        have = config_values(out / ".config")
        lost = {k: (v, have.get(k)) for k, v in wanted.items() if have.get(k, "n") != v}
        assert not lost, f"{name}: the kernel's olddefconfig dropped what prepare wrote: {lost}"
        make(source, out, "certs/")
        assert (out / "certs" / "signing_key.x509").read_bytes() == der, f"{name}: the kernel embedded another key"
        embedded = builtin_certificates((out / "certs" / "system_certificates.o").read_bytes())
        assert der in [c.der for c in embedded], f"{name}: our certificate is not in the built-in keyring"

        # Package into a DESTDIR with the kernel release the build wrote (make -s kernelrelease as the judge).
        release = subprocess.run(["make", "-s", "-C", str(source), f"O={out}", "ARCH=x86_64", "kernelrelease"],
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        destdir = scratch / f"pkg-{name}"
        runs = four_times("kernel_package", build, f"skm_kernel_build_dir={out}",
                          f"skm_kernel_build_key_dir={build / 'certs-local'}", f"skm_kernel_build_destdir={destdir}")
        assert runs[1]["changed"] and runs[3]["changed"] == 0
        shipped = destdir / "usr" / "lib" / "modules" / release / "build" / "certs-local" / "current"
        assert (shipped / "signing_key.der").read_bytes() == der
        assert not (shipped / "signing_key.key").exists()
